import BatonCore
import NIOCore
import NIOPosix
import Supervisor
import Testing

/// A loopback TCP server that answers every connection with a fixed HTTP response.
private final class FixedResponder: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let response: String
    init(response: String) { self.response = response }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(NIOAny(ByteBuffer(string: response))).whenComplete { _ in bound.value.close(promise: nil) }
    }
}

private func withHTTPServer<T>(status: String, _ body: (Int) async throws -> T) async throws -> T {
    let response = "HTTP/1.1 \(status)\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(FixedResponder(response: response)) }
        }
        .bind(host: "127.0.0.1", port: 0)
        .get()
    let port = channel.localAddress!.port!
    do {
        let result = try await body(port)
        try await channel.close()
        return result
    } catch {
        try? await channel.close()
        throw error
    }
}

@Suite("Health probes")
struct HealthProberTests {
    @Test func httpAnswersAreJudgedByStatus() async throws {
        try await withHTTPServer(status: "200 OK") { port in
            let endpoint = HTTPEndpoint(url: "http://127.0.0.1:\(port)/healthz", isSecure: false, host: "127.0.0.1", port: port, target: "/healthz")
            #expect(await HealthProber(probe: .http(endpoint), timeout: .seconds(2)).check() == nil)
        }
        try await withHTTPServer(status: "503 Service Unavailable") { port in
            let endpoint = HTTPEndpoint(url: "http://127.0.0.1:\(port)/", isSecure: false, host: "127.0.0.1", port: port, target: "/")
            let failure = await HealthProber(probe: .http(endpoint), timeout: .seconds(2)).check()
            #expect(failure == "http://127.0.0.1:\(port)/ answered 503 Service Unavailable")
        }
    }

    @Test func tcpNeedsAListener() async throws {
        try await withHTTPServer(status: "200 OK") { port in
            #expect(await HealthProber(probe: .tcp(HostPort(host: "127.0.0.1", port: port)), timeout: .seconds(2)).check() == nil)
        }
        // A port nobody listens on: bind one, close it, probe it.
        let closed = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = closed.localAddress!.port!
        try await closed.close()
        let failure = await HealthProber(probe: .tcp(HostPort(host: "127.0.0.1", port: port)), timeout: .seconds(2)).check()
        #expect(failure?.contains("refused") == true)
    }

    @Test func execIsJudgedByExitStatusAndTimeout() async throws {
        #expect(await HealthProber(probe: .exec(["/bin/true"]), timeout: .seconds(2)).check() == nil)
        #expect(await HealthProber(probe: .exec(["/bin/false"]), timeout: .seconds(2)).check() == "/bin/false exited with status 1")
        #expect(await HealthProber(probe: .exec(["/bin/sleep", "10"]), timeout: .milliseconds(200)).check() == "/bin/sleep did not finish within 0.2 seconds")
        let missing = await HealthProber(probe: .exec(["/nonexistent/check"]), timeout: .seconds(1)).check()
        #expect(missing != nil)
    }

    @Test func verdictsCountConsecutiveFailuresAfterTheGrace() {
        let start = MonotonicInstant(nanoseconds: 0)
        var verdicts = HealthVerdicts(failures: 3, grace: .seconds(5), startedAt: start)
        let results: [(Bool, Int64)] = [(false, 1), (false, 6), (false, 7), (true, 8), (false, 9), (false, 10), (false, 11)]
        var unhealthyAt: [Int64] = []
        for (healthy, second) in results where verdicts.record(healthy: healthy, at: start + .seconds(second)) {
            unhealthyAt.append(second)
        }
        // The failure in the grace period does not count, a success resets the count, and the
        // third consecutive failure after that is the verdict.
        #expect(unhealthyAt == [11])
    }
}
