import Foundation
import Logging
import NATS
import NIOConcurrencyHelpers
import NIOCore

/// What the applier has done, for `batonctl status`.
public struct ApplierStatus: Sendable, Hashable {
    /// The applied position (nil before the first snapshot is restored).
    public var position: ReplicaPosition?
    /// Records refused because they carried an older fencing token than one already applied.
    public var rejectedStaleRecords: Int
    /// Incomplete records dropped (their writer died mid-record).
    public var discardedIncompleteRecords: Int
    /// Snapshots restored.
    public var snapshotsRestored: Int
    /// Times a record was read again from its first chunk because messages of the stream were
    /// not delivered (lost with a connection, or held back for redelivery), instead of
    /// resynchronising.
    public var recordRestarts: Int
    /// Times applying failed and the applier resynchronised (positioned its consumer again, and
    /// restored a snapshot when its position had left the stream).
    public var resynchronisations: Int
    /// Times the consumer was positioned again after the NATS connection came back.
    public var repositionsAfterReconnect: Int
    /// Times the consumer was positioned again because the server ended a pull request early
    /// (``NATS/JetStreamError/Code/pullRequestEnded``, e.g. `409 Batch Completed`).
    public var repositionsAfterEndedPulls: Int = 0
    /// The most bytes one pull request brought (subjects, headers and payloads, as the server
    /// counts them against the request's `max_bytes`).
    public var largestBatchBytes: Int
    /// Times the replica was made from this node's own database at its final marker (an old
    /// active node turning passive) instead of restoring a snapshot.
    public var localDatabasesAdopted: Int = 0
    /// Times this node's own database did not match its final marker (it diverged) and a
    /// snapshot was restored instead.
    public var localDatabasesDiverged: Int = 0
    /// The snapshot restore in progress (an initial sync of a new or empty standby, or a
    /// resynchronisation), nil when none runs.
    public var sync: SyncProgress? = nil
    /// The latest error (cleared by the next success).
    public var lastError: String?
    /// Whether the applying loop runs.
    public var running: Bool
}

/// How far a passive replica is behind.
public struct ReplicationLag: Sendable, Hashable {
    /// The applied transaction id.
    public var appliedTxid: UInt64?
    /// The newest transaction id in the stream.
    public var streamTxid: UInt64?
    /// Transaction ids in the stream not yet applied.
    public var txidsBehind: UInt64
    /// Stream messages not yet applied.
    public var messagesBehind: UInt64
    /// When the active node read the last applied transaction.
    public var lastAppliedTransactionTime: Date?
    /// Set when the stream is behind the replica — it does not exist, ends before the applied
    /// position, or holds another history there (deleted, recreated, lost records): "0 behind"
    /// then means nothing. Says what was found.
    public var streamBehindReplica: String?
    /// Stored bytes of the stream messages beyond the applied position, estimated as
    /// ``messagesBehind`` × the stream's mean stored message size (JetStream reports a stream's
    /// total bytes and message count, not each message's size): 0 exactly when caught up. See
    /// ``ReplicationLagEstimate``.
    public var bytesBehind: UInt64 = 0
    /// When the active node read the oldest transaction the replica lacks (the first record
    /// beyond the applied position); nil when caught up or when that record could not be read.
    public var oldestUnappliedTransactionTime: Date?

    /// Creates a lag report.
    public init(appliedTxid: UInt64?, streamTxid: UInt64?, txidsBehind: UInt64, messagesBehind: UInt64, lastAppliedTransactionTime: Date?) {
        self.appliedTxid = appliedTxid
        self.streamTxid = streamTxid
        self.txidsBehind = txidsBehind
        self.messagesBehind = messagesBehind
        self.lastAppliedTransactionTime = lastAppliedTransactionTime
    }
}

/// Applies an app's replication stream to a replica file while this node is passive.
///
/// ```swift
/// let applier = try await WALApplier.start(configuration: config, jetStream: js, logger: logger)
/// let lag = try await applier.lag()
/// await applier.stop()      // before promoting
/// ```
///
/// A durable pull consumer (``ReplicationNames/consumer``) is recreated at the persisted
/// position + 1 on each start, so the position file is the only source of truth. When the
/// position fell out of the stream's retention (or there is none), the latest snapshot is
/// restored first. Errors (a gap, a checksum mismatch) make the applier resynchronise from the
/// latest snapshot; it keeps running and reports them in ``ApplierStatus/lastError``.
///
/// Flow control: each pull request is bounded by ``ReplicationConfiguration/fetchMaxBytes`` and
/// ``ReplicationConfiguration/fetchMaxMessages``, and the next one is sent only once the batch
/// was applied, so a replica far behind (hundreds of MB of records) never has more than a few
/// MiB in flight and never trips the server's slow-consumer limit. Chunks lost in delivery (a
/// reconnect, a redelivery) make the applier re-read the record from its first chunk; after a
/// reconnect it re-reads from its position. Neither is a resynchronisation.
public final class WALApplier: Sendable {
    /// The configuration the applier runs with.
    public let configuration: ReplicationConfiguration
    let core: ApplierCore
    private let loop: NIOLockedValueBox<Task<Void, Never>?>
    private let watcher: NIOLockedValueBox<Task<Void, Never>?>

    init(configuration: ReplicationConfiguration, core: ApplierCore) {
        self.configuration = configuration
        self.core = core
        loop = NIOLockedValueBox(nil)
        watcher = NIOLockedValueBox(nil)
    }

    /// Loads the replica and starts applying in the background. Returns once the loop runs (a
    /// missing snapshot is not an error here; the loop waits for one).
    ///
    /// `handoff` is the final marker this node published when it stepped down: its own
    /// database (``ReplicationConfiguration/databasePath``) is the database at that marker, so
    /// when the replica is not already at or past it, the replica is made from that database
    /// (copied locally, checksum verified against the marker) and applying continues after the
    /// marker. A snapshot is restored only when the checksums differ (the database diverged).
    public static func start(
        configuration: ReplicationConfiguration, jetStream: JetStream, logger: Logger, adoptingLocalDatabaseAt handoff: HandoffReport? = nil
    ) async throws -> WALApplier {
        try configuration.validate()
        var logger = logger
        logger[metadataKey: "app"] = "\(configuration.app)"
        let core = ApplierCore(configuration: configuration, jetStream: jetStream, logger: logger)
        try await core.load()
        if let handoff { await core.adoptLocalDatabase(at: handoff) }
        let applier = WALApplier(configuration: configuration, core: core)
        // A pull request in flight when the connection dropped is gone, and the messages the
        // server had queued for it are delivered again only after the ack wait: re-read from
        // the position at once instead.
        let events = jetStream.client.events()
        let watch = Task { [weak core] in
            for await event in events {
                guard let core else { return }
                if case .reconnected = event { await core.connectionReestablished() }
            }
        }
        applier.watcher.withLockedValue { $0 = watch }
        let task = Task {
            await core.setRunning(true)
            var positioned = false
            while await !core.stopRequested {
                do {
                    if !positioned {
                        try await core.position()
                        positioned = true
                    }
                    _ = try await core.step(expires: .milliseconds(500))
                    await core.reportHoldingIfDue()
                } catch {
                    // A stop cancels the loop: whatever it interrupted is no error.
                    if await core.stopRequested { break }
                    positioned = false
                    await core.noteError(error)
                    let waiting = (error as? ReplicationError)?.code == .streamBehind
                    try? await Task.sleep(for: waiting ? .seconds(2) : .milliseconds(500))
                }
            }
            await core.setRunning(false)
        }
        applier.loop.withLockedValue { $0 = task }
        return applier
    }

    /// The applier's progress.
    public func status() async -> ApplierStatus { await core.status }

    /// How far the replica is behind the stream (asks the server).
    public func lag() async throws -> ReplicationLag { try await core.lag() }

    /// Waits until a final marker of `token` (any token when nil) was applied, or `timeout`.
    public func waitForFinalMarker(token: UInt64? = nil, timeout: Duration) async throws -> ReplicaPosition {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let position = await core.status.position, let marker = position.finalMarkerToken, token == nil || marker == token {
                return position
            }
            guard ContinuousClock.now < deadline else {
                throw ReplicationError(.timeout, "no final marker applied within \(timeout)")
            }
            await core.waitForProgress(until: deadline)
        }
    }

    /// Waits until the replica reached transaction `txid`, or `timeout`.
    public func waitForTxid(_ txid: UInt64, timeout: Duration) async throws -> ReplicaPosition {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let position = await core.status.position, position.txid >= txid { return position }
            guard ContinuousClock.now < deadline else {
                throw ReplicationError(.timeout, "transaction \(txid) not applied within \(timeout): \(await core.status.lastError ?? "no error")")
            }
            await core.waitForProgress(until: deadline)
        }
    }

    /// Waits until every stream message up to `sequence` was taken into account (applied, or
    /// rejected), or `timeout`.
    public func waitForStreamSequence(_ sequence: UInt64, timeout: Duration) async throws -> ReplicaPosition {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let position = await core.status.position, position.streamSequence >= sequence { return position }
            guard ContinuousClock.now < deadline else {
                throw ReplicationError(.timeout, "stream sequence \(sequence) not reached within \(timeout): \(await core.status.lastError ?? "no error")")
            }
            await core.waitForProgress(until: deadline)
        }
    }

    /// Stops applying (the replica and position stay; the next start continues from them).
    /// Reports the final position (``ReplicationHistoryStore``) when it changed since the last
    /// report. Returns the replica's position and verified page hashes for a promotion that
    /// follows at once (``ReplicaPromotion/promote(configuration:jetStream:logger:timeout:token:handover:)``).
    @discardableResult
    public func stop() async -> ReplicaHandover? {
        await core.requestStop()
        watcher.withLockedValue { $0 }?.cancel()
        if let task = loop.withLockedValue({ $0 }) {
            // An idle applier waits in a pull request for up to its expiry (500 ms): cancelling
            // ends the wait at once (the next start positions the consumer again anyway), so a
            // promotion does not wait for it.
            task.cancel()
            await task.value
        }
        await core.reportHoldingIfDue(force: true)
        let handover = await core.handover()
        await core.shutdown()
        return handover
    }
}

/// The applier's state; file work runs in ``ReplicaStore`` on its ``IOThread``.
actor ApplierCore {
    let configuration: ReplicationConfiguration
    let names: ReplicationNames
    let jetStream: JetStream
    let logger: Logger
    let io = IOThread()
    let store: ReplicaStore
    private var consumer: PullConsumer?
    private var assembler = RecordAssembler()
    /// Set after a reconnect: position the consumer again before the next fetch.
    private var repositionPending = false
    /// Record restarts since the position last moved (a restart that does not help is a gap).
    private var restartsWithoutProgress = 0
    /// The newest stream sequence the consumer delivered since it was positioned. The consumer
    /// reads every subject of the stream and the stream has no interior holes, so a delivery
    /// that skips sequences lost messages on the way.
    private var lastDeliveredSequence: UInt64?
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private(set) var stopRequested = false
    private(set) var status = ApplierStatus(
        position: nil, rejectedStaleRecords: 0, discardedIncompleteRecords: 0, snapshotsRestored: 0, recordRestarts: 0, resynchronisations: 0,
        repositionsAfterReconnect: 0, largestBatchBytes: 0, lastError: nil, running: false)
    /// Records (transactions and snapshots) applied since the core was created.
    private(set) var recordsApplied = 0
    private var lastConsumerCheck = ContinuousClock.now
    private var lastReport: (txid: UInt64, checksum: UInt64, note: String?, at: ContinuousClock.Instant)?

    init(configuration: ReplicationConfiguration, jetStream: JetStream, logger: Logger) {
        self.configuration = configuration
        self.names = configuration.names
        self.jetStream = jetStream
        self.logger = logger
        store = ReplicaStore(replicaPath: configuration.replicaPath, positionPath: configuration.positionPath)
    }

    func setRunning(_ running: Bool) { status.running = running }
    func requestStop() {
        stopRequested = true
        wake()
    }

    func connectionReestablished() {
        guard consumer != nil else { return }
        repositionPending = true
    }

    func noteError(_ error: any Error) {
        if let replicationError = error as? ReplicationError, replicationError.code == .streamBehind {
            // Waiting for the stream: said once, not every retry.
            if status.lastError != "\(error)" {
                logger.warning("the replication stream is behind this replica; waiting", metadata: ["error": "\(error)"])
            }
            status.lastError = "\(error)"
            wake()
            return
        }
        status.resynchronisations += 1
        status.lastError = "\(error)"
        logger.warning("applying failed; will resynchronise", metadata: ["error": "\(error)"])
        wake()
    }

    func shutdown() async {
        let store = store
        try? await io.run { store.closeFile() }
        await io.shutdown()
    }

    var incompleteRecordPending: Bool { assembler.hasIncompleteRecord }

    /// Publishes what the replica holds (``ReplicationHistoryStore/report(_:)``), for
    /// `batonctl replica status` and the other nodes' promotion decisions: when it changed, at
    /// most every 5 seconds (`force`: whenever it changed), and every minute regardless.
    func reportHoldingIfDue(force: Bool = false) async {
        guard let position = status.position else { return }
        let now = ContinuousClock.now
        let note = status.lastError.flatMap { $0.contains("\(ReplicationError.Code.streamBehind)") ? $0 : nil }
        if let last = lastReport {
            let changed = last.txid != position.txid || last.checksum != position.checksum || last.note != note
            if !changed, now - last.at < .seconds(60) { return }
            if changed, !force, now - last.at < .seconds(5) { return }
        }
        lastReport = (position.txid, position.checksum, note, now)
        let copy = DatabaseCopy(
            node: configuration.nodeID, token: position.token, txid: position.txid, checksum: position.checksum, pageSize: position.pageSize,
            commitPages: position.commitPages, streamSequence: position.streamSequence)
        do {
            try await ReplicationHistoryStore(configuration: configuration, jetStream: jetStream).report(
                NodeHoldingReport(role: "applying", copy: copy, appliedAt: position.appliedAt, reportedAt: Date(), note: note))
        } catch {
            logger.debug("cannot report the replica's position", metadata: ["error": "\(error)"])
        }
    }

    private func wake() {
        let pending = waiters
        waiters = []
        for waiter in pending { waiter.resume() }
    }

    /// Suspends until the position changes, an error is noted, or `deadline`.
    func waitForProgress(until deadline: ContinuousClock.Instant) async {
        let timer = Task { [weak self] in
            try? await Task.sleep(until: deadline)
            await self?.wakeAll()
        }
        await withCheckedContinuation { waiters.append($0) }
        timer.cancel()
    }

    private func wakeAll() { wake() }

    func load(handover: ReplicaHandover? = nil) async throws {
        let store = store
        try await io.run { try store.load(handover: handover) }
        status.position = try await io.run { store.position }
    }

    /// Whether the last load took a stopped applier's handover instead of reading the replica.
    var loadTookHandover: Bool {
        get async {
            let store = store
            return (try? await io.run { store.tookHandover }) ?? false
        }
    }

    func handover() async -> ReplicaHandover? {
        let store = store
        return try? await io.run { store.handover() }
    }

    /// See ``WALApplier/start(configuration:jetStream:logger:adoptingLocalDatabaseAt:)``.
    func adoptLocalDatabase(at handoff: HandoffReport) async {
        if let position = status.position, position.streamSequence >= handoff.markerSequence { return }
        let store = store
        let databasePath = configuration.databasePath
        let nodeToken = status.position?.token ?? 0
        let started = ContinuousClock.now
        do {
            if try await io.run({ try store.adopt(databasePath: databasePath, handoff: handoff, nodeToken: nodeToken) }) {
                status.position = try await io.run { store.position }
                status.localDatabasesAdopted += 1
                logger.info(
                    "replica made from the local database at this node's final marker; no snapshot restored",
                    metadata: [
                        "txid": "\(handoff.txid)", "sequence": "\(handoff.markerSequence)", "pages": "\(handoff.commitPages)",
                        "took": "\(ContinuousClock.now - started)",
                    ])
                return
            }
            status.localDatabasesDiverged += 1
            logger.warning(
                "the local database does not match this node's final marker (it diverged); restoring a snapshot",
                metadata: ["marker-txid": "\(handoff.txid)", "marker-checksum": "\(hex(handoff.checksum))"])
        } catch {
            status.localDatabasesDiverged += 1
            logger.warning("cannot take the replica from the local database; restoring a snapshot", metadata: ["error": "\(error)"])
        }
    }

    /// Positions the consumer after the persisted position, restoring the latest snapshot
    /// first when there is no usable position.
    ///
    /// A passive node never creates the stream (only a promoted node does, after checking that
    /// it holds the newest data). A stream that went backwards — it ends before the position,
    /// or holds a record of a newer token or a later txid at the position's sequence — is not
    /// the one the replica followed: its latest snapshot is restored when a newer epoch wrote
    /// it (a promotion that recovered the history) or the same epoch above the replica's txid
    /// (the active node re-created a lost stream), else the applier waits
    /// (``ReplicationError/Code/streamBehind``).
    func position() async throws {
        let info: StreamInfo
        do {
            info = try await jetStream.streamInfo(names.stream)
        } catch let error as JetStreamAPIError where error.errorCode == .streamNotFound {
            throw ReplicationError(
                .streamBehind, "the stream \(names.stream) does not exist (not created yet, deleted, or lost); waiting for the active node to create it")
        }
        let current = status.position
        if let current, let behind = try await streamWentBackwards(info, from: current) {
            let newer: Bool
            do {
                let message = try await jetStream.getLastMessage(stream: names.stream, subject: names.snapshotSubject)
                let chunk = try RecordChunk(decoding: Array(message.payload.readableBytesView))
                // A newer epoch, or the same active node starting a new history above this
                // replica after its stream was lost.
                newer = chunk.token > current.token || (chunk.token == current.token && chunk.txid > current.txid)
            } catch let error as JetStreamAPIError where error.errorCode == .noMessageFound {
                newer = false
            }
            guard newer else {
                throw ReplicationError(.streamBehind, "\(behind); waiting for an active node of a newer epoch to publish a snapshot")
            }
            logger.warning("the stream went backwards; restoring the snapshot a newer epoch published", metadata: ["detail": "\(behind)"])
            try await restoreLatestSnapshot()
            guard let position = status.position else { throw ReplicationError(.noSnapshot, "no snapshot to start the replica from") }
            try await recreateConsumer(startingAt: position.streamSequence + 1)
            return
        }
        if current == nil || (info.state.messages > 0 && current!.streamSequence + 1 < info.state.firstSequence) {
            try await restoreLatestSnapshot()
        }
        guard let position = status.position else { throw ReplicationError(.noSnapshot, "no snapshot to start the replica from") }
        try await recreateConsumer(startingAt: position.streamSequence + 1)
    }

    /// Why the stream is not the one `position` followed, or nil when it is.
    private func streamWentBackwards(_ info: StreamInfo, from position: ReplicaPosition) async throws -> String? {
        guard position.streamSequence > 0 else { return nil }
        if info.state.lastSequence < position.streamSequence {
            return "the stream \(names.stream) ends at sequence \(info.state.lastSequence), before this replica's position \(position.streamSequence) (txid \(position.txid)): it was deleted or recreated"
        }
        guard info.state.messages > 0, position.streamSequence >= info.state.firstSequence else { return nil }
        let message: StoredMessage
        do {
            message = try await jetStream.getMessage(stream: names.stream, sequence: position.streamSequence)
        } catch let error as JetStreamAPIError where error.errorCode == .noMessageFound {
            return nil
        }
        let chunk = try RecordChunk(decoding: Array(message.payload.readableBytesView))
        // A record of an older token there is a stale writer's, which the replica rejected.
        if chunk.token > position.token || (chunk.token == position.token && chunk.txid > position.txid) {
            return "the stream \(names.stream) holds txid \(chunk.txid) of epoch \(chunk.token) at sequence \(position.streamSequence), where this replica applied txid \(position.txid) of epoch \(position.token): it was recreated"
        }
        return nil
    }

    private func recreateConsumer(startingAt sequence: UInt64) async throws {
        do {
            try await jetStream.deleteConsumer(stream: names.stream, name: names.consumer)
        } catch let error as JetStreamAPIError where error.errorCode == .consumerNotFound {
        }
        var config = ConsumerConfig(durableName: names.consumer, deliverPolicy: .byStartSequence(sequence), ackPolicy: .explicit, filterSubject: names.subjects)
        config.ackWait = .seconds(30)
        config.maxAckPending = 10_000
        config.replicas = configuration.streamReplicas
        config.description = "Baton applier of \(configuration.app) on \(configuration.nodeID)"
        consumer = try await jetStream.createPullConsumer(stream: names.stream, config: config)
        assembler.reset()
        lastDeliveredSequence = nil
    }

    private func restoreLatestSnapshot() async throws {
        let message: StoredMessage
        do {
            message = try await jetStream.getLastMessage(stream: names.stream, subject: names.snapshotSubject)
        } catch let error as JetStreamAPIError where error.errorCode == .noMessageFound {
            throw ReplicationError(.noSnapshot, "the stream \(names.stream) holds no snapshot record")
        }
        var single = RecordAssembler()
        guard let record = try single.add(RecordChunk(decoding: Array(message.payload.readableBytesView))) else {
            throw ReplicationError(.malformedRecord, "snapshot record at sequence \(message.sequence) is chunked")
        }
        try await restore(record, sequence: message.sequence)
    }

    func restore(_ record: ReplicationRecord, sequence: UInt64) async throws {
        guard let name = record.snapshotName else { throw ReplicationError(.malformedRecord, "snapshot record \(record.txid) has no name") }
        let objectStore = try await jetStream.objectStore(names.snapshotBucket)
        let temporary = configuration.replicaPath + ".restore.\(NUID.next())"
        let what = status.position == nil ? "initial sync" : "resynchronisation"
        status.sync = SyncProgress(initial: status.position == nil, snapshot: name, txid: record.txid, now: .now)
        defer { status.sync = nil }
        logger.info("\(what): restoring snapshot", metadata: ["txid": "\(record.txid)", "snapshot": "\(name)"])
        do {
            // The snapshot streams to the file one chunk at a time (a fixed amount of memory
            // whatever its size); progress goes to the status and, every few seconds, the log.
            try await objectStore.get(name, toFile: temporary) { [weak self] info, written in
                await self?.noteSyncProgress(bytesDone: written, bytesTotal: info.size)
            }
        } catch let error as ObjectStoreError where error.code == .objectNotFound {
            throw ReplicationError(.noSnapshot, "snapshot \(name) of record \(record.txid) is no longer in the bucket")
        }
        status.sync?.verifying(now: .now)
        let store = store
        do {
            try await io.run { try store.install(snapshotFile: temporary, record: record, sequence: sequence) }
        } catch {
            try? await io.run { try FileIO.removeIfExists(temporary) }
            throw error
        }
        status.position = try await io.run { store.position }
        status.snapshotsRestored += 1
        recordsApplied += 1
        var metadata: Logger.Metadata = ["txid": "\(record.txid)", "snapshot": "\(name)"]
        if let sync = status.sync {
            let finished = ContinuousClock.now
            let seconds = Double((finished - sync.startedAt).components.seconds) + Double((finished - sync.startedAt).components.attoseconds) / 1e18
            metadata["bytes"] = "\(sync.bytesTotal)"
            metadata["took"] = "\(String(format: "%.2f", seconds))s"
            metadata["rate"] = "\(String(format: "%.1f", seconds > 0 ? Double(sync.bytesTotal) / seconds / 1_048_576 : 0)) MiB/s"
        }
        logger.info("\(what): snapshot restored; applying the stream after it", metadata: metadata)
        wake()
    }

    /// Records the download progress of the running restore; logs a line every few seconds.
    private func noteSyncProgress(bytesDone: UInt64, bytesTotal: UInt64) {
        guard var sync = status.sync else { return }
        let due = sync.update(bytesDone: bytesDone, bytesTotal: bytesTotal, now: .now)
        status.sync = sync
        if due {
            logger.info(
                "\(sync.initial ? "initial sync" : "resynchronisation"): \(sync.summary)",
                metadata: ["snapshot": "\(sync.snapshot)", "bytes-done": "\(bytesDone)", "bytes-total": "\(bytesTotal)"])
        }
    }

    /// The `max_bytes` of each pull request: the configured bound, raised when one message of
    /// the server's max_payload (plus its subject and ack subject) would not fit.
    var fetchMaxBytes: Int {
        let maxPayload = jetStream.client.serverInfo?.maxPayload ?? 1024 * 1024
        return max(configuration.fetchMaxBytes, maxPayload + 4096)
    }

    /// Fetches and applies one batch; returns how many messages arrived.
    ///
    /// A pull request is answered when its batch is full or it expires, so a request for 256
    /// messages would hold back records that arrive one at a time for up to `expires`. Hence:
    /// take what the stream already has (`no_wait`), and only when that is nothing wait for
    /// the next message alone. Every request is bounded in bytes too, and the next is sent
    /// only after this batch was applied: that is the applier's backpressure.
    func step(expires: Duration, noWait: Bool = false) async throws -> Int {
        if repositionPending {
            repositionPending = false
            if let position = status.position {
                status.repositionsAfterReconnect += 1
                logger.notice(
                    "NATS connection re-established; reading the replication stream again from the applied position",
                    metadata: ["sequence": "\(position.streamSequence + 1)"])
            }
            try await position()
        }
        guard let consumer else { throw ReplicationError(.notRunning, "the consumer is not positioned") }
        let maxBytes = fetchMaxBytes
        var messages: [JetStreamMessage]
        do {
            messages = try await consumer.fetch(batch: configuration.fetchMaxMessages, maxBytes: maxBytes, expires: expires, noWait: true)
            if messages.isEmpty, !noWait {
                messages = try await consumer.fetch(batch: 1, maxBytes: maxBytes, expires: expires)
            }
        } catch let error as JetStreamError where error.code == .pullRequestEnded {
            // Messages meant for that request may never reach us (they would come back only
            // after the ack wait): read on from the applied position with a new consumer.
            logger.debug("pull request ended early; repositioning the consumer", metadata: ["detail": "\(error)"])
            status.repositionsAfterEndedPulls += 1
            try await position()
            return 0
        }
        if messages.isEmpty, ContinuousClock.now - lastConsumerCheck >= .seconds(2) {
            // A stream deleted or recreated under an idle applier can leave its pulls unanswered
            // without an error (nats-server 2.9): check that the consumer still exists.
            lastConsumerCheck = .now
            do {
                _ = try await jetStream.consumerInfo(stream: names.stream, name: names.consumer)
            } catch let error as JetStreamAPIError where error.errorCode == .consumerNotFound || error.errorCode == .streamNotFound {
                throw ReplicationError(
                    .streamBehind, "the consumer \(names.consumer) on \(names.stream) is gone (the stream was deleted or recreated): \(error.errorDescription)")
            }
        }
        let batchBytes = messages.reduce(0) { $0 + PullConsumer.deliveredSize(of: $1.message) }
        status.largestBatchBytes = max(status.largestBatchBytes, batchBytes)
        for message in messages {
            let sequence = message.metadata.streamSequence
            if let last = lastDeliveredSequence, sequence > last + 1 {
                try await restartRecord(
                    at: message, ReplicationError(.chunkMissing, "stream messages \(last + 1)...\(sequence - 1) were not delivered"))
                return messages.count
            }
            lastDeliveredSequence = max(lastDeliveredSequence ?? 0, sequence)
            do {
                try await handle(message)
            } catch let error as ReplicationError where error.code == .chunkMissing {
                try await restartRecord(at: message, error)
                return messages.count
            }
            try? await message.ack()
        }
        return messages.count
    }

    /// Messages were not delivered (lost with a connection, or held back for redelivery): read
    /// the record again from its first chunk by positioning the consumer after the last applied
    /// record. Only when the record's start is not in the stream at all (or restarting does not
    /// help) is that a gap, which resynchronises.
    private func restartRecord(at message: JetStreamMessage, _ error: ReplicationError) async throws {
        guard let position = status.position else { throw error }
        let sequence = message.metadata.streamSequence
        if sequence == position.streamSequence + 1 {
            throw ReplicationError(.gap, "\(error.message) at stream sequence \(sequence); the record's first chunk is not in the stream")
        }
        if restartsWithoutProgress >= 2 {
            throw ReplicationError(.gap, "\(error.message) at stream sequence \(sequence), again after reading from sequence \(position.streamSequence + 1) twice")
        }
        restartsWithoutProgress += 1
        status.recordRestarts += 1
        logger.notice(
            "chunks of a record were not delivered; reading it again from its first chunk",
            metadata: ["detail": "\(error.message)", "sequence": "\(sequence)", "from-sequence": "\(position.streamSequence + 1)"])
        try await self.position()
    }

    private func handle(_ message: JetStreamMessage) async throws {
        let sequence = message.metadata.streamSequence
        guard let position = status.position else { throw ReplicationError(.noSnapshot, "no replica") }
        guard sequence > position.streamSequence else { return }
        let chunk = try RecordChunk(decoding: Array(message.payload.readableBytesView))
        let discardedBefore = assembler.discardedIncompleteRecords
        let assembled = try assembler.add(chunk)
        status.discardedIncompleteRecords += assembler.discardedIncompleteRecords - discardedBefore
        guard let record = assembled else { return }
        let store = store
        var advanced = position
        advanced.streamSequence = sequence
        advanced.finalMarkerToken = nil
        if record.token < position.token {
            status.rejectedStaleRecords += 1
            logger.warning(
                "record with an older fencing token rejected",
                metadata: ["txid": "\(record.txid)", "token": "\(record.token)", "applied-token": "\(position.token)"])
            advanced.finalMarkerToken = position.finalMarkerToken
            try await io.run { [advanced] in try store.advance(to: advanced) }
        } else {
            switch record.kind {
            case .transaction:
                if record.txid <= position.txid {
                    try await io.run { [advanced] in try store.advance(to: advanced) }
                } else {
                    guard record.txid == position.txid + 1 else {
                        throw ReplicationError(.gap, "record \(record.txid) follows applied transaction \(position.txid)")
                    }
                    try await io.run { try store.apply(record, sequence: sequence) }
                    recordsApplied += 1
                }
            case .snapshot:
                let fileMatches = try await io.run { !store.fileAheadOfPosition }
                if record.checksumAfter == position.checksum, record.pageSize == position.pageSize, record.commitPages == position.commitPages,
                    fileMatches
                {
                    advanced.txid = record.txid
                    advanced.token = record.token
                    advanced.transactionTime = record.timestamp
                    try await io.run { [advanced] in try store.advance(to: advanced) }
                } else {
                    try await restore(record, sequence: sequence)
                }
            case .finalMarker:
                if record.txid == position.txid, record.checksumAfter == position.checksum {
                    advanced.finalMarkerToken = record.token
                    advanced.token = record.token
                    logger.info("final marker applied", metadata: ["txid": "\(record.txid)", "token": "\(record.token)"])
                } else {
                    logger.error(
                        "final marker does not match the replica",
                        metadata: ["marker-txid": "\(record.txid)", "applied-txid": "\(position.txid)"])
                }
                try await io.run { [advanced] in try store.advance(to: advanced) }
            }
        }
        status.position = try await io.run { store.position }
        status.lastError = nil
        restartsWithoutProgress = 0
        wake()
    }

    func lag() async throws -> ReplicationLag {
        let position = status.position
        let info: StreamInfo
        do {
            info = try await jetStream.streamInfo(names.stream)
        } catch let error as JetStreamAPIError where error.errorCode == .streamNotFound {
            var lag = ReplicationLag(
                appliedTxid: position?.txid, streamTxid: nil, txidsBehind: 0, messagesBehind: 0, lastAppliedTransactionTime: position?.transactionTime)
            lag.streamBehindReplica = "the stream \(names.stream) does not exist (deleted or lost)"
            return lag
        }
        var streamTxid: UInt64?
        if info.state.messages > 0 {
            let last = try await jetStream.getMessage(stream: names.stream, sequence: info.state.lastSequence)
            streamTxid = try RecordChunk(decoding: Array(last.payload.readableBytesView)).txid
        }
        let applied = position?.txid
        let behind = (streamTxid ?? 0) > (applied ?? 0) ? (streamTxid ?? 0) - (applied ?? 0) : 0
        let messages = info.state.lastSequence > (position?.streamSequence ?? 0) ? info.state.lastSequence - (position?.streamSequence ?? 0) : 0
        var lag = ReplicationLag(
            appliedTxid: applied, streamTxid: streamTxid, txidsBehind: behind, messagesBehind: messages,
            lastAppliedTransactionTime: position?.transactionTime)
        lag.bytesBehind = ReplicationLagEstimate.bytesBehind(messagesBehind: messages, streamMessages: info.state.messages, streamBytes: info.state.bytes)
        if messages > 0, info.state.messages > 0 {
            // One read per lag sample, only while behind: the first message beyond the applied
            // position carries the oldest missing transaction's time.
            let first = max((position?.streamSequence ?? 0) + 1, info.state.firstSequence)
            if let message = try? await jetStream.getMessage(stream: names.stream, sequence: first) {
                lag.oldestUnappliedTransactionTime = ReplicationLagEstimate.transactionTime(
                    ofChunk: Array(message.payload.readableBytesView), storedAt: message.time)
            }
        }
        if let position { lag.streamBehindReplica = try await streamWentBackwards(info, from: position) }
        return lag
    }

    // MARK: - Promotion support

    /// Applies everything up to the stream's current end. Returns the number of stream
    /// messages that were beyond the position when it started.
    func drain(timeout: Duration) async throws -> (records: Int, incompleteDiscarded: Bool, target: UInt64) {
        let deadline = ContinuousClock.now + timeout
        let info = try await jetStream.streamInfo(names.stream)
        let target = info.state.lastSequence
        // Counted from here: a snapshot restored by `position()` (no usable position) is a
        // record the replica had not applied.
        let start = recordsApplied
        try await position()
        var emptyFetches = 0
        while (status.position?.streamSequence ?? 0) < target {
            guard ContinuousClock.now < deadline else {
                throw ReplicationError(.timeout, "the stream was not drained to sequence \(target) within \(timeout)")
            }
            let count = try await step(expires: .milliseconds(200))
            if count == 0 {
                emptyFetches += 1
                // Only the chunks of a record whose writer died are left: it is not applied.
                if assembler.hasIncompleteRecord, emptyFetches >= 2 { return (recordsApplied - start, true, target) }
            } else {
                emptyFetches = 0
            }
        }
        return (recordsApplied - start, false, target)
    }
}
