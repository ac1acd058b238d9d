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
    /// Set when the stream could not deliver the newest data (expired, deleted, recreated,
    /// behind) and the promotion recovered from this node's own copy or a snapshot: why.
    public var recovery: String?

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
    /// Drains the stream into the replica, verifies the replica's checksum (and, with
    /// ``ReplicationConfiguration/promotionReadsReplica``, re-reads the file and runs
    /// `PRAGMA quick_check`), then moves it over ``ReplicationConfiguration/databasePath``
    /// (removing stale `-wal`, `-shm` and `-journal` files first).
    ///
    /// `handover` is what the applier that just stopped returned: with it the replica's page
    /// hashes are not computed again by reading the file.
    ///
    /// The applier of this app must be stopped first (they share the durable consumer and the
    /// replica). The backend must not be running. Throws when the replica cannot be proven
    /// equal to the stream's end; the app's database is untouched then.
    public static func promote(
        configuration: ReplicationConfiguration, jetStream: JetStream, logger: Logger, timeout: Duration = .seconds(60), token: UInt64 = .max,
        handover: ReplicaHandover? = nil
    ) async throws -> PromotionReport {
        try configuration.validate()
        var logger = logger
        logger[metadataKey: "app"] = "\(configuration.app)"
        let names = configuration.names
        let history = ReplicationHistoryStore(configuration: configuration, jetStream: jetStream)
        let core = ApplierCore(configuration: configuration, jetStream: jetStream, logger: logger)
        do {
            try await core.load(handover: handover)
            var decision = try await gatherInputs(configuration: configuration, jetStream: jetStream, core: core, history: history, token: token)
            var plan = decision.plan
            // An old active node keeps no replica: its database at `sqlite.path` may be the
            // newest data (the durable record names it). Take it as the replica when its
            // checksum is the record's.
            if case .refuse = plan, let newest = decision.newest?.newest, decision.local.map({ !$0.sameData(as: newest) }) ?? true,
                try await adoptDatabase(configuration: configuration, core: core, newest: newest, logger: logger)
            {
                decision = try await gatherInputs(configuration: configuration, jetStream: jetStream, core: core, history: history, token: token)
                plan = decision.plan
            }
            switch plan {
            case .firstStart:
                await core.shutdown()
                return PromotionReport(outcome: .nothingToPromote, recordsAppliedDuringDrain: 0, discardedIncompleteRecord: false)
            case .refuse(let reason):
                if let local = decision.local {
                    try? await history.report(
                        NodeHoldingReport(role: "idle", copy: local, appliedAt: await core.status.position?.appliedAt, reportedAt: Date(), note: "promotion refused"))
                }
                logger.error("refusing to promote older or empty data over newer data", metadata: ["reason": "\(reason)"])
                throw ReplicationError(.newerDataElsewhere, reason)
            case .promoteLocalCopy(let reason), .restoreSnapshot(_, let reason):
                if case .restoreSnapshot(let name, _) = plan, let snapshot = decision.snapshot {
                    let copy = snapshot.copy
                    let record = ReplicationRecord(
                        kind: .snapshot, txid: copy.txid, token: copy.token, pageSize: copy.pageSize, commitPages: copy.commitPages, checksumBefore: 0,
                        checksumAfter: copy.checksum, timestampNanos: nanos(Date()), snapshotName: name)
                    try await core.restore(record, sequence: 0)
                }
                guard let position = await core.status.position else { throw ReplicationError(.noSnapshot, "no replica to promote") }
                logger.warning("promoting without the stream", metadata: ["reason": "\(reason)", "txid": "\(position.txid)"])
                let verified = try await verifyAndMove(configuration: configuration, core: core)
                await core.shutdown()
                var resume = ShipperResumePoint(txid: position.txid, streamSequence: decision.streamLastSequence, checksum: verified)
                resume.startsNewHistory = true
                var report = PromotionReport(
                    outcome: .promoted, txid: position.txid, streamSequence: position.streamSequence, checksum: position.checksum,
                    recordsAppliedDuringDrain: 0, lastTransactionTime: position.transactionTime, discardedIncompleteRecord: false,
                    finalMarkerToken: position.finalMarkerToken, resumePoint: resume)
                report.recovery = reason
                return report
            case .drainStream:
                break
            }
            let promotionStarted = ContinuousClock.now
            let txidBefore = await core.status.position?.txid ?? 0
            let drained = try await core.drain(timeout: timeout)
            guard let position = await core.status.position else { throw ReplicationError(.noSnapshot, "no replica after draining") }
            let verified = try await verifyAndMove(configuration: configuration, core: core)
            let tookHandover = await core.loadTookHandover
            let replicaRead = configuration.promotionReadsReplica || !tookHandover
            await core.shutdown()
            logger.info(
                "replica promoted",
                metadata: [
                    "txid": "\(position.txid)", "drained-records": "\(drained.records)", "drained-txids": "\(position.txid - min(position.txid, txidBefore))",
                    "graceful": "\(position.finalMarkerToken != nil)", "stream": "\(names.stream)",
                    "replica-read": "\(replicaRead)",
                    "drain-and-move-took": "\(ContinuousClock.now - promotionStarted)",
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

    /// Verifies the replica (checksum; file and `quick_check` when configured) and moves it over
    /// the app's database.
    private static func verifyAndMove(configuration: ReplicationConfiguration, core: ApplierCore) async throws -> DatabaseChecksum {
        let store = core.store
        let replicaPath = configuration.replicaPath
        let databasePath = configuration.databasePath
        let readsReplica = configuration.promotionReadsReplica
        return try await core.io.run {
            let table = try store.verifiedChecksum(readingFile: readsReplica)
            if readsReplica { try quickCheck(replicaPath) }
            store.closeFile()
            try moveIntoPlace(replicaPath, databasePath)
            try store.forget()
            return table
        }
    }

    /// Makes the replica from the app's database on this node when its checksum, page size and
    /// size are those of `newest` (an old active node, whose database is the newest data).
    private static func adoptDatabase(configuration: ReplicationConfiguration, core: ApplierCore, newest: DatabaseCopy, logger: Logger) async throws -> Bool {
        let store = core.store
        let databasePath = configuration.databasePath
        let handoff = HandoffReport(
            txid: newest.txid, markerSequence: newest.streamSequence, checksum: newest.checksum, token: newest.token, pageSize: newest.pageSize,
            commitPages: newest.commitPages)
        guard newest.pageSize > 0 else { return false }
        let adopted = (try? await core.io.run { try store.adopt(databasePath: databasePath, handoff: handoff, nodeToken: newest.token) }) ?? false
        if adopted {
            try await core.load()
            logger.notice(
                "the database at sqlite.path is the newest recorded data; taken as the replica", metadata: ["txid": "\(newest.txid)", "database": "\(databasePath)"])
        }
        return adopted
    }

    /// Reads what the decision needs: this node's replica, the durable record (KV and state
    /// directory), the stream, the newest snapshot, the other nodes' reports.
    static func gatherInputs(
        configuration: ReplicationConfiguration, jetStream: JetStream, core: ApplierCore, history: ReplicationHistoryStore, token: UInt64
    ) async throws -> PromotionDecision {
        let names = configuration.names
        let local = await core.status.position.map {
            DatabaseCopy(
                node: configuration.nodeID, token: $0.token, txid: $0.txid, checksum: $0.checksum, pageSize: $0.pageSize, commitPages: $0.commitPages,
                streamSequence: $0.streamSequence)
        }
        let remote = try await history.remoteNewest()?.record
        let stored = try? history.localNewest()
        let newest = ReplicationHistoryRecord.newer(remote, stored)
        let others = ((try? await history.reports()) ?? []).map(\.copy).filter { $0.node != configuration.nodeID }
        var stream = StreamView.missing
        do {
            let info = try await jetStream.streamInfo(names.stream)
            var state = StreamView.StreamState(
                messages: info.state.messages, firstSequence: info.state.firstSequence, lastSequence: info.state.lastSequence, lastRecord: nil,
                hasSnapshotRecord: false)
            if info.state.messages > 0 {
                state.lastRecord = try await record(at: info.state.lastSequence, jetStream: jetStream, stream: names.stream)
                if let local, local.streamSequence >= info.state.firstSequence, local.streamSequence <= info.state.lastSequence {
                    state.recordAtLocalSequence = try await record(at: local.streamSequence, jetStream: jetStream, stream: names.stream)
                }
                do {
                    _ = try await jetStream.getLastMessage(stream: names.stream, subject: names.snapshotSubject)
                    state.hasSnapshotRecord = true
                } catch let error as JetStreamAPIError where error.errorCode == .noMessageFound {
                }
            }
            stream = .present(state)
        } catch let error as JetStreamAPIError where error.errorCode == .streamNotFound {
        }
        let snapshot = await SnapshotCopy.newest(jetStream: jetStream, bucket: names.snapshotBucket)
        return PromotionDecision(
            app: configuration.app, node: configuration.nodeID, token: token, local: local, newest: newest, stream: stream, snapshot: snapshot, others: others)
    }

    private static func record(at sequence: UInt64, jetStream: JetStream, stream: String) async throws -> (token: UInt64, txid: UInt64)? {
        do {
            let message = try await jetStream.getMessage(stream: stream, sequence: sequence)
            let chunk = try RecordChunk(decoding: Array(message.payload.readableBytesView))
            return (chunk.token, chunk.txid)
        } catch let error as JetStreamAPIError where error.errorCode == .noMessageFound {
            return nil
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
        // Replacing a file frees its blocks in the rename, in time proportional to its size (a
        // second or more for gigabytes): keep a second link to the old database and free it on
        // a thread of its own once the new one is in place.
        let replaced = replacedDatabasePath(database)
        let keptOld = link(database, replaced) == 0
        defer { if keptOld { removeInBackground(replaced) } }
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

    /// The second link to the database a promotion replaced, until a background thread
    /// removes it (a crash in between leaves it for ``LocalDatabaseFiles/removeLeftovers()``).
    static func replacedDatabasePath(_ database: String) -> String { database + ".baton-replaced" }

    private static func removeInBackground(_ path: String) {
        let thread = Thread { _ = unlink(path) }
        thread.name = "baton-unlink"
        thread.start()
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
