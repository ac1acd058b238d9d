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
}
