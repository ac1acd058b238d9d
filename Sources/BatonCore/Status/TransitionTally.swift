/// Turns one app's lifecycle notifications into the transitions batond's metrics count: fences
/// by cause, takeovers (failovers) and handovers (switchover, stepdown) by outcome. Pure: the
/// supervisor feeds it what happened and records what it returns.
public struct TransitionTally: Sendable, Hashable {
    /// Why a node fenced, as a metric label (a fixed set, unlike the reason text).
    public enum FenceCause: String, Sendable, Hashable, CaseIterable {
        /// No renew succeeded in time: the node fenced before its lease could expire.
        case renewDeadline = "renew_deadline"
        /// Another holder took the lease (a renew lost its compare-and-set, or the watch saw it).
        case leaseTaken = "lease_taken"
        /// The lease key vanished.
        case leaseVanished = "lease_vanished"
        /// A graceful stop did not finish or did not confirm the backend gone.
        case stopFailed = "stop_failed"
        /// Removing the virtual IPs failed or did not finish.
        case vipRemovalFailed = "vip_removal_failed"
        /// Anything else.
        case other

        /// The cause of a fence from its reason text (``AppLifecycle/Notification/fenced(token:reason:)``).
        public init(reason: String) {
            if reason.hasPrefix("no successful renew") {
                self = .renewDeadline
            } else if reason.hasPrefix("renew lost the compare-and-set") || reason.contains("holds the lease now") {
                self = .leaseTaken
            } else if reason.hasPrefix("the lease key vanished") {
                self = .leaseVanished
            } else if reason.contains("graceful stop did not") {
                self = .stopFailed
            } else if reason.hasPrefix("removing the virtual IPs") {
                self = .vipRemovalFailed
            } else {
                self = .other
            }
        }
    }

    /// What to count.
    public enum Event: Sendable, Hashable {
        /// The node fenced.
        case fenced(FenceCause)
        /// A takeover of a lease its holder did not release (a failover) ended: `active` or `failed`.
        case failover(outcome: String)
        /// A handover this node started (`stepdown` or `switchover`) ended: `released` (the
        /// lease went to the others), `release_unconfirmed` or `fenced`.
        case handover(kind: String, outcome: String)
    }

    private var takeover = false
    private var handover: String?

    /// An empty tally.
    public init() {}

    /// The node sends a lease acquisition; `takeover` when it replaces a holder's stale lease
    /// (the holder did not release it: a failover).
    public mutating func acquiring(takeover: Bool) {
        self.takeover = takeover
    }

    /// Records a notification; returns what to count.
    public mutating func observe(_ notification: AppLifecycle.Notification) -> [Event] {
        var events: [Event] = []
        switch notification {
        case .becameActive:
            if takeover { events.append(.failover(outcome: "active")) }
            takeover = false
        case .demoting(let reason):
            if takeover, case .promotionFailed = reason { events.append(.failover(outcome: "failed")) }
            takeover = false
            switch reason {
            case .stepdown: handover = "stepdown"
            case .switchover: handover = "switchover"
            default: handover = nil
            }
        case .released:
            if let kind = handover { events.append(.handover(kind: kind, outcome: "released")) }
            handover = nil
        case .releaseUnconfirmed:
            if let kind = handover { events.append(.handover(kind: kind, outcome: "release_unconfirmed")) }
            handover = nil
        case .fenced(_, let reason):
            events.append(.fenced(FenceCause(reason: reason)))
            if takeover { events.append(.failover(outcome: "failed")) }
            if let kind = handover { events.append(.handover(kind: kind, outcome: "fenced")) }
            takeover = false
            handover = nil
        default:
            break
        }
        return events
    }
}
