import Backends
import BatonCore
import Control
import Foundation
import Logging
import NATS
import Replication
import Timestamps

/// An app's SQLite database replicated through JetStream: the ``AppReplica`` of an app with a
/// `sqlite:` section.
///
/// - Passive (``follow()``): a ``WALApplier`` applies the active node's records to
///   `<state_dir>/<app>.replica.db` (position in `<state_dir>/<app>.position.json`).
/// - Promotion (``promote(token:)``): the applier stops, ``ReplicaPromotion`` drains the stream,
///   verifies the replica (checksum and `quick_check`) and moves it over `sqlite.path`, then a
///   ``WALShipper`` continues the stream from the promoted position under the new fencing token
///   (one small claim record, no snapshot: the cost does not grow with the database). Only then
///   does the backend start. Snapshots follow in the background.
/// - Graceful demotion (``flush(token:)``, after the backend stopped): the shipper ships what is
///   left and publishes a final marker, so the next node loses nothing. The following
///   ``follow()`` makes the replica from this node's own database (it is the database at the
///   marker, checksum verified) and applies from there; a snapshot is restored only when the
///   database diverged.
/// - Fencing (``fence()``): shipping stops at once; JetStream's expected-sequence checks reject
///   anything a stale shipper still tries to publish.
/// - Unshipped transactions are never overwritten: when a final flush gave up
///   (``setAside(token:reason:)``), or this node shipped under an epoch that ended without a
///   final marker (fenced, flush failed), the database is renamed to
///   `<db>.unshipped-<epoch>-<time>` (see ``LocalDatabaseFiles``) before the next follow or
///   promotion, logged at critical, and listed in ``status()`` while the file exists.
/// - At the first operation, temporary files a crash left in the state directory are removed.
///
/// **First start of an app.** When the stream holds nothing, there is nothing to promote: an
/// existing database at `sqlite.path` is used as it is (it becomes the first snapshot), and a
/// missing one is created empty, in WAL mode, so shipping starts before the backend (which then
/// finds an empty database and creates its schema; those first writes are shipped like any
/// other).
///
/// Operations run one at a time in the order they were called, and the latest call wins: a
/// promotion that is still running when ``fence()``, ``flush(token:)`` or ``follow()`` is
/// called backs out (stopping a shipper it started) and throws.
public actor SQLiteReplica: AppReplica {
    /// Where and how the database is replicated.
    public nonisolated let configuration: ReplicationConfiguration
    private let jetStream: JetStream
    private let logger: Logger
    private let promotionTimeout: Duration
    private nonisolated let failureStream: AsyncStream<String>
    private let failureContinuation: AsyncStream<String>.Continuation

    private enum Mode {
        case idle
        case following(WALApplier)
        case shipping(WALShipper)
    }

    private var mode: Mode = .idle
    /// Bumped by every operation; an operation that sees another value than its own backs out.
    private var intent = 0
    private var queue: Task<Void, Never>?
    private var lagMonitor: Task<Void, Never>?
    private var shipperWatch: Task<Void, Never>?
    private var followRetry: Task<Void, Never>?
    private var lag: ReplicationLag?
    private var lastError: String?
    private var promotionSummary: String?
    /// The data-loss facts of the last successful promotion (for the failover flight record).
    private var promotionDataLoss: PromotionDataLoss?
    /// The token this node last shipped under, and whether JetStream fenced it.
    private var shippingToken: UInt64?
    private var fencedToken: UInt64?
    /// The final marker this node published at its last graceful stepdown: its database is
    /// the database at that marker, so following starts from it instead of a snapshot.
    private var lastHandoff: HandoffReport?
    /// The epoch of the last shipper this node ran while it ended without a final marker (or
    /// still runs): its database may hold transactions nobody else has. Cleared by a final
    /// marker or by setting the database aside.
    private var unconfirmedShippingToken: UInt64?
    /// The last txid the shipper of ``unconfirmedShippingToken`` published, when known.
    private var lastShippedTxid: UInt64?
    private let files: LocalDatabaseFiles
    /// The newest snapshot's time, for the status.
    private let snapshotAge: SnapshotAgeWatch
    private var leftoversChecked = false
    private var disposed = false

    /// Creates the replica of an app; nothing runs until ``follow()`` or ``promote(token:)``.
    /// `promotionTimeout` bounds the drain of the stream during promotion.
    public init(configuration: ReplicationConfiguration, jetStream: JetStream, promotionTimeout: Duration = .seconds(25), logger: Logger) throws {
        try configuration.validate()
        self.configuration = configuration
        self.jetStream = jetStream
        self.promotionTimeout = promotionTimeout
        var logger = logger
        logger[metadataKey: "app"] = "\(configuration.app)"
        self.logger = logger
        (failureStream, failureContinuation) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(16))
        files = LocalDatabaseFiles(configuration: configuration)
        snapshotAge = SnapshotAgeWatch(jetStream: jetStream, bucket: configuration.names.snapshotBucket)
    }

    /// The replication settings of `app` on this node: `sqlite.path` is the database, the
    /// node's `state_dir` holds the replica and its position, `retention` and
    /// `stream_max_bytes` are the stream's `max_age` and `max_bytes`, `snapshot_interval`,
    /// `snapshots` and `snapshot_max_bytes` drive the snapshot bucket, and `nats.replicas` the
    /// JetStream replicas.
    public static func configuration(app: AppConfig, sqlite: SQLiteReplicaConfig, config: BatonConfig) -> ReplicationConfiguration {
        var configuration = ReplicationConfiguration(
            cluster: config.cluster, app: app.name, nodeID: config.node.id, databasePath: sqlite.path, stateDirectory: config.node.stateDirectory)
        configuration.streamReplicas = config.nats.replicas
        configuration.streamMaxAge = sqlite.retention
        configuration.snapshotsToKeep = sqlite.snapshotsKept
        configuration.snapshotInterval = sqlite.snapshotInterval
        configuration.snapshotReplayRatio = sqlite.snapshotReplayRatio
        configuration.streamMaxBytes = sqlite.streamMaxBytes
        configuration.snapshotBucketMaxBytes = sqlite.snapshotMaxBytes
        configuration.snapshotBucketGrows = sqlite.snapshotMaxBytesGrows
        configuration.promotionReadsReplica = sqlite.promotionCheck == .full
        return configuration
    }

    // MARK: - AppReplica

    public func promote(token: UInt64) async throws {
        let generation = nextIntent()
        try await serialized { replica in try await replica.runPromote(token: token, generation: generation) }
    }

    public func flush(token: UInt64) async throws {
        let generation = nextIntent()
        try await serialized { replica in try await replica.runFlush(token: token, generation: generation) }
    }

    public func setAside(token: UInt64, reason: String) async throws -> String? {
        _ = nextIntent()
        return try await serialized { replica in try await replica.runSetAside(token: token, reason: reason) }
    }

    public func fence() async {
        _ = nextIntent()
        followRetry?.cancel()
        guard case .shipping(let shipper) = mode else { return }
        mode = .idle
        shipperWatch?.cancel()
        logger.warning("fenced: WAL shipping stopped", metadata: ["epoch": "\(shipper.token)"])
        await shipper.stop()
        await noteShipped(by: shipper)
    }

    public func follow() async {
        let generation = nextIntent()
        try? await serialized { replica in await replica.runFollow(generation: generation) }
    }

    public nonisolated func failures() -> AsyncStream<String> { failureStream }

    public func snapshotNow() async throws -> SnapshotReport {
        guard case .shipping(let shipper) = mode else {
            throw SQLiteReplicaError(description: "\(configuration.app) does not ship its WAL on \(configuration.nodeID) (not active here, or between roles)")
        }
        let snapshot = try await shipper.snapshotNow()
        logger.notice(
            "snapshot taken on request", metadata: ["snapshot": "\(snapshot.name)", "txid": "\(snapshot.txid)", "bytes": "\(snapshot.bytes)"])
        return SnapshotReport(
            id: snapshot.name, bucket: configuration.names.snapshotBucket, txid: snapshot.txid, epoch: snapshot.token, bytes: snapshot.bytes,
            node: configuration.nodeID)
    }

    public func status() async -> ReplicationStatus {
        var status: ReplicationStatus
        switch mode {
        case .shipping(let shipper):
            let shipped = await shipper.status()
            status = ReplicationStatus(
                role: .shipping, txid: shipped.lastTxid, lastCommitTime: shipped.lastShippedAt?.timeIntervalSince1970,
                lastError: shipped.lastError ?? lastError)
            status.snapshotsPublished = shipped.snapshots
        case .following(let applier):
            let applied = await applier.status()
            status = ReplicationStatus(
                role: .applying, txid: applied.position?.txid, lagTransactions: lag?.streamBehindReplica == nil ? lag?.txidsBehind : nil,
                lastCommitTime: applied.position?.transactionTime.timeIntervalSince1970,
                lastError: applied.lastError ?? lag?.streamBehindReplica.map { "the stream is behind this replica: \($0)" } ?? lastError)
            status.snapshotsRestored = applied.snapshotsRestored
            if let lag, lag.streamBehindReplica == nil {
                status.lagBytes = lag.bytesBehind
                status.lagSeconds = ReplicationLagEstimate.secondsBehind(
                    messagesBehind: lag.messagesBehind, oldestUnapplied: lag.oldestUnappliedTransactionTime, now: Date())
            }
            status.sync = applied.sync.map {
                ReplicationStatus.Sync(
                    initial: $0.initial, txid: $0.txid, phase: $0.phase.rawValue, bytesDone: $0.bytesDone, bytesTotal: $0.bytesTotal,
                    bytesPerSecond: $0.bytesPerSecond)
            }
        case .idle:
            status = ReplicationStatus(role: .idle, lastError: lastError)
        }
        status.promotion = promotionSummary
        status.promotionDataLoss = promotionDataLoss
        if !disposed { status.lastSnapshotTime = await snapshotAge.newestSnapshotTime()?.timeIntervalSince1970 }
        let setAside = await files.setAsideDatabases()
        if !setAside.isEmpty { status.unshippedDatabases = setAside }
        return status
    }

    public func dispose() async {
        _ = nextIntent()
        disposed = true
        await snapshotAge.cancel()
        followRetry?.cancel()
        lagMonitor?.cancel()
        shipperWatch?.cancel()
        let current = mode
        mode = .idle
        switch current {
        case .following(let applier): await applier.stop()
        case .shipping(let shipper): await shipper.stop()
        case .idle: break
        }
        failureContinuation.finish()
        await queue?.value
        await files.close()
    }

    // MARK: - Operations (run one at a time)

    private func nextIntent() -> Int {
        intent += 1
        return intent
    }

    private func serialized<T: Sendable>(_ operation: @escaping @Sendable (isolated SQLiteReplica) async throws -> T) async throws -> T {
        let previous = queue
        let task = Task<T, any Error> {
            await previous?.value
            return try await operation(self)
        }
        queue = Task { _ = await task.result }
        return try await task.value
    }

    private func checkIntent(_ generation: Int, _ what: String) throws {
        guard intent == generation, !disposed else {
            throw SQLiteReplicaError(description: "\(what) of \(configuration.app) was superseded by a later fence, flush or follow")
        }
    }

    private func runPromote(token: UInt64, generation: Int) async throws {
        try checkIntent(generation, "promotion")
        followRetry?.cancel()
        await removeLeftoversOnce()
        var handover: ReplicaHandover?
        switch mode {
        case .shipping(let shipper) where shipper.token == token && fencedToken != token:
            return  // already promoted under this token
        case .shipping(let shipper):
            mode = .idle
            shipperWatch?.cancel()
            await shipper.stop()
        case .following(let applier):
            mode = .idle
            lagMonitor?.cancel()
            handover = await applier.stop()
        case .idle:
            break
        }
        try checkIntent(generation, "promotion")
        // Never move a replica over a database that may hold transactions nobody else has.
        try await setAsideUnconfirmedShipping(reason: "an earlier epoch of this node ended without a final marker")
        lastHandoff = nil
        try? await files.persistHandoff(nil)
        let startedAt = Date()
        let report: PromotionReport
        do {
            report = try await ReplicaPromotion.promote(
                configuration: configuration, jetStream: jetStream, logger: logger, timeout: promotionTimeout, token: token, handover: handover)
        } catch {
            lastError = "promotion failed: \(error)"
            if let refusal = error as? ReplicationError, refusal.code == .newerDataElsewhere {
                // Kept (and shown by `batonctl status`) until a promotion succeeds, also while
                // this node follows again.
                promotionSummary = "epoch \(token): promotion refused (older or empty data would replace newer data): \(refusal.message)"
            }
            logger.error("cannot promote the SQLite replica; the database was left untouched", metadata: ["error": "\(error)"])
            throw error
        }
        var created = false
        if report.outcome == .nothingToPromote {
            created = try await ReplicaPromotion.createEmptyDatabaseIfMissing(configuration: configuration)
        }
        promotionSummary = Self.summary(report, token: token, createdDatabase: created, at: startedAt)
        promotionDataLoss = PromotionDataLoss(
            epoch: token,
            dataLoss: .fromPromotion(
                promotedTxid: report.txid, finalMarker: report.finalMarkerToken != nil, discardedIncompleteRecord: report.discardedIncompleteRecord,
                recoveredWithoutStream: report.recovery != nil,
                lastTransactionAgeMilliseconds: report.lastTransactionTime.map { startedAt.timeIntervalSince($0) * 1000 }))
        logPromotion(report, token: token, createdDatabase: created, at: startedAt)
        try checkIntent(generation, "promotion")
        let shipper: WALShipper
        do {
            shipper = try await WALShipper.start(
                configuration: configuration, token: token, jetStream: jetStream, logger: logger, resumingFrom: report.resumePoint)
        } catch {
            lastError = "cannot start shipping: \(error)"
            logger.error("cannot start WAL shipping", metadata: ["error": "\(error)"])
            throw error
        }
        guard intent == generation, !disposed else {
            await shipper.stop()
            try checkIntent(generation, "promotion")
            return
        }
        startShipping(shipper)
    }

    private func startShipping(_ shipper: WALShipper) {
        mode = .shipping(shipper)
        shippingToken = shipper.token
        unconfirmedShippingToken = shipper.token
        lastError = nil
        shipperWatch = Task { [weak self] in
            do {
                try await shipper.waitUntilStopped()
            } catch {
                await self?.shipperFailed(shipper, error)
            }
        }
    }

    /// The shipping loop ended with an error. Fenced: report it (the lifecycle steps down).
    /// Anything else: start a new shipper under the same token (its opening snapshot covers
    /// whatever the old one had not shipped); report only when that fails too.
    private func shipperFailed(_ shipper: WALShipper, _ error: any Error) async {
        guard case .shipping(let current) = mode, current === shipper else { return }
        mode = .idle
        await shipper.stop()
        await noteShipped(by: shipper)
        if let replicationError = error as? ReplicationError, replicationError.code == .fenced {
            fencedToken = shipper.token
            lastError = "fenced: \(replicationError.message)"
            logger.error("WAL shipping was fenced: another node writes under a newer epoch", metadata: ["error": "\(error)"])
            failureContinuation.yield("WAL shipping fenced: \(replicationError.message)")
            return
        }
        lastError = "shipping stopped: \(error)"
        logger.error("WAL shipping stopped; restarting it", metadata: ["error": "\(error)"])
        let generation = intent
        for attempt in 1...3 {
            try? await Task.sleep(for: .milliseconds(500 * attempt))
            guard intent == generation, !disposed, case .idle = mode else { return }
            do {
                let restarted = try await WALShipper.start(configuration: configuration, token: shipper.token, jetStream: jetStream, logger: logger)
                guard intent == generation, !disposed, case .idle = mode else {
                    await restarted.stop()
                    return
                }
                startShipping(restarted)
                logger.notice("WAL shipping restarted", metadata: ["attempt": "\(attempt)"])
                return
            } catch {
                lastError = "cannot restart shipping: \(error)"
                if let replicationError = error as? ReplicationError, replicationError.code == .fenced { fencedToken = shipper.token }
                logger.error("cannot restart WAL shipping", metadata: ["attempt": "\(attempt)", "error": "\(error)"])
                if fencedToken == shipper.token { break }
            }
        }
        failureContinuation.yield("WAL shipping stopped: \(lastError ?? "\(error)")")
    }

    private func runFlush(token: UInt64, generation: Int) async throws {
        followRetry?.cancel()
        var shipper: WALShipper
        switch mode {
        case .shipping(let current) where current.token == token:
            shipper = current
        case .shipping(let other):
            // Shipping under another token: not ours to flush; stop it quietly.
            mode = .idle
            shipperWatch?.cancel()
            await other.stop()
            return
        case .following, .idle:
            guard shippingToken == token else { return }
            guard fencedToken != token else {
                throw SQLiteReplicaError(description: "epoch \(token) was fenced (another node ships under a newer epoch); nothing to flush")
            }
            // The shipper of this epoch died: a new one's opening snapshot carries everything
            // the backend committed, then the marker follows.
            logger.warning("no WAL shipper runs; starting one to flush", metadata: ["epoch": "\(token)"])
            shipper = try await WALShipper.start(configuration: configuration, token: token, jetStream: jetStream, logger: logger)
        }
        mode = .idle
        shipperWatch?.cancel()
        do {
            let handoff = try await shipper.stepDown()
            lastHandoff = handoff
            do {
                try await files.persistHandoff(handoff)
            } catch {
                logger.warning("cannot keep the final marker in the state directory; after a restart this node restores a snapshot", metadata: ["error": "\(error)"])
            }
            unconfirmedShippingToken = nil
            lastError = nil
            logger.notice(
                "final WAL marker shipped", metadata: ["epoch": "\(token)", "txid": "\(handoff.txid)", "sequence": "\(handoff.markerSequence)"])
        } catch {
            await noteShipped(by: shipper)
            lastError = "final flush failed: \(error)"
            if let replicationError = error as? ReplicationError, replicationError.code == .fenced { fencedToken = token }
            logger.error("cannot ship the final WAL marker", metadata: ["epoch": "\(token)", "error": "\(error)"])
            throw error
        }
    }

    private func runFollow(generation: Int) async {
        guard intent == generation, !disposed else { return }
        await removeLeftoversOnce()
        switch mode {
        case .following:
            return
        case .shipping(let shipper):
            mode = .idle
            shipperWatch?.cancel()
            await shipper.stop()
        case .idle:
            break
        }
        // A failure is logged and retried by the next promotion, which refuses to go on.
        _ = try? await setAsideUnconfirmedShipping(reason: "the epoch ended without a final marker (fenced, or the final flush failed)")
        if lastHandoff == nil, unconfirmedShippingToken == nil, let kept = await files.persistedHandoff() {
            // batond restarted since this node's last graceful stepdown.
            logger.info("found this node's last final marker in the state directory", metadata: ["epoch": "\(kept.token)", "txid": "\(kept.txid)"])
            lastHandoff = kept
        }
        do {
            let applier = try await WALApplier.start(
                configuration: configuration, jetStream: jetStream, logger: logger, adoptingLocalDatabaseAt: lastHandoff)
            guard intent == generation, !disposed, case .idle = mode else {
                await applier.stop()
                return
            }
            mode = .following(applier)
            lastError = nil
            lag = nil
            lagMonitor = Task { [weak self] in
                while !Task.isCancelled {
                    if let lag = try? await applier.lag() { await self?.noteLag(lag, of: applier) }
                    try? await Task.sleep(for: .seconds(1))
                }
            }
            logger.info("following the active node's WAL", metadata: ["replica": "\(configuration.replicaPath)"])
        } catch {
            lastError = "cannot start applying: \(error)"
            logger.error("cannot start applying the WAL; retrying", metadata: ["error": "\(error)"])
            followRetry = Task { [weak self] in
                try? await Task.sleep(for: .seconds(2))
                guard !Task.isCancelled else { return }
                await self?.retryFollow(generation: generation)
            }
        }
    }

    /// See ``AppReplica/setAside(token:reason:)``. A flush that completed late (its final marker
    /// is this node's last handoff) leaves nothing to set aside.
    private func runSetAside(token: UInt64, reason: String) async throws -> String? {
        followRetry?.cancel()
        if let handoff = lastHandoff, handoff.token == token {
            logger.notice("the final flush completed after all; nothing to set aside", metadata: ["epoch": "\(token)", "txid": "\(handoff.txid)"])
            return nil
        }
        if case .shipping(let shipper) = mode {
            mode = .idle
            shipperWatch?.cancel()
            await shipper.stop()
            await noteShipped(by: shipper)
        }
        unconfirmedShippingToken = token
        return try await setAsideUnconfirmedShipping(reason: "the final flush gave up: \(reason)")
    }

    /// Sets the database aside when this node's last shipping epoch ended without a final
    /// marker. Returns the new path (nil: nothing to do or no database).
    @discardableResult
    private func setAsideUnconfirmedShipping(reason: String) async throws -> String? {
        guard let token = unconfirmedShippingToken else { return nil }
        if case .shipping(let shipper) = mode, shipper.token == token { return nil }
        do {
            guard let path = try await files.setAside(token: token) else {
                unconfirmedShippingToken = nil
                return nil
            }
            unconfirmedShippingToken = nil
            lastHandoff = nil
            try? await files.persistHandoff(nil)
            lastError = "database set aside at \(path): transactions committed under epoch \(token) after the last shipped txid\(lastShippedTxid.map { " \($0)" } ?? "") may be missing from the cluster"
            logger.critical(
                "database set aside: it may hold transactions committed under this epoch that were never shipped; no later promotion overwrites it",
                metadata: [
                    "epoch": "\(token)", "last-shipped-txid": "\(lastShippedTxid.map { "\($0)" } ?? "unknown")",
                    "not-shipped": "any transaction after txid \(lastShippedTxid.map { "\($0)" } ?? "?") committed under epoch \(token)",
                    "set-aside": "\(path)", "database": "\(configuration.databasePath)", "reason": "\(reason)",
                ])
            return path
        } catch {
            lastError = "cannot set the database aside: \(error)"
            logger.critical(
                "cannot set aside a database that may hold unshipped transactions; promotion on this node is refused until it is",
                metadata: ["epoch": "\(token)", "database": "\(configuration.databasePath)", "error": "\(error)"])
            throw error
        }
    }

    private func noteShipped(by shipper: WALShipper) async {
        let shipped = await shipper.status().lastTxid
        if shipped > 0 { lastShippedTxid = shipped }
    }

    /// Removes temporary files a crash left (once, before the first shipper or applier).
    private func removeLeftoversOnce() async {
        guard !leftoversChecked else { return }
        leftoversChecked = true
        do {
            let removed = try await files.removeLeftovers()
            if !removed.isEmpty {
                logger.notice("removed temporary files left by an earlier crash", metadata: ["files": "\(removed.joined(separator: ", "))"])
            }
        } catch {
            logger.warning("cannot remove temporary files left by an earlier crash", metadata: ["error": "\(error)"])
        }
        let setAside = await files.setAsideDatabases()
        if !setAside.isEmpty {
            logger.error(
                "databases set aside with transactions that were never shipped are still present; remove them once handled",
                metadata: ["files": "\(setAside.joined(separator: ", "))"])
        }
    }

    private func retryFollow(generation: Int) async {
        guard intent == generation, !disposed else { return }
        try? await serialized { replica in await replica.runFollow(generation: generation) }
    }

    private func noteLag(_ lag: ReplicationLag, of applier: WALApplier) {
        guard case .following(let current) = mode, current === applier else { return }
        self.lag = lag
    }

    // MARK: - Reporting

    private func logPromotion(_ report: PromotionReport, token: UInt64, createdDatabase: Bool, at: Date) {
        var metadata: Logger.Metadata = ["epoch": "\(token)", "outcome": "\(report.outcome.rawValue)"]
        switch report.outcome {
        case .nothingToPromote:
            metadata["database"] = "\(createdDatabase ? "created empty (WAL mode)" : "existing file kept")"
            logger.notice("no replicated data yet: first start of the app", metadata: metadata)
        case .promoted:
            metadata["txid"] = "\(report.txid ?? 0)"
            metadata["records-beyond-applied"] = "\(report.recordsAppliedDuringDrain)"
            metadata["txids-beyond-applied"] = "\(report.transactionsAppliedDuringDrain)"
            if let time = report.lastTransactionTime {
                metadata["last-transaction-time"] = "\(Self.timestamp(time))"
                metadata["last-transaction-age"] = "\(String(format: "%.3f", at.timeIntervalSince(time)))s"
            }
            metadata["handoff"] = "\(report.finalMarkerToken.map { "graceful (final marker of epoch \($0))" } ?? "no final marker (crash failover)")"
            if report.discardedIncompleteRecord { metadata["discarded-incomplete-record"] = "true" }
            if let recovery = report.recovery { metadata["recovery"] = "\(recovery)" }
            logger.notice("promoted the SQLite replica", metadata: metadata)
        }
    }

    /// One line for `batonctl status`.
    static func summary(_ report: PromotionReport, token: UInt64, createdDatabase: Bool, at: Date) -> String {
        switch report.outcome {
        case .nothingToPromote:
            return "epoch \(token): first start, \(createdDatabase ? "created an empty database" : "kept the existing database")"
        case .promoted:
            var parts = ["epoch \(token): promoted txid \(report.txid ?? 0)"]
            if let marker = report.finalMarkerToken {
                parts.append("graceful handoff from epoch \(marker), nothing lost")
            } else {
                var crash = "crash failover: transactions committed on the old active node after the last applied one were not shipped and are lost"
                if let time = report.lastTransactionTime { crash += " (last applied \(timestamp(time)), \(String(format: "%.3f", at.timeIntervalSince(time)))s before promotion)" }
                parts.append(crash)
            }
            parts.append(
                "\(report.recordsAppliedDuringDrain) record(s) / \(report.transactionsAppliedDuringDrain) txid(s) in the stream beyond the applied position, drained")
            if report.discardedIncompleteRecord { parts.append("an incomplete last record was discarded") }
            if let recovery = report.recovery { parts.append("promoted without the stream: \(recovery)") }
            return parts.joined(separator: "; ")
        }
    }

    private static func timestamp(_ date: Date) -> String {
        RFC3339.format(secondsSince1970: date.timeIntervalSince1970, fractionDigits: 3)
    }
}

/// An operation of ``SQLiteReplica`` that could not run.
public struct SQLiteReplicaError: Error, CustomStringConvertible, Sendable {
    /// What happened.
    public var description: String
}
