/// Periodic work placed at whole multiples of its interval on the wall clock, so that nodes
/// whose clocks agree (NTP) do it at the same instants and every node receives the others'
/// messages in one burst per interval instead of one wake-up each. Only *when* within an
/// interval something happens depends on the wall clock; no deadline or lease does.
public enum WallClockGrid {
    /// The time from `wallClock` (nanoseconds since 1970) to the next whole multiple of
    /// `interval`: more than zero, at most one interval (a full one when exactly on the grid).
    public static func delay(toNextMultipleOf interval: Duration, wallClock: Int64) -> Duration {
        let length = interval.totalNanoseconds
        guard length > 0 else { return .zero }
        let remainder = ((wallClock % length) + length) % length
        return .nanoseconds(length - remainder)
    }
}
