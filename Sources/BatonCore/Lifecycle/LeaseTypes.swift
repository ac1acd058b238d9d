// The lease as the lifecycle sees it: who holds it, what a watch reports, how a write fails,
// and the lease this node holds or last saw held by another. The timing rules of a lease (when
// to fence, when to take over) are ``LeaseTiming``'s.

/// Who holds an app's lease: a node id and the batond instance (one per process start).
public struct LeaseHolder: Sendable, Hashable, CustomStringConvertible {
    public var node: String
    public var instance: String

    /// Creates a holder.
    public init(node: String, instance: String) {
        self.node = node
        self.instance = instance
    }

    public var description: String { "\(node)/\(instance)" }
}

/// What a node saw of the lease key.
public enum LeaseObservation: Sendable, Hashable {
    /// Someone holds it: the entry's revision, the fencing token (revision of the acquiring
    /// write) and the holder's ttl (nil when the record does not say: a Baton before 0.9).
    /// Every node judges a lease by its holder's ttl, never by its own config.
    case held(LeaseHolder, revision: UInt64, token: UInt64, ttl: Duration? = nil)
    /// Nobody holds it and nobody is to be waited out. `handoffTo` names the node a switchover
    /// hands the lease to. (Lease watches report ``released(_:token:handoffTo:)`` or
    /// ``vanished`` instead, which say whose lease ended.)
    case free(handoffTo: String?)
    /// The key was deleted with a note naming the holder and the token it releases: Baton's own
    /// release. It frees the lease at once only when it names the lease this node last saw (or
    /// a later one); otherwise it counts as ``vanished``.
    case released(LeaseHolder, token: UInt64, handoffTo: String?)
    /// The key is absent and nothing says whose lease ended: a delete or purge without a release
    /// note (an operator's `nats kv del`, an expiry marker), a bucket deleted and recreated, or
    /// nothing stored yet. The last holder seen, if any, is still waited out by its own timing:
    /// it may be cut off from NATS and still running.
    case vanished
}

/// Why a lease write did not go through.
public enum LeaseWriteFailure: Sendable, Hashable {
    /// The compare-and-set lost: someone else's write is there.
    case conflict
    /// No answer (timeout, disconnected): the write may or may not have happened.
    case unavailable(String)
}

extension AppLifecycle {
    /// The lease this node holds.
    public struct HeldLease: Sendable, Hashable {
        /// The fencing token: revision of the acquiring write.
        public var token: UInt64
        /// The latest revision written by this node.
        public var revision: UInt64
        /// When the latest successful write was sent.
        public var lastSentAt: MonotonicInstant

        /// Creates a held lease.
        public init(token: UInt64, revision: UInt64, lastSentAt: MonotonicInstant) {
            self.token = token
            self.revision = revision
            self.lastSentAt = lastSentAt
        }
    }

    /// What this node last saw of another holder.
    public struct ObservedLease: Sendable, Hashable {
        public var holder: LeaseHolder
        public var revision: UInt64
        public var token: UInt64
        /// The holder's ttl, as its record says (nil: not said; this node's own ttl is used).
        public var ttl: Duration?
        public var seenAt: MonotonicInstant
    }
}
