import AsyncHTTPClient
import BatonCore
import Foundation
import NATSTestSupport
import NIOCore
import NIOPosix
import NIOSSL
import Testing

@testable import Backends
@testable import Control
@testable import Supervisor

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

/// A loopback HTTP server answering `status` to everything; HTTPS with `tls` (the test PKI's
/// server certificate, for 127.0.0.1).
private func withHTTPServer<T>(status: String, tls: TestTLSFiles? = nil, _ body: (Int) async throws -> T) async throws -> T {
    let response = "HTTP/1.1 \(status)\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    let sslContext = try tls.map { files in
        try NIOSSLContext(
            configuration: .makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(files.serverCertificate.path).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: files.serverKey.path, format: .pem))))
    }
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                if let sslContext { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext)) }
                try channel.pipeline.syncOperations.addHandler(FixedResponder(response: response))
            }
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

    /// HTTPS: a server whose certificate chains to a trusted CA is healthy; one the prober cannot
    /// verify (the system trust store does not know the test CA) is not, and says why.
    @Test func httpsVerifiesTheServerCertificate() async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-health-tls")
        defer { try? FileManager.default.removeItem(at: directory) }
        let tls = try TestTLSFiles.generate(in: directory)
        var tlsConfiguration = TLSConfiguration.makeClientConfiguration()
        tlsConfiguration.trustRoots = .file(tls.caCertificate.path)
        var configuration = HTTPClient.Configuration(tlsConfiguration: tlsConfiguration)
        configuration.redirectConfiguration = .disallow
        let trusting = HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton), configuration: configuration)
        defer { _ = trusting.shutdown() }
        try await withHTTPServer(status: "200 OK", tls: tls) { port in
            let endpoint = HTTPEndpoint(url: "https://127.0.0.1:\(port)/healthz", isSecure: true, host: "127.0.0.1", port: port, target: "/healthz")
            #expect(await HealthProber(probe: .http(endpoint), timeout: .seconds(5), httpClient: trusting).check() == nil)
            let untrusted = await HealthProber(probe: .http(endpoint), timeout: .seconds(5)).check()
            #expect(untrusted?.hasPrefix("https://127.0.0.1:\(port)/healthz: ") == true, "\(untrusted ?? "healthy")")
            #expect(untrusted?.lowercased().contains("certificate") == true, "\(untrusted ?? "healthy")")
        }
        try await withHTTPServer(status: "500 Internal Server Error", tls: tls) { port in
            let endpoint = HTTPEndpoint(url: "https://127.0.0.1:\(port)/", isSecure: true, host: "127.0.0.1", port: port, target: "/")
            let failure = await HealthProber(probe: .http(endpoint), timeout: .seconds(5), httpClient: trusting).check()
            #expect(failure == "https://127.0.0.1:\(port)/ answered 500 Internal Server Error")
        }
    }

    /// A redirect is not followed: a probe that answers 3xx is not healthy.
    @Test func redirectsAreNotHealthy() async throws {
        try await withHTTPServer(status: "302 Found\r\nLocation: http://127.0.0.1:1/") { port in
            let endpoint = HTTPEndpoint(url: "http://127.0.0.1:\(port)/", isSecure: false, host: "127.0.0.1", port: port, target: "/")
            #expect(await HealthProber(probe: .http(endpoint), timeout: .seconds(2)).check() == "http://127.0.0.1:\(port)/ answered 302 Found")
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
        // Generous bounds where the verdict is the exit status: a loaded CI machine can take
        // seconds to spawn a process.
        #expect(await HealthProber(probe: .exec(["/bin/true"]), timeout: .seconds(20)).check() == nil)
        #expect(await HealthProber(probe: .exec(["/bin/false"]), timeout: .seconds(20)).check() == "/bin/false exited with status 1")
        #expect(await HealthProber(probe: .exec(["/bin/sleep", "10"]), timeout: .milliseconds(200)).check() == "/bin/sleep did not finish within 0.2 seconds")
        let missing = await HealthProber(probe: .exec(["/nonexistent/check"]), timeout: .seconds(1)).check()
        #expect(missing != nil)
    }

    /// The outcome each probe counts under in `baton_health_probes_total`.
    @Test func outcomesForTheMetrics() async throws {
        #expect(await HealthProber(probe: .exec(["/bin/true"]), timeout: .seconds(20)).probeOnce().outcome == .pass)
        #expect(await HealthProber(probe: .exec(["/bin/false"]), timeout: .seconds(20)).probeOnce().outcome == .fail)
        #expect(await HealthProber(probe: .exec(["/bin/sleep", "10"]), timeout: .milliseconds(200)).probeOnce().outcome == .timeout)
        try await withHTTPServer(status: "503 Service Unavailable") { port in
            let endpoint = HTTPEndpoint(url: "http://127.0.0.1:\(port)/", isSecure: false, host: "127.0.0.1", port: port, target: "/")
            #expect(await HealthProber(probe: .http(endpoint), timeout: .seconds(2)).probeOnce().outcome == .fail)
            #expect(await HealthProber(probe: .tcp(HostPort(host: "127.0.0.1", port: port)), timeout: .seconds(2)).probeOnce().outcome == .pass)
        }
        #expect(HealthProbeMetrics.kind(of: .exec(["/bin/true"])) == "exec")
        #expect(HealthProbeMetrics.kind(of: .tcp(HostPort(host: "127.0.0.1", port: 1))) == "tcp")
    }

    /// A command that times out is killed with everything it started (its process group).
    @Test func aTimedOutCommandIsKilledWithItsChildren() async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-health-exec")
        defer { try? FileManager.default.removeItem(at: directory) }
        let pidFile = directory.appendingPathComponent("child.pid").path
        let failure = await HealthProber(
            probe: .exec(["/bin/sh", "-c", "sleep 30 & echo $! > \(pidFile); wait"]), timeout: .milliseconds(500)
        ).check()
        #expect(failure == "/bin/sh did not finish within 0.5 seconds")
        let child = try #require(Int32(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        // The kill is sent before check() returns; the child is a zombie of no one or gone.
        var gone = false
        for _ in 0..<100 where !gone {
            let state = (try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8))?.split(separator: " ").dropFirst(2).first
            gone = state == nil || state == "Z"
            if !gone { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(gone, "the probe's child \(child) still runs")
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
