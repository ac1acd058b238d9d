import BatonCore
import FenceKeeper

extension RestartTracker {
    /// Decides about an exit the fence keeper reported (nil when how it ended is unknown, for
    /// example a systemd unit that went inactive); the status only feeds the reason.
    public mutating func backendExited(_ status: ExitStatus?, at now: MonotonicInstant) -> Decision {
        backendExited(describedAs: status?.description, at: now)
    }
}
