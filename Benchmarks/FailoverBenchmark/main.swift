// FailoverBenchmark: how long a failover of a batond cluster takes, end to end.
//
// The benchmark starts one nats-server (JetStream on, a random loopback port, a temporary store
// directory) and three batond processes (node-1..3) running one app whose backend appends
// "monotonic-ns node epoch" to a shared log every 5 ms. "The new backend started" is the first
// heartbeat of a newer epoch; every instant is CLOCK_MONOTONIC, on the benchmark's side and in
// the backend. For each lease ttl (default 3s, then 1s; renew, fence_budget and skew are the
// config defaults, ttl/4, ttl/5 and ttl/10 capped at 100ms) it measures:
//
//   graceful: the stepdown request (sent from here with Supervisor's ControlClient, the clock
//     read just before the request goes out) → first heartbeat of the next epoch. Requests go
//     to a cluster at rest (2 × ttl after the last one: a node that stepped down may not take
//     the lease again for its cooldown) at a random point of the active node's renew cycle.
//   crash:    kill -9 of the active node's batond → first heartbeat of the next epoch. The
//     kill comes at a random point of the renew cycle (uniform over one renew interval after
//     the cluster is stable), the killed batond is restarted afterwards, and the next run waits
//     until all three nodes report again with one active and two passive nodes.
//
// A watch on the app's lease key (also from here) timestamps the lease writes, so each failover
// is split into its steps; the backend's own start-up (spawn → first heartbeat) is measured on
// its own first, as the floor under "new backend started".
//
// The backend is this executable in `heartbeat` mode by default (a native process that starts
// in a few milliseconds); `--backend python` uses the python script of the integration tests.
//
// Every run also checks safety: backends of different epochs never overlap in the heartbeat log.
// Everything started here is killed at the end, on errors, on SIGINT/SIGTERM and when the time
// limit passes. Results and their reading live in BENCHMARKS.md. `--stepdown-lead` and
// `--server-trace` are analysis aids (see --help and BENCHMARKS.md).
//
// Build and run in release mode (batond, batonctl and baton-fence-keeper in the same scratch
// path, so the benchmark finds them next to itself):
//   swift build -c release --scratch-path .build-release --product FailoverBenchmark
//   swift build -c release --scratch-path .build-release --product batond   (and the others)
//   .build-release/release/FailoverBenchmark --help

import ArgumentParser
import BatonCore
import BenchmarkSupport
import Foundation
import NATS
import Backends
import Control
import Supervisor
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Heartbeat mode (the backend)

// First thing, before anything else is set up: the backend re-executes this binary.
if CommandLine.arguments.count >= 3, CommandLine.arguments[1] == "heartbeat" {
    heartbeatMain(logPath: CommandLine.arguments[2])
}

/// Appends "monotonic-ns node epoch" to `logPath` every 5 ms until killed. One write(2) per line
/// on an O_APPEND descriptor, so lines from several processes never interleave.
func heartbeatMain(logPath: String) -> Never {
    let fd = open(logPath, O_WRONLY | O_APPEND | O_CREAT, 0o644)
    guard fd >= 0 else { exit(70) }
    let node = getenv("BATON_NODE").map { String(cString: $0) } ?? "?"
    let epoch = getenv("BATON_EPOCH").map { String(cString: $0) } ?? "0"
    var pause = timespec(tv_sec: 0, tv_nsec: 5_000_000)
    while true {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let line = "\(Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)) \(node) \(epoch)\n"
        var bytes = Array(line.utf8)
        _ = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) }
        nanosleep(&pause, nil)
    }
}

// MARK: - Options

struct Options: Sendable {
    var runs = 30
    var server = "/usr/sbin/nats-server"
    var binDirectory: String?
    var ttls: [Duration] = [.seconds(3), .seconds(1)]
    /// Overrides the default skew (ttl/10, at most 100ms) of every ttl.
    var skew: Duration?
    var scenarios: [Scenario] = [.graceful, .crash]
    var backend: BackendKind = .native
    var python = "/usr/bin/python3"
    var startupSamples = 20
    var logLevel = "info"
    var timeLimit = 1800
    var keep = false
    var markdownPath: String?
    /// For analysis: send each stepdown this long before the active node's next renew is due
    /// (from the lease watch) instead of at a random point of the renew cycle.
    var stepdownLead: Duration?
    /// For analysis: nats-server traces every protocol message into its log (-DV).
    var serverTrace = false

    enum Scenario: String, Sendable, CaseIterable {
        case graceful, crash
    }

    enum BackendKind: String, Sendable {
        case native, python
    }

}

extension Options.Scenario: ExpressibleByArgument {}
extension Options.BackendKind: ExpressibleByArgument {}

/// The command line (every flag as before ArgumentParser; `--help` lists them).
struct Arguments: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "FailoverBenchmark",
        abstract: "Failover times of three batond processes against one nats-server.",
        discussion: """
            Starts a nats-server (random loopback port, temporary store) and three batond processes, \
            then for each lease ttl measures graceful stepdowns (request → first heartbeat of the new \
            backend) and crashes (kill -9 of the active batond → first heartbeat of the new backend), \
            and prints p50/p90/p99/max with the issue's goals: graceful p99 under 100 ms, crash p99 \
            under ttl + 150 ms.
            """)

    @Option(help: "Runs per scenario and ttl.")
    var runs = 30
    @Option(
        help: ArgumentHelp(
            "Lease ttls, comma separated (at least 100ms each; default 3s,1s); renew, fence_budget and skew are the config defaults (ttl/4, ttl/5, ttl/10 at most 100ms).",
            valueName: "list"),
        transform: commaSeparated("--ttl", "a duration of at least 100ms (such as 3s or 1500ms)", { text in
            parseDuration(text).flatMap { $0 >= .milliseconds(100) ? $0 : nil }
        }))
    var ttl: [Duration] = [.seconds(3), .seconds(1)]
    @Option(help: "Use this skew instead of the default (ttl/10, at most 100ms).", transform: { text in
        guard let duration = parseDuration(text) else { throw ValidationError("--skew: \(text) is not a duration") }
        return duration
    })
    var skew: Duration?
    @Option(help: ArgumentHelp("graceful,crash (default both).", valueName: "list"),
        transform: commaSeparated("--scenarios", "a scenario (graceful, crash)", Options.Scenario.init(rawValue:)))
    var scenarios: [Options.Scenario] = [.graceful, .crash]
    @Option(help: "The nats-server binary.")
    var server = "/usr/sbin/nats-server"
    @Option(name: .customLong("bin-dir"), help: "Where batond and baton-fence-keeper are (default: next to this executable).")
    var binDirectory: String?
    @Option(help: "native (this executable in heartbeat mode) or python (the integration tests' python heartbeat script).")
    var backend: Options.BackendKind = .native
    @Option(help: "python for --backend python.")
    var python = "/usr/bin/python3"
    @Option(name: .customLong("startup-samples"), help: "Backend start-up samples, spawn → first heartbeat.")
    var startupSamples = 20
    @Option(name: .customLong("log-level"), help: "batond's log level (debug for analysis).")
    var logLevel = "info"
    @Option(name: .customLong("time-limit"), help: "Kill everything and exit after this many seconds.")
    var timeLimit = 1800
    @Flag(help: "Keep the work directory (configs, batond logs, heartbeat logs).")
    var keep = false
    @Option(help: "Also write the report to this path.")
    var markdown: String?
    @Flag(name: .customLong("server-trace"), help: "Analysis aid: nats-server logs every protocol message (-DV) into nats-server.log in the work directory (use with --keep).")
    var serverTrace = false
    @Option(name: .customLong("stepdown-lead"), help: "Analysis aid: send each stepdown this long before the active node's next renew is due, instead of at a random point of the renew cycle.", transform: { text in
        guard let duration = parseDuration(text) else { throw ValidationError("--stepdown-lead: \(text) is not a duration") }
        return duration
    })
    var stepdownLead: Duration?

    func validate() throws {
        for (name, value) in [("--runs", runs), ("--startup-samples", startupSamples), ("--time-limit", timeLimit)] where value <= 0 {
            throw ValidationError("\(name): \(value) is not a positive number")
        }
    }

    var options: Options {
        var options = Options()
        options.runs = runs
        options.server = server
        options.binDirectory = binDirectory
        options.ttls = ttl
        options.skew = skew
        options.scenarios = scenarios
        options.backend = backend
        options.python = python
        options.startupSamples = startupSamples
        options.logLevel = logLevel
        options.timeLimit = timeLimit
        options.keep = keep
        options.markdownPath = markdown
        options.stepdownLead = stepdownLead
        options.serverTrace = serverTrace
        return options
    }
}

// MARK: - Clock, output

func log(_ text: String) {
    FileHandle.standardError.write(Data("[failover] \(text)\n".utf8))
}

func milliseconds(_ nanoseconds: Int64) -> String { String(format: "%.1f", Double(nanoseconds) / 1e6) }

extension Duration {
    var nanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
    var text: String {
        let ns = nanoseconds
        if ns % 1_000_000_000 == 0 { return "\(ns / 1_000_000_000)s" }
        if ns % 1_000_000 == 0 { return "\(ns / 1_000_000)ms" }
        return "\(ns / 1_000)us"
    }
}

// MARK: - Child processes

/// Everything this benchmark started, so it can all be killed on any exit path. Processes are
/// killed by pid: the ones spawned here, and (found in /proc by ``RunStrays``) the backends and
/// fence keepers they started.
enum Children {
    static let shared = ChildProcesses(strays: { RunStrays.shared.find() })
}

/// This run's processes that are not its children: whose command line names the work
/// directory, or fence keepers whose `--parent` is one of this run's batonds.
final class RunStrays: Sendable {
    static let shared = RunStrays()

    private struct State {
        var batondPIDs: Set<Int32> = []
        var workDirectory: String?
        var keeperPath: String?
    }

    private let state = Mutex(State())

    func addBatond(_ pid: Int32) {
        _ = state.withLock { $0.batondPIDs.insert(pid) }
    }

    func identify(workDirectory: String, keeperPath: String) {
        state.withLock {
            $0.workDirectory = workDirectory
            $0.keeperPath = keeperPath
        }
    }

    func find() -> [Int32] {
        let (directory, keeper, batonds) = state.withLock { ($0.workDirectory, $0.keeperPath, $0.batondPIDs) }
        guard let directory else { return [] }
        let me = getpid()
        var found: [Int32] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), pid != me,
                let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"), !data.isEmpty
            else { continue }
            let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if arguments.contains(where: { $0.contains(directory) }) {
                found.append(pid)
            } else if let keeper, arguments.first == keeper, let index = arguments.firstIndex(of: "--parent"), index + 1 < arguments.count,
                let parent = Int32(arguments[index + 1]), batonds.contains(parent)
            {
                found.append(pid)
            }
        }
        return found
    }
}

/// SIGINT, SIGTERM and the time limit: killing everything this benchmark started (BenchmarkSupport's killers).
func installKillers(timeLimit: Int) {
    installKillers(timeLimit: timeLimit, doing: "killing everything this benchmark started", log: { log($0) }, abort: { Children.shared.abort() })
}

// MARK: - batond

final class Batond {
    let node: String
    let binary: String
    let configPath: String
    let logPath: String
    let environment: [String: String]
    let logLevel: String
    private(set) var process = Process()

    init(node: String, binary: String, configPath: String, logPath: String, keeper: String, logLevel: String) {
        self.node = node
        self.binary = binary
        self.configPath = configPath
        self.logPath = logPath
        self.environment = ProcessInfo.processInfo.environment.merging(["BATON_FENCE_KEEPER": keeper]) { $1 }
        self.logLevel = logLevel
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }

    /// Starts (or restarts) the process; its output is appended to the node's log, each line
    /// prefixed with the CLOCK_MONOTONIC milliseconds at which it was read (batond's own
    /// timestamps have a resolution of one second).
    func start() throws {
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        let pipe = Pipe()
        let splitter = LineStamper(output: log)
        pipe.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                splitter.finish()
            } else {
                splitter.take(data)
            }
        }
        process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--config", configPath, "--log-level", logLevel]
        process.environment = environment
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        try? pipe.fileHandleForWriting.close()
        Children.shared.add(pid, name: "batond \(node)")
        RunStrays.shared.addBatond(pid)
    }

    func kill9() {
        kill(pid, SIGKILL)
    }

    /// Waits until the process has exited (after a kill), at most `timeout`.
    func waitForExit(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        if !process.isRunning { Children.shared.remove(pid) }
    }

    /// SIGTERM (graceful stepdown), then SIGKILL after `grace`.
    func stop(grace: Duration = .seconds(10)) async {
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        await waitForExit(timeout: grace)
        if process.isRunning {
            kill(pid, SIGKILL)
            await waitForExit(timeout: .seconds(5))
        }
    }
}

/// Writes lines to a file, each prefixed with the monotonic time it arrived.
final class LineStamper: Sendable {
    private let output: FileHandle
    private let pending = Mutex<[UInt8]>([])

    init(output: FileHandle) { self.output = output }

    func take(_ data: Data) {
        let stamp = "[\(milliseconds(monotonicNanoseconds()))] "
        let text: [UInt8] = pending.withLock { pending in
            pending.append(contentsOf: data)
            guard let end = pending.lastIndex(of: UInt8(ascii: "\n")) else { return [] }
            var lines: [UInt8] = []
            for line in pending[...end].split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).dropLast() {
                lines += Array(stamp.utf8) + line + [UInt8(ascii: "\n")]
            }
            pending.removeFirst(end + 1)
            return lines
        }
        if !text.isEmpty { output.write(Data(text)) }
    }

    func finish() {
        let rest = pending.withLock { pending in
            defer { pending.removeAll() }
            return pending
        }
        if !rest.isEmpty { output.write(Data(rest + [UInt8(ascii: "\n")])) }
        try? output.close()
    }
}

// MARK: - Heartbeat log

/// Reads the shared heartbeat log incrementally: per epoch, the node and its first and last
/// heartbeat.
final class HeartbeatLog {
    struct Run {
        var node: String
        var epoch: UInt64
        var first: Int64
        var last: Int64
    }

    let path: String
    private var offset: off_t = 0
    private var remainder: [UInt8] = []
    private(set) var runs: [UInt64: Run] = [:]

    init(path: String) { self.path = path }

    func poll() {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            guard count > 0 else { break }
            offset += off_t(count)
            remainder.append(contentsOf: buffer[0..<count])
            var start = 0
            for index in remainder.indices where remainder[index] == UInt8(ascii: "\n") {
                parse(remainder[start..<index])
                start = index + 1
            }
            remainder.removeFirst(start)
        }
    }

    private func parse(_ line: ArraySlice<UInt8>) {
        let fields = line.split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) }
        guard fields.count == 3, let time = Int64(fields[0]), let epoch = UInt64(fields[2]) else { return }
        if var run = runs[epoch] {
            run.first = min(run.first, time)
            run.last = max(run.last, time)
            runs[epoch] = run
        } else {
            runs[epoch] = Run(node: fields[1], epoch: epoch, first: time, last: time)
        }
    }

    /// The first run with an epoch above `epoch`.
    func run(after epoch: UInt64) -> Run? {
        runs.values.filter { $0.epoch > epoch }.min { $0.epoch < $1.epoch }
    }

    /// Pairs of runs that overlapped in time, or whose epochs do not grow with time.
    func violations() -> [String] {
        let ordered = runs.values.sorted { $0.first < $1.first }
        var problems: [String] = []
        for (earlier, later) in zip(ordered, ordered.dropFirst()) {
            if later.epoch <= earlier.epoch { problems.append("epoch \(later.epoch) started after epoch \(earlier.epoch)") }
            if earlier.last >= later.first {
                problems.append("epoch \(earlier.epoch) (\(earlier.node)) ran until \(milliseconds(earlier.last - later.first)) ms after epoch \(later.epoch) (\(later.node)) started")
            }
        }
        return problems
    }
}

// MARK: - Lease watch

/// Timestamps every write of the app's lease key as this process sees it.
final class LeaseRecorder: Sendable {
    struct Event: Sendable {
        var time: Int64
        var observation: LeaseObservation
    }

    private let events = Mutex<[Event]>([])
    private let task = Mutex<Task<Void, Never>?>(nil)

    func start(store: LeaseStore) async throws {
        let watch = try await store.watch()
        let recorder = self
        let watcher = Task {
            do {
                for try await event in watch {
                    guard case .observed(let observation) = event else { continue }
                    let now = monotonicNanoseconds()
                    recorder.events.withLock { $0.append(Event(time: now, observation: observation)) }
                }
            } catch {
                log("lease watch ended: \(error)")
            }
        }
        task.withLock { $0 = watcher }
    }

    func stop() {
        task.withLock { $0?.cancel() }
    }

    var snapshot: [Event] { events.withLock { $0 } }

    /// When the lease was first seen free at or after `time`.
    func freeSeen(after time: Int64) -> Int64? {
        snapshot.first { event in
            guard event.time >= time else { return false }
            if case .held = event.observation { return false }
            return true
        }?.time
    }

    /// When a lease with a token above `token` was first seen.
    func heldSeen(tokenAbove token: UInt64) -> Int64? {
        snapshot.first { event in
            guard case .held(_, _, let seen, _) = event.observation else { return false }
            return seen > token
        }?.time
    }

    /// The last write of the lease with `token` seen.
    func lastWrite(token: UInt64) -> Int64? {
        snapshot.last { event in
            guard case .held(_, _, let seen, _) = event.observation else { return false }
            return seen == token
        }?.time
    }
}

// MARK: - Measurements

struct Sample {
    var total: Int64
    /// Named steps (nil when not observed), in order.
    var steps: [(String, Int64?)]
    var note: String
}

struct ScenarioResult {
    var ttl: Duration
    var scenario: Options.Scenario
    var samples: [Sample]
    var goal: Int64
    var goalText: String

    var sortedTotals: [Int64] { samples.map(\.total).sorted() }
    var p99: Int64 { percentile(sortedTotals, 99) }
    var met: Bool { p99 < goal }
}

// MARK: - The cluster run for one ttl

struct ClusterPaths {
    var batond: String
    var keeper: String
    var backendCommand: [String]
}

func yamlList(_ items: [String]) -> String {
    "[" + items.map { "\"\($0)\"" }.joined(separator: ", ") + "]"
}

/// Runs every scenario for one ttl on a fresh three-node cluster.
func runTTL(
    _ ttl: Duration, options: Options, server: NATSServerProcess, paths: ClusterPaths, workDirectory: String, client: NATSClient
) async throws -> [ScenarioResult] {
    var timing = LeaseTiming.defaults(ttl: ttl)
    if let skew = options.skew { timing.skew = skew }
    let leaseYAML = options.skew.map { "{ttl: \(ttl.text), skew: \($0.text)}" } ?? "{ttl: \(ttl.text)}"
    let app = "beat-\(ttl.nanoseconds / 1_000_000)ms"
    let directory = "\(workDirectory)/\(app)"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let heartbeatPath = "\(directory)/heartbeats.log"
    _ = FileManager.default.createFile(atPath: heartbeatPath, contents: nil)
    let heartbeats = HeartbeatLog(path: heartbeatPath)
    log("ttl \(ttl.text) (renew \(timing.renew.text), fence_budget \(timing.fenceBudget.text), skew \(timing.skew.text)): starting three batond nodes, app \(app)")

    var nodes: [String: Batond] = [:]
    let names = ["node-1", "node-2", "node-3"]
    for name in names {
        let config = """
            cluster: bench
            node: {id: \(name), state_dir: \(directory)/\(name)}
            nats: {servers: ["\(server.url)"]}
            apps:
              - name: \(app)
                priority: 100
                lease: \(leaseYAML)
                backend:
                  process:
                    command: \(yamlList(paths.backendCommand + [heartbeatPath]))
                    env: {HEARTBEAT_LOG: "\(heartbeatPath)"}
                    stop_timeout: 2s

            """
        let configPath = "\(directory)/\(name).yaml"
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        let batond = Batond(
            node: name, binary: paths.batond, configPath: configPath, logPath: "\(directory)/\(name).log", keeper: paths.keeper, logLevel: options.logLevel)
        try batond.start()
        nodes[name] = batond
    }
    defer {
        for node in nodes.values where node.isRunning { node.kill9() }
    }

    let control = ControlClient(client: client, cluster: "bench")

    /// Waits until all three nodes answer, one is active with its backend running and the other
    /// two are passive and agree on the leader and its token; returns the leader and token.
    func waitStable(timeout: Duration) async throws -> (node: String, token: UInt64) {
        let deadline = ContinuousClock.now + timeout
        var last = "no answer"
        while ContinuousClock.now < deadline {
            let replies = try await control.statuses(window: .milliseconds(500)) { $0.count >= names.count }
            let statuses = replies.statuses
            if Set(statuses.map(\.node)) == Set(names), statuses.allSatisfy(\.natsConnected) {
                let apps = statuses.compactMap { status in status.apps.first { $0.name == app }.map { (status.node, $0) } }
                let actives = apps.filter { $0.1.role == .active && $0.1.backendRunning }
                if actives.count == 1, let token = actives[0].1.token {
                    let leader = actives[0].0
                    let others = apps.filter { $0.0 != leader }
                    if others.count == names.count - 1, others.allSatisfy({ $0.1.role == .passive && $0.1.leader == leader && $0.1.token == token }) {
                        heartbeats.poll()
                        if let run = heartbeats.runs[token], monotonicNanoseconds() - run.last < 100_000_000 {
                            return (leader, token)
                        }
                        last = "epoch \(token) on \(leader) writes no heartbeats"
                    } else {
                        last = "passive nodes: \(others.map { "\($0.0) \($0.1.role.rawValue) leader \($0.1.leader ?? "-") token \($0.1.token.map(String.init) ?? "-")" })"
                    }
                } else {
                    last = "roles: \(apps.map { "\($0.0) \($0.1.role.rawValue)\($0.1.backendRunning ? "+backend" : "")" })"
                }
            } else {
                last = "answering: \(statuses.map { "\($0.node)\($0.natsConnected ? "" : " (disconnected)")" })"
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw BenchmarkError("the cluster did not become stable within \(timeout) (\(last)); logs in \(directory)")
    }

    /// Polls the heartbeat log until an epoch above `epoch` writes.
    func waitForRun(after epoch: UInt64, timeout: Duration) async throws -> HeartbeatLog.Run {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            heartbeats.poll()
            if let run = heartbeats.run(after: epoch) { return run }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw BenchmarkError("no backend of an epoch after \(epoch) within \(timeout); logs in \(directory)")
    }

    /// Whether `node`'s batond has a fence keeper running (it has run the app before).
    func hasKeeper(_ node: String) -> Bool {
        guard let parent = nodes[node]?.pid else { return false }
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard Int32(entry) != nil, let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
            let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if arguments.first == paths.keeper, let index = arguments.firstIndex(of: "--parent"), index + 1 < arguments.count,
                arguments[index + 1] == "\(parent)"
            {
                return true
            }
        }
        return false
    }

    let first = try await waitStable(timeout: .seconds(60))
    log("ttl \(ttl.text): stable, \(first.node) active (epoch \(first.token))")
    let recorder = LeaseRecorder()
    try await recorder.start(store: try await control.leaseStore(app: app, jetStream: JetStream(client: client)))
    defer { recorder.stop() }
    try await Task.sleep(for: .milliseconds(200))

    var results: [ScenarioResult] = []
    var lastStepdown: Int64?
    for scenario in options.scenarios {
        var samples: [Sample] = []
        for run in 1...options.runs {
            let (leader, token) = try await waitStable(timeout: .seconds(60) + ttl * 4)
            switch scenario {
            case .graceful:
                // A node that gave the lease up may not take it again for its cooldown (2 × ttl):
                // with three nodes, back-to-back stepdowns would leave no eligible node. Each
                // request goes to a cluster at rest: at least 2 × ttl + 250 ms after the last one.
                if let previous = lastStepdown {
                    let rest = ttl.nanoseconds * 2 + 250_000_000 - (monotonicNanoseconds() - previous)
                    if rest > 0 { try await Task.sleep(for: .nanoseconds(rest)) }
                }
                // ... and at a uniformly random point of the active node's renew cycle (a fixed
                // pace would send every request at the same phase of it).
                if let lead = options.stepdownLead {
                    // Analysis aid: aim just before the next renew (the watch sees a renew about
                    // a millisecond after it was sent).
                    try await Task.sleep(for: .milliseconds(Int.random(in: 0..<Int(timing.renew.nanoseconds / 1_000_000))))
                    if let seen = recorder.lastWrite(token: token) {
                        var due = seen + timing.renew.nanoseconds
                        while due - lead.nanoseconds < monotonicNanoseconds() { due += timing.renew.nanoseconds }
                        try await Task.sleep(for: .nanoseconds(due - lead.nanoseconds - monotonicNanoseconds()))
                    }
                } else {
                    try await Task.sleep(for: .nanoseconds(Int64.random(in: 0..<timing.renew.nanoseconds)))
                }
                let candidates = names.filter { $0 != leader }
                let keepers = candidates.filter(hasKeeper)
                let sent = monotonicNanoseconds()
                lastStepdown = sent
                let reply = try await control.send(.stepdown, app: app, node: leader, timeout: .seconds(5))
                let answered = monotonicNanoseconds()
                guard reply.ok else { throw BenchmarkError("stepdown refused by \(leader): \(reply.message)") }
                let next = try await waitForRun(after: token, timeout: .seconds(10) + ttl * 3)
                heartbeats.poll()
                let old = heartbeats.runs[token]
                let free = recorder.freeSeen(after: sent)
                let held = recorder.heldSeen(tokenAbove: token)
                let total = next.first - sent
                samples.append(
                    Sample(
                        total: total,
                        steps: [
                            ("request → reply", answered - sent),
                            ("request → old backend's last heartbeat (±5 ms)", old.map { $0.last - sent }),
                            ("old backend's last heartbeat → lease free seen", zip2(free, old.map(\.last)).map { $0 - $1 }),
                            ("lease free → new lease seen", zip2(held, free).map { $0 - $1 }),
                            ("new lease seen → first heartbeat", held.map { next.first - $0 }),
                        ],
                        note: "\(leader)→\(next.node)\(keepers.contains(next.node) ? "" : " (new keeper)")"))
                log("ttl \(ttl.text) graceful \(run)/\(options.runs): \(milliseconds(total)) ms, \(leader) → \(next.node) (epoch \(next.epoch))")
            case .crash:
                // Kill at a uniformly random point of the renew cycle.
                let offset = Int64.random(in: 0..<timing.renew.nanoseconds)
                try await Task.sleep(for: .nanoseconds(offset))
                let candidates = names.filter { $0 != leader }
                let keepers = candidates.filter(hasKeeper)
                let victim = nodes[leader]!
                let killed = monotonicNanoseconds()
                victim.kill9()
                let next = try await waitForRun(after: token, timeout: .seconds(10) + ttl * 3)
                heartbeats.poll()
                let old = heartbeats.runs[token]
                // A renew already on its way when batond was killed may land just after the kill.
                let lastWrite = recorder.lastWrite(token: token)
                let held = recorder.heldSeen(tokenAbove: token)
                let total = next.first - killed
                samples.append(
                    Sample(
                        total: total,
                        steps: [
                            ("kill → old backend's last heartbeat (±5 ms)", old.map { $0.last - killed }),
                            ("last renew seen → kill (lease age; < 0: a renew landed after the kill)", lastWrite.map { killed - $0 }),
                            ("last renew seen → new lease seen", zip2(held, lastWrite).map { $0 - $1 }),
                            ("  of which past ttl + skew", zip2(held, lastWrite).map { $0 - $1 - timing.ttl.nanoseconds - timing.skew.nanoseconds }),
                            ("new lease seen → first heartbeat", held.map { next.first - $0 }),
                        ],
                        note: "\(leader)→\(next.node)\(keepers.contains(next.node) ? "" : " (new keeper)")"))
                log("ttl \(ttl.text) crash \(run)/\(options.runs): \(milliseconds(total)) ms, \(leader) killed → \(next.node) (epoch \(next.epoch))")
                await victim.waitForExit(timeout: .seconds(10))
                try victim.start()
            }
        }
        let goal: Int64
        let goalText: String
        switch scenario {
        case .graceful:
            goal = 100_000_000
            goalText = "p99 < 100 ms"
        case .crash:
            goal = ttl.nanoseconds + 150_000_000
            goalText = "p99 < ttl + 150 ms = \(milliseconds(ttl.nanoseconds + 150_000_000)) ms"
        }
        results.append(ScenarioResult(ttl: ttl, scenario: scenario, samples: samples, goal: goal, goalText: goalText))
    }

    _ = try? await waitStable(timeout: .seconds(10) + ttl * 4)
    let leaseLog = recorder.snapshot.map { event -> String in
        switch event.observation {
        case .held(let holder, let revision, let token, _): "[\(milliseconds(event.time))] held by \(holder) revision \(revision) token \(token)"
        case .free(let target), .released(_, _, let target): "[\(milliseconds(event.time))] free\(target.map { " handoff to \($0)" } ?? "")"
        case .vanished: "[\(milliseconds(event.time))] vanished (no release note)"
        }
    }
    try? (leaseLog.joined(separator: "\n") + "\n").write(toFile: "\(directory)/lease-events.log", atomically: true, encoding: .utf8)
    heartbeats.poll()
    let violations = heartbeats.violations()
    for node in nodes.values { await node.stop() }
    heartbeats.poll()
    if !violations.isEmpty {
        throw BenchmarkError("SAFETY: backends of different epochs overlapped: \(violations.joined(separator: "; "))")
    }
    log("ttl \(ttl.text): done; \(heartbeats.runs.count) epochs, no overlapping backends")
    return results
}

func zip2(_ a: Int64?, _ b: Int64?) -> (Int64, Int64)? {
    guard let a, let b else { return nil }
    return (a, b)
}

// MARK: - Backend start-up floor

/// Spawns the backend directly (posix_spawn, as the keeper does) and measures spawn → first
/// heartbeat: what "new backend started" costs without Baton.
func measureBackendStartup(command: [String], directory: String, samples: Int) async throws -> [Int64] {
    var results: [Int64] = []
    for sample in 0..<samples {
        let logPath = "\(directory)/startup-\(sample).log"
        let arguments = command + [logPath]
        let environment = ProcessInfo.processInfo.environment.merging(["HEARTBEAT_LOG": logPath, "BATON_NODE": "probe", "BATON_EPOCH": "1"]) { $1 }
            .map { "\($0.key)=\($0.value)" }
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        var envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let started = monotonicNanoseconds()
        let status = posix_spawn(&pid, arguments[0], nil, nil, &argv, &envp)
        guard status == 0 else { throw BenchmarkError("cannot spawn \(arguments[0]): \(String(cString: strerror(status)))") }
        Children.shared.add(pid, name: "startup probe")
        let log = HeartbeatLog(path: logPath)
        let deadline = ContinuousClock.now + .seconds(10)
        var first: Int64?
        while first == nil, ContinuousClock.now < deadline {
            log.poll()
            first = log.runs[1]?.first
            if first == nil { try await Task.sleep(for: .milliseconds(2)) }
        }
        kill(pid, SIGKILL)
        var exitStatus: Int32 = 0
        waitpid(pid, &exitStatus, 0)
        Children.shared.remove(pid)
        guard let first else { throw BenchmarkError("the backend \(arguments) wrote no heartbeat within 10 s") }
        results.append(first - started)
    }
    return results
}

// MARK: - Report

func statsRow(_ values: [Int64]) -> String {
    let sorted = values.sorted()
    return [50, 90, 99].map { milliseconds(percentile(sorted, $0)) }.joined(separator: " | ") + " | \(milliseconds(sorted.last ?? 0))"
}

func report(results: [ScenarioResult], startup: [Int64], options: Options, server: NATSServerProcess, command: String, loadBefore: String, loadAfter: String) -> String {
    var text = ""
    text += "Machine: \(machineDescription()). Load average before/after: \(loadBefore) / \(loadAfter).\n"
    text += "Date: \(ISO8601DateFormatter().string(from: Date())). nats-server: \(server.version) (\(options.server)).\n"
    text += "Backend: \(options.backend == .native ? "native heartbeat process (FailoverBenchmark heartbeat)" : "python heartbeat script (\(capture(options.python, ["--version"])))"); "
    if let skew = options.skew {
        text += "renew and fence_budget are the defaults (ttl/4, ttl/5); skew is \(skew.text) (not the default ttl/10, at most 100ms).\n\n"
    } else {
        text += "renew, fence_budget and skew are the defaults (ttl/4, ttl/5, ttl/10 at most 100ms).\n\n"
    }
    text += "Command: `\(command)`\n\n"
    text += "Backend start-up alone (posix_spawn → first heartbeat, \(startup.count) samples), ms: p50 / p90 / p99 / max = \(statsRow(startup).replacingOccurrences(of: " | ", with: " / "))\n\n"
    text += "| ttl | scenario | runs | p50 ms | p90 ms | p99 ms | max ms | goal | met |\n"
    text += "|---|---|---:|---:|---:|---:|---:|---|---|\n"
    for result in results {
        text += "| \(result.ttl.text) | \(result.scenario.rawValue) | \(result.samples.count) | \(statsRow(result.samples.map(\.total))) | \(result.goalText) | \(result.met ? "yes" : "**no**") |\n"
    }
    text += "\nWhere the time goes (per step, ms: p50 / p99 / max over the runs where the step was observed):\n\n"
    text += "| ttl | scenario | step | p50 | p99 | max |\n|---|---|---|---:|---:|---:|\n"
    for result in results {
        guard let names = result.samples.first?.steps.map(\.0) else { continue }
        for (index, name) in names.enumerated() {
            let values = result.samples.compactMap { $0.steps[index].1 }.sorted()
            guard !values.isEmpty else { continue }
            text += "| \(result.ttl.text) | \(result.scenario.rawValue) | \(name) | \(milliseconds(percentile(values, 50))) | \(milliseconds(percentile(values, 99))) | \(milliseconds(values.last!)) |\n"
        }
        let fresh = result.samples.filter { $0.note.contains("new keeper") }
        if !fresh.isEmpty, fresh.count < result.samples.count {
            let warm = result.samples.filter { !$0.note.contains("new keeper") }
            text += "| \(result.ttl.text) | \(result.scenario.rawValue) | total, new node had a keeper already (\(warm.count) runs) | \(milliseconds(percentile(warm.map(\.total).sorted(), 50))) | \(milliseconds(percentile(warm.map(\.total).sorted(), 99))) | \(milliseconds(warm.map(\.total).max()!)) |\n"
            text += "| \(result.ttl.text) | \(result.scenario.rawValue) | total, new node spawned its keeper (\(fresh.count) runs) | \(milliseconds(percentile(fresh.map(\.total).sorted(), 50))) | \(milliseconds(percentile(fresh.map(\.total).sorted(), 99))) | \(milliseconds(fresh.map(\.total).max()!)) |\n"
        }
    }
    text += "\nEvery run (ms):\n\n"
    for result in results {
        text += "- ttl \(result.ttl.text) \(result.scenario.rawValue): "
        text += result.samples.map { "\(milliseconds($0.total))" }.joined(separator: ", ") + "\n"
    }
    return text
}

// MARK: - Main

func locateBinaries(_ options: Options) throws -> (directory: String, batond: String, keeper: String, me: String) {
    let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    let directory = options.binDirectory ?? (me as NSString).deletingLastPathComponent
    let batond = "\(directory)/batond"
    let keeper = "\(directory)/baton-fence-keeper"
    for path in [batond, keeper] where !FileManager.default.isExecutableFile(atPath: path) {
        throw BenchmarkError("\(path) is missing: build batond and baton-fence-keeper into the same directory, or pass --bin-dir")
    }
    return (directory, batond, keeper, me)
}

func benchmarkMain(options: Options) async -> Int32 {
    let workDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("baton-failover-\(UUID().uuidString.prefix(8))").path
    var server: NATSServerProcess?
    var client: NATSClient?
    var failed = false
    do {
        let binaries = try locateBinaries(options)
        guard FileManager.default.isExecutableFile(atPath: options.server) else { throw BenchmarkError("nats-server not found at \(options.server); pass --server") }
        try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
        Children.shared.setWorkDirectory(workDirectory, remove: !options.keep)
        RunStrays.shared.identify(workDirectory: workDirectory, keeperPath: binaries.keeper)
        log("work directory \(workDirectory); binaries from \(binaries.directory)")
        let loadBefore = loadAverage()

        let backendCommand: [String]
        switch options.backend {
        case .native:
            backendCommand = [binaries.me, "heartbeat"]
        case .python:
            let script = "\(workDirectory)/beat.py"
            try """
                import os, sys, time
                fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                node, epoch = os.environ["BATON_NODE"], os.environ["BATON_EPOCH"]
                while True:
                    os.write(fd, f"{time.monotonic_ns()} {node} {epoch}\\n".encode())
                    time.sleep(0.005)

                """.write(toFile: script, atomically: true, encoding: .utf8)
            backendCommand = [options.python, script]
        }
        let startup = try await measureBackendStartup(command: backendCommand, directory: workDirectory, samples: options.startupSamples)
        log("backend start-up: p50 \(milliseconds(percentile(startup.sorted(), 50))) ms, max \(milliseconds(startup.max() ?? 0)) ms")

        let started = try await NATSServerProcess(path: options.server, directory: workDirectory, children: Children.shared, trace: options.serverTrace)
        server = started
        log("\(started.version) at \(started.url)")
        var clientOptions = NATSClientOptions(servers: [started.url])
        clientOptions.name = "failover-benchmark"
        let connected = try NATSClient(options: clientOptions)
        try await connected.connect()
        client = connected

        var results: [ScenarioResult] = []
        for ttl in options.ttls {
            results += try await runTTL(
                ttl, options: options, server: started,
                paths: ClusterPaths(batond: binaries.batond, keeper: binaries.keeper, backendCommand: backendCommand),
                workDirectory: workDirectory, client: connected)
        }
        let command = CommandLine.arguments.joined(separator: " ")
        let text = report(results: results, startup: startup, options: options, server: started, command: command, loadBefore: loadBefore, loadAfter: loadAverage())
        print(text)
        if let path = options.markdownPath { try text.write(toFile: path, atomically: true, encoding: .utf8) }
        for result in results where !result.met {
            log("goal missed: ttl \(result.ttl.text) \(result.scenario.rawValue) p99 \(milliseconds(result.p99)) ms, goal \(result.goalText)")
        }
    } catch {
        log("error: \(error)")
        failed = true
    }
    await client?.close()
    let strays = Children.shared.killAll()
    server?.stop()
    if strays > 0 { log("killed \(strays) leftover process(es) of this run") }
    if !FileManager.default.fileExists(atPath: workDirectory) {
        // Nothing was created.
    } else if options.keep || failed {
        log("work directory kept: \(workDirectory)")
    } else {
        try? FileManager.default.removeItem(atPath: workDirectory)
    }
    return failed ? 1 : 0
}

let options = Arguments.parseOrExit().options
#if DEBUG
log("warning: debug build; build with -c release for numbers that mean something")
#endif
installKillers(timeLimit: options.timeLimit)
exit(await benchmarkMain(options: options))
