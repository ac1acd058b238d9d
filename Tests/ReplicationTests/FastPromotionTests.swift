import Foundation
import Logging
import NATS
import NATSTestSupport
import TestSupport
import Testing

@testable import Replication

/// Promotion whose cost does not grow with the database: the new active node continues the
/// stream (no snapshot before the backend starts), the old one keeps its own database as the
/// replica, and snapshots are copied outside the app's write lock.
@Suite("Replication: promotion without a snapshot", .serialized)
struct FastPromotionTests {
    typealias App = ReplicationIntegrationTests.App

    var logger: Logger {
        var logger = Logger(label: "fast-promotion-test")
        logger.logLevel = ProcessInfo.processInfo.environment["BATON_TEST_LOG"] != nil ? .debug : .warning
        return logger
    }

    func configuration(_ directory: TemporaryDirectory, node: String, database: String) -> ReplicationConfiguration {
        var configuration = ReplicationConfiguration(
            cluster: "test", app: "web", nodeID: node, databasePath: database, stateDirectory: directory.file("state-\(node)"))
        configuration.pollInterval = .milliseconds(20)
        configuration.checkpointAfterFrames = 200
        return configuration
    }

    func connect(_ server: NATSServerProcess) async throws -> (NATSClient, JetStream) {
        let client = try await NATSClient.connect(options: NATSClientOptions(servers: [server.url]))
        return (client, JetStream(client: client, timeout: .seconds(10)))
    }

    /// node-a ships (token 1) and hands off; node-b is promoted. Returns the handoff and the
    /// promotion report.
    func switchover(
        _ jetStream: JetStream, app: App, a: ReplicationConfiguration, b: ReplicationConfiguration
    ) async throws -> (HandoffReport, PromotionReport) {
        let shipper = try await WALShipper.start(configuration: a, token: 1, jetStream: jetStream, logger: logger)
        let applier = try await WALApplier.start(configuration: b, jetStream: jetStream, logger: logger)
        try await app.workload(transactions: 25, bigEvery: 5)
        let handoff = try await shipper.stepDown()
        _ = try await applier.waitForFinalMarker(token: 1, timeout: .seconds(30))
        await applier.stop()
        let report = try await ReplicaPromotion.promote(configuration: b, jetStream: jetStream, logger: logger)
        #expect(report.outcome == .promoted)
        #expect(report.txid == handoff.txid)
        return (handoff, report)
    }

    @Test(arguments: NATSServerKind.allCases)
    func theNewActiveContinuesTheStreamAndTheOldOneKeepsItsDatabase(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: 200_000)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let appA = try await App(path: directory.file("a/app.db"))
            let a = configuration(directory, node: "node-a", database: appA.path)
            let b = configuration(directory, node: "node-b", database: directory.file("b/app.db"))
            let (handoff, report) = try await switchover(jetStream, app: appA, a: a, b: b)
            let resume = try #require(report.resumePoint)
            #expect(resume.txid == handoff.txid && resume.streamSequence == handoff.markerSequence && resume.checksum.value == handoff.checksum)

            // node-b ships from the promoted position: a claim record, no snapshot.
            let shipperB = try await WALShipper.start(configuration: b, token: 2, jetStream: jetStream, logger: logger, resumingFrom: resume)
            var shipped = await shipperB.status()
            #expect(shipped.snapshots == 0, "\(shipped)")
            #expect(shipped.lastTxid == handoff.txid + 1)
            #expect(shipped.checksum == handoff.checksum)
            #expect(shipped.lastStreamSequence == handoff.markerSequence + 1)

            // The claim fences the old token at once, before node-b's app wrote anything.
            do {
                _ = try await WALShipper.start(configuration: a, token: 1, jetStream: jetStream, logger: logger)
                Issue.record("a shipper with the old token started after the claim")
            } catch let error as ReplicationError {
                #expect(error.code == .fenced)
            }

            // node-a turns passive: its database is the database at its final marker.
            let applierA = try await WALApplier.start(configuration: a, jetStream: jetStream, logger: logger, adoptingLocalDatabaseAt: handoff)
            var applied = await applierA.status()
            #expect(applied.localDatabasesAdopted == 1 && applied.localDatabasesDiverged == 0, "\(applied)")
            #expect(applied.position?.txid == handoff.txid && applied.position?.checksum == handoff.checksum)

            let appB = try await App(path: b.databasePath)
            try await appB.workload(transactions: 15, from: 100, bigEvery: 4)
            shipped = await shipperB.status()
            #expect(shipped.snapshots == 0)
            let handoffB = try await shipperB.stepDown()
            let final = try await applierA.waitForFinalMarker(token: 2, timeout: .seconds(30))
            #expect(final.checksum == handoffB.checksum)
            applied = await applierA.status()
            #expect(applied.snapshotsRestored == 0, "\(applied)")
            await applierA.stop()
            try await appB.checkpointTruncate()
            let replica = try openImmutable(a.replicaPath)
            #expect(try logicalDigest(replica) == (try await appB.digest()))
            #expect(try replica.scalar("PRAGMA integrity_check") == "ok")
            await appA.close()
            await appB.close()
            await client.close()
        }
    }

    /// A promotion right after the applier stopped takes the page hashes the applier verified
    /// (`sqlite.promotion_check: checksums`): it reads nothing of the replica, so its cost does
    /// not grow with the database. With `full` it re-reads the file and runs `quick_check`,
    /// which is what catches a replica changed behind Baton's back.
    @Test(arguments: NATSServerKind.allCases)
    func aPromotionRightAfterTheApplierReadsNothingUnlessAskedTo(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: 200_000)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let appA = try await App(path: directory.file("a/app.db"))
            let a = configuration(directory, node: "node-a", database: appA.path)
            var b = configuration(directory, node: "node-b", database: directory.file("b/app.db"))
            let shipper = try await WALShipper.start(configuration: a, token: 1, jetStream: jetStream, logger: logger)
            let applier = try await WALApplier.start(configuration: b, jetStream: jetStream, logger: logger)
            try await appA.workload(transactions: 25, bigEvery: 5)
            let handoff = try await shipper.stepDown()
            _ = try await applier.waitForFinalMarker(token: 1, timeout: .seconds(30))
            let handover = try #require(await applier.stop())
            #expect(handover.position.txid == handoff.txid && handover.checksum.value == handoff.checksum)

            // The store takes the handed-over hashes without reading: a page changed in the file
            // behind Baton's back is seen only when the file is read.
            let pageSize = handover.checksum.pageSize
            let reader = try FileIO.open(b.replicaPath, O_RDONLY)
            let original = try FileIO.pread(reader, count: pageSize, offset: pageSize, path: b.replicaPath)
            close(reader)
            try overwritePage(b.replicaPath, index: 1, pageSize: pageSize, with: [UInt8](repeating: 0x5A, count: pageSize))
            let store = ReplicaStore(replicaPath: b.replicaPath, positionPath: b.positionPath)
            try store.load(handover: handover)
            #expect(try store.verifiedChecksum(readingFile: false).value == handoff.checksum)
            #expect(throws: ReplicationError.self) { try store.verifiedChecksum(readingFile: true) }
            store.closeFile()

            b.promotionReadsReplica = true
            let refused = await #expect(throws: ReplicationError.self) {
                _ = try await ReplicaPromotion.promote(configuration: b, jetStream: jetStream, logger: logger, handover: handover)
            }
            #expect(refused?.code == .checksumMismatch, "\(String(describing: refused))")
            #expect(!FileManager.default.fileExists(atPath: b.databasePath), "a refused promotion left the database untouched")

            try overwritePage(b.replicaPath, index: 1, pageSize: pageSize, with: original)
            b.promotionReadsReplica = false
            // An old database at the path is replaced; its blocks are freed off the promotion's path.
            try FileManager.default.createDirectory(atPath: (b.databasePath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(repeating: 7, count: 1 << 20).write(to: URL(fileURLWithPath: b.databasePath))
            let report = try await ReplicaPromotion.promote(configuration: b, jetStream: jetStream, logger: logger, handover: handover)
            #expect(report.outcome == .promoted && report.txid == handoff.txid)
            let replaced = ReplicaPromotion.replacedDatabasePath(b.databasePath)
            // Removed off the promotion's path, announced by no event: wait for the file.
            try await eventually("the replaced database's second link \(replaced) removed", timeout: .seconds(10), every: .milliseconds(10)) {
                !FileManager.default.fileExists(atPath: replaced)
            }
            try await appA.checkpointTruncate()
            let promoted = try openImmutable(b.databasePath)
            #expect(try logicalDigest(promoted) == (try await appA.digest()))
            #expect(try promoted.scalar("PRAGMA integrity_check") == "ok")
            await appA.close()
            await client.close()
        }
    }

    private func overwritePage(_ path: String, index: Int, pageSize: Int, with bytes: [UInt8]) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seek(toOffset: UInt64(index * pageSize))
        try handle.write(contentsOf: bytes)
        try handle.close()
    }

    @Test(arguments: NATSServerKind.allCases)
    func aDivergedOldActiveRestoresASnapshot(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: 200_000)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let appA = try await App(path: directory.file("a/app.db"))
            let a = configuration(directory, node: "node-a", database: appA.path)
            let b = configuration(directory, node: "node-b", database: directory.file("b/app.db"))
            let (handoff, report) = try await switchover(jetStream, app: appA, a: a, b: b)
            let resumePoint: ShipperResumePoint = try #require(report.resumePoint)
            let shipperB = try await WALShipper.start(
                configuration: b, token: 2, jetStream: jetStream, logger: logger, resumingFrom: resumePoint)
            #expect(await shipperB.status().snapshots == 0)

            // Something wrote to node-a's database after its final marker: it is not the
            // database at the marker any more.
            try await appA.run("INSERT INTO items(note, body) VALUES ('after the marker', 'x')")
            let applierA = try await WALApplier.start(configuration: a, jetStream: jetStream, logger: logger, adoptingLocalDatabaseAt: handoff)
            let appB = try await App(path: b.databasePath)
            try await appB.workload(transactions: 5, from: 200, bigEvery: 1000)
            let handoffB = try await shipperB.stepDown()
            let final = try await applierA.waitForFinalMarker(token: 2, timeout: .seconds(30))
            #expect(final.checksum == handoffB.checksum)
            let applied = await applierA.status()
            #expect(applied.localDatabasesAdopted == 0 && applied.localDatabasesDiverged == 1, "\(applied)")
            #expect(applied.snapshotsRestored >= 1, "\(applied)")
            await applierA.stop()
            try await appB.checkpointTruncate()
            #expect(try logicalDigest(openImmutable(a.replicaPath)) == (try await appB.digest()))
            await appA.close()
            await appB.close()
            await client.close()
        }
    }

    /// When the stream moved after promotion (a stale shipper got a record in), the new active
    /// node does not continue from its position: it publishes a snapshot, as before.
    @Test func aStreamThatMovedSincePromotionGetsASnapshot() async throws {
        try await withNATSServer(.debian, config: NATSServerConfig(maxPayload: 200_000)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let appA = try await App(path: directory.file("a/app.db"))
            let a = configuration(directory, node: "node-a", database: appA.path)
            let b = configuration(directory, node: "node-b", database: directory.file("b/app.db"))
            let (_, report) = try await switchover(jetStream, app: appA, a: a, b: b)
            let resume = try #require(report.resumePoint)
            // A stale node (token 1) writes once more after the promotion drained the stream.
            let stale = try await WALShipper.start(configuration: a, token: 1, jetStream: jetStream, logger: logger)
            await stale.stop()
            let shipperB = try await WALShipper.start(configuration: b, token: 2, jetStream: jetStream, logger: logger, resumingFrom: resume)
            let shipped = await shipperB.status()
            #expect(shipped.snapshots == 1, "\(shipped)")
            await shipperB.stop()
            await appA.close()
            await client.close()
        }
    }

    /// A snapshot holds the write lock only to plan the copy: the app commits while the pages
    /// are copied, the image is the database as planned, and the commit is shipped after it.
    @Test func aSnapshotIsCopiedOutsideTheWriteLock() async throws {
        let directory = try TemporaryDirectory()
        let app = try await App(path: directory.file("a/app.db"))
        try await app.workload(transactions: 30, bigEvery: 3)
        let config = configuration(directory, node: "node-a", database: app.path)
        let thread = IOThread()
        let snapshotPath = directory.file("snapshot.db")
        let (planned, image) = try await thread.run { () throws -> (UInt64, ShipperEngine.SnapshotImage) in
            let engine = try ShipperEngine(configuration: config, logger: Logger(label: "test"))
            defer { engine.close() }
            while case .batch(let batch) = try engine.poll() { engine.commit(batch) }
            #expect(try engine.beginBarrier())
            let plan = try engine.prepareSnapshot(release: true)
            #expect(!engine.barrierHeld)
            return (engine.publishedState.checksum, try engine.writeSnapshot(plan, to: snapshotPath))
        }
        // Everything was shipped before the plan: the image is the published state.
        #expect(planned == image.checksum)
        await thread.shutdown()
        #expect(try fileChecksum(snapshotPath, pageSize: image.pageSize) == image.checksum)
        #expect(try openImmutable(snapshotPath).scalar("PRAGMA integrity_check") == "ok")
        await app.close()
    }

    /// The app writes between the plan and the copy; the copy is the planned state and the
    /// write is shipped afterwards as the next batch.
    @Test func aCommitDuringTheCopyIsShippedAfterTheSnapshot() async throws {
        let directory = try TemporaryDirectory()
        let app = try await App(path: directory.file("a/app.db"))
        try await app.workload(transactions: 20, bigEvery: 3)
        let expected = try await app.digest()
        let config = configuration(directory, node: "node-a", database: app.path)
        let thread = IOThread()
        let snapshotPath = directory.file("snapshot.db")
        let engineBox = try await thread.run { try ShipperEngine(configuration: config, logger: Logger(label: "test")) }
        let plan = try await thread.run { () throws -> SnapshotCopier.Plan in
            #expect(try engineBox.beginBarrier())
            return try engineBox.prepareSnapshot(release: true)
        }
        // The write lock is free: the app commits (it would wait for the barrier otherwise).
        try await app.run("INSERT INTO items(note, body) VALUES ('during the copy', randomblob(5000))")
        let image = try await thread.run { try engineBox.writeSnapshot(plan, to: snapshotPath) }
        #expect(try logicalDigest(openImmutable(snapshotPath)) == expected)
        let next = try await thread.run { () throws -> ShipperEngine.PollOutcome in try engineBox.poll() }
        guard case .batch(let batch) = next else {
            Issue.record("the commit made during the copy was not shipped after it: \(next)")
            return
        }
        #expect(batch.checksumBefore == image.checksum)
        try await thread.run { engineBox.close() }
        await thread.shutdown()
        await app.close()
    }

    /// The copy runs after a full checkpoint, so the app's next commit resets the WAL and can
    /// overwrite the old generation's end before the shipper looks: the read transaction held
    /// since the plan proves it was a single reset, and the commit is shipped, not snapshotted.
    @Test func aWALResetDuringTheCopyNeedsNoSecondSnapshot() async throws {
        let directory = try TemporaryDirectory()
        let app = try await App(path: directory.file("a/app.db"))
        try await app.workload(transactions: 10, bigEvery: 3)
        try await app.checkpointTruncate()
        try await app.run("INSERT INTO items(note, body) VALUES ('short generation', 'x')")
        let config = configuration(directory, node: "node-a", database: app.path)
        let thread = IOThread()
        let engine = try await thread.run { try ShipperEngine(configuration: config, logger: Logger(label: "test")) }
        let plan = try await thread.run { () throws -> SnapshotCopier.Plan in
            while case .batch(let batch) = try engine.poll() { engine.commit(batch) }
            #expect(try engine.beginBarrier())
            return try engine.prepareSnapshot(release: true)
        }
        let planned = try await app.digest()
        // A transaction far longer than the old generation: it overwrites the old end offset
        // (and the frames the plan's overlay points at: the copy takes those pages from the
        // database file, where the checkpoint had put them).
        try await app.run("INSERT INTO items(note, body) VALUES ('after the reset', randomblob(300000))")
        let image = try await thread.run { try engine.writeSnapshot(plan, to: directory.file("snapshot.db")) }
        #expect(try logicalDigest(openImmutable(directory.file("snapshot.db"))) == planned)
        let walHeader = try WALHeader(parsing: Array(try readFile(app.path + "-wal").prefix(WALHeader.size)))
        #expect(walHeader.checkpointSequence == (plan.header?.checkpointSequence ?? 0) &+ 1, "the app's commit did not reset the WAL")
        let next = try await thread.run { () throws -> ShipperEngine.PollOutcome in try engine.poll() }
        guard case .batch(let batch) = next else {
            Issue.record("expected the commit after the reset to be shipped, got \(next)")
            return
        }
        #expect(batch.checksumBefore == image.checksum)
        try await thread.run { engine.close() }
        await thread.shutdown()
        await app.close()
    }
}
