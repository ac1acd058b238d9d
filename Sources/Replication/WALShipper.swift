import Foundation
import Logging
import NATS
import NIOConcurrencyHelpers
import NIOCore

/// What the shipper has done, for `batonctl status`.
public struct ShipperStatus: Sendable, Hashable {
    /// The fencing token the shipper writes with.
    public var token: UInt64
    /// The last transaction id published (0 before the first).
    public var lastTxid: UInt64
    /// The stream sequence of the shipper's last message.
    public var lastStreamSequence: UInt64
    /// The rolling checksum after the last published record.
    public var checksum: UInt64
    /// When the last transaction record was published.
    public var lastShippedAt: Date?
    /// Snapshots published by this shipper.
    public var snapshots: Int
    /// The transaction id of the latest snapshot.
    public var lastSnapshotTxid: UInt64?
    /// Why the latest snapshot was taken.
    public var lastSnapshotReason: String?
    /// Checkpoints the shipper ran.
    public var checkpoints: Int
    /// The latest error (cleared by the next success).
    public var lastError: String?
    /// Whether the shipping loop runs.
    public var running: Bool
}

/// A snapshot a shipper published (``WALShipper/snapshotNow()``).
public struct PublishedSnapshot: Sendable, Hashable {
    /// The Object Store object's name, `snapshot-<txid>-<token>`.
    public var name: String
    /// The transaction id of its snapshot record.
    public var txid: UInt64
    /// The fencing token it was published under.
    public var token: UInt64
    /// The database's size in the snapshot: pages × page size.
    public var bytes: UInt64
    /// The database's size in pages.
    public var pages: UInt32
    /// The snapshot record's stream sequence.
    public var sequence: UInt64
}

/// What a graceful stepdown shipped.
public struct HandoffReport: Codable, Sendable, Hashable {
    /// The last transaction id before the marker (the marker repeats it).
    public var txid: UInt64
    /// The marker's stream sequence.
    public var markerSequence: UInt64
    /// The database checksum at the marker.
    public var checksum: UInt64
    /// The fencing token the marker carries.
    public var token: UInt64
    /// The page size of the database.
    public var pageSize: Int
    /// The database's size in pages at the marker.
    public var commitPages: UInt32
}

/// Where a new active node's shipper continues the stream: the promoted replica's position and
/// page hashes (from ``PromotionReport/resumePoint``).
public struct ShipperResumePoint: Sendable, Hashable {
    /// The last transaction id the replica holds (the final marker's, after a graceful handoff).
    public var txid: UInt64
    /// The stream's last sequence when promotion finished draining: the next record expects it.
    public var streamSequence: UInt64
    /// The page hashes of the promoted database.
    public var checksum: DatabaseChecksum
    /// The promoted copy does not continue the stream (it was promoted from this node's own
    /// copy or a snapshot because the stream expired, was lost or went backwards): the shipper
    /// publishes an opening snapshot whose txid follows ``txid``, so txids never go backwards.
    public var startsNewHistory = false

    /// Creates a resume point.
    public init(txid: UInt64, streamSequence: UInt64, checksum: DatabaseChecksum) {
        self.txid = txid
        self.streamSequence = streamSequence
        self.checksum = checksum
    }
}

/// Ships an app's committed SQLite transactions to its JetStream stream while this node is
/// active.
///
/// ```swift
/// let shipper = try await WALShipper.start(configuration: config, token: epoch, jetStream: js, logger: logger)
/// // ... the app runs ...
/// let handoff = try await shipper.stepDown()   // graceful: ships the tail, publishes the final marker
/// ```
///
/// `start` returns once the stream is claimed under the token (by an opening snapshot, or after
/// a promotion by a claim record that continues the stream), so a failure to replicate is known
/// before the backend depends on it. Every message carries `Nats-Msg-Id` and
/// `Nats-Expected-Last-Sequence`: when another node has published since (it holds a newer
/// lease), the write is refused and the shipper stops with ``ReplicationError/Code/fenced``;
/// ``waitUntilStopped()`` reports it.
public final class WALShipper: Sendable {
    /// The configuration the shipper runs with.
    public let configuration: ReplicationConfiguration
    /// The fencing token the shipper writes with.
    public let token: UInt64
    private let core: ShipperCore
    private let loop: NIOLockedValueBox<Task<Void, any Error>?>
    private let watcher: WALWatcher

    private init(configuration: ReplicationConfiguration, token: UInt64, core: ShipperCore, watcher: WALWatcher) {
        self.configuration = configuration
        self.token = token
        self.core = core
        self.watcher = watcher
        self.loop = NIOLockedValueBox(nil)
    }

    /// Opens the database, claims the stream, and starts shipping in the background.
    ///
    /// With `resume` (the position and page hashes ``ReplicaPromotion`` verified), the stream
    /// continues from the promoted replica: one small claim record, no snapshot, whatever the
    /// database's size; snapshots follow in the background. Without it, or when the database
    /// or the stream changed since promotion, an opening snapshot is published first.
    ///
    /// Throws ``ReplicationError/Code/notWALMode`` for a database not in WAL mode, and
    /// ``ReplicationError/Code/fenced`` when the stream already holds records of a newer token.
    public static func start(
        configuration: ReplicationConfiguration, token: UInt64, jetStream: JetStream, logger: Logger, resumingFrom resume: ShipperResumePoint? = nil
    ) async throws -> WALShipper {
        try configuration.validate()
        var logger = logger
        logger[metadataKey: "app"] = "\(configuration.app)"
        logger[metadataKey: "epoch"] = "\(token)"
        let core = ShipperCore(configuration: configuration, token: token, jetStream: jetStream, logger: logger)
        do {
            try await core.start(resume: resume)
        } catch {
            await core.shutdown()
            throw error
        }
        // Commits wake the loop at once; the poll interval is the fallback.
        let watcher = WALWatcher(walPath: configuration.databasePath + "-wal")
        let shipper = WALShipper(configuration: configuration, token: token, core: core, watcher: watcher)
        let pollInterval = configuration.pollInterval
        let minimumRecordInterval = configuration.minimumRecordInterval
        let task = Task {
            defer { watcher.close() }
            do {
                var lastRecord: ContinuousClock.Instant?
                while await !core.stopRequested {
                    if let lastRecord, minimumRecordInterval > .zero, lastRecord + minimumRecordInterval > .now {
                        try? await Task.sleep(until: lastRecord + minimumRecordInterval, clock: .continuous)
                    }
                    if try await core.step() {
                        lastRecord = .now
                        continue
                    }
                    try await core.idleWork()
                    await watcher.wait(upTo: pollInterval)
                }
            } catch {
                await core.failed(error)
                throw error
            }
        }
        shipper.loop.withLockedValue { $0 = task }
        return shipper
    }

    /// The shipper's progress.
    public func status() async -> ShipperStatus { await core.status }

    /// Returns when the shipping loop ends; throws the error that ended it (for example
    /// ``ReplicationError/Code/fenced``).
    public func waitUntilStopped() async throws {
        guard let task = loop.withLockedValue({ $0 }) else { return }
        try await task.value
    }

    /// Graceful handoff: stops the loop, ships everything committed (behind the write barrier),
    /// publishes a final marker, and closes the database. Call it after the backend stopped.
    public func stepDown() async throws -> HandoffReport {
        await core.requestStop()
        watcher.wake()
        if let task = loop.withLockedValue({ $0 }) {
            _ = await task.result
        }
        do {
            let report = try await core.flushAndPublishFinalMarker()
            await core.shutdown()
            return report
        } catch {
            await core.shutdown()
            throw error
        }
    }

    /// Takes a snapshot now (the shipping loop takes it next, between two records, so it is
    /// ordered with them) and returns it once published. Throws when the shipper stops first or
    /// the snapshot fails (then the loop ends with that error, like any snapshot failure).
    public func snapshotNow() async throws -> PublishedSnapshot {
        try await core.requestSnapshot(reason: "requested by an operator", wake: { [watcher] in watcher.wake() })
    }

    /// Stops shipping without a final marker (for a crash-like stop or after fencing).
    public func stop() async {
        await core.requestStop()
        watcher.wake()
        if let task = loop.withLockedValue({ $0 }) {
            _ = await task.result
        }
        await core.shutdown()
    }
}

/// The shipper's state; the blocking parts run in ``ShipperEngine`` on its ``IOThread``.
actor ShipperCore {
    let configuration: ReplicationConfiguration
    let names: ReplicationNames
    let token: UInt64
    let jetStream: JetStream
    let logger: Logger
    let io = IOThread()
    private var engine: ShipperEngine?
    private var objectStore: ObjectStore?
    private var nextTxid: UInt64 = 1
    private var lastSequence: UInt64 = 0
    private var anchorSequence: UInt64 = 0
    private var maxMessageBytes = 1024 * 1024
    private var snapshotNeeded: String?
    /// Callers of ``requestSnapshot(reason:wake:)`` waiting for the next snapshot.
    private var snapshotWaiters: [CheckedContinuation<PublishedSnapshot, any Error>] = []
    private var lastRetentionCheck = ContinuousClock.now
    private var lastSnapshotAt = ContinuousClock.now
    /// How long the last snapshot this shipper took lasted, from the barrier to its record.
    private var lastSnapshotTook: Duration = .zero
    private let history: ReplicationHistoryStore
    private var lastHistoryWrite = ContinuousClock.now
    private var lastHistoryTxid: UInt64 = 0
    private var pageSize = 0
    private var commitPages: UInt32 = 0
    /// Bytes published since the last snapshot (see ``ReplicationConfiguration/snapshotAfterBytes``).
    private var bytesSinceSnapshot: Int64 = 0
    private(set) var stopRequested = false
    private(set) var status: ShipperStatus

    init(configuration: ReplicationConfiguration, token: UInt64, jetStream: JetStream, logger: Logger) {
        self.configuration = configuration
        self.names = configuration.names
        self.token = token
        self.jetStream = jetStream
        self.logger = logger
        history = ReplicationHistoryStore(configuration: configuration, jetStream: jetStream)
        status = ShipperStatus(
            token: token, lastTxid: 0, lastStreamSequence: 0, checksum: 0, lastShippedAt: nil, snapshots: 0, lastSnapshotTxid: nil,
            lastSnapshotReason: nil, checkpoints: 0, lastError: nil, running: false)
    }

    func requestStop() { stopRequested = true }

    /// Asks the loop for a snapshot and waits until it is published.
    func requestSnapshot(reason: String, wake: @Sendable () -> Void) async throws -> PublishedSnapshot {
        guard status.running, !stopRequested, engine != nil else {
            throw ReplicationError(.notRunning, "the shipper of token \(token) is not running")
        }
        if snapshotNeeded == nil { snapshotNeeded = reason }
        return try await withCheckedThrowingContinuation { continuation in
            snapshotWaiters.append(continuation)
            wake()
        }
    }

    private func finishSnapshotWaiters(_ result: Result<PublishedSnapshot, any Error>) {
        let waiters = snapshotWaiters
        snapshotWaiters = []
        for waiter in waiters { waiter.resume(with: result) }
    }

    func failed(_ error: any Error) {
        finishSnapshotWaiters(.failure(error))
        status.lastError = "\(error)"
        status.running = false
        logger.error("WAL shipping stopped", metadata: ["error": "\(error)"])
    }

    func start(resume: ShipperResumePoint?) async throws {
        try await ensureStreamAndBucket(jetStream: jetStream, configuration: configuration, logger: logger)
        objectStore = try await jetStream.objectStore(names.snapshotBucket)
        if let payload = jetStream.client.serverInfo?.maxPayload {
            maxMessageBytes = max(4096, payload - 1024)
        }
        let configuration = configuration
        let logger = logger
        let engine = try await io.run { try ShipperEngine(configuration: configuration, logger: logger, resume: resume?.checksum) }
        self.engine = engine
        if let resume, !resume.startsNewHistory, try await io.run({ engine.resumed }) {
            if try await continueStream(from: resume) {
                status.running = true
                logger.info(
                    "WAL shipping continues from the promoted replica (no snapshot)",
                    metadata: ["txid": "\(nextTxid - 1)", "sequence": "\(lastSequence)"])
                try await recordClaim()
                return
            }
        }
        var attempts = 0
        while true {
            try await readStreamTail()
            // Txids never go backwards, also over a stream that lost its records.
            if let resume { nextTxid = max(nextTxid, resume.txid + 1) }
            if let newest = try? await history.remoteNewest() { nextTxid = max(nextTxid, newest.record.newest.txid + 1) }
            do {
                try await snapshot(reason: "shipping starts")
                break
            } catch let error as ReplicationError where error.code == .fenced && attempts < 5 {
                // Someone (a node with an older token that has not noticed yet) published between
                // our read of the tail and our write; read again. A newer token fails in readStreamTail.
                attempts += 1
            }
        }
        status.running = true
        logger.info("WAL shipping started", metadata: ["txid": "\(nextTxid - 1)", "sequence": "\(lastSequence)"])
        try await recordClaim()
    }

    /// The durable newest record (``ReplicationHistoryStore``) as this shipper knows it.
    private func historyRecord(event: String) -> ReplicationHistoryRecord {
        ReplicationHistoryRecord(
            newest: DatabaseCopy(
                node: configuration.nodeID, token: token, txid: status.lastTxid, checksum: status.checksum, pageSize: pageSize,
                commitPages: commitPages, streamSequence: lastSequence),
            event: event, recordedAt: Date())
    }

    /// Records the claim in the durable history: required (a promotion whose claim is not
    /// recorded would leave the record behind the stream's new history). A newer token there
    /// means a newer active node exists: fenced.
    private func recordClaim() async throws {
        var lastError: (any Error)?
        for attempt in 0..<3 {
            do {
                guard try await history.recordNewest(historyRecord(event: HistoryEvent.claim)) else {
                    throw ReplicationError(.fenced, "the durable replication record holds a newer epoch than this node's \(token)")
                }
                lastHistoryWrite = .now
                lastHistoryTxid = status.lastTxid
                return
            } catch let error as ReplicationError where error.code == .fenced {
                throw error
            } catch {
                lastError = error
                try await Task.sleep(for: .milliseconds(100 << attempt))
            }
        }
        throw ReplicationError(.io, "cannot write the durable replication record: \(lastError.map { "\($0)" } ?? "unknown error")")
    }

    /// Best-effort update of the durable newest record (snapshots, final markers, progress).
    private func recordProgress(event: String) async {
        do {
            try await history.recordNewest(historyRecord(event: event))
            lastHistoryWrite = .now
            lastHistoryTxid = status.lastTxid
        } catch {
            logger.warning("cannot update the durable replication record", metadata: ["event": "\(event)", "error": "\(error)"])
        }
    }

    /// Continues the stream from the promoted replica: when the stream still ends where
    /// promotion drained it, publishes a claim (a transaction record without pages, checksum
    /// before = after = the replica's) that fences every older shipper, exactly as an opening
    /// snapshot would, at O(1) cost. Returns false when the stream moved since promotion (a
    /// stale shipper published): then the caller publishes a snapshot instead. A newer token
    /// in the stream throws ``ReplicationError/Code/fenced``.
    private func continueStream(from resume: ShipperResumePoint) async throws -> Bool {
        try await readStreamTail()
        guard lastSequence == resume.streamSequence else {
            logger.notice(
                "the stream moved since promotion; publishing a snapshot instead of continuing",
                metadata: ["promoted-sequence": "\(resume.streamSequence)", "stream-sequence": "\(lastSequence)"])
            return false
        }
        nextTxid = resume.txid + 1
        let claim = ReplicationRecord(
            kind: .transaction, txid: nextTxid, token: token, pageSize: resume.checksum.pageSize, commitPages: UInt32(resume.checksum.pageCount),
            checksumBefore: resume.checksum.value, checksumAfter: resume.checksum.value, timestampNanos: nanos(Date()), pages: [])
        do {
            try await publish(claim, subject: names.transactionSubject)
        } catch let error as ReplicationError where error.code == .fenced {
            logger.notice("the stream moved while claiming it; publishing a snapshot instead", metadata: ["error": "\(error.message)"])
            return false
        }
        nextTxid += 1
        status.lastTxid = claim.txid
        status.checksum = claim.checksumAfter
        pageSize = claim.pageSize
        commitPages = claim.commitPages
        status.lastError = nil
        // The previous active node's snapshots stay valid; the next one is due by the usual
        // rules (interval, messages since, retention), taken in the background.
        do {
            anchorSequence = try await jetStream.getLastMessage(stream: names.stream, subject: names.snapshotSubject).sequence
        } catch {
            anchorSequence = 0
        }
        lastSnapshotAt = .now
        return true
    }

    /// Reads the stream's last message: where our expectations and txids continue.
    private func readStreamTail() async throws {
        let info = try await jetStream.streamInfo(names.stream)
        lastSequence = info.state.lastSequence
        guard lastSequence > 0 else {
            nextTxid = 1
            return
        }
        let message: StoredMessage
        do {
            message = try await jetStream.getMessage(stream: names.stream, sequence: lastSequence)
        } catch let error as JetStreamAPIError where error.errorCode == .noMessageFound {
            // Every record expired (nobody shipped for longer than the retention): the next
            // expectation is still the last sequence; txids continue from the durable record.
            nextTxid = 1
            return
        }
        let chunk = try RecordChunk(decoding: Array(message.payload.readableBytesView))
        guard chunk.token <= token else {
            throw ReplicationError(.fenced, "the stream already holds records of token \(chunk.token), newer than this node's \(token)")
        }
        // The last record may be incomplete (its writer died mid-record): its txid is skipped;
        // our snapshot record follows, which is allowed to jump.
        nextTxid = chunk.txid + 1
    }

    func shutdown() async {
        finishSnapshotWaiters(.failure(ReplicationError(.notRunning, "the shipper of token \(token) stopped before the snapshot was taken")))
        if let engine {
            try? await io.run { engine.close() }
        }
        engine = nil
        status.running = false
        await io.shutdown()
    }

    // MARK: - Loop

    /// Publishes one record if there is one; returns whether it did.
    func step() async throws -> Bool {
        guard let engine else { throw ReplicationError(.notRunning, "the shipper is closed") }
        if let reason = snapshotNeeded {
            try await snapshot(reason: reason)
            return true
        }
        switch try await io.run({ try engine.poll() }) {
        case .nothing:
            return false
        case .batch(let batch):
            try await publish(batch)
            return true
        case .needsSnapshot(let reason):
            logger.warning("WAL continuity lost; taking a snapshot", metadata: ["reason": "\(reason)"])
            try await snapshot(reason: reason)
            return true
        }
    }

    /// Checkpoints and retention snapshots, when nothing is waiting to be shipped.
    func idleWork() async throws {
        guard let engine else { return }
        if status.lastTxid != lastHistoryTxid, ContinuousClock.now - lastHistoryWrite >= .seconds(5) {
            await recordProgress(event: HistoryEvent.progress)
        }
        let shippedFrames = try await io.run { engine.shippedFramesInGeneration }
        if shippedFrames >= configuration.checkpointAfterFrames {
            try await checkpoint()
        }
        if let limit = configuration.snapshotAfterBytes, bytesSinceSnapshot >= limit {
            try await snapshot(reason: "\(byteText(bytesSinceSnapshot)) published since the last snapshot (half the stream's max_bytes)")
            return
        }
        if lastSequence - anchorSequence >= UInt64(configuration.effectiveSnapshotAfterMessages) {
            try await snapshot(reason: "\(lastSequence - anchorSequence) messages since the last snapshot")
            return
        }
        let published = try await io.run { engine.publishedState }
        if lastSequence > anchorSequence,
            ReplicationConfiguration.snapshotIsCheaperThanReplay(
                messages: lastSequence - anchorSequence, bytes: bytesSinceSnapshot, databaseBytes: Int64(published.pages) * Int64(published.pageSize),
                replayRatio: configuration.snapshotReplayRatio, sinceLastSnapshot: ContinuousClock.now - lastSnapshotAt,
                lastSnapshotTook: lastSnapshotTook)
        {
            try await snapshot(
                reason: "\(lastSequence - anchorSequence) messages (\(byteText(bytesSinceSnapshot))) since the last snapshot: replaying them would cost \(configuration.snapshotReplayRatio) times restoring a new one")
            return
        }
        if let interval = configuration.snapshotInterval, ContinuousClock.now - lastSnapshotAt >= interval {
            try await snapshot(reason: "the last snapshot is older than \(interval)")
            return
        }
        if ContinuousClock.now - lastRetentionCheck > .seconds(5) {
            lastRetentionCheck = .now
            let info = try await jetStream.streamInfo(names.stream)
            if info.state.firstSequence > anchorSequence {
                try await snapshot(reason: "the stream's retention dropped the last snapshot record")
            }
        }
    }

    private func checkpoint() async throws {
        guard let engine else { return }
        guard try await io.run({ try engine.beginBarrier() }) else {
            logger.debug("checkpoint skipped: the app holds the write lock")
            return
        }
        do {
            guard try await drainUnderBarrierDeferringSnapshot() else {
                // Continuity was lost: the loop's next step takes the snapshot, copying the
                // pages outside the barrier instead of under this one.
                try await io.run { engine.releaseBarrier() }
                return
            }
            let result = try await io.run { try engine.checkpointAndReleaseBarrier() }
            status.checkpoints += 1
            logger.debug("checkpoint", metadata: ["wal-frames": "\(result.walFrames)", "checkpointed": "\(result.checkpointedFrames)"])
        } catch {
            try? await io.run { engine.releaseBarrier() }
            throw error
        }
    }

    /// Ships everything committed under the caller's barrier. Returns false when continuity was
    /// lost: the snapshot is left to the loop (``snapshotNeeded``).
    private func drainUnderBarrierDeferringSnapshot() async throws -> Bool {
        guard let engine else { return true }
        while true {
            switch try await io.run({ try engine.poll() }) {
            case .nothing:
                return true
            case .batch(let batch):
                try await publish(batch)
            case .needsSnapshot(let reason):
                logger.warning("WAL continuity lost; taking a snapshot", metadata: ["reason": "\(reason)"])
                snapshotNeeded = reason
                return false
            }
        }
    }

    /// Ships everything committed; the caller holds the barrier, so the end does not move.
    private func drainUnderBarrier() async throws {
        guard let engine else { return }
        while true {
            switch try await io.run({ try engine.poll() }) {
            case .nothing:
                return
            case .batch(let batch):
                try await publish(batch)
            case .needsSnapshot(let reason):
                try await snapshot(reason: reason)
            }
        }
    }

    private func publish(_ batch: ShipperEngine.Batch) async throws {
        guard let engine else { return }
        let record = ReplicationRecord(
            kind: .transaction, txid: nextTxid, token: token, pageSize: batch.pageSize, commitPages: batch.commitPages,
            checksumBefore: batch.checksumBefore, checksumAfter: batch.checksumAfter, timestampNanos: nanos(batch.readAt), pages: batch.pages)
        try await publish(record, subject: names.transactionSubject)
        try await io.run { engine.commit(batch) }
        nextTxid += 1
        status.lastTxid = record.txid
        status.checksum = record.checksumAfter
        pageSize = record.pageSize
        commitPages = record.commitPages
        status.lastShippedAt = Date()
        status.lastError = nil
    }

    /// Publishes a snapshot: ships what is committed and plans the image under the barrier
    /// (O(WAL), not O(database)), then copies the pages through a fixed buffer while the app
    /// writes (the barrier is released unless the caller holds it), uploads it and publishes
    /// its record. Shipping resumes after the record, from the planned end of the WAL.
    private func snapshot(reason: String) async throws {
        guard let engine, let objectStore else { return }
        let startedAt = ContinuousClock.now
        snapshotNeeded = reason
        let path = (configuration.stateDirectory as NSString).appendingPathComponent("\(configuration.app).snapshot.\(NUID.next()).tmp")
        try await io.run { try FileIO.makeDirectory(self.configuration.stateDirectory) }
        defer { Task { [io] in try? await io.run { try FileIO.removeIfExists(path) } } }
        let callerHoldsBarrier = try await io.run { engine.barrierHeld }
        if !callerHoldsBarrier {
            var attempts = 0
            while try await !io.run({ try engine.beginBarrier() }) {
                attempts += 1
                if attempts >= 10 { throw ReplicationError(.timeout, "the app's writer kept the write lock; cannot take a snapshot") }
            }
        }
        let plan: SnapshotCopier.Plan
        do {
            // Before this shipper's first record (its opening snapshot) nothing is drained: the
            // snapshot covers everything committed, and a fresh engine's page hashes are not the
            // stream's, so a record drained now would carry a wrong checksum before (a shipper
            // restarted under the same token, e.g. to retry a final flush, broke every applier).
            if status.lastTxid > 0 { try await drainForSnapshot() }
            plan = try await io.run { try engine.prepareSnapshot(release: !callerHoldsBarrier) }
        } catch {
            if !callerHoldsBarrier { try? await io.run { if engine.barrierHeld { engine.releaseBarrier() } } }
            throw error
        }
        let image = try await io.run { try engine.writeSnapshot(plan, to: path) }
        let txid = nextTxid
        let name = SnapshotCopy.objectName(txid: txid, token: token)
        try await makeRoomForSnapshot(of: Int64(image.commitPages) * Int64(image.pageSize))
        try await objectStore.put(
            name: name, fileAt: path, description: "database of \(configuration.app) at txid \(txid)",
            metadata: SnapshotCopy(
                name: name,
                copy: DatabaseCopy(
                    node: configuration.nodeID, token: token, txid: txid, checksum: image.checksum, pageSize: image.pageSize, commitPages: image.commitPages)
            ).metadata, chunkSize: min(ObjectStore.defaultChunkSize, maxMessageBytes))
        let record = ReplicationRecord(
            kind: .snapshot, txid: txid, token: token, pageSize: image.pageSize, commitPages: image.commitPages, checksumBefore: status.checksum,
            checksumAfter: image.checksum, timestampNanos: nanos(image.takenAt), snapshotName: name)
        try await publish(record, subject: names.snapshotSubject)
        anchorSequence = lastSequence
        lastSnapshotAt = .now
        lastSnapshotTook = lastSnapshotAt - startedAt
        bytesSinceSnapshot = 0
        nextTxid += 1
        snapshotNeeded = nil
        status.lastTxid = txid
        status.checksum = image.checksum
        status.snapshots += 1
        status.lastSnapshotTxid = txid
        status.lastSnapshotReason = reason
        pageSize = image.pageSize
        commitPages = image.commitPages
        logger.info("snapshot published", metadata: ["txid": "\(txid)", "pages": "\(image.commitPages)", "reason": "\(reason)"])
        if status.running { await recordProgress(event: HistoryEvent.snapshot) }
        finishSnapshotWaiters(
            .success(
                PublishedSnapshot(
                    name: name, txid: txid, token: token, bytes: UInt64(image.commitPages) * UInt64(image.pageSize), pages: image.commitPages,
                    sequence: lastSequence)))
        await pruneSnapshots()
    }

    /// Under the barrier, before a snapshot: ships what is committed, unless continuity is
    /// lost (then the snapshot covers it).
    private func drainForSnapshot() async throws {
        guard let engine else { return }
        while true {
            switch try await io.run({ try engine.poll() }) {
            case .nothing, .needsSnapshot:
                return
            case .batch(let batch):
                try await publish(batch)
            }
        }
    }

    /// With a bucket `max_bytes`: deletes the oldest snapshots (never the newest) until a new
    /// one of `size` bytes fits beside the rest; throws ``ReplicationError/Code/storageLimit``
    /// when it cannot fit even so.
    private func makeRoomForSnapshot(of size: Int64) async throws {
        guard let objectStore, var limit = configuration.snapshotBucketMaxBytes else { return }
        // Chunk subjects and headers cost a little on top of the data.
        let needed = size + size / 64 + 4096
        if configuration.snapshotBucketGrows {
            limit = try await growSnapshotBucketIfNeeded(forSnapshotOf: size, configured: limit)
        }
        guard needed <= limit else {
            throw ReplicationError(
                .storageLimit,
                "a snapshot of \(byteText(size)) does not fit in the snapshot bucket \(names.snapshotBucket) (max_bytes \(byteText(limit)), sqlite.snapshot_max_bytes): raise it to at least twice the database's size")
        }
        var used = try await jetStream.streamInfo("OBJ_\(names.snapshotBucket)").state.bytes
        guard Int64(used) + needed > limit else { return }
        let objects = try await objectStore.list().filter { $0.name.hasPrefix(SnapshotCopy.namePrefix) }.sorted { $0.name < $1.name }
        for stale in objects.dropLast() where Int64(used) + needed > limit {
            try await objectStore.delete(stale.name)
            used = try await jetStream.streamInfo("OBJ_\(names.snapshotBucket)").state.bytes
            logger.notice(
                "deleted an old snapshot to make room in the snapshot bucket",
                metadata: ["snapshot": "\(stale.name)", "bucket_bytes": "\(used)", "max_bytes": "\(limit)"])
        }
        guard Int64(used) + needed <= limit else {
            throw ReplicationError(
                .storageLimit,
                "the snapshot bucket \(names.snapshotBucket) holds \(byteText(Int64(used))) in its newest snapshot; a new one of \(byteText(size)) does not fit beside it (max_bytes \(byteText(limit)), sqlite.snapshot_max_bytes): raise it to at least twice the database's size")
        }
    }

    /// With a growing bucket: raises its `max_bytes` so that a snapshot of `size` and the next
    /// one fit, when they would not; returns the bucket's limit.
    private func growSnapshotBucketIfNeeded(forSnapshotOf size: Int64, configured: Int64) async throws -> Int64 {
        let streamName = "OBJ_\(names.snapshotBucket)"
        var config = try await jetStream.streamInfo(streamName).config
        let current = max(config.maxBytes ?? configured, configured)
        let wanted = ReplicationConfiguration.grownSnapshotBucketLimit(forSnapshotOf: size)
        guard wanted > current else { return current }
        config.maxBytes = wanted
        do {
            _ = try await jetStream.updateStream(config)
        } catch let error as JetStreamAPIError where error.errorCode == .storageResourcesExceeded || error.errorCode == .insufficientResources {
            throw ReplicationError(
                .storageLimit,
                "a snapshot of \(byteText(size)) needs the snapshot bucket \(names.snapshotBucket) to grow from \(byteText(current)) to \(byteText(wanted)), and JetStream cannot reserve that (\(error.errorDescription)): raise the server's jetstream max_file_store (or the account's limit), or set sqlite.snapshot_max_bytes")
        }
        logger.notice(
            "raised the snapshot bucket's max_bytes to hold the database's snapshots",
            metadata: ["bucket": "\(names.snapshotBucket)", "max_bytes": "\(byteText(current)) -> \(byteText(wanted))", "snapshot": "\(byteText(size))"])
        return wanted
    }

    private func pruneSnapshots() async {
        guard let objectStore else { return }
        do {
            let objects = try await objectStore.list().filter { $0.name.hasPrefix(SnapshotCopy.namePrefix) }.sorted { $0.name < $1.name }
            for stale in objects.dropLast(configuration.snapshotsToKeep) {
                try await objectStore.delete(stale.name)
            }
        } catch {
            logger.warning("cannot prune old snapshots", metadata: ["error": "\(error)"])
        }
    }

    /// Publishes a record's chunks with dedupe ids and the expected last sequence. Transient
    /// failures are retried with the same id; a lost expectation is ``ReplicationError/Code/fenced``.
    private func publish(_ record: ReplicationRecord, subject: String) async throws {
        let chunks = RecordChunk.split(record, maxMessageBytes: maxMessageBytes)
        for chunk in chunks {
            let payload = ByteBuffer(bytes: chunk.encoded())
            var attempt = 0
            while true {
                let options = PublishOptions(
                    messageID: "\(names.stream)-\(token)-\(record.kind.rawValue)-\(record.txid)-\(chunk.index)", expectedStream: names.stream,
                    expectedLastSequence: lastSequence)
                do {
                    let ack = try await jetStream.publish(subject, payload: payload, options: options)
                    lastSequence = ack.sequence
                    status.lastStreamSequence = ack.sequence
                    bytesSinceSnapshot += Int64(payload.readableBytes)
                    break
                } catch let error as JetStreamAPIError where error.isWrongLastSequence {
                    if let info = try? await jetStream.streamInfo(names.stream), info.state.lastSequence < lastSequence {
                        // Not a newer writer (sequences only grow): the stream was recreated
                        // under this node. A new shipper starts a new history above what was
                        // shipped (and is fenced there if a newer epoch wrote into it).
                        await recordProgress(event: HistoryEvent.streamLost)
                        throw ReplicationError(
                            .streamBehind,
                            "the stream \(names.stream) went back to sequence \(info.state.lastSequence) (it was recreated) after this node published \(lastSequence), at txid \(status.lastTxid)")
                    }
                    throw ReplicationError(
                        .fenced, "JetStream refused record \(record.txid) of token \(token): the stream moved past sequence \(lastSequence) (\(error.errorDescription))")
                } catch {
                    if let missing = error as? JetStreamError, missing.code == .noStreamForSubject, (try? await streamIsGone()) == true {
                        // Deleted (or lost) under the running active node, which holds the
                        // newest data: record how far it shipped (so the next history's txids
                        // follow it), and stop; a new shipper creates the stream and publishes
                        // a snapshot.
                        await recordProgress(event: HistoryEvent.streamLost)
                        throw ReplicationError(
                            .streamBehind, "the stream \(names.stream) no longer exists (deleted or lost) at txid \(status.lastTxid): \(missing)")
                    }
                    attempt += 1
                    status.lastError = Self.describePublishFailure(error, stream: names.stream)
                    if stopRequested && attempt >= 3 { throw error }
                    logger.warning("publish failed; retrying", metadata: ["txid": "\(record.txid)", "attempt": "\(attempt)", "error": "\(error)"])
                    try await Task.sleep(for: .milliseconds(min(2000, 50 << min(attempt, 6))))
                }
            }
        }
    }

    private func streamIsGone() async throws -> Bool {
        do {
            _ = try await jetStream.streamInfo(names.stream)
            return false
        } catch let error as JetStreamAPIError where error.errorCode == .streamNotFound {
            return true
        }
    }

    /// A publish failure in words; storage failures name the limit to change.
    static func describePublishFailure(_ error: any Error, stream: String) -> String {
        guard let error = error as? JetStreamAPIError else { return "\(error)" }
        switch error.errorCode {
        case .storageResourcesExceeded, .insufficientResources:
            return "JetStream storage is full (\(error.errorDescription)) while publishing to \(stream): the server's jetstream max_file_store (or the account's limit) is used up, most likely by a stream without max_bytes; give every stream a max_bytes, or raise the limit"
        case .messageTooLarge:
            return "a record is larger than the stream \(stream) accepts (\(error.errorDescription)): check the stream's max_msg_size and the server's max_payload"
        default:
            return "\(error)"
        }
    }

    // MARK: - Stepdown

    func flushAndPublishFinalMarker() async throws -> HandoffReport {
        guard let engine else { throw ReplicationError(.notRunning, "the shipper is closed") }
        var attempts = 0
        while try await !io.run({ try engine.beginBarrier() }) {
            attempts += 1
            if attempts >= 5 { throw ReplicationError(.timeout, "the app still holds the write lock; cannot flush the WAL") }
        }
        do {
            if let reason = snapshotNeeded { try await snapshot(reason: reason) }
            try await drainUnderBarrier()
            let state = try await io.run { engine.publishedState }
            let txid = nextTxid - 1
            let marker = ReplicationRecord(
                kind: .finalMarker, txid: txid, token: token, pageSize: state.pageSize, commitPages: state.pages, checksumBefore: state.checksum,
                checksumAfter: state.checksum, timestampNanos: nanos(Date()))
            try await publish(marker, subject: names.transactionSubject)
            try await io.run { engine.releaseBarrier() }
            logger.info("final marker published", metadata: ["txid": "\(txid)", "sequence": "\(lastSequence)"])
            pageSize = state.pageSize
            commitPages = state.pages
            await recordProgress(event: HistoryEvent.finalMarker)
            return HandoffReport(
                txid: txid, markerSequence: lastSequence, checksum: state.checksum, token: token, pageSize: state.pageSize, commitPages: state.pages)
        } catch {
            try? await io.run { engine.releaseBarrier() }
            throw error
        }
    }
}

/// Creates the app's stream and snapshot bucket when missing, and brings the limits Baton
/// manages (the stream's `max_bytes`, `max_age` and `max_msgs`, the bucket's `max_bytes`) of
/// existing ones to the configuration. JetStream reserves a stream's `max_bytes` on the server
/// when the stream is created or raised; a server that cannot reserve it refuses, and the
/// error says which limit to change.
func ensureStreamAndBucket(jetStream: JetStream, configuration: ReplicationConfiguration, logger: Logger? = nil) async throws {
    let wanted = configuration.streamConfig
    do {
        do {
            try await jetStream.createStream(wanted)
        } catch let error as JetStreamAPIError where error.errorCode == .streamNameInUse {
            var existing = try await jetStream.streamInfo(wanted.name).config
            if existing.maxBytes != wanted.maxBytes || existing.maxAge != wanted.maxAge || existing.maxMessages != wanted.maxMessages {
                logger?.notice(
                    "applying the configured limits to the replication stream",
                    metadata: [
                        "stream": "\(wanted.name)", "max_bytes": "\(existing.maxBytes ?? -1) -> \(wanted.maxBytes ?? -1)",
                        "max_age": "\(existing.maxAge ?? .zero) -> \(wanted.maxAge ?? .zero)",
                    ])
                existing.maxBytes = wanted.maxBytes
                existing.maxAge = wanted.maxAge
                existing.maxMessages = wanted.maxMessages
                _ = try await jetStream.updateStream(existing)
            }
        }
    } catch let error as JetStreamAPIError where error.errorCode == .storageResourcesExceeded || error.errorCode == .insufficientResources {
        throw ReplicationError(
            .storageLimit,
            "JetStream cannot reserve \(byteText(configuration.streamMaxBytes)) for the replication stream \(wanted.name) (\(error.errorDescription)): the server's (or account's) JetStream storage is fully reserved; lower sqlite.stream_max_bytes or raise the server's jetstream max_file_store (or the account's limit)")
    }
    let bucket = configuration.snapshotBucketConfig
    do {
        do {
            _ = try await jetStream.createObjectStore(bucket)
        } catch let error as ObjectStoreError where error.code == .bucketConfigConflict {
            var existing = try await jetStream.streamInfo(bucket.streamConfig.name).config
            // A growing bucket keeps what it grew to.
            let grownBeyond = configuration.snapshotBucketGrows && (existing.maxBytes ?? -1) > (bucket.streamConfig.maxBytes ?? -1)
            if existing.maxBytes != bucket.streamConfig.maxBytes, !grownBeyond {
                logger?.notice(
                    "applying the configured max_bytes to the snapshot bucket",
                    metadata: ["bucket": "\(bucket.bucket)", "max_bytes": "\(existing.maxBytes ?? -1) -> \(bucket.streamConfig.maxBytes ?? -1)"])
                existing.maxBytes = bucket.streamConfig.maxBytes
                _ = try await jetStream.updateStream(existing)
            }
        }
    } catch let error as JetStreamAPIError where error.errorCode == .storageResourcesExceeded || error.errorCode == .insufficientResources {
        throw ReplicationError(
            .storageLimit,
            "JetStream cannot reserve \(byteText(configuration.snapshotBucketMaxBytes)) for the snapshot bucket \(bucket.bucket) (\(error.errorDescription)): the server's (or account's) JetStream storage is fully reserved; lower sqlite.snapshot_max_bytes or raise the server's jetstream max_file_store (or the account's limit)")
    }
}

/// A size for messages: "512 MiB", "1.5 GiB", "no limit".
func byteText(_ bytes: Int64?) -> String {
    guard let bytes, bytes >= 0 else { return "no limit" }
    if bytes >= 1 << 30 { return String(format: "%.1f GiB", Double(bytes) / Double(1 << 30)) }
    if bytes >= 1 << 20 { return String(format: "%.1f MiB", Double(bytes) / Double(1 << 20)) }
    return "\(bytes) bytes"
}

func nanos(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970 * 1e9) }
