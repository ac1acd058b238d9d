/// Counts consecutive probe failures against a threshold, ignoring failures during the grace
/// period after the backend started. Pure: the caller runs the probes and passes the time.
public struct HealthVerdicts: Sendable, Hashable {
    /// How many consecutive failures make the backend unhealthy (`health.failures`).
    public let failuresAllowed: Int
    /// How long after the start failures do not count (`health.grace`).
    public let grace: Duration
    /// Failures in a row so far (after the grace period).
    public private(set) var consecutiveFailures = 0
    /// When the backend started.
    public private(set) var startedAt: MonotonicInstant

    /// Creates a counter for a backend started at `startedAt`.
    public init(failures: Int, grace: Duration, startedAt: MonotonicInstant) {
        self.failuresAllowed = failures
        self.grace = grace
        self.startedAt = startedAt
    }

    /// Records one probe result; returns true when the backend must be declared unhealthy.
    public mutating func record(healthy: Bool, at now: MonotonicInstant) -> Bool {
        if healthy {
            consecutiveFailures = 0
            return false
        }
        if now < startedAt + grace { return false }
        consecutiveFailures += 1
        return consecutiveFailures >= failuresAllowed
    }
}
