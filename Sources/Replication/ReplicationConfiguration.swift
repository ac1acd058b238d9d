import Foundation
import NATS

/// Where and how one app's SQLite database is replicated.
public struct ReplicationConfiguration: Sendable, Hashable {
    /// The Baton cluster name (namespaces streams, subjects and buckets).
    public var cluster: String
    /// The app name.
    public var app: String
    /// This node's id (names its durable consumer).
    public var nodeID: String
    /// The app's database (`sqlite.path`).
    public var databasePath: String
    /// Where this node keeps the replica and its applied position (`node.state_dir`).
    public var stateDirectory: String
    /// JetStream replicas for the stream and the snapshot bucket.
    public var streamReplicas: Int = 1
    /// The stream's `max_msgs` (nil: no limit). A passive node that falls further behind
    /// restores a snapshot.
    public var streamMaxMessages: Int64?
    /// The stream's `max_bytes` (nil: no limit). The oldest records go when it is full, and
    /// the shipper takes a snapshot before half of it is written since the last one, so a
    /// passive node always finds a snapshot plus the records after it. JetStream reserves it.
    public var streamMaxBytes: Int64?
    /// The snapshot bucket's `max_bytes` (nil: no limit). Old snapshots are pruned (down to
    /// one) to make room for a new one. JetStream reserves it.
    public var snapshotBucketMaxBytes: Int64?
    /// Whether the shipper raises the snapshot bucket's `max_bytes` to twice a snapshot's size
    /// (rounded up to a GiB) when a snapshot would not fit, instead of failing; it never lowers
    /// it. On when `snapshot_max_bytes` is not set (or `auto`).
    public var snapshotBucketGrows: Bool = false
    /// The stream's `max_age` (nil: no limit).
    public var streamMaxAge: Duration?
    /// How many snapshots the bucket keeps.
    public var snapshotsToKeep: Int = 3
    /// How often the shipper looks at the `-wal` file when no write to it woke the shipper.
    public var pollInterval: Duration = .milliseconds(50)
    /// The shipper publishes at most one record per this interval: commits that come sooner
    /// wait and go into the next record together. Every record costs the passive nodes a write,
    /// an fsync and a position update, so this bounds their work under a high commit rate, at
    /// the price of up to this much lag. Zero: a record as soon as a commit is seen.
    public var minimumRecordInterval: Duration = .milliseconds(5)
    /// The shipper checkpoints (PASSIVE, behind its write barrier) once the WAL holds this many
    /// shipped frames.
    public var checkpointAfterFrames: Int = 1000
    /// Pages after which the shipper cuts a record (several transactions go into one record up
    /// to this many frames; a bigger single transaction is one record, chunked).
    public var maxFramesPerRecord: Int = 2048
    /// A new snapshot is taken after this many stream messages since the last one, so the
    /// stream's retention never leaves a passive node without a snapshot plus the records after
    /// it. Nil: half of ``streamMaxMessages``, or 100 000 without a limit.
    public var snapshotAfterMessages: Int?
    /// A new snapshot is also taken when the last one is this old (nil: only by message count
    /// and retention), so a passive node that must restore never replays more than this much.
    public var snapshotInterval: Duration?
    /// A snapshot is also taken when a node starting over would spend this many times longer
    /// replaying the records since the last snapshot than restoring a new one (0: never for
    /// this reason); see ``snapshotIsCheaperThanReplay(messages:bytes:databaseBytes:replayRatio:sinceLastSnapshot:lastSnapshotTook:)``.
    public var snapshotReplayRatio: Int = defaultSnapshotReplayRatio
    /// How long the shipper's write barrier (`BEGIN IMMEDIATE`) waits for the app's writer.
    public var barrierTimeout: Duration = .seconds(2)
    /// The applier's pull requests ask for at most this many bytes (`max_bytes`; raised to the
    /// server's max_payload plus room for subjects when smaller), so the data in flight to a
    /// passive node stays bounded however far behind it is: the server never queues more than
    /// this for the connection, far below its slow-consumer limit (64 MiB by default).
    public var fetchMaxBytes: Int = 4 * 1024 * 1024
    /// The applier's pull requests ask for at most this many messages.
    public var fetchMaxMessages: Int = 256
    /// Whether a promotion re-reads the whole replica file (its page hashes against the
    /// position) and runs `PRAGMA quick_check` before moving it into place. Off, a promotion
    /// right after the applier stopped takes the page hashes the applier verified against the
    /// active node's checksum of every record it applied, and reads nothing: its cost does not
    /// grow with the database (`sqlite.promotion_check: checksums`, the default).
    public var promotionReadsReplica: Bool = false

    /// Creates a configuration with default tuning.
    public init(cluster: String, app: String, nodeID: String, databasePath: String, stateDirectory: String) {
        self.cluster = cluster
        self.app = app
        self.nodeID = nodeID
        self.databasePath = databasePath
        self.stateDirectory = stateDirectory
    }

    /// The names derived from the cluster, app and node.
    public var names: ReplicationNames { ReplicationNames(cluster: cluster, app: app, nodeID: nodeID) }

    /// The replica file on a passive node.
    public var replicaPath: String { (stateDirectory as NSString).appendingPathComponent("\(app).replica.db") }
    /// The applied position next to the replica.
    public var positionPath: String { (stateDirectory as NSString).appendingPathComponent("\(app).position.json") }

    var effectiveSnapshotAfterMessages: Int {
        if let snapshotAfterMessages { return max(1, snapshotAfterMessages) }
        if let max = streamMaxMessages, max > 0 { return Swift.max(1, Int(max / 2)) }
        return 100_000
    }

    /// The bucket `max_bytes` a growing snapshot bucket (``snapshotBucketGrows``) needs for a
    /// snapshot of `size` bytes: room for it and the next one, in whole GiB.
    static func grownSnapshotBucketLimit(forSnapshotOf size: Int64) -> Int64 {
        let gib: Int64 = 1 << 30
        let wanted = 2 * (size + size / 64 + 4096)
        return (wanted + gib - 1) / gib * gib
    }

    /// Whether the records published since the last snapshot make a new one due: a passive node
    /// starting over (a new node, or one whose database was set aside after a fence) would
    /// spend `replayRatio` times longer replaying the `messages` (`bytes` in all) than restoring
    /// a new snapshot. Replaying costs about 256 KiB of writing per message (each record is an
    /// fsync of the replica and one of its position), restoring the database's size, counted as
    /// at least 64 MiB so that a small database is not snapshotted every few records. A ratio of
    /// 0 turns the rule off.
    ///
    /// So that a busy database does not spend its time uploading snapshots, one is due by this
    /// rule only when at least 9 times the last snapshot's duration has passed since it ended
    /// (uploads take at most a tenth of the time).
    static func snapshotIsCheaperThanReplay(
        messages: UInt64, bytes: Int64, databaseBytes: Int64, replayRatio: Int = defaultSnapshotReplayRatio,
        sinceLastSnapshot: Duration = .zero, lastSnapshotTook: Duration = .zero
    ) -> Bool {
        guard replayRatio > 0 else { return false }
        guard sinceLastSnapshot >= lastSnapshotTook * 9 else { return false }
        let replay = Int64(clamping: messages).multipliedReportingOverflow(by: 256 * 1024)
        guard !replay.overflow else { return true }
        let restore = Swift.max(databaseBytes, 64 << 20).multipliedReportingOverflow(by: Int64(replayRatio))
        guard !restore.overflow else { return false }
        return replay.partialValue.addingReportingOverflow(bytes).partialValue >= restore.partialValue
    }

    /// The default of ``snapshotReplayRatio``: replaying may cost up to 4 restores.
    public static let defaultSnapshotReplayRatio = 4

    /// Throws ``ReplicationError/Code/invalidConfiguration`` when the names are not
    /// `[a-z0-9_-]`, a path is not absolute, or a setting is out of range.
    public func validate() throws {
        for (name, value) in [("cluster", cluster), ("app", app), ("node id", nodeID)] {
            guard !value.isEmpty, value.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d || $0 == 0x5f }) else {
                throw ReplicationError(.invalidConfiguration, "\(name) \"\(value)\" must be non-empty [a-z0-9_-]")
            }
        }
        guard databasePath.hasPrefix("/"), stateDirectory.hasPrefix("/") else {
            throw ReplicationError(.invalidConfiguration, "the database path and the state directory must be absolute")
        }
        guard snapshotReplayRatio >= 0 else {
            throw ReplicationError(.invalidConfiguration, "the snapshot replay ratio must not be negative")
        }
        if let snapshotInterval, snapshotInterval <= .zero {
            throw ReplicationError(.invalidConfiguration, "the snapshot interval must be positive")
        }
        for (name, value) in [("the stream's max bytes", streamMaxBytes), ("the snapshot bucket's max bytes", snapshotBucketMaxBytes)] {
            if let value, value < 1 { throw ReplicationError(.invalidConfiguration, "\(name) must be positive, not \(value)") }
        }
        guard snapshotsToKeep >= 1 else { throw ReplicationError(.invalidConfiguration, "snapshots to keep must be at least 1") }
        guard fetchMaxBytes >= 1, fetchMaxMessages >= 1 else {
            throw ReplicationError(.invalidConfiguration, "the applier's fetch limits must be at least 1")
        }
    }

    var streamConfig: StreamConfig {
        var config = StreamConfig(name: names.stream, subjects: [names.subjects])
        config.description = "Baton SQLite WAL records of \(app) in cluster \(cluster)"
        config.retention = .limits
        config.storage = .file
        config.discard = .old
        config.replicas = streamReplicas
        config.maxMessages = streamMaxMessages ?? -1
        config.maxBytes = streamMaxBytes ?? -1
        config.maxAge = streamMaxAge ?? .zero
        // The server refuses a duplicate window longer than max_age (a retention under 2 minutes).
        config.duplicateWindow = min(.seconds(120), streamMaxAge.map { $0 > .zero ? $0 : .seconds(120) } ?? .seconds(120))
        config.allowDirect = true
        return config
    }

    var snapshotBucketConfig: ObjectStoreConfig {
        ObjectStoreConfig(
            bucket: names.snapshotBucket, description: "Baton snapshots of \(app)", maxBytes: snapshotBucketMaxBytes, replicas: streamReplicas)
    }

    /// Bytes published since the last snapshot after which the shipper takes one: half the
    /// stream's `max_bytes`, so the stream never drops the records a passive node needs after
    /// the last snapshot.
    var snapshotAfterBytes: Int64? { streamMaxBytes.map { Swift.max(1, $0 / 2) } }
}

/// What a passive node has applied, persisted next to its replica after every record.
public struct ReplicaPosition: Codable, Sendable, Hashable {
    /// The last applied transaction id.
    public var txid: UInt64
    /// The stream sequence of the last message taken into account.
    public var streamSequence: UInt64
    /// The replica's rolling checksum (``DatabaseChecksum``).
    public var checksum: UInt64
    /// The newest fencing token applied; records with older tokens are rejected.
    public var token: UInt64
    /// The page size of the replica.
    public var pageSize: Int
    /// The replica's size in pages.
    public var commitPages: UInt32
    /// When the active node read the last applied transaction.
    public var transactionTime: Date
    /// When this node applied it.
    public var appliedAt: Date
    /// Set when the last record was a final marker: the old active handed off gracefully.
    public var finalMarkerToken: UInt64?

    /// Creates a position.
    public init(
        txid: UInt64, streamSequence: UInt64, checksum: UInt64, token: UInt64, pageSize: Int, commitPages: UInt32, transactionTime: Date,
        appliedAt: Date, finalMarkerToken: UInt64? = nil
    ) {
        self.txid = txid
        self.streamSequence = streamSequence
        self.checksum = checksum
        self.token = token
        self.pageSize = pageSize
        self.commitPages = commitPages
        self.transactionTime = transactionTime
        self.appliedAt = appliedAt
        self.finalMarkerToken = finalMarkerToken
    }
}
