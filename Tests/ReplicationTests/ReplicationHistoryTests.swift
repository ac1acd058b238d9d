import Foundation
import Logging
import NATS
import NATSTestSupport
import TestSupport
import Testing

@testable import Replication

/// Never promote older or empty data over newer data: a stream that expired, was deleted or
/// was recreated empty, against real nats-server and SQLite.
@Suite("Replication: history survives a lost stream", .serialized)
struct ReplicationHistoryTests {
    typealias App = ReplicationIntegrationTests.App

    var logger: Logger {
        var logger = Logger(label: "replication-history-test")
        logger.logLevel = ProcessInfo.processInfo.environment["BATON_TEST_LOG"] != nil ? .debug : .critical
        return logger
    }

    func configuration(_ directory: TemporaryDirectory, node: String, retention: Duration? = nil) -> ReplicationConfiguration {
        var configuration = ReplicationConfiguration(
            cluster: "test", app: "web", nodeID: node, databasePath: directory.file("\(node)/app.db"), stateDirectory: directory.file("state-\(node)"))
        configuration.pollInterval = .milliseconds(20)
        configuration.streamMaxAge = retention
        return configuration
    }

    func connect(_ server: NATSServerProcess) async throws -> (NATSClient, JetStream) {
        let client = try await NATSClient.connect(options: NATSClientOptions(servers: [server.url]))
        return (client, JetStream(client: client, timeout: .seconds(10)))
    }

    /// Promotion must fail with ``ReplicationError/Code/newerDataElsewhere``; returns the message.
    func expectRefusal(_ configuration: ReplicationConfiguration, token: UInt64, _ jetStream: JetStream) async throws -> String {
        do {
            let report = try await ReplicaPromotion.promote(configuration: configuration, jetStream: jetStream, logger: logger, token: token)
            Issue.record("\(configuration.nodeID) promoted \(report)")
            return ""
        } catch let error as ReplicationError where error.code == .newerDataElsewhere {
            #expect(!FileManager.default.fileExists(atPath: configuration.databasePath), "the database of \(configuration.nodeID) was touched")
            return error.message
        }
    }

    /// node-a ships under token 1 and node-b and node-c apply; node-c stops early (older copy).
    /// Returns node-a's app and node-b's applied position.
    func runCluster(
        _ jetStream: JetStream, _ a: ReplicationConfiguration, _ b: ReplicationConfiguration, _ c: ReplicationConfiguration, graceful: Bool
    ) async throws -> (App, ReplicaPosition) {
        let app = try await App(path: a.databasePath)
        let shipper = try await WALShipper.start(configuration: a, token: 1, jetStream: jetStream, logger: logger)
        let applierB = try await WALApplier.start(configuration: b, jetStream: jetStream, logger: logger)
        let applierC = try await WALApplier.start(configuration: c, jetStream: jetStream, logger: logger)
        try await app.workload(transactions: 8, bigEvery: 5)
        var shipped = await shipper.status()
        _ = try await applierC.waitForTxid(shipped.lastTxid, timeout: .seconds(30))
        await applierC.stop()
        try await app.workload(transactions: 8, from: 20, bigEvery: 5)
        let position: ReplicaPosition
        if graceful {
            let handoff = try await shipper.stepDown()
            position = try await applierB.waitForFinalMarker(token: 1, timeout: .seconds(30))
            #expect(position.txid == handoff.txid)
        } else {
            shipped = await shipper.status()
            position = try await applierB.waitForTxid(shipped.lastTxid, timeout: .seconds(30))
            await shipper.stop()  // a crash: no final marker
        }
        await applierB.stop()
        return (app, position)
    }

    @Test(arguments: NATSServerKind.allCases)
    func anExpiredStreamPromotesTheNewestCopyAndRefusesOlderOnes(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: 200_000)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let a = configuration(directory, node: "node-a")
            let b = configuration(directory, node: "node-b")
            let c = configuration(directory, node: "node-c")
            let d = configuration(directory, node: "node-d")
            let (app, position) = try await runCluster(jetStream, a, b, c, graceful: true)
            let names = a.names

            // Every node is stopped for longer than the retention (1 s here): the records expire.
            var short = a
            short.streamMaxAge = .seconds(1)
            _ = try await jetStream.updateStream(short.streamConfig)
            var left: UInt64 = 0
            try await eventually("every record of \(names.stream) expired (\(left) left)", timeout: .seconds(20), every: .milliseconds(200)) {
                left = try await jetStream.streamInfo(names.stream).state.messages
                return left == 0
            }

            // The retention goes back to normal (so the test does not race it from here on).
            _ = try await jetStream.updateStream(a.streamConfig)
            // node-c (an older copy) and node-d (none) refuse, naming what each holds.
            let refusedC = try await expectRefusal(c, token: 2, jetStream)
            #expect(refusedC.contains("expired"), "\(refusedC)")
            #expect(refusedC.contains("node-a holds txid \(position.txid)"), "\(refusedC)")
            #expect(refusedC.contains("batonctl replica promote web NODE --force"), "\(refusedC)")
            _ = try await expectRefusal(d, token: 2, jetStream)

            // node-b holds the final marker's data: it promotes it without the stream.
            let report = try await ReplicaPromotion.promote(configuration: b, jetStream: jetStream, logger: logger, token: 3)
            #expect(report.outcome == .promoted && report.txid == position.txid)
            #expect(report.recovery?.contains("expired") == true, "\(report)")
            let resume: ShipperResumePoint = try #require(report.resumePoint)
            let shipperB = try await WALShipper.start(configuration: b, token: 3, jetStream: jetStream, logger: logger, resumingFrom: resume)
            let shipped = await shipperB.status()
            #expect(shipped.lastTxid > position.txid, "txids never go backwards: \(shipped)")
            #expect(shipped.snapshots == 1)
            let newest = try #require(try await ReplicationHistoryStore(configuration: b, jetStream: jetStream).remoteNewest()).record
            #expect(newest.newest.node == "node-b" && newest.newest.token == 3 && newest.event == HistoryEvent.claim)

            // node-c resynchronises from node-b's snapshot and has node-a's data.
            let applierC = try await WALApplier.start(configuration: c, jetStream: jetStream, logger: logger)
            _ = try await applierC.waitForTxid(shipped.lastTxid, timeout: .seconds(30))
            await applierC.stop()
            _ = try await shipperB.stepDown()
            try await app.checkpointTruncate()
            #expect(try logicalDigest(try openImmutable(b.databasePath)) == (try await app.digest()))
            #expect(try logicalDigest(try openImmutable(c.replicaPath)) == (try await app.digest()))
            await app.close()
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func aStreamDeletedUnderARunningClusterIsNotReplacedByEmptyData(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: 200_000)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let a = configuration(directory, node: "node-a")
            let b = configuration(directory, node: "node-b")
            let c = configuration(directory, node: "node-c")
            let d = configuration(directory, node: "node-d")
            let (app, _) = try await runCluster(jetStream, a, b, c, graceful: false)
            // The crashed active's claim is the durable record; node-b applied past it, up to
            // the end of the stream (whatever the shipper published before it stopped).
            let applierB = try await WALApplier.start(configuration: b, jetStream: jetStream, logger: logger)
            let end = try await jetStream.streamInfo(a.names.stream).state.lastSequence
            let position = try await applierB.waitForStreamSequence(end, timeout: .seconds(30))
            try await jetStream.deleteStream(a.names.stream)

            // The passive does not recreate the stream, and says the stream is behind it.
            let lag = try await applierB.lag()
            #expect(lag.streamBehindReplica?.contains("does not exist") == true, "\(lag)")
            // Sampled over a window on purpose (not a wait for state): nothing announces "did not
            // recreate", so the applier keeps running for a while before the stream is checked.
            try await Task.sleep(for: .milliseconds(700))
            await #expect(throws: JetStreamAPIError.self) { _ = try await jetStream.streamInfo(a.names.stream) }
            await applierB.stop()

            // A node without a replica does not publish an empty database as the truth.
            let refused = try await expectRefusal(d, token: 2, jetStream)
            #expect(refused.contains("does not exist"), "\(refused)")
            await #expect(throws: JetStreamAPIError.self) { _ = try await jetStream.streamInfo(a.names.stream) }

            // node-b holds the newest copy: it promotes it and starts a new history above it.
            let report = try await ReplicaPromotion.promote(configuration: b, jetStream: jetStream, logger: logger, token: 3)
            #expect(report.txid == position.txid && report.recovery?.contains("does not exist") == true, "\(report)")
            let resume: ShipperResumePoint = try #require(report.resumePoint)
            let shipperB = try await WALShipper.start(
                configuration: b, token: 3, jetStream: jetStream, logger: logger, resumingFrom: resume)
            let shipped = await shipperB.status()
            #expect(shipped.lastTxid == position.txid + 1 && shipped.snapshots == 1, "\(shipped)")

            // node-c (an older copy of the old history) restores node-b's snapshot.
            let applierC = try await WALApplier.start(configuration: c, jetStream: jetStream, logger: logger)
            _ = try await applierC.waitForTxid(shipped.lastTxid, timeout: .seconds(30))
            await applierC.stop()
            await shipperB.stop()
            #expect(try logicalDigest(try openImmutable(c.replicaPath)) == (try logicalDigest(try openImmutable(b.databasePath))))
            await app.close()
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func aStreamRecreatedEmptyIsDetectedByPassivesAndNeverPromoted(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: 200_000)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let a = configuration(directory, node: "node-a")
            let b = configuration(directory, node: "node-b")
            let c = configuration(directory, node: "node-c")
            let (app, position) = try await runCluster(jetStream, a, b, c, graceful: true)
            // Someone recreates the stream empty (an operator, an older Baton's passive).
            try await jetStream.deleteStream(a.names.stream)
            _ = try await jetStream.createStream(a.streamConfig)

            let applierB = try await WALApplier.start(configuration: b, jetStream: jetStream, logger: logger)
            let lag = try await applierB.lag()
            #expect(lag.streamBehindReplica?.contains("before this replica's position") == true, "\(lag)")
            #expect(lag.txidsBehind == 0)
            await applierB.stop()

            // node-c's copy is older than the record: it refuses; and node-a's database, which
            // is the final marker's data, is taken as node-a's replica and promoted.
            let refused = try await expectRefusal(c, token: 2, jetStream)
            #expect(refused.contains("empty"), "\(refused)")
            await app.close()  // the backend is stopped while its node promotes
            let report = try await ReplicaPromotion.promote(configuration: a, jetStream: jetStream, logger: logger, token: 3)
            #expect(report.txid == position.txid && report.recovery != nil, "\(report)")
            let resume: ShipperResumePoint = try #require(report.resumePoint)
            let shipperA = try await WALShipper.start(
                configuration: a, token: 3, jetStream: jetStream, logger: logger, resumingFrom: resume)
            let restarted = try await App(path: a.databasePath)
            try await restarted.workload(transactions: 5, from: 60, bigEvery: 4)
            let handoff = try await shipperA.stepDown()
            #expect(handoff.txid > position.txid)

            // The passives find the new history (a newer epoch's snapshot) and follow it.
            for passive in [b, c] {
                let applier = try await WALApplier.start(configuration: passive, jetStream: jetStream, logger: logger)
                let final = try await applier.waitForFinalMarker(token: 3, timeout: .seconds(30))
                #expect(final.checksum == handoff.checksum)
                await applier.stop()
            }
            try await restarted.checkpointTruncate()
            #expect(try logicalDigest(try openImmutable(c.replicaPath)) == (try await restarted.digest()))
            await restarted.close()
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases, [false, true])
    func theActiveNodeStartsANewHistoryWhenItsStreamIsDeleted(kind: NATSServerKind, recreatedEmpty: Bool) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: 200_000)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let a = configuration(directory, node: "node-a")
            let b = configuration(directory, node: "node-b")
            let app = try await App(path: a.databasePath)
            let shipper = try await WALShipper.start(configuration: a, token: 1, jetStream: jetStream, logger: logger)
            let applier = try await WALApplier.start(configuration: b, jetStream: jetStream, logger: logger)
            try await app.workload(transactions: 10, bigEvery: 4)
            let before = await shipper.status()
            _ = try await applier.waitForTxid(before.lastTxid, timeout: .seconds(30))
            try await jetStream.deleteStream(a.names.stream)
            if recreatedEmpty { _ = try await jetStream.createStream(a.streamConfig) }
            try await app.workload(transactions: 3, from: 30, bigEvery: 4)
            // The shipper finds the stream gone, records how far it shipped, and stops.
            do {
                try await shipper.waitUntilStopped()
                Issue.record("the shipper kept running without its stream")
            } catch let error as ReplicationError {
                #expect(error.code == .streamBehind, "\(error)")
            }
            let newest = try #require(try await ReplicationHistoryStore(configuration: a, jetStream: jetStream).remoteNewest()).record
            #expect(newest.event == HistoryEvent.streamLost && newest.newest.txid >= before.lastTxid, "\(newest)")
            await shipper.stop()
            // What SQLiteReplica does next: a new shipper of the same epoch re-creates the stream
            // with a snapshot above everything shipped; the passive restores it and follows.
            let restarted = try await WALShipper.start(configuration: a, token: 1, jetStream: jetStream, logger: logger)
            let shipped = await restarted.status()
            #expect(shipped.lastTxid > newest.newest.txid && shipped.snapshots == 1, "\(shipped)")
            try await app.workload(transactions: 3, from: 40, bigEvery: 4)
            let handoff = try await restarted.stepDown()
            let final = try await applier.waitForFinalMarker(token: 1, timeout: .seconds(30))
            #expect(final.checksum == handoff.checksum)
            await applier.stop()
            try await app.checkpointTruncate()
            #expect(try logicalDigest(try openImmutable(b.replicaPath)) == (try await app.digest()))
            await app.close()
            await client.close()
        }
    }

    @Test
    func anOperatorForcesAnOlderCopyAndOnlyThatCopyPromotes() async throws {
        try await withNATSServer(.pypi, config: NATSServerConfig(maxPayload: 200_000)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let a = configuration(directory, node: "node-a")
            let b = configuration(directory, node: "node-b")
            let c = configuration(directory, node: "node-c")
            let (app, _) = try await runCluster(jetStream, a, b, c, graceful: true)
            try await jetStream.deleteStream(a.names.stream)
            // node-a's and node-b's copies are gone for good; node-c holds an older one.
            try FileManager.default.removeItem(atPath: b.stateDirectory)
            try FileManager.default.removeItem(atPath: a.databasePath)
            _ = try await expectRefusal(c, token: 2, jetStream)

            // What `batonctl replica promote web node-c --force` writes.
            let store = ReplicationHistoryStore(configuration: c, jetStream: jetStream)
            let cPosition = try JSONDecoder().decode(ReplicaPosition.self, from: Data(contentsOf: URL(fileURLWithPath: c.positionPath)))
            let forcedCopy = DatabaseCopy(
                node: "node-c", token: cPosition.token, txid: cPosition.txid, checksum: cPosition.checksum, pageSize: cPosition.pageSize,
                commitPages: cPosition.commitPages, streamSequence: cPosition.streamSequence)
            let current = try #require(try await store.remoteNewest())
            let kv = try await ReplicationHistoryBucket.open(jetStream: jetStream, cluster: "test", replicas: 1)
            let forced = ReplicationHistoryRecord(newest: forcedCopy, event: HistoryEvent.forced, recordedAt: Date(), forced: "test")
            _ = try await kv.update(ReplicationHistoryBucket.newestKey(app: "web"), value: .init(bytes: try JSONEncoder.history.encode(forced)), revision: current.revision)
            // A stale shipper's progress does not replace the forced record.
            var stale = forced
            stale.forced = nil
            stale.event = HistoryEvent.progress
            stale.newest.txid += 50
            #expect(try await store.recordNewest(stale) == false)

            let report = try await ReplicaPromotion.promote(configuration: c, jetStream: jetStream, logger: logger, token: 4)
            #expect(report.txid == cPosition.txid && report.recovery?.contains("forced") == true, "\(report)")
            let resume: ShipperResumePoint = try #require(report.resumePoint)
            let shipperC = try await WALShipper.start(
                configuration: c, token: 4, jetStream: jetStream, logger: logger, resumingFrom: resume)
            let newest = try #require(try await store.remoteNewest()).record
            #expect(newest.forced == nil && newest.newest.node == "node-c" && newest.event == HistoryEvent.claim)
            await shipperC.stop()
            await app.close()
            await client.close()
        }
    }
}
