import Foundation

/// A copy of an app's database at one point of its history: who holds it, at which fencing
/// token and transaction id, and its rolling checksum (``DatabaseChecksum``).
///
/// Used for the durable newest-known record (``ReplicationHistoryRecord``), for each node's
/// report of what it holds, and for this node's own replica in a ``PromotionDecision``.
public struct DatabaseCopy: Codable, Sendable, Hashable {
    /// The node that holds (or wrote) the copy.
    public var node: String
    /// The newest fencing token of the copy's history.
    public var token: UInt64
    /// The last transaction id the copy holds.
    public var txid: UInt64
    /// The copy's rolling checksum at ``txid``.
    public var checksum: UInt64
    /// The page size of the database.
    public var pageSize: Int
    /// The database's size in pages at ``txid``.
    public var commitPages: UInt32
    /// The stream sequence of the record that produced the copy (0 when unknown).
    public var streamSequence: UInt64

    /// Creates a copy description.
    public init(node: String, token: UInt64, txid: UInt64, checksum: UInt64, pageSize: Int, commitPages: UInt32, streamSequence: UInt64 = 0) {
        self.node = node
        self.token = token
        self.txid = txid
        self.checksum = checksum
        self.pageSize = pageSize
        self.commitPages = commitPages
        self.streamSequence = streamSequence
    }

    /// Whether this is the same database as `other` (same transaction id and checksum).
    public func sameData(as other: DatabaseCopy) -> Bool { txid == other.txid && checksum == other.checksum }

    /// `node token/txid/checksum`, for messages.
    public var summary: String { "\(node) holds txid \(txid) (epoch \(token), checksum \(hex(checksum)))" }
}

/// The durable record of the newest data of an app, kept outside the WAL stream (a KV key in
/// `baton_<cluster>__replication` and a copy in every node's state directory), so that a lost,
/// expired or recreated stream cannot make a promotion publish older or empty data as the truth.
public struct ReplicationHistoryRecord: Codable, Sendable, Hashable {
    /// The newest copy: what the active node shipped (``DatabaseCopy/node`` is the writer).
    public var newest: DatabaseCopy
    /// What wrote this record: `claim`, `snapshot`, `progress`, `final marker`, or `forced`.
    public var event: String
    /// When it was written.
    public var recordedAt: Date
    /// Set when an operator accepted ``newest`` as the truth (`batonctl replica promote NODE
    /// --force`): only a copy with exactly that data may be promoted until a shipper claims the
    /// stream again. Holds the operator's note (what was given up).
    public var forced: String?

    /// Creates a record.
    public init(newest: DatabaseCopy, event: String, recordedAt: Date, forced: String? = nil) {
        self.newest = newest
        self.event = event
        self.recordedAt = recordedAt
        self.forced = forced
    }

    /// Which of two records is the newer: a forced record wins over the one it was forced over
    /// (it is written later, to replace it); otherwise the higher (token, txid).
    public static func newer(_ a: ReplicationHistoryRecord?, _ b: ReplicationHistoryRecord?) -> ReplicationHistoryRecord? {
        guard let a else { return b }
        guard let b else { return a }
        if a.forced != nil || b.forced != nil {
            return a.recordedAt >= b.recordedAt ? a : b
        }
        return (a.newest.token, a.newest.txid) >= (b.newest.token, b.newest.txid) ? a : b
    }
}

/// A snapshot in the app's Object Store bucket (from its metadata).
public struct SnapshotCopy: Sendable, Hashable {
    /// The object's name.
    public var name: String
    /// The database it holds.
    public var copy: DatabaseCopy

    /// Creates a snapshot description.
    public init(name: String, copy: DatabaseCopy) {
        self.name = name
        self.copy = copy
    }
}
