import BatonCore
#if canImport(Glibc)
import Glibc
#endif

/// Reads the node's monotonic clock (`CLOCK_MONOTONIC`), the clock the fence keeper uses too.
public enum MonotonicClock {
    /// The current instant.
    public static func now() -> MonotonicInstant {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return MonotonicInstant(nanoseconds: Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec))
    }

    /// The wall clock (`CLOCK_REALTIME`) minus the monotonic clock, now. It only places renews
    /// on a grid the nodes share (``AppPlan/renewPhase(renew:wallClockOffset:)``); no lease
    /// decision uses it.
    public static func wallClockOffset() -> Duration {
        var monotonic = timespec()
        var wall = timespec()
        clock_gettime(CLOCK_MONOTONIC, &monotonic)
        clock_gettime(CLOCK_REALTIME, &wall)
        return .seconds(Int64(wall.tv_sec) - Int64(monotonic.tv_sec)) + .nanoseconds(Int64(wall.tv_nsec) - Int64(monotonic.tv_nsec))
    }

    /// The wall clock (`CLOCK_REALTIME`) in nanoseconds since 1970, to place periodic writes
    /// on a grid the nodes share (``WallClockGrid``); never for a lease decision.
    public static func wallClockNanoseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
    }
}
