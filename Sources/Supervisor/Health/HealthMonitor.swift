import BatonCore

/// Counts consecutive probe failures against a threshold, ignoring failures during the grace
/// period after the backend started. Pure: the caller runs the probes and passes the time.
public struct HealthVerdicts: Sendable, Hashable {
    public let failuresAllowed: Int
    public let grace: Duration
    public private(set) var consecutiveFailures = 0
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

/// Watches a backend that passed its first probe: one probe every `health.interval`; once
/// `health.failures` consecutive probes fail after the grace period, `.unhealthy` is reported
/// once and the watch ends. It also ends when `isCurrent` says the backend run it watches is
/// over, or when the task is cancelled. Shared by the process and systemd backends.
func monitorHealth(
    _ health: HealthCheckConfig, prober: HealthProber, isCurrent: @escaping @Sendable () async -> Bool,
    failures: AsyncStream<AppBackendFailure>.Continuation
) -> Task<Void, Never> {
    Task {
        var verdicts = HealthVerdicts(failures: health.failures, grace: health.grace, startedAt: MonotonicClock.now())
        while !Task.isCancelled {
            try? await Task.sleep(for: health.interval)
            guard await isCurrent(), !Task.isCancelled else { return }
            let failure = await prober.check()
            if verdicts.record(healthy: failure == nil, at: MonotonicClock.now()) {
                failures.yield(.unhealthy(failure ?? "unhealthy"))
                return
            }
        }
    }
}
