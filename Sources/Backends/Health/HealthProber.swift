import AsyncHTTPClient
import BatonCore
import Foundation
import NIOCore
import NIOPosix
import Subprocess

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Runs one health probe (HTTP or HTTPS GET answering 2xx, TCP connect, or a command exiting
/// 0), bounded by a timeout. Never blocks the calling thread.
///
/// HTTP probes use AsyncHTTPClient (HTTPS verifies the certificate against the system's trust
/// store; redirects are not followed: a 3xx is unhealthy); command probes run through
/// swift-subprocess in a process group of their own, which is killed whole when the timeout
/// passes.
public struct HealthProber: Sendable {
    public let probe: HealthProbe
    public let timeout: Duration
    let group: any EventLoopGroup
    let httpClient: HTTPClient
    /// Where each probe's outcome and duration go (nil: nowhere).
    let metrics: HealthProbeMetrics?

    /// Creates a prober. With `metrics`, every probe is counted by outcome and its duration
    /// recorded (``HealthProbeMetrics``).
    public init(
        probe: HealthProbe, timeout: Duration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, metrics: HealthProbeMetrics? = nil
    ) {
        self.init(probe: probe, timeout: timeout, group: group, httpClient: Self.sharedHTTPClient, metrics: metrics)
    }

    /// Creates a prober that makes its HTTP requests with `httpClient` (tests: one that trusts
    /// a test CA).
    init(
        probe: HealthProbe, timeout: Duration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, httpClient: HTTPClient,
        metrics: HealthProbeMetrics? = nil
    ) {
        self.probe = probe
        self.timeout = timeout
        self.group = group
        self.httpClient = httpClient
        self.metrics = metrics
    }

    /// One client for every probe of the process: no redirects, no connection reuse (a probe
    /// should see a fresh connect, as a client would).
    static let sharedHTTPClient: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.connectionPool = .init(idleTimeout: .seconds(1), concurrentHTTP1ConnectionsPerHostSoftLimit: 8)
        configuration.maximumUsesPerConnection = 1
        return HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton), configuration: configuration)
    }()

    /// Runs the probe once: nil when healthy, otherwise what went wrong.
    public func check() async -> String? {
        let started = ContinuousClock.now
        let result = await probeOnce()
        metrics?.record(result.outcome, duration: ContinuousClock.now - started)
        return result.failure
    }

    /// One probe: its failure (nil when healthy) and its outcome for the metrics.
    func probeOnce() async -> (failure: String?, outcome: HealthProbeOutcome) {
        do {
            switch probe {
            case .tcp(let target):
                let channel = try await connect(host: target.host, port: target.port)
                try? await channel.close()
                return (nil, .pass)
            case .http(let endpoint):
                return try await httpGet(endpoint)
            case .exec(let command):
                return try await exec(command)
            }
        } catch let error as ChannelError {
            if case .connectTimeout = error { return ("\(error)", .timeout) }
            return ("\(error)", .fail)
        } catch {
            return ("\(error)", .fail)
        }
    }

    private func connect(host: String, port: Int) async throws -> any Channel {
        try await ClientBootstrap(group: group)
            .connectTimeout(.nanoseconds(timeout.totalNanoseconds))
            .connect(host: host, port: port)
            .get()
    }

    private func httpGet(_ endpoint: HTTPEndpoint) async throws -> (failure: String?, outcome: HealthProbeOutcome) {
        var request = HTTPClientRequest(url: endpoint.url)
        request.method = .GET
        request.headers.add(name: "User-Agent", value: "batond")
        let response: HTTPClientResponse
        do {
            response = try await httpClient.execute(request, timeout: .nanoseconds(timeout.totalNanoseconds))
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .connectTimeout || error == .readTimeout {
            return ("\(endpoint) gave no answer within \(timeout)", .timeout)
        } catch {
            return ("\(endpoint): \(error)", .fail)
        }
        // Read (and drop) at most a little of the body, so the connection closes cleanly.
        _ = try? await response.body.collect(upTo: 64 * 1024)
        let status = response.status
        return (200..<300).contains(status.code) ? (nil, .pass) : ("\(endpoint) answered \(status.code) \(status.reasonPhrase)", .fail)
    }

    private func exec(_ command: [String]) async throws -> (failure: String?, outcome: HealthProbeOutcome) {
        let timeout = timeout
        // A group of its own: the timeout kills the command and whatever it started.
        let status = try await terminationStatus(within: timeout) { options in
            try await Subprocess.run(
                .path(FilePath(command[0])), arguments: Arguments(Array(command.dropFirst())), platformOptions: options,
                input: .none, output: .discarded, error: .discarded
            ).terminationStatus
        }
        guard let status else { return ("\(command[0]) did not finish within \(timeout)", .timeout) }
        switch status {
        case .exited(0): return (nil, .pass)
        case .exited(let code): return ("\(command[0]) exited with status \(code)", .fail)
        case .signaled(let signal): return ("\(command[0]) was killed by signal \(signal)", .fail)
        }
    }
}
