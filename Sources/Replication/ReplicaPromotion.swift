import CSQLite
import Foundation
import Logging
import NATS

/// The outcome of promoting a passive replica.
public struct PromotionReport: Sendable, Hashable {
    /// What promotion did.
    public enum Outcome: String, Sendable, Hashable {
        /// The replica replaced the app's database.
        case promoted
        /// The stream holds nothing (first start of the app): the app's database is left as it is.
        case nothingToPromote
    }

    /// What promotion did.
    public var outcome: Outcome
    /// The transaction id the database is at.
    public var txid: UInt64?
    /// The stream sequence of the last applied message.
    public var streamSequence: UInt64?
    /// The database checksum.
    public var checksum: UInt64?
    /// Records that were in the stream beyond the replica's position when promotion began
    /// (applied by the drain, a restored snapshot included). 0 when the applier was caught up.
    public var recordsAppliedDuringDrain: Int
    /// Transaction ids the stream held beyond the replica's position when promotion began (all
    /// of them when the replica had none). 0 when the applier was caught up.
    public var transactionsAppliedDuringDrain: UInt64
    /// When the old active node read the last applied transaction.
    public var lastTransactionTime: Date?
    /// Whether a trailing record whose writer died mid-record was dropped.
    public var discardedIncompleteRecord: Bool
    /// Set when the old active node handed off gracefully (its final marker is the last record):
    /// no committed transaction was lost.
    public var finalMarkerToken: UInt64?
    /// Where the new active node's shipper continues the stream (``WALShipper/start(configuration:token:jetStream:logger:resumingFrom:)``):
    /// the promoted position and the page hashes promotion verified. Nil unless promoted.
    public var resumePoint: ShipperResumePoint?

    /// Creates a report.
    public init(
        outcome: Outcome, txid: UInt64? = nil, streamSequence: UInt64? = nil, checksum: UInt64? = nil, recordsAppliedDuringDrain: Int,
        transactionsAppliedDuringDrain: UInt64 = 0, lastTransactionTime: Date? = nil, discardedIncompleteRecord: Bool, finalMarkerToken: UInt64? = nil,
        resumePoint: ShipperResumePoint? = nil
    ) {
        self.resumePoint = resumePoint
        self.outcome = outcome
        self.txid = txid
        self.streamSequence = streamSequence
        self.checksum = checksum
        self.recordsAppliedDuringDrain = recordsAppliedDuringDrain
        self.transactionsAppliedDuringDrain = transactionsAppliedDuringDrain
        self.lastTransactionTime = lastTransactionTime
        self.discardedIncompleteRecord = discardedIncompleteRecord
        self.finalMarkerToken = finalMarkerToken
    }
}

/// Turns this node's replica into the app's database, before the backend starts.
public enum ReplicaPromotion {
    /// Drains the stream into the replica, verifies the replica's checksum and
    /// `PRAGMA quick_check`, then moves it over ``ReplicationConfiguration/databasePath``
    /// (removing stale `-wal`, `-shm` and `-journal` files first).
    ///
    /// The applier of this app must be stopped first (they share the durable consumer and the
    /// replica). The backend must not be running. Throws when the replica cannot be proven
    /// equal to the stream's end; the app's database is untouched then.
    public static func promote(
        configuration: ReplicationConfiguration, jetStream: JetStream, logger: Logger, timeout: Duration = .seconds(60)
    ) async throws -> PromotionReport {
        try configuration.validate()
        var logger = logger
        logger[metadataKey: "app"] = "\(configuration.app)"
        let names = configuration.names
        let info: StreamInfo
        do {
            info = try await jetStream.streamInfo(names.stream)
        } catch let error as JetStreamAPIError where error.errorCode == .streamNotFound {
            return PromotionReport(outcome: .nothingToPromote, recordsAppliedDuringDrain: 0, discardedIncompleteRecord: false)
        }
        if info.state.messages == 0 {
            return PromotionReport(outcome: .nothingToPromote, recordsAppliedDuringDrain: 0, discardedIncompleteRecord: false)
        }
        let core = ApplierCore(configuration: configuration, jetStream: jetStream, logger: logger)
        do {
            try await core.load()
            let txidBefore = await core.status.position?.txid ?? 0
            let drained = try await core.drain(timeout: timeout)
            guard let position = await core.status.position else { throw ReplicationError(.noSnapshot, "no replica after draining") }
            let store = core.store
            let replicaPath = configuration.replicaPath
            let databasePath = configuration.databasePath
            let verified = try await core.io.run {
                let table = try store.verifiedChecksum()
                try quickCheck(replicaPath)
                store.closeFile()
                try moveIntoPlace(replicaPath, databasePath)
                try store.forget()
                return table
            }
            await core.shutdown()
            logger.info(
                "replica promoted",
                metadata: [
                    "txid": "\(position.txid)", "drained-records": "\(drained.records)", "drained-txids": "\(position.txid - min(position.txid, txidBefore))",
                    "graceful": "\(position.finalMarkerToken != nil)",
                ])
            return PromotionReport(
                outcome: .promoted, txid: position.txid, streamSequence: position.streamSequence, checksum: position.checksum,
                recordsAppliedDuringDrain: drained.records, transactionsAppliedDuringDrain: position.txid - min(position.txid, txidBefore),
                lastTransactionTime: position.transactionTime,
                discardedIncompleteRecord: drained.incompleteDiscarded, finalMarkerToken: position.finalMarkerToken,
                resumePoint: ShipperResumePoint(
                    txid: position.txid, streamSequence: max(position.streamSequence, drained.incompleteDiscarded ? drained.target : 0), checksum: verified))
        } catch {
            await core.shutdown()
            throw error
        }
    }

    /// First start of an app: when ``ReplicationConfiguration/databasePath`` does not exist,
    /// creates an empty database in WAL mode there (and its directory), owned by the directory's
    /// owner and group, so the shipper can start before the backend ever ran. Returns whether it created one; an existing file is left
    /// untouched. Call it only after ``promote(configuration:jetStream:logger:timeout:)``
    /// returned ``PromotionReport/Outcome/nothingToPromote``.
    public static func createEmptyDatabaseIfMissing(configuration: ReplicationConfiguration) async throws -> Bool {
        try configuration.validate()
        let path = configuration.databasePath
        let io = IOThread()
        let work = { @Sendable () throws -> Bool in
            guard !FileIO.exists(path) else { return false }
            try FileIO.makeDirectory((path as NSString).deletingLastPathComponent)
            let owner = try ownerForDatabase(path)
            do {
                let database = try SQLiteDatabase(path: path, create: true)
                guard try database.scalar("PRAGMA journal_mode=WAL")?.lowercased() == "wal" else {
                    throw ReplicationError(.notWALMode, "cannot put the new database \(path) in WAL mode")
                }
            }
            try FileIO.setOwnership(path, uid: owner.uid, gid: owner.gid, mode: nil)
            for suffix in ["-wal", "-shm"] where FileIO.exists(path + suffix) {
                try FileIO.setOwnership(path + suffix, uid: owner.uid, gid: owner.gid, mode: nil)
            }
            try FileIO.fsyncDirectory(of: path)
            return true
        }
        do {
            let created = try await io.run(work)
            await io.shutdown()
            return created
        } catch {
            await io.shutdown()
            throw error
        }
    }

    /// `PRAGMA quick_check` on a database file, opened immutable and read-only so nothing is
    /// written next to it.
    static func quickCheck(_ path: String) throws {
        let database = try SQLiteDatabase(path: "file:\(path)?immutable=1", readOnly: true)
        let rows = try database.column("PRAGMA quick_check")
        guard rows == ["ok"] else {
            throw ReplicationError(.integrityCheckFailed, "quick_check of \(path): \(rows.prefix(5).joined(separator: "; "))")
        }
    }

    /// Moves the replica over the app's database atomically (rename, or copy + rename across
    /// file systems), after removing the old database's WAL, shared memory and journal.
    ///
    /// The promoted file keeps the owner, group and permission bits of the database it replaces
    /// or, without one, takes the owner and group of its directory: a backend that runs as
    /// another user than batond can still write it (SQLite running as root gives new `-wal` and
    /// `-shm` files the database file's owner).
    static func moveIntoPlace(_ replica: String, _ database: String) throws {
        for suffix in ["-wal", "-shm", "-journal"] { try FileIO.removeIfExists(database + suffix) }
        let directory = (database as NSString).deletingLastPathComponent
        try FileIO.makeDirectory(directory)
        let owner = try ownerForDatabase(database)
        try FileIO.setOwnership(replica, uid: owner.uid, gid: owner.gid, mode: owner.mode)
        if rename(replica, database) != 0 {
            guard errno == EXDEV else { throw FileIO.failure("cannot move \(replica) to", database) }
            let temporary = database + ".baton-promote"
            try FileIO.copy(replica, to: temporary)
            try FileIO.setOwnership(temporary, uid: owner.uid, gid: owner.gid, mode: owner.mode)
            try FileIO.rename(temporary, database)
            try FileIO.removeIfExists(replica)
        }
        try FileIO.fsyncDirectory(of: database)
    }

    /// Who should own the app's database: the existing file's owner (and its mode), else the
    /// directory's owner.
    static func ownerForDatabase(_ database: String) throws -> (uid: uid_t, gid: gid_t, mode: mode_t?) {
        if let existing = try FileIO.ownership(of: database) { return (existing.uid, existing.gid, existing.mode) }
        let directory = (database as NSString).deletingLastPathComponent
        guard let parent = try FileIO.ownership(of: directory) else { throw FileIO.failure("cannot stat", directory, ENOENT) }
        return (parent.uid, parent.gid, nil)
    }
}
