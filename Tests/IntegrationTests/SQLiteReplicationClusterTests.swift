import BatonCore
import Foundation
import NATS
import NATSTestSupport
import TestSupport
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

/// Another process using the app's database during a handover (a cron job, an operator's
/// `sqlite3`): takes the write lock with `BEGIN IMMEDIATE`, inserts one row, creates the file
/// `argv[2]` to say it holds the lock, holds it for `argv[3]` seconds, commits, and only then
/// appends its row to the acknowledged log `argv[4]` (as node "sidecar", epoch 0).
private let lockHoldingSidecar = """
    import sqlite3, sys, time
    path, ready, hold, ack = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    db.execute("BEGIN IMMEDIATE")
    rowid = db.execute("INSERT INTO rows(node, epoch, payload) VALUES ('sidecar', 0, randomblob(100))").lastrowid
    open(ready, "w").write("locked\\n")
    time.sleep(hold)
    db.execute("COMMIT")
    with open(ack, "a") as f:
        f.write(f"{time.monotonic_ns()} {rowid} sidecar 0\\n")
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
    /// The app's `sqlite.flush_timeout`, when set.
    var flushTimeout: String?
    /// The NATS user batond connects as, and the one batonctl uses (none: no authorization).
    var nodeUser: PermissionUser?
    var batonctlUser: PermissionUser?
    var nodes: [String: BatondProcess] = [:]
    /// The nats-server's log.
    var serverLog: URL?

    var ackLog: String { directory.appendingPathComponent("acks.log").path }
    func databasePath(_ node: String) -> String { directory.appendingPathComponent(node).appendingPathComponent("data/app.db").path }
    func logPath(_ node: String) -> String { directory.appendingPathComponent("\(node).log").path }

    func config(node: String) -> String {
        """
        cluster: itest
        node: {id: \(node), state_dir: \(directory.appendingPathComponent(node).appendingPathComponent("state").path)}
        nats: {servers: ["nats://127.0.0.1:\(port)"]\(nodeUser.map { ", \($0.configKeys)" } ?? "")}
        apps:
          - name: \(Self.app)
            priority: 100
            lease: {ttl: 1s, renew: 300ms, fence_budget: 300ms, skew: 200ms}
            backend:
              process:
                command: ["/usr/bin/python3", "\(directory.appendingPathComponent("writer.py").path)"]
                env: {DB_PATH: "\(databasePath(node))", ACK_LOG: "\(ackLog)", ROWS: "\(rowsPerTransaction)"}
                stop_timeout: 2s
            sqlite: {path: \(databasePath(node)), snapshot_interval: 1m\(flushTimeout.map { ", flush_timeout: \($0)" } ?? "")}
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
        var writer: (node: String, epoch: UInt64)?
        try await eventually(
            "a writer after epoch \(epoch)\(node.map { " on \($0)" } ?? "") with \(count) acknowledged rows; last ack \(acks().last.map { "\($0.row)" } ?? "none")",
            timeout: timeout, every: .milliseconds(20)
        ) {
            let newer = acks().filter { $0.row.epoch > epoch && (node == nil || $0.row.node == node) }
            guard newer.count >= count, let last = newer.last else { return false }
            writer = (last.row.node, last.row.epoch)
            return true
        }
        return try #require(writer)
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
        do {
            try await eventually("\(executable) \(arguments) finished", timeout: timeout, every: .milliseconds(20)) { !process.isRunning }
        } catch {
            kill(process.processIdentifier, SIGKILL)
            throw error
        }
        return (process.terminationStatus, (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "")
    }

    func batonctl(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await run(batonctl, arguments + ["--nats", "nats://127.0.0.1:\(port)", "--cluster", "itest"] + (batonctlUser?.batonctlArguments ?? []))
    }

    /// `PRAGMA integrity_check` and the rows of a node's database.
    func inspect(_ node: String) async throws -> (integrity: String, rows: Set<Row>) {
        try await inspect(path: databasePath(node))
    }

    /// The databases set aside next to a node's database (`app.db.unshipped-<epoch>-<time>`).
    func setAsideDatabases(_ node: String) -> [String] {
        let directory = (databasePath(node) as NSString).deletingLastPathComponent
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix("app.db.unshipped-") && !$0.hasSuffix("-wal") && !$0.hasSuffix("-shm") }.sorted()
            .map { (directory as NSString).appendingPathComponent($0) }
    }

    /// The last lines of every node's batond log, for a failure message.
    func logTails(lines: Int = 40) -> String {
        Self.nodeNames.map { node in
            let text = (try? String(contentsOfFile: logPath(node), encoding: .utf8)) ?? ""
            return "--- \(node):\n" + text.split(separator: "\n").suffix(lines).joined(separator: "\n")
        }.joined(separator: "\n")
    }

    /// `PRAGMA integrity_check` and the rows of the database at `path`.
    func inspect(path: String) async throws -> (integrity: String, rows: Set<Row>) {
        let result = try await run("/usr/bin/python3", [directory.appendingPathComponent("inspect.py").path, path])
        guard result.status == 0 else { throw ClusterTestFailure(description: "inspecting \(path) failed: \(result.output)") }
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
        _ kind: NATSServerKind, prefix: String, rowsPerTransaction: Int = 1, flushTimeout: String? = nil, authorization: String? = nil,
        nodeUser: PermissionUser? = nil, batonctlUser: PermissionUser? = nil,
        _ body: (inout ReplicationCluster) async throws -> Void
    ) async throws {
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
        try lockHoldingSidecar.write(to: directory.appendingPathComponent("sidecar.py"), atomically: true, encoding: .utf8)
        try await withNATSServer(kind, config: NATSServerConfig(extraConfig: authorization)) { server in
            var cluster = ReplicationCluster(
                directory: directory, port: server.port, batonctl: batonctl, rowsPerTransaction: rowsPerTransaction, flushTimeout: flushTimeout,
                nodeUser: nodeUser, batonctlUser: batonctlUser)
            cluster.serverLog = server.logFile
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
            try await eventually("the shipper on \(first.node) checkpointing before the crash", timeout: .seconds(20), every: .milliseconds(100)) {
                ((try? String(contentsOfFile: cluster.logPath(first.node), encoding: .utf8)) ?? "").contains("[Replication] checkpoint")
            }
            // Load on purpose: the passive node follows (and the writer writes) for a moment
            // after the checkpoint, so the crash hits a reset WAL in use.
            try await Task.sleep(for: .seconds(1))
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
            try await eventually("the thawed node fencing itself", timeout: .seconds(10), every: .milliseconds(100)) {
                ((try? String(contentsOfFile: cluster.logPath(first.node), encoding: .utf8)) ?? "").contains("fenced")
            }
            // A window on purpose: the set-aside below must be the only one, not the first of
            // several.
            try await Task.sleep(for: .milliseconds(1500))
            // Its database, with the rows it never shipped, is set aside, not overwritten.
            var setAside: [String] = []
            try await eventually("\(first.node) setting its database aside", timeout: .seconds(10), every: .milliseconds(100)) {
                setAside = cluster.setAsideDatabases(first.node)
                return !setAside.isEmpty
            }
            try #require(setAside.count == 1, "the fenced node did not set its database aside: \(setAside)")
            #expect(setAside[0].contains(".unshipped-\(first.epoch)-"), "\(setAside)")
            let keptAside = try await cluster.inspect(path: setAside[0])
            #expect(keptAside.integrity == "ok", "\(setAside[0]): \(keptAside.integrity)")

            let acknowledged = cluster.acks()
            let state = try await cluster.inspect(other)
            #expect(state.integrity == "ok", "\(other): \(state.integrity)")
            let staleRows = acknowledged.filter { $0.row.epoch == first.epoch && $0.at > frozenAt }
            #expect(!staleRows.isEmpty, "the frozen node's writer committed nothing after the freeze; the test proves less than it should")
            let leaked = staleRows.filter { state.rows.contains($0.row) }
            #expect(leaked.isEmpty, "rows committed on the frozen node reached the new active node: \(leaked.map(\.row))")
            let unshippedLost = staleRows.filter { !keptAside.rows.contains($0.row) }
            #expect(unshippedLost.isEmpty, "rows the frozen node committed are in neither database: \(unshippedLost.map(\.row))")
            let status = try await cluster.batonctl(["status"])
            #expect(status.output.contains("UNSHIPPED on \(first.node): \(setAside[0])"), "\(status.output)")
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

    /// Starts the lock-holding sidecar on `node`'s database and returns once it holds the lock.
    private func startSidecar(_ cluster: ReplicationCluster, on node: String, hold: Duration) async throws -> Process {
        let ready = cluster.directory.appendingPathComponent("sidecar-\(UUID().uuidString).ready").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [
            cluster.directory.appendingPathComponent("sidecar.py").path, cluster.databasePath(node), ready, "\(Double(hold.components.seconds))",
            cluster.ackLog,
        ]
        process.standardInput = FileHandle.nullDevice
        let output = cluster.directory.appendingPathComponent("sidecar-\(UUID().uuidString).out")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        let handle = try FileHandle(forWritingTo: output)
        defer { try? handle.close() }
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        do {
            // An exited sidecar ends the wait at once (its output says why).
            try await eventually("the sidecar holding the write lock of \(node)'s database", timeout: .seconds(15), every: .milliseconds(20)) {
                if FileManager.default.fileExists(atPath: ready) { return true }
                guard process.isRunning else { throw ClusterTestFailure(description: "the sidecar exited") }
                return false
            }
        } catch {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
            throw ClusterTestFailure(description: "the sidecar did not get the write lock of \(node)'s database (\(error)): \(text)")
        }
        return process
    }

    private func waitForExit(_ process: Process, timeout: Duration) async throws -> Int32 {
        do {
            try await eventually("the sidecar finished", timeout: timeout, every: .milliseconds(20)) { !process.isRunning }
        } catch {
            kill(process.processIdentifier, SIGKILL)
            throw error
        }
        return process.terminationStatus
    }

    /// Issue 10 item 6: another process holds the write lock (BEGIN IMMEDIATE) through the
    /// switchover, longer than a flush attempt waits for it (five 2 s barrier waits) but shorter
    /// than `flush_timeout`. The old
    /// active node keeps the lease (renewing), retries the final flush, and hands over once the
    /// lock is free: every acknowledged row — the sidecar's, committed while the backend was
    /// already stopped, included — is on the new node, and nothing was set aside.
    @Test(arguments: NATSServerKind.allCases)
    func aSwitchoverWaitsForAWriteLockHeldLongerThanAFlushAttempt(kind: NATSServerKind) async throws {
        try await withCluster(kind, prefix: "baton-sqlite-lock", flushTimeout: "40s") { cluster in
            let current = try await cluster.waitForWriter(after: 0, count: 20, timeout: .seconds(30))
            let target = current.node == "node-1" ? "node-2" : "node-1"
            let sidecar = try await startSidecar(cluster, on: current.node, hold: .seconds(14))
            defer { if sidecar.isRunning { kill(sidecar.processIdentifier, SIGKILL) } }
            let started = ContinuousClock.now
            let switchover = try await cluster.batonctl(["switchover", ReplicationCluster.app, "--to", target, "--timeout", "60s"])
            try #require(switchover.status == 0, "switchover to \(target) failed: \(switchover.output)\n\(cluster.logTails())")
            #expect(try await waitForExit(sidecar, timeout: .seconds(20)) == 0)
            // The handover could not end before the sidecar let go of the lock.
            #expect(ContinuousClock.now - started >= .seconds(13), "the switchover finished while the sidecar held the write lock")
            _ = try await cluster.waitForWriter(after: current.epoch, on: target, count: 3, timeout: .seconds(20))
            let acknowledged = cluster.acks()
            #expect(acknowledged.contains { $0.row.node == "sidecar" }, "the sidecar's commit was not acknowledged")
            let state = try await cluster.inspect(target)
            #expect(state.integrity == "ok", "\(target): \(state.integrity)")
            let missing = acknowledged.filter { !state.rows.contains($0.row) }
            #expect(missing.isEmpty, "\(missing.count) of \(acknowledged.count) acknowledged rows missing on \(target): \(missing.prefix(10).map(\.row))")
            let log = (try? String(contentsOfFile: cluster.logPath(current.node), encoding: .utf8)) ?? ""
            #expect(log.contains("final WAL flush failed; keeping the lease"), "the old active node did not retry the flush")
            #expect(log.contains("final WAL marker shipped"))
            #expect(cluster.setAsideDatabases(current.node).isEmpty)
            #expect(!log.contains("database set aside"))
        }
    }

    /// Issue 10 item 6, giving up: the sidecar holds the lock past `flush_timeout` and past the
    /// attempt in flight then (which waits up to 10 s for the lock). The old
    /// active node sets its database aside (it holds the sidecar's row, never shipped) before
    /// it releases the lease, logs it at critical, and `batonctl status` lists it; no
    /// acknowledged row is in neither database.
    @Test(arguments: NATSServerKind.allCases)
    func aFlushThatGivesUpSetsTheDatabaseAsideAndReportsIt(kind: NATSServerKind) async throws {
        try await withCluster(kind, prefix: "baton-sqlite-giveup", flushTimeout: "2s") { cluster in
            let current = try await cluster.waitForWriter(after: 0, count: 20, timeout: .seconds(30))
            let target = current.node == "node-1" ? "node-2" : "node-1"
            let sidecar = try await startSidecar(cluster, on: current.node, hold: .seconds(16))
            defer { if sidecar.isRunning { kill(sidecar.processIdentifier, SIGKILL) } }
            let switchover = try await cluster.batonctl(["switchover", ReplicationCluster.app, "--to", target, "--timeout", "60s"])
            try #require(switchover.status == 0, "switchover to \(target) failed: \(switchover.output)\n\(cluster.logTails())")
            _ = try await cluster.waitForWriter(after: current.epoch, on: target, count: 3, timeout: .seconds(20))
            // The sidecar commits into the database that was set aside (its connection follows
            // the renamed files).
            #expect(try await waitForExit(sidecar, timeout: .seconds(20)) == 0)
            let setAside = cluster.setAsideDatabases(current.node)
            try #require(setAside.count == 1, "set-aside databases on \(current.node): \(setAside)")
            #expect(setAside[0].contains(".unshipped-\(current.epoch)-"), "\(setAside)")
            let acknowledged = cluster.acks()
            let kept = try await cluster.inspect(path: setAside[0])
            let promoted = try await cluster.inspect(target)
            #expect(kept.integrity == "ok" && promoted.integrity == "ok", "\(kept.integrity) / \(promoted.integrity)")
            let sidecarRows = acknowledged.filter { $0.row.node == "sidecar" }
            #expect(sidecarRows.count == 1 && sidecarRows.allSatisfy { kept.rows.contains($0.row) }, "the sidecar's row is not in the set-aside database")
            let lost = acknowledged.filter { !kept.rows.contains($0.row) && !promoted.rows.contains($0.row) }
            #expect(lost.isEmpty, "acknowledged rows in neither database: \(lost.prefix(10).map(\.row))")
            let log = (try? String(contentsOfFile: cluster.logPath(current.node), encoding: .utf8)) ?? ""
            #expect(log.contains("final WAL flush gave up"), "no give-up line in \(current.node)'s log")
            #expect(log.contains("database set aside"), "no set-aside line in \(current.node)'s log")
            let status = try await cluster.batonctl(["status"])
            #expect(status.output.contains("UNSHIPPED on \(current.node): \(setAside[0])"), "\(status.output)")
            let json = try await cluster.batonctl(["status", "--json"])
            #expect(json.output.contains("unshipped_databases"), "\(json.output)")
        }
    }

    /// Issue 10 item 8: `batonctl snapshot APP` reaches the active node, which takes a snapshot
    /// now under the writer's load: the reply's id is an object in the app's snapshot bucket
    /// whose metadata carries the same txid, the stream holds its snapshot record, and the size
    /// is the database's.
    /// Replication under least privilege: batond with only the node role's NATS permissions,
    /// batonctl with the operator's (and the observer's, which may look but not act).
    @Test(arguments: NATSServerKind.allCases)
    func underTheNodeRoleSwitchoversAndACrashKeepEveryAcknowledgedRow(kind: NATSServerKind) async throws {
        let node = PermissionUser(role: "node", cluster: "itest", user: "itest-node", password: "node-secret")
        let operatorUser = PermissionUser(role: "operator", cluster: "itest", user: "itest-operator", password: "operator-secret")
        let observer = PermissionUser(role: "observer", cluster: "itest", user: "itest-observer", password: "observer-secret")
        let authorization = try await PermissionUser.authorization([node, operatorUser, observer], apps: [ReplicationCluster.app])
        try await withCluster(
            kind, prefix: "baton-sqlite-perms", authorization: authorization, nodeUser: node, batonctlUser: operatorUser
        ) { cluster in
            var current = try await cluster.waitForWriter(after: 0, count: 20, timeout: .seconds(30))
            var handedOverAt = ContinuousClock.now
            for round in 1...3 {
                try await Task.sleep(until: handedOverAt + .milliseconds(2200))
                let target = current.node == "node-1" ? "node-2" : "node-1"
                let switchover = try await cluster.batonctl(["switchover", ReplicationCluster.app, "--to", target, "--timeout", "30s"])
                try #require(switchover.status == 0, "round \(round): switchover to \(target) failed: \(switchover.output)")
                handedOverAt = .now
                let next = try await cluster.waitForWriter(after: current.epoch, on: target, count: 3, timeout: .seconds(20))
                let acknowledged = cluster.acks()
                let state = try await cluster.inspect(target)
                #expect(state.integrity == "ok", "round \(round): \(target): \(state.integrity)")
                let missing = acknowledged.filter { !state.rows.contains($0.row) }
                #expect(missing.isEmpty, "round \(round): \(missing.count) of \(acknowledged.count) acknowledged rows missing on \(target)")
                current = next
            }
            // The operator's replication commands.
            let snapshot = try await cluster.batonctl(["snapshot", ReplicationCluster.app, "--timeout", "60s"])
            #expect(snapshot.status == 0 && snapshot.output.hasPrefix("snapshot snapshot-"), "\(snapshot.output)")
            let replica = try await cluster.batonctl(["replica", "status", ReplicationCluster.app])
            #expect(replica.status == 0 && replica.output.contains("newest record: txid"), "\(replica.output)")

            // The observer looks, but cannot snapshot nor write the newest record.
            var watcher = cluster
            watcher.batonctlUser = observer
            let seen = try await watcher.batonctl(["replica", "status", ReplicationCluster.app])
            #expect(seen.status == 0 && seen.output.contains("newest record: txid"), "\(seen.output)")
            let refused = try await watcher.batonctl(["snapshot", ReplicationCluster.app])
            #expect(refused.status != 0 && refused.output.contains("permission denied"), "\(refused.output)")
            var options = NATSClientOptions(servers: ["nats://127.0.0.1:\(cluster.port)"])
            options.authentication = .userPassword(user: observer.user, password: observer.password)
            options.inboxPrefix = "_INBOX.baton.itest.ctl"
            let client = try await NATSClient.connect(options: options)
            let history = ReplicationHistoryBucket.name(cluster: "itest")
            do {
                _ = try await JetStream(client: client).publish("$KV.\(history).\(ReplicationHistoryBucket.newestKey(app: ReplicationCluster.app))")
                Issue.record("the observer wrote the newest record")
            } catch let error as NATSError {
                #expect(error.code == .permissionViolation, "\(error)")
            }
            await client.close()

            // kill -9 of the active node: the survivor promotes a verified copy under the node role.
            cluster.nodes[current.node]!.signal(SIGKILL)
            let survivor = current.node == "node-1" ? "node-2" : "node-1"
            _ = try await cluster.waitForWriter(after: current.epoch, on: survivor, count: 3, timeout: .seconds(15))
            let acknowledged = cluster.acks()
            let state = try await cluster.inspect(survivor)
            #expect(state.integrity == "ok", "\(survivor): \(state.integrity)")
            let old = acknowledged.filter { $0.row.epoch < current.epoch }
            #expect(old.allSatisfy { state.rows.contains($0.row) }, "rows of earlier epochs (handed over gracefully) are missing")
            let present = acknowledged.filter { $0.row.epoch == current.epoch }.map { state.rows.contains($0.row) }
            #expect(present.dropFirst(present.prefix { $0 }.count).allSatisfy { !$0 }, "rows of the crashed epoch are missing in the middle")

            let violations = ((try? String(contentsOf: cluster.serverLog!, encoding: .utf8)) ?? "").split(separator: "\n").filter {
                $0.contains("Violation") && $0.contains(node.user)
            }
            #expect(violations.isEmpty, "the node role was denied something: \(violations.prefix(5))")
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func batonctlSnapshotTakesOneNowOnTheActiveNode(kind: NATSServerKind) async throws {
        try await withCluster(kind, prefix: "baton-sqlite-snapshot") { cluster in
            let current = try await cluster.waitForWriter(after: 0, count: 20, timeout: .seconds(30))
            let result = try await cluster.batonctl(["snapshot", ReplicationCluster.app, "--json", "--timeout", "60s"])
            try #require(result.status == 0, "batonctl snapshot failed: \(result.output)\n\(cluster.logTails())")
            let report = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any], "\(result.output)")
            let id = try #require(report["id"] as? String)
            let txid = try #require((report["txid"] as? NSNumber)?.uint64Value)
            let bytes = try #require((report["bytes"] as? NSNumber)?.uint64Value)
            #expect(report["node"] as? String == current.node)
            #expect((report["epoch"] as? NSNumber)?.uint64Value == current.epoch)
            #expect(id == "snapshot-\(String(format: "%020llu", txid))-\(current.epoch)", "\(id)")
            #expect(bytes > 0 && bytes % 4096 == 0, "\(bytes)")

            let client = try await NATSClient.connect(options: NATSClientOptions(servers: ["nats://127.0.0.1:\(cluster.port)"]))
            let jetStream = JetStream(client: client)
            let names = ReplicationNames(cluster: "itest", app: ReplicationCluster.app, nodeID: "x")
            #expect(report["bucket"] as? String == names.snapshotBucket)
            let object = try await jetStream.objectStore(names.snapshotBucket).info(id)
            #expect(object.metadata?["txid"] == "\(txid)", "\(object)")
            #expect(object.size == bytes, "object \(object.size) bytes, reported \(bytes)")
            let record = try await jetStream.getLastMessage(stream: names.stream, subject: names.snapshotSubject)
            let chunk = try RecordChunk(decoding: Array(record.payload.readableBytesView))
            #expect(chunk.txid >= txid && chunk.token == current.epoch, "last snapshot record: txid \(chunk.txid), token \(chunk.token)")
            await client.close()

            // The plain output names the same things; the log says it was asked for.
            let plain = try await cluster.batonctl(["snapshot", ReplicationCluster.app])
            #expect(plain.status == 0, "\(plain.output)")
            #expect(plain.output.hasPrefix("snapshot snapshot-") && plain.output.contains("  txid:   ") && plain.output.contains(" bytes ("), "\(plain.output)")
            let log = (try? String(contentsOfFile: cluster.logPath(current.node), encoding: .utf8)) ?? ""
            #expect(log.contains("reason=requested by an operator") && log.contains("snapshot taken on request"))
            // The writer kept going on the same node.
            _ = try await cluster.waitForWriter(after: current.epoch - 1, on: current.node, count: cluster.acks().count + 10, timeout: .seconds(10))
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
            try await eventually("\(other)'s report in the history bucket", timeout: .seconds(15), every: .milliseconds(100)) {
                try await kv.get("\(ReplicationCluster.app).node.\(other)") != nil
            }
            // The passive stops; the active writes on.
            await cluster.nodes[other]!.stop()
            let stoppedAt = cluster.acks().count
            let reported = try #require(try await kv.get("\(ReplicationCluster.app).node.\(other)"), "\(other) reported no position")
            let otherCopy = try decoder.decode(NodeHoldingReport.self, from: Data(reported.value.readableBytesView)).copy
            // The durable record moves past the stopped node's copy (progress every 5 s).
            try await eventually("the durable record past txid \(otherCopy.txid)", timeout: .seconds(20), every: .milliseconds(200)) {
                guard let entry = try await kv.get("\(ReplicationCluster.app).newest") else { return false }
                return try decoder.decode(ReplicationHistoryRecord.self, from: Data(entry.value.readableBytesView)).newest.txid > otherCopy.txid
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
            try await eventually("a refusal on \(other): \(log.suffix(3000))", timeout: .seconds(20), every: .milliseconds(100)) {
                log = (try? String(contentsOfFile: restartLog, encoding: .utf8)) ?? ""
                return log.contains("refusing to promote older or empty data over newer data")
            }
            let refusal = try #require(log.split(separator: "\n").first { $0.contains("refusing to promote older or empty data over newer data") })
            print("refusal: \(refusal)")
            #expect(refusal.contains("does not exist") && refusal.contains("\(first.node) holds txid"), "\(refusal)")
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

/// Issue 14 item 4: the event history's flight records, written by real batond nodes.
extension SQLiteReplicationClusterTests {
    /// The app's events as `batonctl events --json` prints them.
    private func events(_ cluster: ReplicationCluster, _ extra: [String] = []) async throws -> [BatonEvent] {
        let result = try await cluster.batonctl(["events", ReplicationCluster.app, "--json"] + extra)
        try #require(result.status == 0, "batonctl events failed: \(result.output)")
        return try result.output.split(separator: "\n").filter { $0.hasPrefix("{") }.map {
            try JSONDecoder().decode(BatonEvent.self, from: Data($0.utf8))
        }
    }

    /// Waits (bounded) until the history holds `count` records of `kind`, and returns the events.
    private func waitForEvents(_ cluster: ReplicationCluster, kind: BatonEvent.Kind, count: Int, timeout: Duration = .seconds(15)) async throws -> [BatonEvent] {
        var all: [BatonEvent] = []
        try await eventually("\(count) \(kind) record(s) in the history (it holds \(all.map(\.kind)))", timeout: timeout, every: .milliseconds(200)) {
            all = try await events(cluster)
            return all.filter({ $0.kind == kind }).count >= count
        }
        return all
    }

    @Test(arguments: NATSServerKind.allCases)
    func aSwitchoverAndAKillNineFailoverEachWriteOneFlightRecord(kind: NATSServerKind) async throws {
        try await withCluster(kind, prefix: "baton-events") { cluster in
            let first = try await cluster.waitForWriter(after: 0, count: 10, timeout: .seconds(30))
            let target = first.node == "node-1" ? "node-2" : "node-1"

            // A follower started before the switchover sees its record arrive.
            let followPath = cluster.directory.appendingPathComponent("follow.jsonl").path
            _ = FileManager.default.createFile(atPath: followPath, contents: nil)
            let followOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: followPath))
            let follower = Process()
            follower.executableURL = URL(fileURLWithPath: cluster.batonctl)
            follower.arguments = ["events", ReplicationCluster.app, "--follow", "--json", "--nats", "nats://127.0.0.1:\(cluster.port)", "--cluster", "itest"]
            follower.standardOutput = followOutput
            follower.standardError = FileHandle.nullDevice
            follower.standardInput = FileHandle.nullDevice
            try follower.run()
            defer {
                if follower.isRunning { kill(follower.processIdentifier, SIGKILL) }
                try? followOutput.close()
            }

            let switchover = try await cluster.batonctl(["switchover", ReplicationCluster.app, "--to", target, "--timeout", "30s"])
            try #require(switchover.status == 0, "switchover failed: \(switchover.output)")
            let second = try await cluster.waitForWriter(after: first.epoch, on: target, count: 3, timeout: .seconds(20))
            let afterSwitchover = try await waitForEvents(cluster, kind: .switchover, count: 1)
            let switchovers = afterSwitchover.filter { $0.kind == .switchover }
            #expect(switchovers.count == 1, "\(afterSwitchover.map(\.kind))")
            let graceful = try #require(switchovers.first?.handover, "no switchover record: \(afterSwitchover.map { "\($0.node) \($0.kind.rawValue)" })")
            #expect(graceful.fromNode == first.node && graceful.toNode == target)
            #expect(graceful.fromEpoch == first.epoch && graceful.toEpoch == second.epoch)
            #expect(graceful.graceful)
            #expect(graceful.downtimeMilliseconds > 0 && graceful.downtimeMilliseconds < 30_000, "\(graceful)")
            #expect(graceful.downtimeFrom == .oldBackendStop, "\(graceful)")
            let gracefulLoss = try #require(graceful.dataLoss, "a replicated app's record has a data-loss field")
            #expect(gracefulLoss.finalMarker)
            #expect(gracefulLoss.promotedTxid != nil && gracefulLoss.lostShippedTxids == 0, "\(gracefulLoss)")
            // The old node's step-down and release are in the history too.
            #expect(afterSwitchover.contains { $0.kind == .steppingDown && $0.node == first.node && $0.epoch == first.epoch })
            #expect(afterSwitchover.contains { $0.kind == .released && $0.node == first.node && ($0.durationMilliseconds ?? 0) > 0 })

            // The follower printed the record within the test.
            var followed: [BatonEvent] = []
            try await eventually("a switchover record printed by the follower (it printed \(followed.map(\.kind)))", timeout: .seconds(10), every: .milliseconds(100)) {
                let text = (try? String(contentsOfFile: followPath, encoding: .utf8)) ?? ""
                followed = text.split(separator: "\n").compactMap { try? JSONDecoder().decode(BatonEvent.self, from: Data($0.utf8)) }
                return followed.contains(where: { $0.kind == .switchover })
            }
            #expect(followed.contains { $0.kind == .switchover && $0.epoch == second.epoch }, "follow printed \(followed.map(\.kind))")

            // --since: only recent events; the text form names the record.
            let recent = try await events(cluster, ["--since", "1h"])
            #expect(recent.contains { $0.kind == .switchover })
            let text = try await cluster.batonctl(["events", ReplicationCluster.app, "--since", "1h"])
            #expect(text.status == 0 && text.output.contains("switchover") && text.output.contains("moved from \(first.node) to \(target)"), "\(text.output)")
            print("batonctl events \(ReplicationCluster.app) --since 1h:\n\(text.output)")

            // kill -9 of the new active node: the old one (past its cooldown) takes over.
            try await Task.sleep(for: .milliseconds(2200))
            cluster.nodes[target]!.signal(SIGKILL)
            let third = try await cluster.waitForWriter(after: second.epoch, on: first.node, count: 3, timeout: .seconds(20))
            let afterCrash = try await waitForEvents(cluster, kind: .failover, count: 1)
            let failovers = afterCrash.filter { $0.kind == .failover }
            #expect(failovers.count == 1, "\(afterCrash.map(\.kind))")
            #expect(afterCrash.filter { $0.kind == .switchover }.count == 1, "the switchover is recorded once")
            let crash = try #require(failovers.first?.handover, "no failover record: \(afterCrash.map { "\($0.node) \($0.kind.rawValue)" })")
            #expect(crash.fromNode == target && crash.toNode == first.node && crash.toEpoch == third.epoch)
            #expect(!crash.graceful)
            #expect(crash.downtimeFrom == .lastRenewSeen, "\(crash)")
            #expect(crash.downtimeMilliseconds > 0 && crash.downtimeMilliseconds < 30_000, "\(crash)")
            let crashLoss = try #require(crash.dataLoss, "a replicated app's record has a data-loss field")
            #expect(!crashLoss.finalMarker)
            #expect(crashLoss.promotedTxid != nil, "\(crashLoss)")
            #expect(crashLoss.unshipped.contains("not shipped"), "\(crashLoss)")
            print("flight records:\n\(afterCrash.filter { $0.handover != nil }.map { $0.detail ?? "" }.joined(separator: "\n"))")
        }
    }
}
