import Foundation
import Logging
import NATS
import NATSTestSupport
import TestSupport
import Testing

@testable import Replication

/// Shipper, applier and promotion against real SQLite databases and a real nats-server.
@Suite("Replication over JetStream", .serialized)
struct ReplicationIntegrationTests {
    static let maxPayload = 200_000

    var logger: Logger {
        var logger = Logger(label: "replication-test")
        logger.logLevel = .warning
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

    /// The app: a WAL-mode database written from its own thread.
    final class App: Sendable {
        let thread = IOThread()
        let database: SQLiteDatabase
        let path: String

        init(path: String) async throws {
            self.path = path
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let thread = thread
            database = try await thread.run {
                let database = try openAppDatabase(path)
                try database.execute("CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, note TEXT, body BLOB)")
                return database
            }
        }

        func run(_ sql: String) async throws {
            let database = database
            try await thread.run { try database.execute(sql) }
        }

        /// A mixed workload: small inserts, blobs larger than max_payload, deletes, a VACUUM.
        func workload(transactions: Int, from start: Int = 0, vacuumAt: Int? = nil, bigEvery: Int = 7) async throws {
            for index in start..<(start + transactions) {
                if index % bigEvery == 3 {
                    try await run("INSERT INTO items(note, body) VALUES ('big \(index)', randomblob(300000))")
                } else if index % 10 == 7 {
                    try await run("DELETE FROM items WHERE id % 3 = 0 AND id > \(index / 2)")
                } else {
                    try await run(
                        "BEGIN; INSERT INTO items(note, body) VALUES ('a\(index)', randomblob(\(100 + index * 13))); "
                            + "INSERT INTO items(note, body) VALUES ('b\(index)', zeroblob(\(index * 3))); "
                            + "UPDATE items SET note = note || '.' WHERE id = \(index / 2 + 1); COMMIT")
                }
                if index == vacuumAt { try await run("VACUUM") }
                // Several transactions per second, as an app would write.
                try await Task.sleep(for: .milliseconds(10))
            }
        }

        func digest() async throws -> [String] {
            let database = database
            return try await thread.run { try logicalDigest(database) }
        }

        /// Checkpoints everything into the database file (after the shipper stopped).
        func checkpointTruncate() async throws {
            let database = database
            _ = try await thread.run { try database.column("PRAGMA wal_checkpoint(TRUNCATE)") }
        }

        func close() async {
            await thread.shutdown()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func theReplicaEqualsThePrimaryAndPromotes(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: Self.maxPayload)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let app = try await App(path: directory.file("a/app.db"))
            try await app.workload(transactions: 5)
            let active = configuration(directory, node: "node-a", database: app.path)
            let passive = configuration(directory, node: "node-b", database: directory.file("b/app.db"))

            let shipper = try await WALShipper.start(configuration: active, token: 5, jetStream: jetStream, logger: logger)
            let applier = try await WALApplier.start(configuration: passive, jetStream: jetStream, logger: logger)
            try await app.workload(transactions: 60, from: 5, vacuumAt: 40)
            // The WAL goes through at least one cycle: a checkpoint of the shipper's own once it
            // has shipped enough frames, or (when the VACUUM made it lose the evidence) a
            // snapshot after the opening one. On a loaded machine the shipper may still be
            // catching up when the workload ends: wait for it, bounded.
            var shipped = await shipper.status()
            try await eventually("a WAL cycle (a checkpoint, or a second snapshot): \(shipped)", timeout: .seconds(20)) {
                shipped = await shipper.status()
                return shipped.checkpoints >= 1 || shipped.snapshots >= 2
            }
            #expect(shipped.lastError == nil)

            let handoff = try await shipper.stepDown()
            let position = try await applier.waitForFinalMarker(token: 5, timeout: .seconds(60))
            #expect(position.txid == handoff.txid)
            #expect(position.checksum == handoff.checksum)
            let lag = try await applier.lag()
            #expect(lag.txidsBehind == 0)
            #expect(lag.messagesBehind == 0)
            await applier.stop()

            // The primary's file, once checkpointed, is page for page the replica.
            try await app.checkpointTruncate()
            let primaryDigest = try await app.digest()
            #expect(try fileChecksum(app.path, pageSize: 4096) == handoff.checksum)
            #expect(try fileChecksum(passive.replicaPath, pageSize: 4096) == handoff.checksum)
            let replica = try openImmutable(passive.replicaPath)
            #expect(try logicalDigest(replica) == primaryDigest)
            #expect(try replica.scalar("PRAGMA integrity_check") == "ok")

            let report = try await ReplicaPromotion.promote(configuration: passive, jetStream: jetStream, logger: logger)
            #expect(report.outcome == .promoted)
            #expect(report.txid == handoff.txid)
            #expect(report.recordsAppliedDuringDrain == 0)
            #expect(report.transactionsAppliedDuringDrain == 0)
            #expect(report.finalMarkerToken == 5)
            #expect(!FileManager.default.fileExists(atPath: passive.replicaPath))
            let promoted = try openImmutable(passive.databasePath)
            #expect(try logicalDigest(promoted) == primaryDigest)
            #expect(try promoted.scalar("PRAGMA integrity_check") == "ok")
            await app.close()
            await client.close()
        }
    }

    /// First start: an empty WAL database, owned like its directory, and an existing file is
    /// left alone.
    @Test func anEmptyDatabaseIsCreatedOnFirstStart() async throws {
        let directory = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory.file("app"), withIntermediateDirectories: true)
        let root = geteuid() == 0
        if root { #expect(chown(directory.file("app"), 65534, 65534) == 0) }
        let config = configuration(directory, node: "node-a", database: directory.file("app/app.db"))
        #expect(try await ReplicaPromotion.createEmptyDatabaseIfMissing(configuration: config))
        #expect(try await !ReplicaPromotion.createEmptyDatabaseIfMissing(configuration: config))
        // The header's file format versions (bytes 18 and 19) are 2 in WAL mode.
        let header = try #require(FileManager.default.contents(atPath: config.databasePath))
        #expect(header.count >= 100 && header[18] == 2 && header[19] == 2)
        #expect(try openImmutable(config.databasePath).scalar("PRAGMA integrity_check") == "ok")
        if root {
            let attributes = try FileManager.default.attributesOfItem(atPath: config.databasePath)
            #expect(attributes[.ownerAccountID] as? Int == 65534, "\(attributes)")
        }
    }

    /// A replica without a position restores the latest snapshot while promoting: that is not
    /// "caught up" (the report used to say 0 records when the snapshot was the last record).
    @Test(arguments: NATSServerKind.allCases)
    func promotionCountsASnapshotRestoredWhileDraining(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: Self.maxPayload)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let app = try await App(path: directory.file("a/app.db"))
            try await app.workload(transactions: 5)
            let active = configuration(directory, node: "node-a", database: app.path)
            let passive = configuration(directory, node: "node-b", database: directory.file("b/app.db"))
            let shipper = try await WALShipper.start(configuration: active, token: 3, jetStream: jetStream, logger: logger)
            let handoff = try await shipper.stepDown()  // the stream: the opening snapshot, the marker
            // The app's directory belongs to the app's user: so must the promoted database.
            try FileManager.default.createDirectory(atPath: directory.file("b"), withIntermediateDirectories: true)
            let root = geteuid() == 0
            if root { #expect(chown(directory.file("b"), 65534, 65534) == 0) }
            let report = try await ReplicaPromotion.promote(configuration: passive, jetStream: jetStream, logger: logger)
            if root {
                let attributes = try FileManager.default.attributesOfItem(atPath: passive.databasePath)
                #expect(attributes[.ownerAccountID] as? Int == 65534 && attributes[.groupOwnerAccountID] as? Int == 65534, "\(attributes)")
            }
            #expect(report.outcome == .promoted)
            #expect(report.txid == handoff.txid)
            #expect(report.recordsAppliedDuringDrain == 1)
            #expect(report.transactionsAppliedDuringDrain == handoff.txid)
            #expect(report.finalMarkerToken == 3)
            await app.close()
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func promotionDrainsWhatTheApplierHadNotApplied(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: Self.maxPayload)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let app = try await App(path: directory.file("a/app.db"))
            let active = configuration(directory, node: "node-a", database: app.path)
            let passive = configuration(directory, node: "node-b", database: directory.file("b/app.db"))
            let shipper = try await WALShipper.start(configuration: active, token: 2, jetStream: jetStream, logger: logger)
            try await app.workload(transactions: 20)
            // The active node dies without a final marker; no applier ran on the passive node.
            let status = await shipper.status()
            let handoff = try await shipper.stepDown()
            #expect(handoff.txid >= status.lastTxid)
            let report = try await ReplicaPromotion.promote(configuration: passive, jetStream: jetStream, logger: logger)
            #expect(report.outcome == .promoted)
            #expect(report.txid == handoff.txid)
            #expect(report.recordsAppliedDuringDrain > 0)
            #expect(report.transactionsAppliedDuringDrain == handoff.txid)
            try await app.checkpointTruncate()
            let promoted = try openImmutable(passive.databasePath)
            #expect(try logicalDigest(promoted) == (try await app.digest()))
            #expect(try promoted.scalar("PRAGMA quick_check") == "ok")
            await app.close()
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func aStaleShipperCannotWrite(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: Self.maxPayload)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let oldApp = try await App(path: directory.file("a/app.db"))
            let newApp = try await App(path: directory.file("b/app.db"))
            try await newApp.run("INSERT INTO items(note, body) VALUES ('new active', 'x')")
            let oldActive = configuration(directory, node: "node-a", database: oldApp.path)
            let newActive = configuration(directory, node: "node-b", database: newApp.path)
            let observer = configuration(directory, node: "node-c", database: directory.file("c/app.db"))

            let stale = try await WALShipper.start(configuration: oldActive, token: 1, jetStream: jetStream, logger: logger)
            try await oldApp.run("INSERT INTO items(note, body) VALUES ('before takeover', 'x')")
            // The lease moved: node-b ships with token 2 (the stale node has not noticed).
            let fresh = try await WALShipper.start(configuration: newActive, token: 2, jetStream: jetStream, logger: logger)
            try await oldApp.run("INSERT INTO items(note, body) VALUES ('after takeover', 'x')")
            await #expect(throws: ReplicationError.self) { try await stale.waitUntilStopped() }
            let staleStatus = await stale.status()
            #expect(staleStatus.lastError?.contains("fenced") == true)
            await stale.stop()

            // A node with the old token cannot even start.
            do {
                _ = try await WALShipper.start(configuration: oldActive, token: 1, jetStream: jetStream, logger: logger)
                Issue.record("a shipper with an older token started")
            } catch let error as ReplicationError {
                #expect(error.code == .fenced)
            }

            // A record with an older token that reaches the stream anyway is not applied.
            let applier = try await WALApplier.start(configuration: observer, jetStream: jetStream, logger: logger)
            try await newApp.run("INSERT INTO items(note, body) VALUES ('new 2', 'x')")
            let current = await fresh.status()
            let applied = try await applier.waitForTxid(current.lastTxid, timeout: .seconds(30))
            try await newApp.run("INSERT INTO items(note, body) VALUES ('new 3', 'x')")
            let handoff = try await fresh.stepDown()
            let final = try await applier.waitForFinalMarker(token: 2, timeout: .seconds(30))
            #expect(final.checksum == handoff.checksum)
            #expect(final.txid >= applied.txid)
            // A record with the old token that reaches the stream after the handoff is ignored.
            let forged = ReplicationRecord(
                kind: .transaction, txid: final.txid + 1, token: 1, pageSize: 4096, commitPages: final.commitPages,
                checksumBefore: final.checksum, checksumAfter: final.checksum, timestampNanos: 0)
            var lastSequence: UInt64 = 0
            for chunk in RecordChunk.split(forged, maxMessageBytes: 100_000) {
                lastSequence = try await jetStream.publish(observer.names.transactionSubject, payload: .init(bytes: chunk.encoded())).sequence
            }
            let after = try await applier.waitForStreamSequence(lastSequence, timeout: .seconds(30))
            #expect(after.txid == final.txid)
            #expect(after.checksum == final.checksum)
            #expect(after.finalMarkerToken == 2)
            let applierStatus = await applier.status()
            #expect(applierStatus.rejectedStaleRecords == 1)
            await applier.stop()
            try await newApp.checkpointTruncate()
            #expect(try logicalDigest(openImmutable(observer.replicaPath)) == (try await newApp.digest()))
            await oldApp.close()
            await newApp.close()
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func aReplicaBeyondRetentionRestoresASnapshot(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: Self.maxPayload)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let app = try await App(path: directory.file("a/app.db"))
            var active = configuration(directory, node: "node-a", database: app.path)
            active.streamMaxMessages = 12
            active.snapshotAfterMessages = 5
            active.snapshotsToKeep = 2
            var passive = configuration(directory, node: "node-b", database: directory.file("b/app.db"))
            passive.streamMaxMessages = 12
            let shipper = try await WALShipper.start(configuration: active, token: 3, jetStream: jetStream, logger: logger)
            let applier = try await WALApplier.start(configuration: passive, jetStream: jetStream, logger: logger)
            try await app.workload(transactions: 4, bigEvery: 1000)
            _ = try await applier.waitForTxid(await shipper.status().lastTxid, timeout: .seconds(30))
            await applier.stop()
            let before = try #require(await applier.status().position)

            try await app.workload(transactions: 40, from: 4, bigEvery: 1000)
            let handoff = try await shipper.stepDown()
            let info = try await jetStream.streamInfo(active.names.stream)
            #expect(info.state.firstSequence > before.streamSequence + 1)
            let snapshots = try await jetStream.objectStore(active.names.snapshotBucket).list()
            #expect(snapshots.count <= 2)

            let resumed = try await WALApplier.start(configuration: passive, jetStream: jetStream, logger: logger)
            let position = try await resumed.waitForFinalMarker(token: 3, timeout: .seconds(30))
            #expect(position.checksum == handoff.checksum)
            let status = await resumed.status()
            #expect(status.snapshotsRestored >= 1)
            await resumed.stop()
            try await app.checkpointTruncate()
            let replica = try openImmutable(passive.replicaPath)
            #expect(try logicalDigest(replica) == (try await app.digest()))
            #expect(try replica.scalar("PRAGMA integrity_check") == "ok")
            await app.close()
            await client.close()
        }
    }
}
