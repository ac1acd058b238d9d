import BatonCore

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

/// Probes a backend that was just started until the first probe passes, one probe every
/// `health.interval`: the wait both backends run for ``AppBackend/waitUntilHealthy(token:)``.
/// Returns on the first healthy probe; throws ``HealthCheckFailed`` with `stopped` (what ended
/// the wait, such as `unit web.service stopped before it was healthy`) and the last probe's
/// failure once `isCurrent` says the run it waits for is over, and `CancellationError` when the
/// task is cancelled during a pause.
func awaitFirstHealthyProbe(
    _ health: HealthCheckConfig, prober: HealthProber, stopped: String, isCurrent: @Sendable () async -> Bool
) async throws {
    var lastFailure = "no probe yet"
    while await isCurrent(), !Task.isCancelled {
        guard let failure = await prober.check() else { return }
        lastFailure = failure
        try await Task.sleep(for: health.interval)
    }
    throw HealthCheckFailed(reason: "\(stopped) (last probe: \(lastFailure))")
}
