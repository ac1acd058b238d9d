import Foundation
import NATS
import NATSTestSupport
import Replication
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The writer backend: SQLite in WAL mode with a busy timeout and the autocheckpoint left on
/// (at 200 pages, so it runs often), ~30 transactions per second (ROWS rows each, every fifth
/// 8 × ROWS, ~1.5 KB per row), and each row id appended to the acknowledged log
/// ("monotonic-ns id node epoch") only after COMMIT returned.
private let writerBackend = """
    import os, sqlite3, time
    path, node, epoch = os.environ["DB_PATH"], os.environ["BATON_NODE"], int(os.environ["BATON_EPOCH"])
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    db.execute("PRAGMA busy_timeout=10000")
    db.execute("PRAGMA wal_autocheckpoint=200")
    rows = int(os.environ.get("ROWS", "1"))
    mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise SystemExit(f"journal mode is {mode}, not wal")
    db.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, node TEXT NOT NULL, epoch INTEGER NOT NULL, payload BLOB)")
    ack = os.open(os.environ["ACK_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    n = 0
    while True:
        n += 1
        db.execute("BEGIN IMMEDIATE")
        ids = []
        for _ in range(rows * (8 if n % 5 == 0 else 1)):
            ids.append(db.execute("INSERT INTO rows(node, epoch, payload) VALUES (?, ?, randomblob(1500))", (node, epoch)).lastrowid)
        db.execute("COMMIT")
        now = time.monotonic_ns()
        os.write(ack, "".join(f"{now} {i} {node} {epoch}\\n" for i in ids).encode())
        time.sleep(0.03)
    """

/// Prints `PRAGMA integrity_check`'s first line, then "id node epoch" for every row.
private let inspector = """
    import sqlite3, sys
    db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True, timeout=10)
    print(db.execute("PRAGMA integrity_check").fetchone()[0])
    for row in db.execute("SELECT id, node, epoch FROM rows"):
        print(row[0], row[1], row[2])
    """

/// One row as the writer acknowledged it (a row id alone is not enough: after a crash failover
/// the ids of lost rows are handed out again).
private struct Row: Hashable, CustomStringConvertible {
    var id: Int64
    var node: String
    var epoch: UInt64
    var description: String { "\(id)@\(node)#\(epoch)" }
}

private struct Ack {
    var at: Int64
    var row: Row
}

/// Two batond nodes running the writer with `sqlite:` replication on one NATS server.
private struct ReplicationCluster {
    static let app = "ledger"
    static let nodeNames = ["node-1", "node-2"]
    let directory: URL
    let port: Int
    let batonctl: String
    /// Rows per transaction of the writer (every fifth transaction writes 8 times as many).
    var rowsPerTransaction = 1
    var nodes: [String: BatondProcess] = [:]

    var ackLog: String { directory.appendingPathComponent("acks.log").path }
    func databasePath(_ node: String) -> String { directory.appendingPathComponent(node).appendingPathComponent("data/app.db").path }
    func logPath(_ node: String) -> String { directory.appendingPathComponent("\(node).log").path }

    func config(node: String) -> String {
        """
        cluster: itest
        node: {id: \(node), state_dir: \(directory.appendingPathComponent(node).appendingPathComponent("state").path)}
        nats: {servers: ["nats://127.0.0.1:\(port)"]}
        apps:
          - name: \(Self.app)
            priority: 100
            lease: {ttl: 1s, renew: 300ms, fence_budget: 300ms, skew: 200ms}
            backend:
              process:
                command: ["/usr/bin/python3", "\(directory.appendingPathComponent("writer.py").path)"]
                env: {DB_PATH: "\(databasePath(node))", ACK_LOG: "\(ackLog)", ROWS: "\(rowsPerTransaction)"}
                stop_timeout: 2s
            sqlite: {path: \(databasePath(node)), snapshot_interval: 1m}
        """
    }

    func acks() -> [Ack] {
        let text = (try? String(contentsOfFile: ackLog, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count == 4, let at = Int64(fields[0]), let id = Int64(fields[1]), let epoch = UInt64(fields[3]) else { return nil }
            return Ack(at: at, row: Row(id: id, node: String(fields[2]), epoch: epoch))
        }
    }

    /// Waits until the writer of an epoch above `epoch` (on `node`, when given) acknowledged at
    /// least `count` rows; returns its node and epoch.
    func waitForWriter(after epoch: UInt64, on node: String? = nil, count: Int, timeout: Duration) async throws -> (node: String, epoch: UInt64) {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let newer = acks().filter { $0.row.epoch > epoch && (node == nil || $0.row.node == node) }
            if newer.count >= count, let last = newer.last { return (last.row.node, last.row.epoch) }
            try await Task.sleep(for: .milliseconds(20))
        }
        let last = acks().last.map { "\($0.row)" } ?? "none"
        throw ClusterTestFailure(description: "no writer after epoch \(epoch)\(node.map { " on \($0)" } ?? "") within \(timeout); last ack \(last)")
    }

    /// Runs a program to completion (polling, so no thread blocks on it) and returns its exit
    /// status and output.
    func run(_ executable: String, _ arguments: [String], timeout: Duration = .seconds(60)) async throws -> (status: Int32, output: String) {
        let outputPath = directory.appendingPathComponent("out-\(UUID().uuidString)").path
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        defer { try? handle.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline {
                kill(process.processIdentifier, SIGKILL)
                throw ClusterTestFailure(description: "\(executable) \(arguments) did not finish within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return (process.terminationStatus, (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "")
    }

    func batonctl(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await run(batonctl, arguments + ["--nats", "nats://127.0.0.1:\(port)", "--cluster", "itest"])
    }

    /// `PRAGMA integrity_check` and the rows of a node's database.
    func inspect(_ node: String) async throws -> (integrity: String, rows: Set<Row>) {
        let result = try await run("/usr/bin/python3", [directory.appendingPathComponent("inspect.py").path, databasePath(node)])
        guard result.status == 0 else { throw ClusterTestFailure(description: "inspecting \(node)'s database failed: \(result.output)") }
        var lines = result.output.split(separator: "\n")
        let integrity = lines.isEmpty ? "" : String(lines.removeFirst())
        var rows: Set<Row> = []
        for line in lines {
            let fields = line.split(separator: " ")
            if fields.count == 3, let id = Int64(fields[0]), let epoch = UInt64(fields[2]) { rows.insert(Row(id: id, node: String(fields[1]), epoch: epoch)) }
        }
        return (integrity, rows)
    }

    /// Every record in the stream: fencing tokens never go down (no stale node's record was
    /// accepted after a newer node's). Returns the tokens seen.
    func checkStreamTokens(sourceLocation: SourceLocation = #_sourceLocation) async throws -> [UInt64] {
        let client = try await NATSClient.connect(options: NATSClientOptions(servers: ["nats://127.0.0.1:\(port)"]))
        let jetStream = JetStream(client: client)
        let stream = ReplicationNames(cluster: "itest", app: Self.app, nodeID: "x").stream
        let info = try await jetStream.streamInfo(stream)
        var tokens: [UInt64] = []
        var highest: UInt64 = 0
        if info.state.lastSequence >= info.state.firstSequence, info.state.messages > 0 {
            for sequence in info.state.firstSequence...info.state.lastSequence {
                let message = try await jetStream.getMessage(stream: stream, sequence: sequence)
                let chunk = try RecordChunk(decoding: Array(message.payload.readableBytesView))
                #expect(chunk.token >= highest, "stream sequence \(sequence) holds a record of token \(chunk.token) after token \(highest)", sourceLocation: sourceLocation)
                highest = max(highest, chunk.token)
                if tokens.last != chunk.token { tokens.append(chunk.token) }
            }
        }
        await client.close()
        return tokens
    }
}

/// SQLite replication end to end: real batond processes, a real SQLite writer, real nats-server.
/// Runs with the other lease-timing suites (`scripts/test`), since it relies on 1 s leases.
@Suite("SQLite replication under batond: switchovers, crash failover, stale node", .serialized)
struct SQLiteReplicationClusterTests {
    private func withCluster(
        _ kind: NATSServerKind, prefix: String, rowsPerTransaction: Int = 1, _ body: (inout ReplicationCluster) async throws -> Void) async throws {
        let batond = try BatondClusterTests.executable("batond")
        let keeper = try BatondClusterTests.executable("baton-fence-keeper")
        let batonctl = try BatondClusterTests.executable("batonctl")
        let directory = try makeTemporaryDirectory(prefix: prefix)
        // BATON_KEEP_TEST_DIRS=1 keeps the directory (configs, batond logs, databases) of a
        // failed test, =always of every test.
        let keepSetting = ProcessInfo.processInfo.environment["BATON_KEEP_TEST_DIRS"]
        var keep = keepSetting == "always"
        defer {
            if keep {
                print("SQLiteReplicationClusterTests: kept \(directory.path) for inspection")
            } else {
                try? FileManager.default.removeItem(at: directory)
            }
        }
        try writerBackend.write(to: directory.appendingPathComponent("writer.py"), atomically: true, encoding: .utf8)
        try inspector.write(to: directory.appendingPathComponent("inspect.py"), atomically: true, encoding: .utf8)
        try await withNATSServer(kind) { server in
            var cluster = ReplicationCluster(directory: directory, port: server.port, batonctl: batonctl, rowsPerTransaction: rowsPerTransaction)
            defer {
                for node in cluster.nodes.values where node.process.isRunning {
                    kill(node.pid, SIGCONT)
                    kill(node.pid, SIGKILL)
                }
            }
            for name in ReplicationCluster.nodeNames {
                let configPath = directory.appendingPathComponent("\(name).yaml").path
                try cluster.config(node: name).write(toFile: configPath, atomically: true, encoding: .utf8)
                cluster.nodes[name] = try BatondProcess(
                    node: name, binary: batond, config: configPath, logPath: cluster.logPath(name), environment: ["BATON_FENCE_KEEPER": keeper])
            }
            do {
                try await body(&cluster)
            } catch {
                keep = keepSetting != nil
                throw error
            }
            for node in cluster.nodes.values { await node.stop() }
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func twentyGracefulSwitchoversUnderLoadLoseNoAcknowledgedRow(kind: NATSServerKind) async throws {
        try await withCluster(kind, prefix: "baton-sqlite-switch") { cluster in
            var current = try await cluster.waitForWriter(after: 0, count: 20, timeout: .seconds(30))
            var handedOverAt = ContinuousClock.now
            for round in 1...20 {
                // Each node keeps a cooldown of 2 ttl after it gave the lease up.
                try await Task.sleep(until: handedOverAt + .milliseconds(2200))
                let target = current.node == "node-1" ? "node-2" : "node-1"
                let switchover = try await cluster.batonctl(["switchover", ReplicationCluster.app, "--to", target, "--timeout", "30s"])
                try #require(switchover.status == 0, "round \(round): switchover to \(target) failed: \(switchover.output)")
                handedOverAt = .now
                let next = try await cluster.waitForWriter(after: current.epoch, on: target, count: 3, timeout: .seconds(20))
                let acknowledged = cluster.acks()  // read before the database: all of these were committed
                let state = try await cluster.inspect(target)
                #expect(state.integrity == "ok", "round \(round): \(target): \(state.integrity)")
                let missing = acknowledged.filter { !state.rows.contains($0.row) }
                #expect(
                    missing.isEmpty,
                    "round \(round): \(missing.count) of \(acknowledged.count) acknowledged rows missing on \(target): \(missing.prefix(10).map(\.row))")
                current = next
            }
            let tokens = try await cluster.checkStreamTokens()
            #expect(tokens.count >= 21, "tokens in the stream: \(tokens)")
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func killNineOfTheActiveNodeUnderLoadPromotesAVerifiedCopy(kind: NATSServerKind) async throws {
        // A heavier load, so the shipper checkpoints (every 1000 shipped frames) and the WAL is
        // reset at least once before the crash.
        try await withCluster(kind, prefix: "baton-sqlite-crash", rowsPerTransaction: 6) { cluster in
            let first = try await cluster.waitForWriter(after: 0, count: 60, timeout: .seconds(30))
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline {
                let log = (try? String(contentsOfFile: cluster.logPath(first.node), encoding: .utf8)) ?? ""
                if log.contains("[Replication] checkpoint") { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            // Let the passive node follow for a moment after the checkpoint.
            try await Task.sleep(for: .seconds(1))
            let activeLog = (try? String(contentsOfFile: cluster.logPath(first.node), encoding: .utf8)) ?? ""
            #expect(activeLog.contains("[Replication] checkpoint"), "the shipper never checkpointed before the crash")
            cluster.nodes[first.node]!.signal(SIGKILL)
            let survivor = first.node == "node-1" ? "node-2" : "node-1"
            _ = try await cluster.waitForWriter(after: first.epoch, on: survivor, count: 3, timeout: .seconds(15))
            let acknowledged = cluster.acks()
            let state = try await cluster.inspect(survivor)
            #expect(state.integrity == "ok", "\(survivor): \(state.integrity)")

            // What the crashed node acknowledged survived up to a point, with no holes: the
            // promoted copy holds every row up to the last applied transaction.
            let old = acknowledged.filter { $0.row.epoch == first.epoch }
            let present = old.map { state.rows.contains($0.row) }
            let kept = present.prefix { $0 }.count
            #expect(present.dropFirst(kept).allSatisfy { !$0 }, "rows of the crashed epoch are missing in the middle: \(present)")
            let lost = old.count - kept
            print("kill -9: \(kept) of \(old.count) acknowledged rows of epoch \(first.epoch) survived, \(lost) lost (not shipped yet)")
            // Shipping polls every 50 ms: at ~30 transactions/s only the last few can be missing.
            #expect(lost <= 200, "\(lost) acknowledged rows lost")
            #expect(acknowledged.filter { $0.row.epoch > first.epoch }.allSatisfy { state.rows.contains($0.row) })

            // The promotion is reported: the log line and `batonctl status`.
            let log = (try? String(contentsOfFile: cluster.logPath(survivor), encoding: .utf8)) ?? ""
            let promotionLine = log.split(separator: "\n").first { $0.contains("promoted the SQLite replica") }
            #expect(promotionLine != nil, "no promotion log line on \(survivor)")
            if let promotionLine {
                print("kill -9: \(promotionLine)")
                #expect(promotionLine.contains("records-beyond-applied="), "\(promotionLine)")
                #expect(promotionLine.contains("txids-beyond-applied="), "\(promotionLine)")
                #expect(promotionLine.contains("last-transaction-time="), "\(promotionLine)")
                #expect(promotionLine.contains("crash failover"), "\(promotionLine)")
            }
            let status = try await cluster.batonctl(["status"])
            #expect(status.output.contains("last promotion on \(survivor)") && status.output.contains("crash failover"), "\(status.output)")
            #expect(status.output.contains("shipping txid"), "\(status.output)")
            _ = try await cluster.checkStreamTokens()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func aStaleActiveNodeCannotGetARecordAccepted(kind: NATSServerKind) async throws {
        try await withCluster(kind, prefix: "baton-sqlite-stale") { cluster in
            let first = try await cluster.waitForWriter(after: 0, count: 40, timeout: .seconds(30))
            let stale = cluster.nodes[first.node]!
            let other = first.node == "node-1" ? "node-2" : "node-1"
            let frozenAt = monotonicNow()
            stale.signal(SIGSTOP)
            // The fence keeper kills the frozen node's writer at the lease deadline; the other
            // node takes over, promotes and ships under a newer token.
            let second = try await cluster.waitForWriter(after: first.epoch, on: other, count: 20, timeout: .seconds(15))
            stale.signal(SIGCONT)
            // The thawed node wakes up with WAL frames it never shipped (its writer committed
            // until the keeper killed it); whatever it tries to publish must be refused.
            let deadline = ContinuousClock.now + .seconds(10)
            var staleLog = ""
            while ContinuousClock.now < deadline {
                staleLog = (try? String(contentsOfFile: cluster.logPath(first.node), encoding: .utf8)) ?? ""
                if staleLog.contains("fenced") { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(staleLog.contains("fenced"), "the thawed node did not fence itself")
            try await Task.sleep(for: .milliseconds(1500))

            let acknowledged = cluster.acks()
            let state = try await cluster.inspect(other)
            #expect(state.integrity == "ok", "\(other): \(state.integrity)")
            let staleRows = acknowledged.filter { $0.row.epoch == first.epoch && $0.at > frozenAt }
            #expect(!staleRows.isEmpty, "the frozen node's writer committed nothing after the freeze; the test proves less than it should")
            let leaked = staleRows.filter { state.rows.contains($0.row) }
            #expect(leaked.isEmpty, "rows committed on the frozen node reached the new active node: \(leaked.map(\.row))")
            let newer = acknowledged.filter { $0.row.epoch >= second.epoch }
            #expect(newer.allSatisfy { state.rows.contains($0.row) }, "rows of the new active node are missing")
            let beforeFreeze = acknowledged.filter { $0.row.epoch == first.epoch && $0.at < frozenAt - 500_000_000 }
            #expect(beforeFreeze.allSatisfy { state.rows.contains($0.row) }, "rows committed well before the freeze are missing")

            // The writer keeps going on the new node, and the stream never took a stale record.
            _ = try await cluster.waitForWriter(after: second.epoch - 1, on: other, count: newer.count + 10, timeout: .seconds(10))
            let tokens = try await cluster.checkStreamTokens()
            #expect(tokens.last == second.epoch, "tokens in the stream: \(tokens)")
        }
    }

    /// The stream is deleted and the active node crashes while the only other node was stopped
    /// with an older copy: that node must not publish its older data as the truth. It refuses
    /// (log line, `batonctl status`), the app stays down, `batonctl replica status` shows what
    /// each holds, and `batonctl replica promote --force` lets the operator accept its copy.
    @Test(arguments: NATSServerKind.allCases)
    func aDeletedStreamAndALostActiveLeaveTheOlderCopyRefusedUntilForced(kind: NATSServerKind) async throws {
        try await withCluster(kind, prefix: "baton-sqlite-history") { cluster in
            let first = try await cluster.waitForWriter(after: 0, count: 20, timeout: .seconds(30))
            let other = first.node == "node-1" ? "node-2" : "node-1"
            let client = try await NATSClient.connect(options: NATSClientOptions(servers: ["nats://127.0.0.1:\(cluster.port)"]))
            let jetStream = JetStream(client: client)
            let kv = try await jetStream.keyValue("baton_itest__replication")
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            // The passive reports what its replica holds.
            let reportDeadline = ContinuousClock.now + .seconds(15)
            while try await kv.get("\(ReplicationCluster.app).node.\(other)") == nil, ContinuousClock.now < reportDeadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            // The passive stops; the active writes on.
            await cluster.nodes[other]!.stop()
            let stoppedAt = cluster.acks().count
            let reported = try #require(try await kv.get("\(ReplicationCluster.app).node.\(other)"), "\(other) reported no position")
            let otherCopy = try decoder.decode(NodeHoldingReport.self, from: Data(reported.value.readableBytesView)).copy
            // The durable record moves past the stopped node's copy (progress every 5 s).
            let deadline = ContinuousClock.now + .seconds(20)
            while true {
                if let entry = try await kv.get("\(ReplicationCluster.app).newest"),
                    try decoder.decode(ReplicationHistoryRecord.self, from: Data(entry.value.readableBytesView)).newest.txid > otherCopy.txid
                {
                    break
                }
                guard ContinuousClock.now < deadline else { throw ClusterTestFailure(description: "the durable record did not pass txid \(otherCopy.txid)") }
                try await Task.sleep(for: .milliseconds(200))
            }
            let names = ReplicationNames(cluster: "itest", app: ReplicationCluster.app, nodeID: "x")
            try await jetStream.deleteStream(names.stream)
            cluster.nodes[first.node]!.signal(SIGKILL)
            #expect(cluster.acks().count > stoppedAt)

            // The stopped node comes back: it takes the lease and refuses to promote.
            let restartLog = cluster.directory.appendingPathComponent("\(other)-restart.log").path
            cluster.nodes[other] = try BatondProcess(
                node: other, binary: try BatondClusterTests.executable("batond"),
                config: cluster.directory.appendingPathComponent("\(other).yaml").path, logPath: restartLog,
                environment: ["BATON_FENCE_KEEPER": try BatondClusterTests.executable("baton-fence-keeper")])
            var log = ""
            let refusalDeadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < refusalDeadline {
                log = (try? String(contentsOfFile: restartLog, encoding: .utf8)) ?? ""
                if log.contains("refusing to promote older or empty data over newer data") { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            let refusal = log.split(separator: "\n").first { $0.contains("refusing to promote older or empty data over newer data") }
            #expect(refusal != nil, "no refusal on \(other): \(log.suffix(3000))")
            if let refusal {
                print("refusal: \(refusal)")
                #expect(refusal.contains("does not exist") && refusal.contains("\(first.node) holds txid"), "\(refusal)")
            }
            let status = try await cluster.batonctl(["status"])
            #expect(status.output.contains("last promotion on \(other)") && status.output.contains("promotion refused"), "\(status.output)")
            // Nothing was published and no writer ran on the older copy.
            await #expect(throws: JetStreamAPIError.self) { _ = try await jetStream.streamInfo(names.stream) }
            #expect(cluster.acks().allSatisfy { $0.row.epoch <= first.epoch })

            let replicaStatus = try await cluster.batonctl(["replica", "status", ReplicationCluster.app])
            #expect(replicaStatus.status == 0 && replicaStatus.output.contains("does not exist") && replicaStatus.output.contains(other), "\(replicaStatus.output)")
            print("batonctl replica status:\n\(replicaStatus.output)")
            let unforced = try await cluster.batonctl(["replica", "promote", ReplicationCluster.app, other])
            #expect(unforced.status != 0 && unforced.output.contains("--force") && unforced.output.contains("given up"), "\(unforced.output)")
            let forced = try await cluster.batonctl(["replica", "promote", ReplicationCluster.app, other, "--force"])
            #expect(forced.status == 0, "\(forced.output)")

            // At its next attempt the node promotes its copy, and the writer runs on it.
            let next = try await cluster.waitForWriter(after: first.epoch, on: other, count: 5, timeout: .seconds(30))
            let state = try await cluster.inspect(other)
            #expect(state.integrity == "ok")
            // What the stopped node had applied: every row acknowledged before it stopped, but
            // for the last few that were still in flight (shipping polls every 50 ms).
            let kept = cluster.acks().prefix(max(0, stoppedAt - 50))
            #expect(kept.allSatisfy { state.rows.contains($0.row) }, "rows the stopped node had applied are missing")
            let promoted = (try? String(contentsOfFile: restartLog, encoding: .utf8)) ?? ""
            #expect(promoted.contains("forced"), "\(promoted.suffix(2000))")
            #expect(next.epoch > first.epoch)
            await client.close()
        }
    }
}
