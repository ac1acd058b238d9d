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
public final class WALApplier: Sendable {
    /// The configuration the applier runs with.
    public let configuration: ReplicationConfiguration
    let core: ApplierCore
    private let loop: NIOLockedValueBox<Task<Void, Never>?>

    init(configuration: ReplicationConfiguration, core: ApplierCore) {
        self.configuration = configuration
        self.core = core
        loop = NIOLockedValueBox(nil)
    }

    /// Loads the replica and starts applying in the background. Returns once the loop runs (a
    /// missing snapshot is not an error here; the loop waits for one).
    public static func start(configuration: ReplicationConfiguration, jetStream: JetStream, logger: Logger) async throws -> WALApplier {
        try configuration.validate()
        var logger = logger
        logger[metadataKey: "app"] = "\(configuration.app)"
        let core = ApplierCore(configuration: configuration, jetStream: jetStream, logger: logger)
        try await core.load()
        let applier = WALApplier(configuration: configuration, core: core)
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
                } catch {
                    positioned = false
                    await core.noteError(error)
                    try? await Task.sleep(for: .milliseconds(500))
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
    public func stop() async {
        await core.requestStop()
        if let task = loop.withLockedValue({ $0 }) { await task.value }
        await core.shutdown()
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
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private(set) var stopRequested = false
    private(set) var status = ApplierStatus(
        position: nil, rejectedStaleRecords: 0, discardedIncompleteRecords: 0, snapshotsRestored: 0, lastError: nil, running: false)
    /// Records (transactions and snapshots) applied since the core was created.
    private(set) var recordsApplied = 0

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

    func noteError(_ error: any Error) {
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

    func load() async throws {
        let store = store
        try await io.run { try store.load() }
        status.position = try await io.run { store.position }
    }

    /// Positions the consumer after the persisted position, restoring the latest snapshot
    /// first when there is no usable position.
    func position() async throws {
        try await ensureStreamAndBucket(jetStream: jetStream, configuration: configuration)
        let info = try await jetStream.streamInfo(names.stream)
        let current = status.position
        if current == nil || (info.state.messages > 0 && current!.streamSequence + 1 < info.state.firstSequence) {
            try await restoreLatestSnapshot()
        }
        guard let position = status.position else { throw ReplicationError(.noSnapshot, "no snapshot to start the replica from") }
        try await recreateConsumer(startingAt: position.streamSequence + 1)
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

    private func restore(_ record: ReplicationRecord, sequence: UInt64) async throws {
        guard let name = record.snapshotName else { throw ReplicationError(.malformedRecord, "snapshot record \(record.txid) has no name") }
        let objectStore = try await jetStream.objectStore(names.snapshotBucket)
        let temporary = configuration.replicaPath + ".restore.\(NUID.next())"
        do {
            try await objectStore.get(name, toFile: temporary)
        } catch let error as ObjectStoreError where error.code == .objectNotFound {
            throw ReplicationError(.noSnapshot, "snapshot \(name) of record \(record.txid) is no longer in the bucket")
        }
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
        logger.info("snapshot restored", metadata: ["txid": "\(record.txid)", "snapshot": "\(name)"])
        wake()
    }

    /// Fetches and applies one batch; returns how many messages arrived.
    ///
    /// A pull request is answered when its batch is full or it expires, so a request for 256
    /// messages would hold back records that arrive one at a time for up to `expires`. Hence:
    /// take what the stream already has (`no_wait`), and only when that is nothing wait for
    /// the next message alone.
    func step(expires: Duration, noWait: Bool = false) async throws -> Int {
        guard let consumer else { throw ReplicationError(.notRunning, "the consumer is not positioned") }
        var messages = try await consumer.fetch(batch: 256, expires: expires, noWait: true)
        if messages.isEmpty, !noWait {
            messages = try await consumer.fetch(batch: 1, expires: expires)
        }
        for message in messages {
            try await handle(message)
            try? await message.ack()
        }
        return messages.count
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
        wake()
    }

    func lag() async throws -> ReplicationLag {
        let info = try await jetStream.streamInfo(names.stream)
        let position = status.position
        var streamTxid: UInt64?
        if info.state.lastSequence > 0 {
            let last = try await jetStream.getMessage(stream: names.stream, sequence: info.state.lastSequence)
            streamTxid = try RecordChunk(decoding: Array(last.payload.readableBytesView)).txid
        }
        let applied = position?.txid
        let behind = (streamTxid ?? 0) > (applied ?? 0) ? (streamTxid ?? 0) - (applied ?? 0) : 0
        let messages = info.state.lastSequence > (position?.streamSequence ?? 0) ? info.state.lastSequence - (position?.streamSequence ?? 0) : 0
        return ReplicationLag(
            appliedTxid: applied, streamTxid: streamTxid, txidsBehind: behind, messagesBehind: messages,
            lastAppliedTransactionTime: position?.transactionTime)
    }

    // MARK: - Promotion support

    /// Applies everything up to the stream's current end. Returns the number of stream
    /// messages that were beyond the position when it started.
    func drain(timeout: Duration) async throws -> (records: Int, incompleteDiscarded: Bool) {
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
                if assembler.hasIncompleteRecord, emptyFetches >= 2 { return (recordsApplied - start, true) }
            } else {
                emptyFetches = 0
            }
        }
        return (recordsApplied - start, false)
    }
}
