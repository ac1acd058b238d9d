import Foundation
import Logging
import NATS
import NATSTestSupport
import NIOCore

struct TestTimeout: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Runs `body`, failing with ``TestTimeout`` when it takes longer than `limit`.
func withTimeout<T: Sendable>(_ limit: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw TestTimeout(what: what)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// Waits for the first event matching `predicate`.
@discardableResult
func waitForEvent(
    _ events: AsyncStream<NATSConnectionEvent>, timeout: Duration = .seconds(10), _ what: String,
    where predicate: @escaping @Sendable (NATSConnectionEvent) -> Bool
) async throws -> NATSConnectionEvent {
    try await withTimeout(timeout, what) {
        for await event in events where predicate(event) { return event }
        throw TestTimeout(what: "\(what) (event stream ended)")
    }
}

/// Reads the next message of a subscription within `timeout`.
func nextMessage(_ subscription: NATSSubscription, timeout: Duration = .seconds(5)) async throws -> NATSMessage {
    try await withTimeout(timeout, "a message on \(subscription.subject)") {
        var iterator = subscription.makeAsyncIterator()
        guard let message = await iterator.next() else { throw TestTimeout(what: "a message (subscription ended)") }
        return message
    }
}

/// Collects `count` messages of a subscription within `timeout`.
func collect(_ count: Int, from subscription: NATSSubscription, timeout: Duration = .seconds(10)) async throws -> [NATSMessage] {
    try await withTimeout(timeout, "\(count) messages on \(subscription.subject)") {
        var result: [NATSMessage] = []
        for await message in subscription {
            result.append(message)
            if result.count == count { break }
        }
        return result
    }
}

func testLogger(_ label: String = "nats-test") -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = ProcessInfo.processInfo.environment["BATON_TEST_LOG"] != nil ? .debug : .critical
    return logger
}

/// Options for a client of `server`, with fast reconnects for tests.
func testOptions(_ server: NATSServerProcess) -> NATSClientOptions {
    var options = NATSClientOptions(servers: [server.url])
    options.reconnectWait = .milliseconds(20)
    options.maxReconnectWait = .milliseconds(250)
    options.reconnectJitter = .milliseconds(10)
    // Generous: the whole suite runs in parallel on small CI machines.
    options.connectTimeout = .seconds(10)
    options.requestTimeout = .seconds(5)
    return options
}

func connectedClient(_ server: NATSServerProcess, configure: (inout NATSClientOptions) -> Void = { _ in }) async throws -> NATSClient {
    var options = testOptions(server)
    configure(&options)
    return try await NATSClient.connect(options: options, logger: testLogger())
}

extension ByteBuffer {
    var text: String { String(decoding: readableBytesView, as: UTF8.self) }
}
