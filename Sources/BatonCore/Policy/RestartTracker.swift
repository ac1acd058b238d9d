/// Applies a ``RestartPolicy`` to the exits of a backend that should keep running: restart after
/// the policy's backoff, until more than `maxRestarts` restarts would fall within `window`; then
/// the budget is spent and the node should step down so another one takes over.
///
/// A pure value: the caller passes the time of each exit (on the monotonic clock).
public struct RestartTracker: Sendable, Hashable {
    /// What to do about an exit.
    public enum Decision: Sendable, Hashable {
        /// Start the backend again after this pause.
        case restart(after: Duration)
        /// Do not restart: the budget is spent. The reason is meant for operators.
        case giveUp(String)
    }

    /// The policy applied.
    public let policy: RestartPolicy
    /// When the restarts still inside the window were decided, oldest first.
    public private(set) var recentRestarts: [MonotonicInstant] = []

    /// Creates a tracker with a full budget.
    public init(policy: RestartPolicy) {
        self.policy = policy
    }

    /// Decides about an exit at `now`; `exit` (how it ended, such as `exited with status 1`)
    /// only feeds the reason. The backends pass the fence keeper's `ExitStatus` through an
    /// overload of their own.
    public mutating func backendExited(describedAs exit: String?, at now: MonotonicInstant) -> Decision {
        let windowStart = now - policy.window
        recentRestarts.removeAll { $0 <= windowStart }
        let what = exit.map { "the backend \($0)" } ?? "the backend exited"
        if policy.maxRestarts <= 0 {
            return .giveUp("restart budget spent: \(what) and restarts are disabled (max_restarts 0)")
        }
        if recentRestarts.count >= policy.maxRestarts {
            return .giveUp(
                "restart budget spent: \(what) after \(recentRestarts.count) restarts within \(Self.format(policy.window))")
        }
        recentRestarts.append(now)
        return .restart(after: policy.backoff)
    }

    /// Forgets past restarts (a fresh start, for example after becoming active again).
    public mutating func reset() {
        recentRestarts.removeAll()
    }

    private static func format(_ duration: Duration) -> String {
        let milliseconds = duration.totalNanoseconds / 1_000_000
        if milliseconds % 1000 == 0 { return "\(milliseconds / 1000)s" }
        return "\(milliseconds)ms"
    }
}
