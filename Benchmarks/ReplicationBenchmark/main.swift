// ReplicationBenchmark: how far a passive node's SQLite replica trails the active node, and how
// many MB/s of committed data reach it — Baton's WAL shipping over JetStream against Litestream
// 0.5 (`litestream replicate` to a file replica + `litestream restore -f` on the standby side),
// on the same workload in the same run.
//
// Every system runs as separate processes, as it would in production:
//   - the writer (the "app") is a thread of this process with its own SQLite connection (WAL
//     mode, synchronous=NORMAL), committing one transaction per row: a sequence number, the
//     commit's wall-clock time and a random payload (100–1000 bytes by default), on an
//     open-loop schedule at the target rate;
//   - Baton: this executable in `ship` mode (WALShipper, the active node's side) and in `apply`
//     mode (WALApplier, the passive node's side, writing `<state>/bench.replica.db`), both talking
//     to one nats-server (JetStream, file storage) started here;
//   - Litestream: `litestream replicate` with a file replica, and `litestream restore -f` writing
//     the standby's copy.
// Lag is measured from the instant COMMIT returned on the primary (CLOCK_MONOTONIC, recorded by
// the writer per sequence number) to the instant the row is visible in the standby's file: a
// reader thread wakes on inotify events of the standby directory (and every 2 ms regardless),
// opens the standby's file read-only with a fresh connection (`immutable=1`, so nothing is
// cached and no -shm is needed) and reads max(seq); every sequence number newly visible gets
// that instant. The same reader serves both systems.
//
// Throughput ("bulk"): the writer commits as fast as it can (64 KiB payloads by default); MB/s
// is payload bytes / (last row visible in the standby − first commit started).
//
// Build and run in release mode:
//   swift build -c release --product ReplicationBenchmark
//   .build/release/ReplicationBenchmark --help

import ArgumentParser
import BenchmarkSupport
import CBatonProcess
import CSQLite
import Foundation
import Logging
import NATS
import Replication
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Clock, output

func monotonicNow() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
}

func wallNow() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
}

func sleepUntil(monotonic deadline: Int64) {
    var spec = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
    while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &spec, nil) == EINTR {}
}

func log(_ text: String) {
    FileHandle.standardError.write(Data("[replbench] \(text)\n".utf8))
}

func ms(_ nanoseconds: Int64) -> String { String(format: "%.1f", Double(nanoseconds) / 1e6) }

extension Duration {
    var nanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
    var text: String {
        let ns = nanoseconds
        if ns % 1_000_000_000 == 0 { return "\(ns / 1_000_000_000)s" }
        if ns % 1_000_000 == 0 { return "\(ns / 1_000_000)ms" }
        return "\(ns / 1_000)us"
    }
}

/// User + system CPU time of a process so far, in nanoseconds (nil once it is gone).
func cpuTime(of pid: Int32) -> Int64? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = text.lastIndex(of: ")")
    else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // After the command: state(0) ppid(1) ... utime(11) stime(12).
    guard fields.count > 12, let user = Int64(fields[11]), let system = Int64(fields[12]) else { return nil }
    let ticks = Int64(sysconf(Int32(_SC_CLK_TCK)))
    return (user + system) * 1_000_000_000 / max(ticks, 1)
}

// MARK: - SQLite helpers

/// A SQLite connection used from one thread only.
final class Connection: @unchecked Sendable {
    let handle: OpaquePointer
    let path: String

    init(path: String, flags: Int32) throws {
        var db: OpaquePointer?
        let rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            if let db { sqlite3_close_v2(db) }
            throw BenchmarkError("cannot open \(path): \(message)")
        }
        handle = db
        self.path = path
    }

    deinit { sqlite3_close_v2(handle) }

    func execute(_ sql: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(handle))
            sqlite3_free(message)
            throw BenchmarkError("\(sql) on \(path): \(text) (\(rc))")
        }
    }

    func prepare(_ sql: String) throws -> OpaquePointer {
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v2(handle, sql, -1, &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw BenchmarkError("prepare \(sql): \(String(cString: sqlite3_errmsg(handle)))") }
        return statement
    }

    /// The first column of the first row as an integer (nil for no row or NULL).
    func integer(_ sql: String) throws -> Int64? {
        let statement = try prepare(sql)
        defer { sqlite3_finalize(statement) }
        let rc = sqlite3_step(statement)
        guard rc == SQLITE_ROW else {
            if rc == SQLITE_DONE { return nil }
            throw BenchmarkError("\(sql): \(String(cString: sqlite3_errmsg(handle))) (\(rc))")
        }
        if sqlite3_column_type(statement, 0) == SQLITE_NULL { return nil }
        return sqlite3_column_int64(statement, 0)
    }
}

/// max(seq) of the standby's copy, through a fresh read-only connection (nothing cached, no
/// locks, no -shm: `immutable=1`). Nil while the file or the table is not there or a read saw
/// a half-written page.
func visibleMaxSequence(_ path: String) -> Int64? {
    guard access(path, R_OK) == 0 else { return nil }
    guard let connection = try? Connection(path: "file:\(path)?immutable=1", flags: SQLITE_OPEN_READONLY) else { return nil }
    return (try? connection.integer("SELECT max(seq) FROM t")) ?? nil
}

// MARK: - Child modes: the Baton shipper and applier

/// `ship|apply NATS_URL DB_PATH STATE_DIR APP POLL_MS`: runs until SIGTERM; writes
/// `STATE_DIR/<mode>.ready` once running.
func childMain(mode: String, arguments: [String]) async -> Never {
    _ = cbp_set_parent_death_signal(SIGKILL)
    guard arguments.count >= 5 else {
        log("usage: \(mode) NATS_URL DB_PATH STATE_DIR APP POLL_MS")
        exit(64)
    }
    let (url, database, state, app) = (arguments[0], arguments[1], arguments[2], arguments[3])
    var logger = Logger(label: "replbench-\(mode)", factory: { StreamLogHandler.standardError(label: $0) })
    logger.logLevel = .warning
    var configuration = ReplicationConfiguration(
        cluster: "bench", app: app, nodeID: mode == "ship" ? "primary" : "standby", databasePath: database, stateDirectory: state)
    if let pollMS = Double(arguments[4]), pollMS > 0 {
        configuration.pollInterval = .nanoseconds(Int64(pollMS * 1e6))
    }
    let stop = StopSignal()
    signal(SIGTERM, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
    source.setEventHandler { stop.signal() }
    source.resume()
    do {
        let client = try await NATSClient.connect(options: NATSClientOptions(servers: [url]))
        let jetStream = JetStream(client: client, timeout: .seconds(10))
        let readyPath = (state as NSString).appendingPathComponent("\(mode).ready")
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        if mode == "ship" {
            let shipper = try await WALShipper.start(configuration: configuration, token: 1, jetStream: jetStream, logger: logger)
            _ = FileManager.default.createFile(atPath: readyPath, contents: Data())
            await stop.wait()
            let status = await shipper.status()
            await shipper.stop()
            log("shipper: txid \(status.lastTxid), sequence \(status.lastStreamSequence), checkpoints \(status.checkpoints), snapshots \(status.snapshots), error \(status.lastError ?? "none")")
        } else {
            let applier = try await WALApplier.start(configuration: configuration, jetStream: jetStream, logger: logger)
            _ = FileManager.default.createFile(atPath: readyPath, contents: Data())
            await stop.wait()
            let status = await applier.status()
            await applier.stop()
            log("applier: txid \(status.position?.txid ?? 0), snapshots restored \(status.snapshotsRestored), error \(status.lastError ?? "none")")
        }
        await client.close()
        exit(0)
    } catch {
        log("\(mode) failed: \(error)")
        exit(1)
    }
}

/// SIGTERM → the child's main task.
final class StopSignal: Sendable {
    private let state = Mutex<(stopped: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.stopped = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.stopped { return true }
                state.waiter = continuation
                return false
            }
            if now { continuation.resume() }
        }
    }
}

// MARK: - Options

enum System: Sendable, Hashable {
    case baton(poll: Duration?)
    case litestream(name: String, monitor: Duration?, sync: Duration?, follow: Duration?)

    var label: String {
        switch self {
        case .baton(let poll): return "Baton" + (poll.map { " (poll \($0.text))" } ?? "")
        case .litestream(let name, _, _, _): return "Litestream \(name)"
        }
    }
}

enum Workload: Sendable, Hashable {
    case rate(perSecond: Int, seconds: Double)
    case bulk(transactions: Int, payload: Int)

    var label: String {
        switch self {
        case .rate(let rate, _): return "\(rate) tx/s"
        case .bulk(_, let payload): return "bulk \(payload / 1024) KiB/tx"
        }
    }
}

struct Options: Sendable {
    var server = "/usr/sbin/nats-server"
    var litestream = ""
    var rates = [100, 1000]
    var seconds = 20.0
    var warmup = 1.0
    var minPayload = 100
    var maxPayload = 1000
    var bulkTransactions = 1024
    var bulkPayload = 64 * 1024
    var batonPolls: [Duration?] = [nil]
    var litestreamFast = Duration.milliseconds(10)
    var systems: Set<String> = ["baton", "litestream-default", "litestream-fast"]
    var workloads: Set<String> = ["rate", "bulk"]
    var keep = false
    var markdownPath: String?
    var timeLimit = 1800

}

/// The command line of the main run (every flag as before ArgumentParser; `--help` lists them).
/// The subcommands `switchover` and `size` have their own (``SwitchoverArguments``,
/// ``SizeArguments``); `node`, `ship` and `apply` are the benchmark's own child processes.
struct Arguments: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ReplicationBenchmark",
        abstract: "Replication lag and bulk throughput: Baton against Litestream on the same workload.",
        discussion: """
            Replication lag (commit on the primary → row visible in the standby's file, p50/p90/p99/max) \
            at fixed transaction rates, and bulk throughput (MB/s of committed payload reaching the \
            standby), for Baton (WALShipper + WALApplier over a nats-server, each in its own process) \
            and Litestream 0.5 (replicate to a file replica + restore -f), on the same workload.

            Subcommands (first argument; each has its own --help): \
            `switchover --server PATH [--sizes 20,200] [--modes legacy,fast]`: graceful switchover cost \
            at database sizes (one process). \
            `size --server PATH [--sizes 100,1024,4096] [--work DIR] [--litestream PATH]`: initial sync, \
            switchover, crash failover, each node's peak RSS (nodes in processes of their own), NATS \
            storage, and Litestream's restore of the same database (see Size.swift).
            """)

    @Option(help: ArgumentHelp("Transaction rates, comma separated (default 100,1000).", valueName: "list"),
        transform: commaSeparated("--rates", "a positive number", { Int($0).flatMap { $0 > 0 ? $0 : nil } }))
    var rates = [100, 1000]
    @Option(help: "Measured seconds per rate, after --warmup.")
    var seconds = 20.0
    @Option(help: "Warm-up seconds before each measured rate.")
    var warmup = 1.0
    @Option(help: ArgumentHelp("Payload bytes per transaction, MIN-MAX (default 100-1000).", valueName: "min-max"), transform: { text in
        let parts = text.split(separator: "-").compactMap { Int($0) }
        guard parts.count == 2, parts[0] > 0, parts[1] >= parts[0] else { throw ValidationError("--payload needs MIN-MAX") }
        return [parts[0], parts[1]]
    })
    var payload = [100, 1000]
    @Option(help: ArgumentHelp("Bulk run: N transactions of BYTES payload (default 1024:65536).", valueName: "n:bytes"), transform: { text in
        let parts = text.split(separator: ":").compactMap { Int($0) }
        guard parts.count == 2, parts[0] > 0, parts[1] > 0 else { throw ValidationError("--bulk needs N:BYTES") }
        return [parts[0], parts[1]]
    })
    var bulk = [1024, 64 * 1024]
    @Option(name: .customLong("baton-poll"), help: ArgumentHelp("Shipper poll intervals to run (default: the module's default), such as default,5ms.", valueName: "list"),
        transform: { text in
            try text.split(separator: ",").map { part -> Duration? in
                if part == "default" { return nil }
                guard let duration = parseDuration(String(part)), duration > .zero else { throw ValidationError("--baton-poll: \(part) is not a duration") }
                return duration
            }
        })
    var batonPoll: [Duration?] = [nil]
    @Option(name: .customLong("litestream-fast"), help: ArgumentHelp("monitor-interval = sync-interval = follow-interval of the \"fast\" Litestream configuration (default 10ms).", valueName: "duration"),
        transform: { text in
            guard let duration = parseDuration(text) else { throw ValidationError("--litestream-fast needs a duration") }
            return duration
        })
    var litestreamFast = Duration.milliseconds(10)
    @Option(help: ArgumentHelp("baton,litestream-default,litestream-fast (default all).", valueName: "list"), transform: commaSeparated("--systems", "a system", { $0 }))
    var systems = ["baton", "litestream-default", "litestream-fast"]
    @Option(help: ArgumentHelp("rate,bulk (default both).", valueName: "list"), transform: commaSeparated("--workloads", "a workload", { $0 }))
    var workloads = ["rate", "bulk"]
    @Option(help: "nats-server.")
    var server = "/usr/sbin/nats-server"
    @Option(help: "litestream binary (default: the venv of scripts/install-prerequisites, $BATON_VENV/bin/litestream, else .venv/bin/litestream in this checkout).")
    var litestream = ""
    @Flag(help: "Keep the work directory.")
    var keep = false
    @Option(help: "Also write the report to this path.")
    var markdown: String?
    @Option(name: .customLong("time-limit"), help: "Kill everything and exit after this many seconds.")
    var timeLimit = 1800

    func validate() throws {
        guard seconds > 0 else { throw ValidationError("--seconds needs a positive number") }
        guard warmup >= 0 else { throw ValidationError("--warmup needs a number") }
        guard timeLimit > 0 else { throw ValidationError("--time-limit needs seconds") }
    }

    var options: Options {
        var options = Options()
        options.server = server
        options.litestream = litestream
        options.rates = rates
        options.seconds = seconds
        options.warmup = warmup
        (options.minPayload, options.maxPayload) = (payload[0], payload[1])
        (options.bulkTransactions, options.bulkPayload) = (bulk[0], bulk[1])
        options.batonPolls = batonPoll
        options.litestreamFast = litestreamFast
        options.systems = Set(systems)
        options.workloads = Set(workloads)
        options.keep = keep
        options.markdownPath = markdown
        options.timeLimit = timeLimit
        return options.withDefaultLitestream()
    }
}

extension Options {
    /// `litestream` when given, else the venv's.
    func withDefaultLitestream() -> Options {
        var options = self
        if options.litestream.isEmpty {
            // The venv scripts/install-prerequisites makes: $BATON_VENV, else .venv in this checkout.
            let checkout = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            let venv = ProcessInfo.processInfo.environment["BATON_VENV"].flatMap { $0.isEmpty ? nil : $0 }
                ?? checkout.appendingPathComponent(".venv").path
            options.litestream = "\(venv)/bin/litestream"
        }
        return options
    }
}

// MARK: - Child processes

/// Every process this benchmark started, killed (by pid) on every exit path.
enum Children {
    static let shared = ChildProcesses()
}

/// SIGINT, SIGTERM and the time limit: killing everything this benchmark started (BenchmarkSupport's killers).
func installKillers(timeLimit: Int) {
    installKillers(timeLimit: timeLimit, doing: "killing everything this benchmark started", log: { log($0) }, abort: { Children.shared.abort() })
}

/// A child process with its output in a log file.
final class Child: @unchecked Sendable {
    let process: Process
    let name: String
    let logPath: String

    /// A process configured elsewhere (the caller runs it).
    init(process: Process, name: String, logPath: String) {
        self.process = process
        self.name = name
        self.logPath = logPath
    }

    init(name: String, executable: String, arguments: [String], logPath: String) throws {
        process = Process()
        self.name = name
        self.logPath = logPath
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        _ = FileManager.default.createFile(atPath: logPath, contents: Data())
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        Children.shared.add(process.processIdentifier, name: name)
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }

    /// SIGTERM, then SIGKILL after `grace`.
    func stop(grace: Duration = .seconds(5)) async {
        if process.isRunning {
            process.terminate()
            let deadline = ContinuousClock.now + grace
            while process.isRunning, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
        }
        Children.shared.remove(process.processIdentifier)
    }

    var logTail: String {
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(8).joined(separator: "\n")
    }
}

final class NATSServer: @unchecked Sendable {
    let child: Child
    let url: String
    let version: String

    init(path: String, directory: String) async throws {
        version = capture(path, ["--version"])
        child = try Child(
            name: "nats-server", executable: path,
            arguments: ["-a", "127.0.0.1", "-p", "-1", "-js", "-sd", "\(directory)/store", "--ports_file_dir", directory],
            logPath: "\(directory)/nats-server.log")
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            guard ContinuousClock.now < deadline, child.isRunning else { throw BenchmarkError("\(path) did not start: \(child.logTail)") }
            try await Task.sleep(for: .milliseconds(20))
            let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            if let file = files.first(where: { $0.hasSuffix(".ports") }),
                let data = FileManager.default.contents(atPath: "\(directory)/\(file)"),
                let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                let nats = (json["nats"] as? [String])?.first
            {
                url = nats
                return
            }
        }
    }
}


// MARK: - Writer and standby reader

/// Commit instants per sequence number, shared by the writer and the reader threads.
final class Timeline: Sendable {
    struct State {
        var committed: [Int64]
        var visible: [Int64]
        /// BEGIN → COMMIT returned, per transaction (the primary's own commit latency: a
        /// replicator that holds SQLite's write lock, for a checkpoint, stalls the app here).
        var commitDurations: [Int64] = []
        var firstCommitStart: Int64 = 0
        var lastCommit: Int64 = 0
        var writerDone = false
        var writerError: String?
        var maxVisible: Int64 = -1
    }

    let count: Int
    let state: Mutex<State>

    init(count: Int) {
        self.count = count
        state = Mutex(State(committed: Array(repeating: 0, count: count + 1), visible: Array(repeating: 0, count: count + 1)))
    }
}

/// The app: commits `count` transactions (seq 1...count) to `path`, each at its scheduled
/// instant (`interval` apart; 0 = as fast as possible).
func runWriter(path: String, timeline: Timeline, intervalNanos: Int64, payloadRange: ClosedRange<Int>) {
    do {
        let db = try Connection(path: path, flags: SQLITE_OPEN_READWRITE)
        try db.execute("PRAGMA busy_timeout=10000; PRAGMA synchronous=NORMAL")
        let insert = try db.prepare("INSERT INTO t(seq, committed_at_ns, payload) VALUES (?, ?, ?)")
        defer { sqlite3_finalize(insert) }
        var random = SystemRandomNumberGenerator()
        // A pool of random (incompressible) bytes; each transaction takes a slice at a random offset.
        let pool = (0..<(payloadRange.upperBound * 4 + 4096)).map { _ in UInt8.random(in: 0...255, using: &random) }
        let begin = try db.prepare("BEGIN")
        let commit = try db.prepare("COMMIT")
        defer {
            sqlite3_finalize(begin)
            sqlite3_finalize(commit)
        }
        let start = monotonicNow() + 5_000_000
        for seq in 1...timeline.count {
            if intervalNanos > 0 { sleepUntil(monotonic: start + Int64(seq - 1) * intervalNanos) }
            let size = Int.random(in: payloadRange, using: &random)
            let offset = Int.random(in: 0...(pool.count - size), using: &random)
            let began = monotonicNow()
            guard sqlite3_step(begin) == SQLITE_DONE else { throw BenchmarkError("BEGIN: \(String(cString: sqlite3_errmsg(db.handle)))") }
            sqlite3_reset(begin)
            sqlite3_bind_int64(insert, 1, Int64(seq))
            sqlite3_bind_int64(insert, 2, wallNow())
            let rc = pool.withUnsafeBytes { bytes in
                sqlite3_bind_blob(insert, 3, bytes.baseAddress! + offset, Int32(size), nil)
                return sqlite3_step(insert)
            }
            sqlite3_reset(insert)
            guard rc == SQLITE_DONE else { throw BenchmarkError("INSERT: \(String(cString: sqlite3_errmsg(db.handle)))") }
            let committedRC = sqlite3_step(commit)
            sqlite3_reset(commit)
            guard committedRC == SQLITE_DONE else { throw BenchmarkError("COMMIT: \(String(cString: sqlite3_errmsg(db.handle)))") }
            let now = monotonicNow()
            timeline.state.withLock {
                if seq == 1 { $0.firstCommitStart = began }
                $0.committed[seq] = now
                $0.lastCommit = now
                $0.commitDurations.append(now - began)
            }
        }
        timeline.state.withLock { $0.writerDone = true }
    } catch {
        timeline.state.withLock {
            $0.writerError = "\(error)"
            $0.writerDone = true
        }
    }
}

/// Watches the standby's directory; on every event (and every 2 ms regardless) reads max(seq)
/// from the standby's file and stamps newly visible sequence numbers. Runs until `stop` or all
/// rows are visible.
final class StandbyReader: Sendable {
    let path: String
    let timeline: Timeline
    let stopFlag = Mutex(false)
    let reads = Mutex(0)

    init(path: String, timeline: Timeline) {
        self.path = path
        self.timeline = timeline
    }

    func stop() { stopFlag.withLock { $0 = true } }

    func run() {
        let directory = (path as NSString).deletingLastPathComponent
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        defer { if fd >= 0 { close(fd) } }
        if fd >= 0 {
            _ = inotify_add_watch(fd, directory, UInt32(IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE))
        }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while !stopFlag.withLock({ $0 }) {
            if fd >= 0 {
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                _ = poll(&pfd, 1, 2)
                while buffer.withUnsafeMutableBytes({ read(fd, $0.baseAddress, $0.count) }) > 0 {}
            } else {
                usleep(1000)
            }
            guard let maxSeq = visibleMaxSequence(path) else { continue }
            let now = monotonicNow()
            reads.withLock { $0 += 1 }
            let done = timeline.state.withLock { state -> Bool in
                if maxSeq > state.maxVisible {
                    let from = Int(max(state.maxVisible + 1, 1))
                    let to = Int(min(maxSeq, Int64(timeline.count)))
                    if from <= to { for seq in from...to { state.visible[seq] = now } }
                    state.maxVisible = maxSeq
                }
                return state.maxVisible >= Int64(timeline.count)
            }
            if done { return }
        }
    }
}

// MARK: - Systems under test

/// One system replicating one primary database to one standby file.
protocol Replicator: AnyObject, Sendable {
    var standbyPath: String { get }
    var processes: [Child] { get }
    func start() async throws
    func stop() async
}

final class BatonReplicator: Replicator, @unchecked Sendable {
    let server: NATSServer
    let me: String
    let directory: String
    let primary: String
    let app: String
    let poll: Duration?
    var shipper: Child?
    var applier: Child?

    init(server: NATSServer, me: String, directory: String, primary: String, app: String, poll: Duration?) {
        self.server = server
        self.me = me
        self.directory = directory
        self.primary = primary
        self.app = app
        self.poll = poll
    }

    var standbyState: String { "\(directory)/standby" }
    var standbyPath: String { "\(standbyState)/\(app).replica.db" }
    var processes: [Child] { [shipper, applier].compactMap { $0 } }

    func start() async throws {
        let pollArgument = poll.map { String(Double($0.nanoseconds) / 1e6) } ?? "0"
        let primaryState = "\(directory)/primary-state"
        shipper = try Child(
            name: "baton-ship", executable: me, arguments: ["ship", server.url, primary, primaryState, app, pollArgument],
            logPath: "\(directory)/ship.log")
        try await waitForFile("\(primaryState)/ship.ready", child: shipper!)
        applier = try Child(
            name: "baton-apply", executable: me, arguments: ["apply", server.url, primary, standbyState, app, pollArgument],
            logPath: "\(directory)/apply.log")
        try await waitForFile("\(standbyState)/apply.ready", child: applier!)
    }

    func stop() async {
        await applier?.stop()
        await shipper?.stop()
    }
}

final class LitestreamReplicator: Replicator, @unchecked Sendable {
    let binary: String
    let directory: String
    let primary: String
    let monitor: Duration?
    let sync: Duration?
    let follow: Duration?
    var replicate: Child?
    var restore: Child?

    init(binary: String, directory: String, primary: String, monitor: Duration?, sync: Duration?, follow: Duration?) {
        self.binary = binary
        self.directory = directory
        self.primary = primary
        self.monitor = monitor
        self.sync = sync
        self.follow = follow
    }

    var standbyPath: String { "\(directory)/standby/app.db" }
    var configPath: String { "\(directory)/litestream.yml" }
    var processes: [Child] { [replicate, restore].compactMap { $0 } }

    func start() async throws {
        try FileManager.default.createDirectory(atPath: "\(directory)/standby", withIntermediateDirectories: true)
        var config = "logging:\n  level: warn\n  stderr: true\ndbs:\n  - path: \(primary)\n"
        if let monitor { config += "    monitor-interval: \(monitor.text)\n" }
        config += "    replica:\n      type: file\n      path: \(directory)/replica\n"
        if let sync { config += "      sync-interval: \(sync.text)\n" }
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        replicate = try Child(
            name: "litestream-replicate", executable: binary, arguments: ["replicate", "-config", configPath], logPath: "\(directory)/replicate.log")
        // restore needs something in the replica: wait for its first LTX file.
        let deadline = ContinuousClock.now + .seconds(30)
        while !hasLTXFile("\(directory)/replica") {
            guard ContinuousClock.now < deadline, replicate!.isRunning else {
                throw BenchmarkError("litestream replicate wrote no LTX file: \(replicate!.logTail)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        var arguments = ["restore", "-config", configPath, "-f", "-o", standbyPath]
        if let follow { arguments += ["-follow-interval", follow.text] }
        arguments.append(primary)
        restore = try Child(name: "litestream-restore", executable: binary, arguments: arguments, logPath: "\(directory)/restore.log")
    }

    func stop() async {
        await restore?.stop()
        await replicate?.stop()
    }

    private func hasLTXFile(_ root: String) -> Bool {
        guard let enumerator = FileManager.default.enumerator(atPath: root) else { return false }
        for case let path as String in enumerator where path.hasSuffix(".ltx") { return true }
        return false
    }
}

func waitForFile(_ path: String, child: Child, timeout: Duration = .seconds(30)) async throws {
    let deadline = ContinuousClock.now + timeout
    while !FileManager.default.fileExists(atPath: path) {
        guard ContinuousClock.now < deadline, child.isRunning else { throw BenchmarkError("\(child.name) did not get ready: \(child.logTail)") }
        try await Task.sleep(for: .milliseconds(10))
    }
}

// MARK: - One measurement

struct Result {
    var system: System
    var workload: Workload
    var lags: [Int64]
    var transactions: Int
    var payloadBytes: Int64
    var writerSeconds: Double
    var replicationSeconds: Double
    var drainAfterLastCommit: Int64
    var missing: Int
    var cpu: [(String, Int64)]
    var loadBefore: String
    var loadAfter: String
    var reads: Int
    var commitDurations: [Int64]
    var note: String?
}

func createPrimary(_ path: String) throws {
    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    let db = try Connection(path: path, flags: SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
    guard try db.integer("SELECT 1") == 1 else { throw BenchmarkError("sqlite") }
    try db.execute("PRAGMA journal_mode=WAL")
    try db.execute("CREATE TABLE t(seq INTEGER PRIMARY KEY, committed_at_ns INTEGER NOT NULL, payload BLOB NOT NULL)")
    try db.execute("INSERT INTO t VALUES (0, 0, x'00')")
}

func measure(
    system: System, workload: Workload, options: Options, workDirectory: String, index: Int, server: NATSServer?, me: String
) async throws -> Result {
    let directory = "\(workDirectory)/run-\(index)"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let primary = "\(directory)/primary/app.db"
    try createPrimary(primary)
    let replicator: any Replicator
    switch system {
    case .baton(let poll):
        guard let server else { throw BenchmarkError("no nats-server") }
        replicator = BatonReplicator(server: server, me: me, directory: directory, primary: primary, app: "run\(index)", poll: poll)
    case .litestream(_, let monitor, let sync, let follow):
        replicator = LitestreamReplicator(
            binary: options.litestream, directory: directory, primary: primary, monitor: monitor, sync: sync, follow: follow)
    }
    defer { Task { [replicator] in await replicator.stop() } }
    try await replicator.start()
    // The standby must show the seed row before anything is measured.
    let ready = ContinuousClock.now + .seconds(60)
    while visibleMaxSequence(replicator.standbyPath) == nil {
        guard ContinuousClock.now < ready else { throw BenchmarkError("\(system.label): the standby never showed the seed row") }
        for child in replicator.processes where !child.isRunning { throw BenchmarkError("\(child.name) exited: \(child.logTail)") }
        try await Task.sleep(for: .milliseconds(20))
    }

    let count: Int
    let interval: Int64
    let payload: ClosedRange<Int>
    var warmupCount = 0
    switch workload {
    case .rate(let rate, let seconds):
        warmupCount = Int(options.warmup * Double(rate))
        count = warmupCount + Int(seconds * Double(rate))
        interval = 1_000_000_000 / Int64(rate)
        payload = options.minPayload...options.maxPayload
    case .bulk(let transactions, let bytes):
        count = transactions
        interval = 0
        payload = bytes...bytes
    }
    let timeline = Timeline(count: count)
    let reader = StandbyReader(path: replicator.standbyPath, timeline: timeline)
    var servers = replicator.processes.map { ($0.name, $0.pid) }
    if case .baton = system, let server { servers.insert(("nats-server", server.child.pid), at: 0) }
    let cpuBefore = servers.map { cpuTime(of: $0.1) ?? 0 }
    let loadBefore = loadAverage()
    let readerThread = Thread { reader.run() }
    readerThread.stackSize = 1 << 20
    readerThread.start()
    let writerThread = Thread { runWriter(path: primary, timeline: timeline, intervalNanos: interval, payloadRange: payload) }
    writerThread.stackSize = 1 << 20
    writerThread.start()
    log("\(system.label), \(workload.label): \(count) transactions")

    // Wait for the writer, then for the standby to show everything (or give up).
    while !timeline.state.withLock({ $0.writerDone }) { try await Task.sleep(for: .milliseconds(50)) }
    if let error = timeline.state.withLock({ $0.writerError }) { throw BenchmarkError("writer: \(error)") }
    let drainDeadline = ContinuousClock.now + .seconds(60)
    var note: String?
    while timeline.state.withLock({ $0.maxVisible }) < Int64(count) {
        if ContinuousClock.now > drainDeadline {
            note = "the standby did not show every row within 60 s of the last commit"
            break
        }
        for child in replicator.processes where !child.isRunning {
            note = "\(child.name) exited: \(child.logTail)"
        }
        if note != nil { break }
        try await Task.sleep(for: .milliseconds(20))
    }
    reader.stop()
    try await Task.sleep(for: .milliseconds(20))
    let cpuAfter = servers.map { cpuTime(of: $0.1) ?? 0 }
    let loadAfter = loadAverage()
    await replicator.stop()

    let state = timeline.state.withLock { $0 }
    var lags: [Int64] = []
    var missing = 0
    for seq in (warmupCount + 1)...count {
        if state.visible[seq] == 0 {
            missing += 1
        } else {
            lags.append(max(0, state.visible[seq] - state.committed[seq]))
        }
    }
    lags.sort()
    let payloadBytes: Int64
    switch workload {
    case .bulk(let transactions, let bytes): payloadBytes = Int64(transactions) * Int64(bytes)
    case .rate: payloadBytes = 0
    }
    let lastVisible = state.visible[count]
    let result = Result(
        system: system, workload: workload, lags: lags, transactions: count - warmupCount, payloadBytes: payloadBytes,
        writerSeconds: Double(state.lastCommit - state.firstCommitStart) / 1e9,
        replicationSeconds: lastVisible > 0 ? Double(lastVisible - state.firstCommitStart) / 1e9 : 0,
        drainAfterLastCommit: lastVisible > 0 ? lastVisible - state.lastCommit : 0, missing: missing,
        cpu: zip(servers, zip(cpuBefore, cpuAfter)).map { ($0.0.0, $0.1.1 - $0.1.0) }, loadBefore: loadBefore, loadAfter: loadAfter,
        reads: reader.reads.withLock { $0 }, commitDurations: Array(state.commitDurations.dropFirst(warmupCount)).sorted(), note: note)
    if !options.keep { try? FileManager.default.removeItem(atPath: directory) }
    return result
}

// MARK: - Report

func lagRow(_ result: Result) -> String {
    let l = result.lags
    let cpu = result.cpu.map { "\($0.0) \(String(format: "%.2f", Double($0.1) / 1e9))" }.joined(separator: ", ")
    let c = result.commitDurations
    return "| \(result.system.label) | \(result.workload.label) | \(l.count) | \(ms(percentile(l, 50))) | \(ms(percentile(l, 90))) | "
        + "\(ms(percentile(l, 99))) | \(ms(l.last ?? 0)) | \(result.missing) | \(ms(percentile(c, 99))) / \(ms(c.last ?? 0)) | \(cpu) |"
}

func bulkRow(_ result: Result) -> String {
    let mb = Double(result.payloadBytes) / 1e6
    let cpu = result.cpu.map { "\($0.0) \(String(format: "%.2f", Double($0.1) / 1e9))" }.joined(separator: ", ")
    let replicated = result.replicationSeconds > 0 ? String(format: "%.1f", mb / result.replicationSeconds) : "—"
    return "| \(result.system.label) | \(result.transactions) × \(result.payloadBytes / Int64(max(result.transactions, 1)) / 1024) KiB "
        + "| \(String(format: "%.1f", mb / result.writerSeconds)) | \(ms(percentile(result.commitDurations, 99))) / \(ms(result.commitDurations.last ?? 0)) "
        + "| \(replicated) | \(ms(result.drainAfterLastCommit)) | \(result.missing) | \(cpu) |"
}

func report(_ results: [Result], options: Options, server: NATSServer?, litestreamVersion: String, loadBefore: String, loadAfter: String) -> String {
    var lines: [String] = []
    lines.append("Load average (1, 5, 15 min): \(loadBefore) at the start, \(loadAfter) at the end.")
    if let server { lines.append("nats-server: \(server.version). Litestream: \(litestreamVersion).") }
    lines.append("")
    let lagResults = results.filter { if case .rate = $0.workload { return true } else { return false } }
    if !lagResults.isEmpty {
        lines.append("Lag, commit on the primary → row visible in the standby's file (ms; payload \(options.minPayload)–\(options.maxPayload) B):")
        lines.append("")
        lines.append("| system | rate | samples | p50 | p90 | p99 | max | not seen | primary commit p99 / max | CPU s (process) |")
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for result in lagResults { lines.append(lagRow(result)) }
        lines.append("")
    }
    let bulkResults = results.filter { if case .bulk = $0.workload { return true } else { return false } }
    if !bulkResults.isEmpty {
        lines.append("Bulk throughput (MB = 10⁶ B of payload; replicated = first commit → last row visible in the standby):")
        lines.append("")
        lines.append(
            "| system | transactions | primary commit MB/s | primary commit p99 / max (ms) | replicated MB/s | last commit → visible (ms) | not seen | CPU s (process) |")
        lines.append("|---|---|---:|---:|---:|---:|---:|---|")
        for result in bulkResults { lines.append(bulkRow(result)) }
        lines.append("")
    }
    lines.append("Load per run (before → after):")
    lines.append("")
    for result in results {
        var line = "- \(result.system.label), \(result.workload.label): \(result.loadBefore) → \(result.loadAfter); standby reads \(result.reads)"
        if let note = result.note { line += "; **\(note)**" }
        lines.append(line)
    }
    return lines.joined(separator: "\n")
}

// MARK: - Main

func benchmarkMain(options: Options) async -> Int32 {
    installKillers(timeLimit: options.timeLimit)
    let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
    let workDirectory = NSTemporaryDirectory() + "replbench-\(getpid())"
    do {
        try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
        Children.shared.setWorkDirectory(workDirectory, remove: !options.keep)
        let loadBefore = loadAverage()
        var server: NATSServer?
        if options.systems.contains("baton") {
            server = try await NATSServer(path: options.server, directory: workDirectory)
            log("nats-server \(server!.version) at \(server!.url)")
        }
        let litestreamVersion = options.systems.contains(where: { $0.hasPrefix("litestream") }) ? capture(options.litestream, ["version"]) : "-"
        var systems: [System] = []
        if options.systems.contains("baton") { systems += options.batonPolls.map { System.baton(poll: $0) } }
        if options.systems.contains("litestream-default") {
            systems.append(.litestream(name: "defaults (1s/1s/1s)", monitor: nil, sync: nil, follow: nil))
        }
        if options.systems.contains("litestream-fast") {
            let fast = options.litestreamFast
            systems.append(.litestream(name: "fast (\(fast.text)/\(fast.text)/\(fast.text))", monitor: fast, sync: fast, follow: fast))
        }
        var workloads: [Workload] = []
        if options.workloads.contains("rate") { workloads += options.rates.map { .rate(perSecond: $0, seconds: options.seconds) } }
        if options.workloads.contains("bulk") { workloads.append(.bulk(transactions: options.bulkTransactions, payload: options.bulkPayload)) }

        var results: [Result] = []
        var index = 0
        for workload in workloads {
            for system in systems {
                index += 1
                let result = try await measure(
                    system: system, workload: workload, options: options, workDirectory: workDirectory, index: index, server: server, me: me)
                results.append(result)
                let slow = result.commitDurations.filter { $0 > 20_000_000 }.count
                log("\(system.label), \(workload.label): \(slow) commits on the primary took over 20 ms")
                switch workload {
                case .rate: log(lagRow(result))
                case .bulk: log(bulkRow(result))
                }
            }
        }
        await server?.child.stop()
        let text = report(results, options: options, server: server, litestreamVersion: litestreamVersion, loadBefore: loadBefore, loadAfter: loadAverage())
        print(text)
        if let path = options.markdownPath { try text.write(toFile: path, atomically: true, encoding: .utf8) }
        Children.shared.killAll()
        if !options.keep { try? FileManager.default.removeItem(atPath: workDirectory) } else { log("work directory kept: \(workDirectory)") }
        return 0
    } catch {
        log("failed: \(error)")
        Children.shared.abort()
        return 1
    }
}

if CommandLine.arguments.count >= 2, CommandLine.arguments[1] == "switchover" {
    exit(await switchoverMain(arguments: Array(CommandLine.arguments.dropFirst(2))))
}

if CommandLine.arguments.count >= 2, CommandLine.arguments[1] == "size" {
    exit(await sizeMain(arguments: Array(CommandLine.arguments.dropFirst(2))))
}

if CommandLine.arguments.count >= 2, CommandLine.arguments[1] == "node" {
    await nodeMain(arguments: Array(CommandLine.arguments.dropFirst(2)))
}

if CommandLine.arguments.count >= 2, ["ship", "apply"].contains(CommandLine.arguments[1]) {
    await childMain(mode: CommandLine.arguments[1], arguments: Array(CommandLine.arguments.dropFirst(2)))
}

exit(await benchmarkMain(options: Arguments.parseOrExit().options))
