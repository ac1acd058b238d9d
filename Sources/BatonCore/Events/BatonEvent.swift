/// One entry of a cluster's event history (the JetStream stream `BATON_<cluster>_EVENTS`):
/// something that happened to an app, or to a node, as the node it happened on saw it.
///
/// The JSON form (field names in `snake_case`, absent fields omitted) is the schema README.md
/// documents; ``version`` changes when a field changes meaning.
public struct BatonEvent: Codable, Sendable, Hashable {
    /// What happened.
    public enum Kind: String, Codable, Sendable, Hashable, CaseIterable {
        /// The node started (batond came up and registered).
        case nodeStarted = "node-started"
        /// The node reloaded its config (SIGHUP / `systemctl reload`).
        case configReloaded = "config-reloaded"
        /// The node took the app's lease.
        case acquired
        /// The app became active on the node (every promotion step done, backend healthy).
        case active
        /// The node began stepping the app down (the backend stop starts now).
        case steppingDown = "stepping-down"
        /// The node released the lease after stepping down.
        case released
        /// The node gave the lease up without a confirmed release: it frees at its expiry.
        case releaseUnconfirmed = "release-unconfirmed"
        /// The node fenced the app (backend killed, VIPs removed) to stay within its lease.
        case fenced
        /// Fencing could not confirm the backend gone and the VIPs removed.
        case fenceUnconfirmed = "fence-unconfirmed"
        /// The final WAL flush of a graceful step-down gave up.
        case flushAbandoned = "flush-abandoned"
        /// The backend process exited or its unit went down.
        case backendDown = "backend-down"
        /// The backend was restarted in place by its restart policy.
        case backendRestarted = "backend-restarted"
        /// Another batond runs with this node id.
        case duplicateInstance = "duplicate-instance"
        /// An operator's command reached the node (`batonctl` or the HTTP API): what, about which
        /// app, and who asked (self-reported by the sender; see README "NATS permissions").
        case command
        /// Something the node's VIP or replica adapters reported (a VIP conflict, ...).
        case observed
        /// The app moved to this node after its previous holder's lease ran out (crash, partition).
        case failover
        /// The app moved to this node after its previous holder released it gracefully
        /// (`batonctl switchover` / `stepdown`, a pause or shutdown of that node).
        case switchover
        /// The app's hooks of one point ran (`hooks:`): the detail says which and how it went.
        case hook
    }

    /// The schema version of this record (1).
    public var version: Int
    /// When it happened on the reporting node's wall clock, seconds since 1970 (UTC).
    public var time: Double
    public var cluster: String
    /// The node it happened on (for ``Kind/failover`` and ``Kind/switchover``: the new active node).
    public var node: String
    /// The app; nil for node events (``Kind/nodeStarted``, ``Kind/configReloaded``).
    public var app: String?
    public var kind: Kind
    /// The fencing token concerned, when there is one.
    public var epoch: UInt64?
    /// A human-readable sentence: the reason, what changed.
    public var detail: String?
    /// How long the step the event ends took, in milliseconds: for ``Kind/active`` the time
    /// from taking the lease to healthy; for ``Kind/released`` the step-down from its start.
    public var durationMilliseconds: Double?
    /// The flight record of a failover or switchover.
    public var handover: Handover?

    /// Creates an event.
    public init(
        time: Double, cluster: String, node: String, app: String?, kind: Kind, epoch: UInt64? = nil, detail: String? = nil,
        durationMilliseconds: Double? = nil, handover: Handover? = nil
    ) {
        self.version = 1
        self.time = time
        self.cluster = cluster
        self.node = node
        self.app = app
        self.kind = kind
        self.epoch = epoch
        self.detail = detail
        self.durationMilliseconds = durationMilliseconds
        self.handover = handover
    }

    enum CodingKeys: String, CodingKey {
        case version = "v"
        case time, cluster, node, app, kind, epoch, detail
        case durationMilliseconds = "duration_ms"
        case handover
    }

    /// The flight record of one failover or switchover, written once by the new active node
    /// when the app is healthy there.
    public struct Handover: Codable, Sendable, Hashable {
        /// Where downtime was measured from.
        public enum DowntimeStart: String, Codable, Sendable, Hashable {
            /// The old active node's `stepping-down` event (its backend stop began then), read
            /// from the event stream; across two nodes' wall clocks.
            case oldBackendStop = "old-backend-stop"
            /// When this node saw the old holder release the lease (the old node's
            /// `stepping-down` event was not found); the backend stopped before.
            case releaseSeen = "release-seen"
            /// The last lease renew of the old holder this node saw (it crashed or was cut off):
            /// measured on this node's monotonic clock.
            case lastRenewSeen = "last-renew-seen"
            /// This node saw no lease of the old holder (it started after the old holder's
            /// lease was gone): measured from this node's acquire, a lower bound.
            case acquire
        }

        /// The previous holder's node, when this node saw it.
        public var fromNode: String?
        /// The previous holder's fencing token, when this node saw it.
        public var fromEpoch: UInt64?
        /// The new active node (same as the event's node).
        public var toNode: String
        /// The new fencing token.
        public var toEpoch: UInt64
        /// Whether the old holder released the lease gracefully (switchover, stepdown).
        public var graceful: Bool
        /// The switchover target the old holder named, if any.
        public var requestedTarget: String?
        /// Downtime in milliseconds: from ``downtimeFrom`` until the new backend was healthy.
        public var downtimeMilliseconds: Double
        /// Where ``downtimeMilliseconds`` starts.
        public var downtimeFrom: DowntimeStart
        /// What the app's SQLite replication lost, nil when the app has no `sqlite:` section.
        public var dataLoss: DataLoss?

        /// Creates a flight record.
        public init(
            fromNode: String?, fromEpoch: UInt64?, toNode: String, toEpoch: UInt64, graceful: Bool, requestedTarget: String?,
            downtimeMilliseconds: Double, downtimeFrom: DowntimeStart, dataLoss: DataLoss?
        ) {
            self.fromNode = fromNode
            self.fromEpoch = fromEpoch
            self.toNode = toNode
            self.toEpoch = toEpoch
            self.graceful = graceful
            self.requestedTarget = requestedTarget
            self.downtimeMilliseconds = downtimeMilliseconds
            self.downtimeFrom = downtimeFrom
            self.dataLoss = dataLoss
        }

        enum CodingKeys: String, CodingKey {
            case fromNode = "from_node"
            case fromEpoch = "from_epoch"
            case toNode = "to_node"
            case toEpoch = "to_epoch"
            case graceful
            case requestedTarget = "requested_target"
            case downtimeMilliseconds = "downtime_ms"
            case downtimeFrom = "downtime_from"
            case dataLoss = "data_loss"
        }
    }

    /// What a promotion found about transactions of the old active node.
    public struct DataLoss: Codable, Sendable, Hashable {
        /// The transaction id the new active node promoted (nil: nothing replicated yet).
        public var promotedTxid: UInt64?
        /// The newest transaction id the old active node shipped, as the replication stream
        /// holds it (nil when unknown: nothing replicated, or promotion recovered without the stream).
        public var lastShippedTxid: UInt64?
        /// Shipped transaction ids the promotion did not apply: `lastShippedTxid - promotedTxid`
        /// (0 when the drain applied everything); nil when either side is unknown.
        public var lostShippedTxids: UInt64?
        /// Whether the old active node's final marker was applied: then nothing it committed was lost.
        public var finalMarker: Bool
        /// Whether a trailing record whose writer died mid-record was dropped (its
        /// transactions are lost).
        public var discardedIncompleteRecord: Bool
        /// How long before the promotion the old active node read its last shipped transaction,
        /// in milliseconds (crash failover: the window of commits that may not have been shipped).
        public var lastTransactionAgeMilliseconds: Double?
        /// What could not have been shipped: "none" after a final marker; otherwise the
        /// sentence saying that commits after `lastShippedTxid` on the old node are lost and
        /// cannot be counted from here.
        public var unshipped: String

        /// Creates a data-loss record.
        public init(
            promotedTxid: UInt64?, lastShippedTxid: UInt64?, finalMarker: Bool, discardedIncompleteRecord: Bool,
            lastTransactionAgeMilliseconds: Double?, unshipped: String
        ) {
            self.promotedTxid = promotedTxid
            self.lastShippedTxid = lastShippedTxid
            if let promotedTxid, let lastShippedTxid {
                self.lostShippedTxids = lastShippedTxid > promotedTxid ? lastShippedTxid - promotedTxid : 0
            } else {
                self.lostShippedTxids = nil
            }
            self.finalMarker = finalMarker
            self.discardedIncompleteRecord = discardedIncompleteRecord
            self.lastTransactionAgeMilliseconds = lastTransactionAgeMilliseconds
            self.unshipped = unshipped
        }

        enum CodingKeys: String, CodingKey {
            case promotedTxid = "promoted_txid"
            case lastShippedTxid = "last_shipped_txid"
            case lostShippedTxids = "lost_shipped_txids"
            case finalMarker = "final_marker"
            case discardedIncompleteRecord = "discarded_incomplete_record"
            case lastTransactionAgeMilliseconds = "last_transaction_age_ms"
            case unshipped
        }
    }
}

/// Subject and stream names of a cluster's event history.
public enum EventSubjects {
    /// The stream: `BATON_<cluster>_EVENTS`.
    public static func stream(cluster: String) -> String { "BATON_\(cluster)_EVENTS" }
    /// Every event subject of a cluster: `baton.<cluster>.events.>`.
    public static func all(cluster: String) -> String { "baton.\(cluster).events.>" }
    /// Every event of one app: `baton.<cluster>.events.<app>.*`.
    public static func app(cluster: String, app: String) -> String { "baton.\(cluster).events.\(app).*" }
    /// Where an event goes: `baton.<cluster>.events.<app or _node>.<kind>`. App names are
    /// `[a-z0-9-]`, so `_node` never collides with one.
    public static func subject(cluster: String, app: String?, kind: BatonEvent.Kind) -> String {
        "baton.\(cluster).events.\(app ?? "_node").\(kind.rawValue)"
    }
}

/// The data-loss facts of one promotion, under its epoch (see ``ReplicationStatus/promotionDataLoss``).
public struct PromotionDataLoss: Codable, Sendable, Hashable {
    /// The fencing token the promotion ran under.
    public var epoch: UInt64
    public var dataLoss: BatonEvent.DataLoss

    /// Creates the facts of a promotion under `epoch`.
    public init(epoch: UInt64, dataLoss: BatonEvent.DataLoss) {
        self.epoch = epoch
        self.dataLoss = dataLoss
    }

    enum CodingKeys: String, CodingKey {
        case epoch
        case dataLoss = "data_loss"
    }
}
