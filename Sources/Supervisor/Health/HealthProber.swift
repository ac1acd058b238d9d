import BatonCore
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Runs one health probe (HTTP GET answering 2xx, TCP connect, or a command exiting 0), bounded
/// by a timeout. Never blocks the calling thread.
public struct HealthProber: Sendable {
    public let probe: HealthProbe
    public let timeout: Duration
    let group: any EventLoopGroup

    /// Creates a prober.
    public init(probe: HealthProbe, timeout: Duration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.probe = probe
        self.timeout = timeout
        self.group = group
    }

    /// Runs the probe once: nil when healthy, otherwise what went wrong.
    public func check() async -> String? {
        do {
            switch probe {
            case .tcp(let target):
                let channel = try await connect(host: target.host, port: target.port)
                try? await channel.close()
                return nil
            case .http(let endpoint):
                if endpoint.isSecure { return "https health checks are not supported; use http or tcp" }
                return try await httpGet(endpoint)
            case .exec(let command):
                return try await exec(command)
            }
        } catch {
            return "\(error)"
        }
    }

    private func connect(host: String, port: Int) async throws -> any Channel {
        try await ClientBootstrap(group: group)
            .connectTimeout(.nanoseconds(timeout.totalNanoseconds))
            .connect(host: host, port: port)
            .get()
    }

    private func httpGet(_ endpoint: HTTPEndpoint) async throws -> String? {
        let eventLoop = group.next()
        let collector = ResponseCollector(promise: eventLoop.makePromise(of: String?.self))
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(.nanoseconds(timeout.totalNanoseconds))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
                }
                .connect(host: endpoint.host, port: endpoint.port)
                .get()
        } catch {
            collector.finish(nil)
            throw error
        }
        let request = "GET \(endpoint.target) HTTP/1.1\r\nHost: \(endpoint.host):\(endpoint.port)\r\nUser-Agent: batond\r\nConnection: close\r\n\r\n"
        try await channel.writeAndFlush(ByteBuffer(string: request))
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(timeout.totalNanoseconds)) { channel.close(promise: nil) }
        defer { timer.cancel() }
        guard let statusLine = try await collector.statusLine.get() else {
            try? await channel.close()
            return "\(endpoint) gave no HTTP status line within \(timeout)"
        }
        try? await channel.close()
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), let code = Int(parts[1]) else {
            return "\(endpoint) answered \"\(statusLine)\", not HTTP"
        }
        return (200..<300).contains(code) ? nil : "\(endpoint) answered \(statusLine.dropFirst(parts[0].count + 1))"
    }

    private func exec(_ command: [String]) async throws -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        let status: Int32? = try await withCheckedThrowingContinuation { continuation in
            let once = NIOLockedValueBox(false)
            process.terminationHandler = { finished in
                if once.withLockedValue({ let first = !$0; $0 = true; return first }) {
                    continuation.resume(returning: finished.terminationStatus)
                }
            }
            do {
                try process.run()
            } catch {
                if once.withLockedValue({ let first = !$0; $0 = true; return first }) {
                    continuation.resume(throwing: error)
                }
                return
            }
            let pid = process.processIdentifier
            group.next().scheduleTask(in: .nanoseconds(timeout.totalNanoseconds)) {
                if once.withLockedValue({ let first = !$0; $0 = true; return first }) {
                    kill(pid, SIGKILL)
                    continuation.resume(returning: nil)
                }
            }
        }
        guard let status else { return "\(command[0]) did not finish within \(timeout)" }
        return status == 0 ? nil : "\(command[0]) exited with status \(status)"
    }
}

/// Collects the first line of an HTTP response.
private final class ResponseCollector: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    private let buffer = NIOLockedValueBox(ByteBuffer())
    private let promise: NIOLockedValueBox<EventLoopPromise<String?>?>
    let statusLine: EventLoopFuture<String?>

    init(promise: EventLoopPromise<String?>) {
        self.promise = NIOLockedValueBox(promise)
        self.statusLine = promise.futureResult
    }

    /// Completes the result once; later calls do nothing.
    func finish(_ line: String?) {
        promise.withLockedValue { $0?.succeed(line); $0 = nil }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        let line: String? = buffer.withLockedValue { collected in
            collected.writeBuffer(&incoming)
            guard let newline = collected.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
            let length = newline - collected.readerIndex
            return collected.getString(at: collected.readerIndex, length: length)?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if let line { finish(line) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(nil)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finish(nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.withLockedValue { $0?.fail(error); $0 = nil }
        context.close(promise: nil)
    }
}
