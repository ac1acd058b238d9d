import BatonCore
import Metrics

/// How one health probe ended.
public enum HealthProbeOutcome: String, Sendable, Hashable, CaseIterable {
    /// Healthy: the HTTP GET answered 2xx, the TCP connect succeeded, the command exited 0.
    case pass
    /// Unhealthy: another status, a refused connection, a non-zero exit...
    case fail
    /// No answer within the probe's `timeout`.
    case timeout
}

/// Every probe of one app's health check, as metrics (swift-metrics API): the counter
/// `baton_health_probes_total{app,node,probe,outcome}` (`outcome`: pass, fail, timeout) and the
/// gauge `baton_health_probe_duration_seconds{app,node,probe}` (the last probe's duration).
/// `probe` is the probe's kind (`http`, `tcp`, `exec`): an app has one probe.
public struct HealthProbeMetrics: Sendable {
    /// The counter of probes by outcome.
    public static let probesName = "baton_health_probes_total"
    /// The gauge of the last probe's duration.
    public static let durationName = "baton_health_probe_duration_seconds"

    private let dimensions: [(String, String)]
    private let duration: Gauge

    /// The metrics of `probe`, the health probe of `app` on `node`. Every outcome's series exists
    /// from here on, at 0.
    public init(app: String, node: String, probe: HealthProbe) {
        dimensions = [("app", app), ("node", node), ("probe", Self.kind(of: probe))]
        duration = Gauge(label: Self.durationName, dimensions: dimensions)
        for outcome in HealthProbeOutcome.allCases {
            Counter(label: Self.probesName, dimensions: dimensions + [("outcome", outcome.rawValue)]).increment(by: 0)
        }
    }

    /// Counts one probe and records how long it took.
    func record(_ outcome: HealthProbeOutcome, duration took: Duration) {
        Counter(label: Self.probesName, dimensions: dimensions + [("outcome", outcome.rawValue)]).increment()
        let (seconds, attoseconds) = took.components
        duration.record(Double(seconds) + Double(attoseconds) / 1e18)
    }

    /// The `probe` label: `http` (HTTP and HTTPS), `tcp` or `exec`.
    public static func kind(of probe: HealthProbe) -> String {
        switch probe {
        case .http: return "http"
        case .tcp: return "tcp"
        case .exec: return "exec"
        }
    }
}
