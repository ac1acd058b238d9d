import Foundation
import Logging
import NATS
import NATSTestSupport
import Synchronization
import Testing

@testable import Replication

/// The app's writer during the large-database scenario: commits one small row every ~20 ms to
/// whichever node is active, and records every row whose COMMIT returned (acknowledged). Paused
/// while no node is active (the backend is stopped during a switchover).
final class AcknowledgingWriter: Sendable {
    private struct State {
        var target: ReplicationIntegrationTests.App?
        var acknowledged: [Int] = []
        var next = 1
        var failure: String?
        /// A commit is in flight.
        var busy = false
    }

    private let state = Mutex(State())
    private let task = Mutex<Task<Void, Never>?>(nil)

    /// Starts committing in the background.
    func start() {
        let loop = Task { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(20))
                let (app, key) = state.withLock { state -> (ReplicationIntegrationTests.App?, Int) in
                    guard let target = state.target else { return (nil, 0) }
                    state.busy = true
                    return (target, state.next)
                }
                guard let app else { continue }
                do {
                    try await app.run("INSERT INTO acked(k, at) VALUES (\(key), 'row \(key)')")
                    state.withLock { state in
                        state.acknowledged.append(key)
                        state.next += 1
                    }
                } catch {
                    state.withLock { $0.failure = "row \(key): \(error)" }
                }
                state.withLock { $0.busy = false }
            }
        }
        task.withLock { $0 = loop }
    }

    /// Stops writing; returns once no commit is in flight.
    func pause() async {
        state.withLock { $0.target = nil }
        while state.withLock({ $0.busy }) { try? await Task.sleep(for: .milliseconds(1)) }
    }

    /// Writes to `app` from now on.
    func resume(_ app: ReplicationIntegrationTests.App) { state.withLock { $0.target = app } }

    var acknowledged: [Int] { state.withLock { $0.acknowledged } }
    var failure: String? { state.withLock { $0.failure } }

    func stop() async {
        await pause()
        task.withLock { $0 }?.cancel()
        await task.withLock { $0 }?.value
    }
}

/// Issue 10, the CI scenario at a real size: a database of 256 MiB, a new standby's initial sync
/// from the Object Store snapshot plus the stream tail (with progress), three graceful
/// switchovers under a write load with every acknowledged row present afterwards, a crash of
/// the active node (its shipper dropped without a final marker) with the standby promoted and
/// `PRAGMA integrity_check` ok, and no slow consumer in the server's log. Each node has its own
/// NATS connection, as batond's replication does. Part of the serialized replication suite.
extension ReplicationIntegrationTests {
    static let largeDatabaseMiB = 256

    /// The test's own app database: 256 MiB of 1 MiB random blobs (16 per transaction) plus the
    /// writer's table.
    func fillLargeDatabase(_ path: String) async throws -> App {
        let app = try await App(path: path)
        try await app.run("CREATE TABLE acked(k INTEGER PRIMARY KEY, at TEXT NOT NULL)")
        for _ in 0..<(Self.largeDatabaseMiB / 16) {
            try await app.run("BEGIN; " + String(repeating: "INSERT INTO items(note, body) VALUES ('fill', randomblob(1048576)); ", count: 16) + "COMMIT")
        }
        try await app.checkpointTruncate()
        return app
    }

    @Test(.timeLimit(.minutes(5)), arguments: NATSServerKind.allCases)
    func aLargeDatabaseSyncsSwitchesOverAndSurvivesACrash(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig()) { server in
            let directory = try TemporaryDirectory("baton-large")
            let (clientA, jsA) = try await connect(server)
            let (clientB, jsB) = try await connect(server)
            let started = ContinuousClock.now
            var appA: App? = try await fillLargeDatabase(directory.file("a/app.db"))
            let a = configuration(directory, node: "node-a", database: directory.file("a/app.db"))
            let b = configuration(directory, node: "node-b", database: directory.file("b/app.db"))
            var size = try FileManager.default.attributesOfItem(atPath: a.databasePath)[.size] as? NSNumber
            #expect((size?.intValue ?? 0) >= Self.largeDatabaseMiB * 1_048_576, "database of \(size?.intValue ?? 0) bytes")
            let filled = ContinuousClock.now

            // node-a is active: its opening snapshot goes to the Object Store.
            var shipperA: WALShipper? = try await WALShipper.start(configuration: a, token: 1, jetStream: jsA, logger: logger)
            let writer = AcknowledgingWriter()
            writer.start()
            writer.resume(try #require(appA))

            // node-b is new and empty: its initial sync restores the snapshot, then the tail.
            let syncStart = ContinuousClock.now
            var applierB: WALApplier? = try await WALApplier.start(configuration: b, jetStream: jsB, logger: logger)
            var progress: [SyncProgress] = []
            while await applierB!.status().position == nil {
                if let sync = await applierB!.status().sync { progress.append(sync) }
                try await Task.sleep(for: .milliseconds(20))
            }
            let syncEnd = ContinuousClock.now
            let downloading = progress.filter { $0.phase == .downloading && $0.bytesTotal > 0 }
            #expect(!downloading.isEmpty, "no progress reported during the initial sync")
            #expect(downloading.allSatisfy { $0.initial && $0.bytesTotal >= UInt64(Self.largeDatabaseMiB * 1_048_576) })
            #expect(zip(downloading, downloading.dropFirst()).allSatisfy { $0.bytesDone <= $1.bytesDone })
            #expect(await applierB!.status().snapshotsRestored == 1)
            _ = try await applierB!.waitForTxid(await shipperA!.status().lastTxid, timeout: .seconds(60))
            #expect(await applierB!.status().sync == nil)

            // Three graceful switchovers under the write load: a → b → a → b.
            var applierA: WALApplier?
            var shipperB: WALShipper?
            var appB: App?
            var token: UInt64 = 1
            var switchoverTimes: [Duration] = []
            for round in 0..<3 {
                try await Task.sleep(for: .milliseconds(600))
                let fromA = round % 2 == 0
                let (oldShipper, oldApp, oldConfig, oldJS) = fromA ? (shipperA!, appA!, a, jsA) : (try #require(shipperB), appB!, b, jsB)
                let (newApplier, newConfig, newJS) = fromA ? (applierB!, b, jsB) : (try #require(applierA), a, jsA)
                let switchStart = ContinuousClock.now
                await writer.pause()  // the backend stops
                let handoff = try await oldShipper.stepDown()
                await oldApp.close()
                _ = try await newApplier.waitForFinalMarker(token: token, timeout: .seconds(30))
                await newApplier.stop()
                let report = try await ReplicaPromotion.promote(configuration: newConfig, jetStream: newJS, logger: logger, timeout: .seconds(60))
                #expect(report.outcome == .promoted && report.txid == handoff.txid)
                token += 1
                let newShipper = try await WALShipper.start(
                    configuration: newConfig, token: token, jetStream: newJS, logger: logger, resumingFrom: report.resumePoint)
                #expect(await newShipper.status().snapshots == 0)
                let newApp = try await App(path: newConfig.databasePath)
                writer.resume(newApp)  // the backend starts on the new node
                switchoverTimes.append(ContinuousClock.now - switchStart)
                // The old active node follows from its own database (no snapshot restore).
                let follower = try await WALApplier.start(configuration: oldConfig, jetStream: oldJS, logger: logger, adoptingLocalDatabaseAt: handoff)
                #expect(await follower.status().localDatabasesAdopted == 1)
                if fromA {
                    shipperA = nil
                    appA = nil
                    applierB = nil
                    shipperB = newShipper
                    appB = newApp
                    applierA = follower
                } else {
                    shipperB = nil
                    appB = nil
                    applierA = nil
                    shipperA = newShipper
                    appA = newApp
                    applierB = follower
                }
            }
            // Now node-b is active, node-a follows. Every acknowledged row is on node-b.
            try await Task.sleep(for: .milliseconds(600))
            await writer.pause()
            let acknowledged = writer.acknowledged
            #expect(writer.failure == nil, "\(writer.failure ?? "")")
            #expect(acknowledged.count > 50, "only \(acknowledged.count) rows were acknowledged")
            let keysOnB = try await appB!.keys()
            #expect(keysOnB == acknowledged, "node-b misses \(Set(acknowledged).subtracting(keysOnB).sorted().prefix(20))")
            let caughtUp = await shipperB!.status().lastTxid
            _ = try await applierA!.waitForTxid(caughtUp, timeout: .seconds(60))

            // node-b crashes: its shipper is dropped without a final marker while the writer
            // commits; node-a promotes what reached the stream.
            writer.resume(appB!)
            try await Task.sleep(for: .milliseconds(300))
            await shipperB!.stop()
            await writer.stop()
            await appB!.close()
            await applierA!.stop()
            let crashReport = try await ReplicaPromotion.promote(configuration: a, jetStream: jsA, logger: logger, timeout: .seconds(60))
            #expect(crashReport.outcome == .promoted && crashReport.finalMarkerToken == nil)
            let survivor = try await App(path: a.databasePath)
            #expect(try await survivor.scalar("PRAGMA integrity_check") == "ok")
            let keysOnA = try await survivor.keys()
            // Everything acknowledged before the crash window is there, and no row is missing
            // in between: the promoted database is a prefix of the writes.
            #expect(Array(keysOnA.prefix(acknowledged.count)) == acknowledged, "node-a lost acknowledged rows")
            #expect(keysOnA == Array(1...(keysOnA.last ?? 0)))
            let all = writer.acknowledged
            #expect(all.starts(with: keysOnA), "node-a holds rows that were never acknowledged")
            await survivor.close()

            let log = (try? String(contentsOf: server.logFile, encoding: .utf8)) ?? ""
            #expect(!log.contains("Slow Consumer"), "\(server.logTail(lines: 20))")
            size = try FileManager.default.attributesOfItem(atPath: a.databasePath)[.size] as? NSNumber
            let syncSeconds = Double((syncEnd - syncStart).components.seconds) + Double((syncEnd - syncStart).components.attoseconds) / 1e18
            print(
                "large database [\(kind)]: \(size?.intValue ?? 0) bytes; fill \(filled - started), initial sync \(syncEnd - syncStart) "
                    + String(format: "(%.0f MB/s)", Double(size?.intValue ?? 0) / 1e6 / max(syncSeconds, 1e-9))
                    + ", switchovers \(switchoverTimes), \(all.count) rows acknowledged, \(keysOnA.count) after the crash")
            await clientA.close()
            await clientB.close()
        }
    }
}

extension ReplicationIntegrationTests.App {
    /// The writer's acknowledged keys in the database, in order.
    func keys() async throws -> [Int] {
        let database = database
        return try await thread.run { try database.column("SELECT k FROM acked ORDER BY k").compactMap { Int($0) } }
    }

    func scalar(_ sql: String) async throws -> String? {
        let database = database
        return try await thread.run { try database.scalar(sql) }
    }
}

extension ReplicationIntegrationTests {
    /// Promotion reads the replica once (instead of twice) when the drain wrote no page; a
    /// replica changed on disk after the applier stopped is still refused.
    @Test(arguments: [NATSServerKind.pypi])
    func aReplicaChangedOnDiskIsNotPromoted(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: Self.maxPayload)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let app = try await App(path: directory.file("a/app.db"))
            let active = configuration(directory, node: "node-a", database: app.path)
            let passive = configuration(directory, node: "node-b", database: directory.file("b/app.db"))
            let shipper = try await WALShipper.start(configuration: active, token: 3, jetStream: jetStream, logger: logger)
            let applier = try await WALApplier.start(configuration: passive, jetStream: jetStream, logger: logger)
            try await app.workload(transactions: 10)
            _ = try await shipper.stepDown()
            _ = try await applier.waitForFinalMarker(token: 3, timeout: .seconds(30))
            await applier.stop()
            // One byte of a page in the middle of the replica changes behind Baton's back.
            let fd = open(passive.replicaPath, O_RDWR)
            #expect(fd >= 0)
            var byte: UInt8 = 0
            #expect(pread(fd, &byte, 1, 4096 + 100) == 1)
            byte ^= 0xFF
            #expect(pwrite(fd, &byte, 1, 4096 + 100) == 1)
            close(fd)
            do {
                _ = try await ReplicaPromotion.promote(configuration: passive, jetStream: jetStream, logger: logger)
                Issue.record("a replica that differs from its position was promoted")
            } catch let error as ReplicationError {
                #expect(error.code == .checksumMismatch, "\(error)")
            }
            #expect(!FileManager.default.fileExists(atPath: passive.databasePath))
            await app.close()
            await client.close()
        }
    }
}
