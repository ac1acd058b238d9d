import BatonCore
import CoreMetrics
import Metrics

/// The metric names batond's libraries emit through the swift-metrics API (batond bootstraps a
/// Prometheus backend; without one they go nowhere). Every app metric carries `app` and `node`
/// labels; the README lists them with their other labels.
public enum BatonMetricName {
    /// Histogram: time from sending a lease renew to its answer (`app`, `node`).
    public static let renewDuration = "baton_lease_renew_duration_seconds"
    /// Counter: renews that failed (`app`, `node`).
    public static let renewFailures = "baton_lease_renew_failures_total"
    /// Gauge: seconds since the last successful lease write of the held lease; 0 when not held.
    public static let leaseAge = "baton_lease_age_seconds"
    /// Gauge: seconds until this node must have fenced if no renew succeeds; 0 when not held.
    public static let timeToFence = "baton_lease_time_to_fence_seconds"
    /// Histogram: duration of each transition step (`app`, `node`, `step`: lease,
    /// promote_replica, claim_addresses, start_backend, await_healthy, stop_backend,
    /// flush_replica, release_addresses, release_lease).
    public static let stepDuration = "baton_transition_step_duration_seconds"
    /// Counter: fences by cause (`app`, `node`, `cause`).
    public static let fencingEvents = "baton_fencing_events_total"
    /// Counter: takeovers of a lease its holder did not release, by outcome (`app`, `node`,
    /// `outcome`: active, failed), counted on the node that took over.
    public static let failovers = "baton_failovers_total"
    /// Counter: handovers this node started, by kind and outcome (`app`, `node`, `kind`:
    /// switchover, stepdown; `outcome`: released, release_unconfirmed, fenced).
    public static let switchovers = "baton_switchovers_total"
    /// Counter: backend restarts after it went down while active (`app`, `node`).
    public static let backendRestarts = "baton_backend_restarts_total"
    /// Counter: health verdicts (`app`, `node`, `result`: healthy — a start's health step passed —,
    /// unhealthy — a start's health step failed or the running backend failed its checks).
    public static let healthChecks = "baton_health_checks_total"
    /// Gauge: virtual IPs this node holds for the app (claimed and not yet released or fenced).
    public static let vipsPresent = "baton_vips_present"
}

/// One app's metrics on one node: what ``AppSupervisor`` records as it executes the
/// lifecycle's actions.
struct AppMetrics: Sendable {
    let app: String
    let node: String
    private let dimensions: [(String, String)]
    private let renewDuration: Metrics.Timer
    private let renewFailures: Counter
    private let leaseAge: Gauge
    private let timeToFence: Gauge
    private let vipsPresent: Gauge

    init(app: String, node: String) {
        self.app = app
        self.node = node
        dimensions = [("app", app), ("node", node)]
        renewDuration = Metrics.Timer(label: BatonMetricName.renewDuration, dimensions: dimensions)
        renewFailures = Counter(label: BatonMetricName.renewFailures, dimensions: dimensions)
        leaseAge = Gauge(label: BatonMetricName.leaseAge, dimensions: dimensions)
        timeToFence = Gauge(label: BatonMetricName.timeToFence, dimensions: dimensions)
        vipsPresent = Gauge(label: BatonMetricName.vipsPresent, dimensions: dimensions)
        vipsPresent.record(0)
        // Every labelled series exists from the start (at zero), so `increase()` and alert rules
        // see the first event, and a dashboard lists every series.
        renewFailures.increment(by: 0)
        for cause in TransitionTally.FenceCause.allCases {
            Counter(label: BatonMetricName.fencingEvents, dimensions: dimensions + [("cause", cause.rawValue)]).increment(by: 0)
        }
        for outcome in ["active", "failed"] {
            Counter(label: BatonMetricName.failovers, dimensions: dimensions + [("outcome", outcome)]).increment(by: 0)
        }
        for kind in ["stepdown", "switchover"] {
            for outcome in ["released", "release_unconfirmed", "fenced"] {
                Counter(label: BatonMetricName.switchovers, dimensions: dimensions + [("kind", kind), ("outcome", outcome)]).increment(by: 0)
            }
        }
        for result in ["healthy", "unhealthy"] {
            Counter(label: BatonMetricName.healthChecks, dimensions: dimensions + [("result", result)]).increment(by: 0)
        }
        Counter(label: BatonMetricName.backendRestarts, dimensions: dimensions).increment(by: 0)
        for step in Self.steps {
            _ = Metrics.Timer(label: BatonMetricName.stepDuration, dimensions: dimensions + [("step", step)])
        }
    }

    /// The `step` labels of ``BatonMetricName/stepDuration``.
    static let steps = [
        "lease", "promote_replica", "claim_addresses", "start_backend", "await_healthy", "stop_backend", "flush_replica", "release_addresses",
        "release_lease",
    ]

    func renewed(after duration: Duration, failed: Bool) {
        renewDuration.recordNanoseconds(Self.nanoseconds(duration))
        if failed { renewFailures.increment() }
    }

    /// The held lease's age and time left before fencing, at `now` (zero when none is held).
    func lease(_ held: AppLifecycle.HeldLease?, timing: LeaseTiming, now: MonotonicInstant) {
        guard let held else {
            leaseAge.record(0)
            timeToFence.record(0)
            return
        }
        leaseAge.record(Self.seconds(now - held.lastSentAt))
        timeToFence.record(max(0, Self.seconds(timing.fenceAt(sentAt: held.lastSentAt) - now)))
    }

    func step(_ step: String, took duration: Duration) {
        Metrics.Timer(label: BatonMetricName.stepDuration, dimensions: dimensions + [("step", step)]).recordNanoseconds(Self.nanoseconds(duration))
    }

    func vips(_ count: Int) { vipsPresent.record(count) }

    func health(healthy: Bool) {
        Counter(label: BatonMetricName.healthChecks, dimensions: dimensions + [("result", healthy ? "healthy" : "unhealthy")]).increment()
    }

    func record(_ events: [TransitionTally.Event]) {
        for event in events {
            switch event {
            case .fenced(let cause):
                Counter(label: BatonMetricName.fencingEvents, dimensions: dimensions + [("cause", cause.rawValue)]).increment()
            case .failover(let outcome):
                Counter(label: BatonMetricName.failovers, dimensions: dimensions + [("outcome", outcome)]).increment()
            case .handover(let kind, let outcome):
                Counter(label: BatonMetricName.switchovers, dimensions: dimensions + [("kind", kind), ("outcome", outcome)]).increment()
            }
        }
    }

    static func backendRestarted(app: String, node: String) {
        Counter(label: BatonMetricName.backendRestarts, dimensions: [("app", app), ("node", node)]).increment()
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
