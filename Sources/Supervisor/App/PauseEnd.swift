import BatonCore
import Foundation
import Timestamps

/// Turns the monotonic end of a pause into the wall-clock time status and replies show.
enum PauseEnd {
    /// `until` as RFC 3339 (UTC, whole seconds rounded up), given the monotonic and wall-clock
    /// "now" read together; nil when there is no end.
    static func wallClock(_ until: MonotonicInstant?, now: MonotonicInstant, wallNow: Date) -> String? {
        guard let until else { return nil }
        let left = until - now
        let seconds = Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18
        let end = wallNow.addingTimeInterval(max(0, seconds)).timeIntervalSince1970.rounded(.up)
        return RFC3339.format(secondsSince1970: end)
    }
}
