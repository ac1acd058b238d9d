import BatonCore
import Foundation
import Logging
import NATS
import NATSTestSupport
import Replication
@testable import Backends
@testable import Control
@testable import Supervisor
import TestSupport
import Testing

/// Runs SQL on a database with python3's sqlite3 (WAL mode, like an app would) and returns the
/// rows, one line each, columns separated by spaces. Polls the process, so no thread blocks.
private func sql(_ path: String, _ statements: String) async throws -> [String] {
    let script = """
        import sqlite3, sys
        db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        for statement in sys.argv[2].split(";"):
            if statement.strip():
                for row in db.execute(statement).fetchall():
                    print(" ".join(str(column) for column in row))
        """
    let output = FileManager.default.temporaryDirectory.appendingPathComponent("sql-\(UUID().uuidString)").path
    _ = FileManager.default.createFile(atPath: output, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: output) }
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
    defer { try? handle.close() }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    process.arguments = ["-c", script, path, statements]
    process.standardOutput = handle
    process.standardError = handle
    try process.run()
    while process.isRunning { try await Task.sleep(for: .milliseconds(10)) }
    let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
    guard process.terminationStatus == 0 else { throw SQLiteReplicaError(description: "python3 sqlite3 failed: \(text)") }
    return text.split(separator: "\n").map(String.init)
}

@Suite("SQLiteReplica: the app replica over real NATS and SQLite")
struct SQLiteReplicaTests {
    private static func config(directory: URL, node: String, port: Int = 4222) -> BatonConfig {
        let app = AppConfig(
            name: "ledger", lease: LeaseTiming.defaults(ttl: .seconds(3)), backend: .process(ProcessBackendConfig(command: ["/bin/true"])),
            sqlite: SQLiteReplicaConfig(
                path: directory.appendingPathComponent(node).appendingPathComponent("app.db").path, snapshotInterval: .seconds(600), snapshotsKept: 2,
                retention: .seconds(7200)))
        return BatonConfig(
            cluster: "unit", node: NodeConfig(id: node, stateDirectory: directory.appendingPathComponent(node).appendingPathComponent("state").path),
            nats: NATSConfig(servers: ["nats://127.0.0.1:\(port)"], replicas: 1), apps: [app])
    }

    /// The replica of the test app on `node`, its files under `directory`.
    private static func replica(_ node: String, directory: URL, server: NATSServerProcess, client: NATSClient) throws -> SQLiteReplica {
        var logger = Logger(label: "sqlite-replica-test")
        logger.logLevel = ProcessInfo.processInfo.environment["BATON_TEST_LOG"] != nil ? .debug : .critical
        let config = config(directory: directory, node: node, port: server.port)
        return try SQLiteReplica(
            configuration: SQLiteReplica.configuration(app: config.apps[0], sqlite: config.apps[0].sqlite!, config: config),
            jetStream: JetStream(client: client), logger: logger)
    }

    @Test("the sqlite section, the node's state_dir and nats.replicas map to the replication configuration")
    func configurationMapping() throws {
        let directory = URL(fileURLWithPath: "/var/lib/baton-test")
        let config = Self.config(directory: directory, node: "node-a")
        let app = config.apps[0]
        let replication = SQLiteReplica.configuration(app: app, sqlite: app.sqlite!, config: config)
        #expect(replication.cluster == "unit" && replication.app == "ledger" && replication.nodeID == "node-a")
        #expect(replication.databasePath == "/var/lib/baton-test/node-a/app.db")
        #expect(replication.replicaPath == "/var/lib/baton-test/node-a/state/ledger.replica.db")
        #expect(replication.streamMaxAge == .seconds(7200))
        #expect(replication.snapshotsToKeep == 2)
        #expect(replication.snapshotInterval == .seconds(600))
        #expect(replication.streamReplicas == 1)
    }

    @Test("the promotion summary says whether anything can have been lost")
    func promotionSummary() {
        let now = Date()
        var report = PromotionReport(
            outcome: .promoted, txid: 42, recordsAppliedDuringDrain: 2, transactionsAppliedDuringDrain: 3, lastTransactionTime: now.addingTimeInterval(-0.25),
            discardedIncompleteRecord: false)
        let crash = SQLiteReplica.summary(report, token: 7, createdDatabase: false, at: now)
        #expect(crash.contains("crash failover") && crash.contains("0.250s before promotion") && crash.contains("2 record(s) / 3 txid(s)"), "\(crash)")
        report.finalMarkerToken = 6
        let graceful = SQLiteReplica.summary(report, token: 7, createdDatabase: false, at: now)
        #expect(graceful.contains("graceful handoff from epoch 6, nothing lost") && !graceful.contains("crash"), "\(graceful)")
        let first = SQLiteReplica.summary(
            PromotionReport(outcome: .nothingToPromote, recordsAppliedDuringDrain: 0, discardedIncompleteRecord: false), token: 1,
            createdDatabase: true, at: now)
        #expect(first == "epoch 1: first start, created an empty database")
    }

    @Test(arguments: NATSServerKind.allCases)
    func firstBootHandoffAndFencing(kind: NATSServerKind) async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-sqlite-replica")
        defer { try? FileManager.default.removeItem(at: directory) }
        try await withNATSServer(kind) { server in
            let client = try await NATSClient.connect(options: NATSClientOptions(servers: [server.url]))
            func replica(_ node: String) throws -> SQLiteReplica { try Self.replica(node, directory: directory, server: server, client: client) }
            let a = try replica("node-a")
            let b = try replica("node-b")
            let databaseA = a.configuration.databasePath
            let databaseB = b.configuration.databasePath
            await b.follow()

            // First boot: nothing to promote, an empty WAL database is created, shipping starts.
            try await a.promote(token: 1)
            #expect(FileManager.default.fileExists(atPath: databaseA))
            #expect(try await sql(databaseA, "PRAGMA journal_mode") == ["wal"])
            var status = await a.status()
            #expect(status.role == .shipping)
            #expect(status.promotion == "epoch 1: first start, created an empty database")
            _ = try await sql(databaseA, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('a1'), ('a2'), ('a3')")

            // Graceful handoff: flush ships the tail and the final marker; b promotes all of it.
            try await a.flush(token: 1)
            #expect(await a.status().role == .idle)
            await a.follow()
            try await b.promote(token: 2)
            #expect(try await sql(databaseB, "SELECT v FROM t ORDER BY id") == ["a1", "a2", "a3"])
            status = await b.status()
            #expect(status.role == .shipping)
            #expect(status.promotion?.contains("graceful handoff from epoch 1") == true, "\(status.promotion ?? "nil")")
            // The promotion continued the stream: no snapshot before the backend starts.
            #expect(status.snapshotsPublished == 0, "\(status)")
            let shippedBefore = await b.status().txid ?? 0
            _ = try await sql(databaseB, "INSERT INTO t (v) VALUES ('b1')")
            // Until b shipped the insert (the commit returns before the shipper publishes it) and
            // a applied it.
            var (shipped, applied): (UInt64, UInt64) = (0, 0)
            try await eventually("b shipping the insert and a applying it (shipped \(shipped), applied \(applied))", timeout: .seconds(10)) {
                shipped = await b.status().txid ?? 0
                applied = await a.status().txid ?? 0
                return shipped > shippedBefore && applied >= shipped
            }
            #expect(await a.status().role == .applying)
            // The old active node kept its own database (at its final marker) as the replica.
            let following = await a.status()
            let shippingB = await b.status()
            #expect(following.snapshotsRestored == 0, "\(following)")
            #expect(following.txid == shippingB.txid)

            // a takes over without b handing off (as after b froze): b's next record is refused,
            // and b reports it as a failure.
            try await a.promote(token: 3)
            #expect(try await sql(databaseA, "SELECT v FROM t ORDER BY id") == ["a1", "a2", "a3", "b1"])
            _ = try await sql(databaseB, "INSERT INTO t (v) VALUES ('stale')")
            let failure = await withTaskGroup(of: String?.self) { group in
                group.addTask {
                    var failures = b.failures().makeAsyncIterator()
                    return await failures.next()
                }
                group.addTask {
                    try? await Task.sleep(for: .seconds(15))
                    return nil
                }
                let first = await group.next() ?? nil
                group.cancelAll()
                return first
            }
            #expect(failure?.contains("fenced") == true, "\(failure ?? "nil")")
            #expect(await b.status().lastError?.contains("fenced") == true)
            // A flush of the fenced epoch fails instead of publishing anything.
            await #expect(throws: (any Error).self) { try await b.flush(token: 2) }
            _ = try await sql(databaseA, "INSERT INTO t (v) VALUES ('a4')")
            await b.follow()
            try await a.flush(token: 3)
            try await b.promote(token: 4)
            #expect(try await sql(databaseB, "SELECT v FROM t ORDER BY id") == ["a1", "a2", "a3", "b1", "a4"])

            await a.dispose()
            await b.dispose()
            await client.close()
        }
    }

    /// A node that stepped down gracefully and whose batond then restarted (SIGTERM restart)
    /// still makes its replica from its own database, which is the database at the final marker
    /// it shipped (kept in `<state_dir>/<app>.handoff.json`), instead of restoring the first
    /// snapshot and replaying the whole stream (chaos finding R2).
    @Test(arguments: NATSServerKind.allCases)
    func aRestartedNodeAdoptsItsOwnDatabaseAtItsFinalMarker(kind: NATSServerKind) async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-sqlite-restart")
        defer { try? FileManager.default.removeItem(at: directory) }
        try await withNATSServer(kind) { server in
            let client = try await NATSClient.connect(options: NATSClientOptions(servers: [server.url]))
            func replica(_ node: String) throws -> SQLiteReplica { try Self.replica(node, directory: directory, server: server, client: client) }
            let a = try replica("node-a")
            let b = try replica("node-b")
            await b.follow()
            try await a.promote(token: 1)  // first start: the opening snapshot
            let databaseA = a.configuration.databasePath
            _ = try await sql(databaseA, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('a1'), ('a2')")
            try await a.flush(token: 1)
            let handoffFile = directory.appendingPathComponent("node-a/state/ledger.handoff.json").path
            #expect(FileManager.default.fileExists(atPath: handoffFile))
            await a.dispose()  // batond of node-a stops here ...
            try await b.promote(token: 2)
            _ = try await sql(b.configuration.databasePath, "INSERT INTO t (v) VALUES ('b1')")

            let restarted = try replica("node-a")  // ... and starts again
            await restarted.follow()
            var (shipped, applied): (UInt64, UInt64) = (0, 0)
            try await eventually("the restarted node applying what b shipped (shipped \(shipped), applied \(applied))", timeout: .seconds(20)) {
                shipped = await b.status().txid ?? 0
                applied = await restarted.status().txid ?? 0
                return shipped > 0 && applied >= shipped
            }
            let status = await restarted.status()
            #expect(status.txid == (await b.status().txid), "\(status)")
            #expect(status.snapshotsRestored == 0, "the restarted node restored a snapshot: \(status)")
            // Promoted again, the node ships anew: the kept marker goes.
            try await b.flush(token: 2)
            try await restarted.promote(token: 3)
            #expect(try await sql(databaseA, "SELECT v FROM t ORDER BY id") == ["a1", "a2", "b1"])
            #expect(!FileManager.default.fileExists(atPath: handoffFile))
            await restarted.dispose()
            await b.dispose()
            await client.close()
        }
    }
}
