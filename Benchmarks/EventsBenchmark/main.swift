// EventsBenchmark: what recording an event costs the caller (the app supervisors, whose lease
// path must never wait for it), and how fast a node's events reach the event history.
//
// Starts its own nats-server (JetStream on, random loopback port, temporary store directory;
// killed at the end) and measures, for `--events N` events each:
//   1. `EventPublisher.publish` call latency while the publisher drains to a live server;
//   2. the same call with JetStream off, so nothing can be published: the 1024-event buffer
//      fills and every further event is dropped and counted;
//   3. drain throughput: from the first publish until the server acknowledged all N.
// Results and the machine go in BENCHMARKS.md.
//
//   swift build --scratch-path .build --product EventsBenchmark
//   .build/debug/EventsBenchmark [--server /usr/sbin/nats-server] [--events 20000]

import ArgumentParser
import BatonCore
import BatonEvents
import BenchmarkSupport
import Foundation
import Logging
import NATS

#if canImport(Glibc)
import Glibc
#endif

struct Failure: Error, CustomStringConvertible { var description: String }

struct Arguments: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "EventsBenchmark",
        abstract: "What recording an event costs the caller, and how fast events reach the event history.")

    @Option(help: "The nats-server to start (JetStream on, random loopback port).")
    var server = "/usr/sbin/nats-server"
    @Option(help: "Events per measurement.")
    var events = 20_000

    func validate() throws {
        guard events > 0 else { throw ValidationError("--events: \(events) is not a positive number") }
    }
}

let arguments = Arguments.parseOrExit()
let serverPath = arguments.server
let count = arguments.events

func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw Failure(description: "cannot reserve a loopback port") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Starts a nats-server; JetStream on or off.
func startServer(_ serverPath: String, jetStream: Bool) async throws -> (Process, Int, URL) {
    let port = try freePort()
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("events-bench-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: serverPath)
    process.arguments = ["-a", "127.0.0.1", "-p", "\(port)"] + (jetStream ? ["-js", "-sd", directory.path] : [])
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    let deadline = ContinuousClock.now + .seconds(10)
    while ContinuousClock.now < deadline {
        if let client = try? await NATSClient.connect(options: NATSClientOptions(servers: ["nats://127.0.0.1:\(port)"])) {
            await client.close()
            return (process, port, directory)
        }
        try await Task.sleep(for: .milliseconds(50))
    }
    process.terminate()
    throw Failure(description: "nats-server at \(serverPath) did not start")
}

func event(_ index: Int) -> BatonEvent {
    BatonEvent(time: Date().timeIntervalSince1970, cluster: "bench", node: "node-1", app: "web", kind: .observed, epoch: UInt64(index), detail: "benchmark event \(index)")
}

func percentiles(_ samples: [Int64]) -> String {
    let sorted = samples.sorted()
    return "p50 \(percentile(sorted, 50)) ns, p99 \(percentile(sorted, 99)) ns, p99.9 \(percentile(sorted, 99.9)) ns, max \(sorted.last ?? 0) ns"
}

func measureCalls(_ publisher: EventPublisher, count: Int) -> [Int64] {
    var samples: [Int64] = []
    samples.reserveCapacity(count)
    let clock = ContinuousClock()
    for index in 0..<count {
        let started = clock.now
        publisher.publish(event(index))
        let elapsed = clock.now - started
        samples.append(elapsed.components.attoseconds / 1_000_000_000 + elapsed.components.seconds * 1_000_000_000)
    }
    return samples
}

let logger = Logger(label: "bench")
print("EventsBenchmark: \(count) events per scenario, server \(serverPath)")

// 1 and 3: a live server.
do {
    let (server, port, directory) = try await startServer(serverPath, jetStream: true)
    defer {
        server.terminate()
        try? FileManager.default.removeItem(at: directory)
    }
    let client = try await NATSClient.connect(options: NATSClientOptions(servers: ["nats://127.0.0.1:\(port)"]))
    let publisher = EventPublisher(jetStream: JetStream(client: client), cluster: "bench", replicas: 1, capacity: count, logger: logger)
    let running = Task { await publisher.run() }
    let started = ContinuousClock.now
    let samples = measureCalls(publisher, count: count)
    while publisher.published + publisher.failed < count { try await Task.sleep(for: .milliseconds(5)) }
    let drained = ContinuousClock.now - started
    print("publish() with a live server:      \(percentiles(samples)); dropped \(publisher.dropped)")
    let seconds = Double(drained.components.seconds) + Double(drained.components.attoseconds) / 1e18
    print("drain to the stream (acknowledged): \(publisher.published) events in \(String(format: "%.2f", seconds)) s = \(Int(Double(publisher.published) / seconds)) events/s, failed \(publisher.failed)")
    running.cancel()
    publisher.finish()
    await running.value
    await client.close()
}

// 2: nothing can be published.
do {
    let (server, port, directory) = try await startServer(serverPath, jetStream: false)
    defer {
        server.terminate()
        try? FileManager.default.removeItem(at: directory)
    }
    let client = try await NATSClient.connect(options: NATSClientOptions(servers: ["nats://127.0.0.1:\(port)"]))
    let publisher = EventPublisher(jetStream: JetStream(client: client, timeout: .milliseconds(200)), cluster: "bench", replicas: 1, logger: logger)
    let running = Task { await publisher.run() }
    let samples = measureCalls(publisher, count: count)
    print("publish() with JetStream off:      \(percentiles(samples)); dropped \(publisher.dropped) of \(count) (buffer \(publisher.capacity))")
    running.cancel()
    publisher.finish()
    await running.value
    await client.close()
}
