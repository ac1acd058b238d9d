/// What one node reports about itself and its apps (the `status` answer of its control
/// service, and what `batonctl status` shows).
public struct NodeStatus: Codable, Sendable, Hashable {
    /// The node id.
    public var node: String
    /// This batond process's instance id.
    public var instance: String
    public var cluster: String
    public var version: String
    /// Whether the node is connected to NATS right now.
    public var natsConnected: Bool
    public var apps: [AppStatus]
    /// The systemd unit batond runs in (`batond.service`), or nil when it does not run under
    /// systemd: then managed units are not bound to batond and a crashed batond leaves them up.
    public var systemdUnit: String?
    /// Whether the node is drained (`batonctl drain`): by whom, since and until when. Nil when not.
    public var drained: String?

    /// Creates a status.
    public init(
        node: String, instance: String, cluster: String, version: String, natsConnected: Bool, apps: [AppStatus], systemdUnit: String? = nil
    ) {
        self.node = node
        self.instance = instance
        self.cluster = cluster
        self.version = version
        self.natsConnected = natsConnected
        self.apps = apps
        self.systemdUnit = systemdUnit
    }

    enum CodingKeys: String, CodingKey {
        case node, instance, cluster, version
        case natsConnected = "nats_connected"
        case apps
        case systemdUnit = "systemd_unit"
        case drained
    }
}

/// One app as one node sees it.
public struct AppStatus: Codable, Sendable, Hashable {
    /// The node's role for this app.
    public enum Role: String, Codable, Sendable, Hashable {
        case passive, acquiring, promoting, active, demoting, fencing, stopped
    }

    public var name: String
    public var role: Role
    public var paused: Bool
    /// When the pause ends by itself (RFC 3339, UTC): set for a pause given an end (`batonctl
    /// pause --for`), nil for an indefinite one (or none).
    public var pausedUntil: String?
    public var priority: Int
    /// The node holding the lease, as far as this node knows.
    public var leader: String?
    /// The fencing token of the current lease, as far as this node knows.
    public var token: UInt64?
    /// Whether this node's backend for the app runs.
    public var backendRunning: Bool
    /// The last notable thing that happened to the app on this node.
    public var lastEvent: String?
    /// How the app's last hooks on this node went (`after_active hooks: 1 of 1 ran, ok`, or
    /// the failures); nil when none ran since batond started.
    public var lastHook: String?
    /// The app's virtual IPs (`address/prefix on interface`), nil or empty when it has none.
    public var vips: [String]?
    /// The app's SQLite replication on this node, if it has a `sqlite:` section.
    public var replication: ReplicationStatus?
    /// Digests of the app's config sections on this node (``ConfigDigest/sections(of:)``), so
    /// that `batonctl doctor` can find nodes whose configs disagree.
    public var configDigests: [String: String]?
    /// What placement says about the app on this node, when it says something: `not eligible:
    /// requires zone=b (this node: zone=a)`, a handover it started, an app kept although this
    /// node is not eligible. Nil when the node is eligible and nothing moves.
    public var placement: String?

    /// Creates an app status.
    public init(
        name: String, role: Role, paused: Bool, priority: Int, leader: String?, token: UInt64?, backendRunning: Bool, lastEvent: String?
    ) {
        self.name = name
        self.role = role
        self.paused = paused
        self.priority = priority
        self.leader = leader
        self.token = token
        self.backendRunning = backendRunning
        self.lastEvent = lastEvent
    }

    enum CodingKeys: String, CodingKey {
        case name, role, paused, priority, leader, token
        case pausedUntil = "paused_until"
        case backendRunning = "backend_running"
        case lastEvent = "last_event"
        case lastHook = "last_hook"
        case vips, replication
        case configDigests = "config_digests"
        case placement
    }
}

extension AppStatus.Role {
    /// The role for a lifecycle phase.
    public init(_ phase: AppLifecycle.Phase) {
        switch phase {
        case .passive: self = .passive
        case .acquiring: self = .acquiring
        case .promoting: self = .promoting
        case .active: self = .active
        case .demoting: self = .demoting
        case .fencing: self = .fencing
        case .stopped: self = .stopped
        }
    }
}

/// The answer to a control command (stepdown, switchover, pause, resume).
public struct ControlReply: Codable, Sendable, Hashable {
    public var ok: Bool
    public var message: String
    /// The snapshot a ``ControlCommand/snapshot`` took.
    public var snapshot: SnapshotReport?
    /// For a pause given an end: when it ends (RFC 3339, UTC). A batond that predates expiring
    /// pauses leaves it out, and its pause is indefinite.
    public var pausedUntil: String?

    /// Creates a reply.
    public init(ok: Bool, message: String, snapshot: SnapshotReport? = nil, pausedUntil: String? = nil) {
        self.ok = ok
        self.message = message
        self.snapshot = snapshot
        self.pausedUntil = pausedUntil
    }

    enum CodingKeys: String, CodingKey {
        case ok, message, snapshot
        case pausedUntil = "paused_until"
    }
}

/// A snapshot of an app's SQLite database in its Object Store bucket (`batonctl snapshot`).
public struct SnapshotReport: Codable, Sendable, Hashable {
    /// The object's name in the snapshot bucket (`snapshot-<txid>-<epoch>`): its id.
    public var id: String
    /// The bucket that holds it.
    public var bucket: String
    /// The transaction id of the snapshot record: the snapshot holds every transaction up to it.
    public var txid: UInt64
    /// The fencing token (epoch) it was taken under.
    public var epoch: UInt64
    /// The database's size in it, in bytes (pages × page size).
    public var bytes: UInt64
    /// The node that took it.
    public var node: String

    /// Creates a report.
    public init(id: String, bucket: String, txid: UInt64, epoch: UInt64, bytes: UInt64, node: String) {
        self.id = id
        self.bucket = bucket
        self.txid = txid
        self.epoch = epoch
        self.bytes = bytes
        self.node = node
    }
}

/// SQLite replication of one app on one node.
public struct ReplicationStatus: Codable, Sendable, Hashable {
    /// What the node does with the database.
    public enum Role: String, Codable, Sendable, Hashable {
        /// Active: the WAL is shipped from the database.
        case shipping
        /// Passive: the active node's records are applied to the replica.
        case applying
        /// Neither (starting, between roles, or stopped after an error).
        case idle
    }

    public var role: Role
    /// The last transaction id shipped (active) or applied (passive).
    public var txid: UInt64?
    /// Transactions the stream holds beyond the applied one (passive), when known.
    public var lagTransactions: UInt64?
    /// Stored bytes of the stream's records beyond the applied position (passive), when known:
    /// the messages behind × the stream's mean stored message size.
    public var lagBytes: UInt64?
    /// How far the replica is behind the active node, in seconds (passive), when known: 0 when
    /// no record is beyond the applied position, else the age of the oldest transaction the
    /// replica lacks (when the active node read it).
    public var lagSeconds: Double?
    /// When the newest snapshot of the app in its snapshot bucket was stored (seconds since
    /// 1970), on active and passive nodes; nil before the first or while unknown.
    public var lastSnapshotTime: Double?
    /// When the last applied transaction was committed on the active node (seconds since 1970).
    public var lastCommitTime: Double?
    /// The last replication error, if the latest attempt failed.
    public var lastError: String?
    /// What the node's last promotion found: the promoted txid, whether the old active node
    /// handed off gracefully, and after a crash failover the time of the last applied transaction
    /// and how much of the stream was beyond the applied position.
    public var promotion: String?
    /// The data-loss facts of the node's last successful promotion, and its epoch (what the
    /// failover flight record reports).
    public var promotionDataLoss: PromotionDataLoss?
    /// Snapshots the shipper published since it started (active). A promotion continues the
    /// stream without one: this stays 0 until the first background snapshot is due.
    public var snapshotsPublished: Int?
    /// Snapshots restored into the replica since the applier started (passive). An old active
    /// node whose database matches its final marker restores none.
    public var snapshotsRestored: Int?
    /// Databases of this app set aside on this node (`<db>.unshipped-<epoch>-<time>`) because
    /// they may hold committed transactions that were never shipped (a final flush that gave
    /// up, an epoch fenced while shipping). Listed while the files exist: removing (or moving)
    /// one acknowledges it.
    public var unshippedDatabases: [String]?
    /// The snapshot restore in progress on a passive node (its initial sync, or a
    /// resynchronisation), nil when none runs.
    public var sync: Sync?

    /// A snapshot restore in progress.
    public struct Sync: Codable, Sendable, Hashable {
        /// True for the initial sync of a new or empty standby, false for a resynchronisation.
        public var initial: Bool
        /// The transaction id the snapshot holds.
        public var txid: UInt64
        /// `downloading` or `verifying`.
        public var phase: String
        /// Bytes downloaded so far.
        public var bytesDone: UInt64
        /// The snapshot's size (0 until known).
        public var bytesTotal: UInt64
        /// Download rate since the restore started, in bytes per second.
        public var bytesPerSecond: Double

        /// Creates a sync report.
        public init(initial: Bool, txid: UInt64, phase: String, bytesDone: UInt64, bytesTotal: UInt64, bytesPerSecond: Double) {
            self.initial = initial
            self.txid = txid
            self.phase = phase
            self.bytesDone = bytesDone
            self.bytesTotal = bytesTotal
            self.bytesPerSecond = bytesPerSecond
        }

        /// Percent downloaded (0 while the size is unknown).
        public var percent: Double { bytesTotal > 0 ? min(100, Double(bytesDone) * 100 / Double(bytesTotal)) : 0 }

        /// `initial sync 41% (105.0 of 256.0 MiB, 98.2 MiB/s) to txid 90`, or
        /// `resync verifying 256.0 MiB of txid 90`, for `batonctl status`.
        public var text: String {
            let what = initial ? "initial sync" : "resync"
            let mib = 1_048_576.0
            if phase == "verifying" {
                return "\(what) verifying " + String(format: "%.1f MiB", Double(bytesTotal) / mib) + " of txid \(txid)"
            }
            return "\(what) "
                + String(format: "%.0f%% (%.1f of %.1f MiB, %.1f MiB/s)", percent, Double(bytesDone) / mib, Double(bytesTotal) / mib, bytesPerSecond / mib)
                + " to txid \(txid)"
        }

        enum CodingKeys: String, CodingKey {
            case initial, txid, phase
            case bytesDone = "bytes_done"
            case bytesTotal = "bytes_total"
            case bytesPerSecond = "bytes_per_second"
        }
    }

    /// Creates a replication status.
    public init(
        role: Role, txid: UInt64? = nil, lagTransactions: UInt64? = nil, lastCommitTime: Double? = nil, lastError: String? = nil,
        promotion: String? = nil
    ) {
        self.role = role
        self.txid = txid
        self.lagTransactions = lagTransactions
        self.lastCommitTime = lastCommitTime
        self.lastError = lastError
        self.promotion = promotion
    }

    enum CodingKeys: String, CodingKey {
        case role, txid
        case lagTransactions = "lag_transactions"
        case lagBytes = "lag_bytes"
        case lagSeconds = "lag_seconds"
        case lastSnapshotTime = "last_snapshot_time"
        case lastCommitTime = "last_commit_time"
        case lastError = "last_error"
        case promotion
        case promotionDataLoss = "promotion_data_loss"
        case snapshotsPublished = "snapshots_published"
        case snapshotsRestored = "snapshots_restored"
        case unshippedDatabases = "unshipped_databases"
        case sync
    }
}

extension NodeStatus {
    /// A one-line summary for `systemctl status` (sd_notify `STATUS=`): the apps grouped by role,
    /// most important first, then the NATS connection, e.g.
    /// `active: web, db; passive: cache; NATS ok`. Paused apps carry `(paused)`.
    public var summaryLine: String {
        let order: [AppStatus.Role] = [.active, .promoting, .acquiring, .demoting, .fencing, .passive, .stopped]
        var parts: [String] = []
        for role in order {
            let names = apps.filter { $0.role == role }.map { $0.paused ? "\($0.name) (paused)" : $0.name }
            if !names.isEmpty { parts.append("\(role.rawValue): \(names.joined(separator: ", "))") }
        }
        if apps.isEmpty { parts.append("no apps") }
        parts.append(natsConnected ? "NATS ok" : "NATS disconnected")
        return parts.joined(separator: "; ")
    }
}
