// Many apps on many batond nodes against one nats-server: idle CPU and memory of each node, how
// fast every app of a killed node runs elsewhere, and how evenly the active apps are spread
// (issue 15 item 6).

import ArgumentParser
import BatonCore
import BenchmarkSupport
import Control
import Foundation
import NATS
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// The backend re-executes this binary: it appends "monotonic-ns app node epoch" to the shared
// start log once (one write(2) on an O_APPEND descriptor) and then sleeps until it is stopped.
if CommandLine.arguments.count >= 3, CommandLine.arguments[1] == "backend" {
    let fd = open(CommandLine.arguments[2], O_WRONLY | O_APPEND | O_CREAT, 0o644)
    guard fd >= 0 else { exit(70) }
    func variable(_ name: String) -> String { getenv(name).map { String(cString: $0) } ?? "?" }
    var bytes = Array("\(monotonicNanoseconds()) \(variable("BATON_APP")) \(variable("BATON_NODE")) \(variable("BATON_EPOCH"))\n".utf8)
    _ = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
    while true { pause() }
}

struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ScaleBenchmark",
        abstract: "Many apps on many batond nodes against one nats-server.",
        discussion: """
            Starts a nats-server and --nodes batond processes one after another (--stagger apart), \
            each configured with the same --apps apps (process backends that only record their \
            start), and waits until every app runs on exactly one node. Then it measures each \
            batond's CPU and memory over --idle-window while nothing happens, kills the node with \
            the most active apps (kill -9) --kills times, measuring how long each of its apps takes \
            to start elsewhere (goal: ttl + 500 ms), restarts it and reports how evenly the active \
            apps are spread once the cluster has settled (goal: every node within one app of its \
            fair share). Goals per node: idle CPU ≤ 1 % of a core, RSS ≤ 40 MB.
            """)

    @Option(help: "batond nodes.") var nodes = 10
    @Option(help: "Apps in every node's config.") var apps = 100
    @Option(help: "Lease ttl of every app (renew, fence_budget, skew: the config defaults).", transform: duration("--ttl"))
    var ttl: Duration = .seconds(3)
    @Option(help: "Time between two nodes' starts.", transform: duration("--stagger"))
    var stagger: Duration = .milliseconds(500)
    @Option(help: "How long idle CPU is measured.", transform: duration("--idle-window"))
    var idleWindow: Duration = .seconds(30)
    @Option(help: "Quiet time after the cluster settled, before the idle window.", transform: duration("--quiet"))
    var quiet: Duration = .seconds(5)
    @Option(help: "The longest wait, after the start and after each restart, for balancing to bring every node within one app of its fair share (the spread is read then, balanced or not).", transform: duration("--rebalance-wait"))
    var rebalanceWait: Duration = .seconds(30)
    @Option(help: "Kills of the most loaded node.") var kills = 3
    @Option(help: "The nats-server binary.") var server = "/usr/sbin/nats-server"
    @Option(name: .customLong("bin-dir"), help: "Where batond and baton-fence-keeper are (default: next to this executable).")
    var binDirectory: String?
    @Option(help: "batond's log level.") var logLevel = "info"
    @Option(help: "Kill everything and exit after this many seconds.") var timeLimit = 1800
    @Flag(help: "Keep the work directory (configs, logs).") var keep = false
    @Flag(help: "Turn balancing off (placement: {balance: false}): the first node keeps the apps it took, the others stay passive for all of them; separates a passive node's idle cost from an active one's.")
    var noBalance = false
    @Option(help: "Also write the report to this path.") var markdown: String?

    func validate() throws {
        guard nodes >= 2 else { throw ValidationError("--nodes: at least 2") }
        guard apps >= 1 else { throw ValidationError("--apps: at least 1") }
        guard ttl >= .milliseconds(100) else { throw ValidationError("--ttl: at least 100ms") }
        guard kills >= 0 else { throw ValidationError("--kills: not negative") }
    }

    static func duration(_ option: String) -> @Sendable (String) throws -> Duration {
        { text in
            guard let value = parseDuration(text) else { throw ValidationError("\(option): \(text) is not a duration like 500ms or 3s") }
            return value
        }
    }
}

func log(_ text: String) {
    FileHandle.standardError.write(Data("[scale] \(text)\n".utf8))
}

func milliseconds(_ nanoseconds: Int64) -> String { String(format: "%.0f", Double(nanoseconds) / 1e6) }

extension Duration {
    var nanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
    var seconds: Double { Double(nanoseconds) / 1e9 }
}

let children = ChildProcesses(strays: { strays() })
nonisolated(unsafe) var workDirectoryForStrays = ""

/// Backends and fence keepers of this run: processes whose command line names the work directory
/// (the backends carry the start log's path) or a keeper whose parent batond is gone.
func strays() -> [Int32] {
    guard !workDirectoryForStrays.isEmpty else { return [] }
    var found: [Int32] = []
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let pid = Int32(entry), pid != getpid(), let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
        if String(decoding: data, as: UTF8.self).contains(workDirectoryForStrays) { found.append(pid) }
    }
    return found
}

/// One batond process, its output appended to a log file.
final class Node {
    let name: String
    let arguments: [String]
    let environment: [String: String]
    let logPath: String
    private(set) var process = Process()

    init(name: String, batond: String, config: String, keeper: String, logLevel: String, logPath: String) {
        self.name = name
        self.arguments = [batond, "--config", config, "--log-level", logLevel]
        self.environment = ProcessInfo.processInfo.environment.merging(["BATON_FENCE_KEEPER": keeper]) { $1 }
        self.logPath = logPath
    }

    var pid: Int32 { process.processIdentifier }

    func start() throws {
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        output.seekToEndOfFile()
        process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.environment = environment
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        children.add(pid, name: "batond \(name)")
    }

    func kill9() async {
        kill(pid, SIGKILL)
        while process.isRunning { try? await Task.sleep(for: .milliseconds(5)) }
        children.remove(pid)
    }
}

/// The start log the backends append to: "monotonic-ns app node epoch" per start.
final class StartLog {
    struct Start {
        var time: Int64
        var app: String
        var node: String
        var epoch: UInt64
    }

    let path: String
    private var offset: UInt64 = 0
    private var partial: [UInt8] = []
    private(set) var starts: [Start] = []

    init(path: String) {
        self.path = path
        _ = FileManager.default.createFile(atPath: path, contents: nil)
    }

    func poll() {
        guard let handle = FileHandle(forReadingAtPath: path) else { return }
        defer { try? handle.close() }
        try? handle.seek(toOffset: offset)
        let data = handle.readDataToEndOfFile()
        offset += UInt64(data.count)
        partial += data
        while let newline = partial.firstIndex(of: UInt8(ascii: "\n")) {
            let fields = partial[..<newline].split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) }
            partial.removeSubrange(...newline)
            if fields.count == 4, let time = Int64(fields[0]), let epoch = UInt64(fields[3]) {
                starts.append(Start(time: time, app: fields[1], node: fields[2], epoch: epoch))
            }
        }
    }
}

struct Spread {
    var perNode: [String: Int]
    var fairShare: Double
    var worstDeviation: Double { perNode.values.map { abs(Double($0) - fairShare) }.max() ?? 0 }
    var balanced: Bool { worstDeviation <= 1 }
    var text: String {
        perNode.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    }
}

func run(_ options: Options) async throws -> String {
    let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    let binDirectory = options.binDirectory ?? (me as NSString).deletingLastPathComponent
    let batond = "\(binDirectory)/batond"
    let keeper = "\(binDirectory)/baton-fence-keeper"
    for path in [batond, keeper, options.server] where !FileManager.default.isExecutableFile(atPath: path) {
        throw BenchmarkError("\(path) is missing (build batond and baton-fence-keeper next to this benchmark, or pass --bin-dir / --server)")
    }
    let work = FileManager.default.temporaryDirectory.appendingPathComponent("baton-scale-\(UUID().uuidString.prefix(8))").path
    try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    workDirectoryForStrays = work
    children.setWorkDirectory(work, remove: !options.keep)
    log("work directory \(work)")
    let loadBefore = loadAverage()
    let server = try await NATSServerProcess(path: options.server, directory: work, children: children)
    defer { server.stop() }
    log("\(server.version) at \(server.url)")

    let startLog = StartLog(path: "\(work)/starts.log")
    let appNames = (0..<options.apps).map { String(format: "app-%03d", $0) }
    var appsYAML = ""
    for app in appNames {
        appsYAML += """
              - name: \(app)
                lease: {ttl: \(Int(options.ttl.nanoseconds / 1_000_000))ms}
                backend: {process: {command: ["\(me)", "backend", "\(startLog.path)"], stop_timeout: 2s}}

            """
    }
    let nodeNames = (1...options.nodes).map { String(format: "node-%02d", $0) }
    var nodes: [String: Node] = [:]
    for name in nodeNames {
        let config = "\(work)/\(name).yaml"
        try """
            cluster: scale\(options.noBalance ? "\nplacement: {balance: false}" : "")
            node: {id: \(name), state_dir: \(work)/\(name)}
            nats: {servers: ["\(server.url)"]}
            apps:
            \(appsYAML)
            """.write(toFile: config, atomically: true, encoding: .utf8)
        nodes[name] = Node(name: name, batond: batond, config: config, keeper: keeper, logLevel: options.logLevel, logPath: "\(work)/\(name).log")
    }

    var clientOptions = NATSClientOptions(servers: [server.url])
    clientOptions.name = "scale-benchmark"
    let client = try NATSClient(options: clientOptions)
    try await client.connect()
    defer { Task { await client.close() } }
    let control = ControlClient(client: client, cluster: "scale")

    /// Every node's status; waits until `expected` nodes answered or the window ends.
    func statuses(expected: Int) async throws -> [NodeStatus] {
        try await control.statuses(window: .seconds(2)) { $0.count >= expected }.statuses
    }

    /// Active apps per running node, once every app runs on exactly one of `running` with its
    /// backend and every node answered; nil (with what is missing) otherwise.
    func settledSpread(_ running: [String]) async throws -> (Spread?, String) {
        let answers = try await statuses(expected: running.count)
        guard Set(answers.map(\.node)) == Set(running) else {
            return (nil, "answering: \(answers.count) of \(running.count)")
        }
        var activeOn: [String: [String]] = [:]
        for status in answers {
            for app in status.apps where app.role == .active && app.backendRunning { activeOn[app.name, default: []].append(status.node) }
        }
        let unsettled = appNames.filter { activeOn[$0]?.count != 1 }
        if let twice = appNames.first(where: { (activeOn[$0]?.count ?? 0) > 1 }) {
            throw BenchmarkError("\(twice) is active on \(activeOn[twice]!.joined(separator: " and ")) at once")
        }
        guard unsettled.isEmpty else { return (nil, "\(unsettled.count) apps not running on exactly one node (e.g. \(unsettled[0]))") }
        var perNode = Dictionary(uniqueKeysWithValues: running.map { ($0, 0) })
        for (_, holders) in activeOn { perNode[holders[0], default: 0] += 1 }
        return (Spread(perNode: perNode, fairShare: Double(options.apps) / Double(running.count)), "")
    }

    /// Polls the spread until every node is within one app of its fair share or `limit` passed:
    /// the last spread read (nil when never settled) and how long it took.
    func waitBalanced(_ running: [String], limit: Duration) async throws -> (Spread?, Duration) {
        let start = ContinuousClock.now
        var last: Spread?
        while true {
            let (spread, _) = try await settledSpread(running)
            if let spread { last = spread }
            if let spread, spread.balanced { return (spread, ContinuousClock.now - start) }
            if ContinuousClock.now - start >= limit { return (last, ContinuousClock.now - start) }
            try await Task.sleep(for: .seconds(2))
        }
    }

    func waitSettled(_ running: [String], timeout: Duration) async throws -> Spread {
        let deadline = ContinuousClock.now + timeout
        var last = ""
        while ContinuousClock.now < deadline {
            let (spread, missing) = try await settledSpread(running)
            if let spread { return spread }
            last = missing
            try await Task.sleep(for: .milliseconds(500))
        }
        throw BenchmarkError("the cluster did not settle within \(timeout): \(last); logs in \(work)")
    }

    // 1. Start the nodes one after another and wait until every app runs once.
    let startedAt = ContinuousClock.now
    for name in nodeNames {
        try nodes[name]!.start()
        try await Task.sleep(for: options.stagger)
    }
    let initial = try await waitSettled(nodeNames, timeout: .seconds(120) + options.ttl * 4)
    log("settled \(ContinuousClock.now - startedAt) after the first start: \(initial.text)")
    let (afterStart, startBalancing) = try await waitBalanced(nodeNames, limit: options.noBalance ? .zero : options.rebalanceWait)
    let startSpread = afterStart ?? initial
    log("spread \(startBalancing) later: \(startSpread.text)\(startSpread.balanced ? "" : " (not balanced yet)")")

    // 2. Idle: CPU and memory of each batond while nothing happens (no status requests either).
    try await Task.sleep(for: options.quiet)
    var before: [String: ProcessUsage] = [:]
    for name in nodeNames { before[name] = ProcessUsage.of(nodes[name]!.pid) }
    let idleStart = ContinuousClock.now
    try await Task.sleep(for: options.idleWindow)
    let idleSeconds = (ContinuousClock.now - idleStart).seconds
    var cpu: [String: Double] = [:]
    var rss: [String: Int64] = [:]
    var peak: [String: Int64] = [:]
    var anonymous: [String: Int64] = [:]
    var fileBacked: [String: Int64] = [:]
    var wakeups: [String: Double] = [:]
    for name in nodeNames {
        guard let first = before[name], let last = ProcessUsage.of(nodes[name]!.pid) else { throw BenchmarkError("batond \(name) exited; see \(work)/\(name).log") }
        cpu[name] = Double(last.cpuTicks - first.cpuTicks) / Double(ProcessUsage.ticksPerSecond) / idleSeconds * 100
        rss[name] = last.rssKiB
        peak[name] = last.peakRSSKiB
        anonymous[name] = last.anonymousRSSKiB
        fileBacked[name] = last.fileRSSKiB
        wakeups[name] = Double(last.contextSwitches - first.contextSwitches) / idleSeconds
    }
    let activeCount = startSpread.perNode
    log("idle CPU % per node: " + nodeNames.map { "\($0) \(String(format: "%.2f", cpu[$0]!))" }.joined(separator: ", "))

    // 3. Kill the most loaded node; every one of its apps must start elsewhere.
    struct KillResult {
        var node: String
        var apps: Int
        var latencies: [Int64]
        var missing: [String]
        var spreadAfterReturn: Spread?
        var balancing: Duration
    }
    var kills: [KillResult] = []
    var spread = startSpread
    for round in 1...max(options.kills, 1) where options.kills > 0 {
        let answers = try await statuses(expected: nodeNames.count)
        let victim = spread.perNode.max { $0.value < $1.value || ($0.value == $1.value && $0.key > $1.key) }!.key
        guard let victimStatus = answers.first(where: { $0.node == victim }) else { throw BenchmarkError("\(victim) did not answer") }
        let held = Dictionary(uniqueKeysWithValues: victimStatus.apps.filter { $0.role == .active }.map { ($0.name, $0.token ?? 0) })
        startLog.poll()
        let killed = monotonicNanoseconds()
        await nodes[victim]!.kill9()
        log("kill \(round): \(victim) with \(held.count) active apps")
        var startedElsewhere: [String: Int64] = [:]
        let deadline = ContinuousClock.now + options.ttl * 3 + .seconds(20)
        var seen = startLog.starts.count
        while startedElsewhere.count < held.count, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
            startLog.poll()
            for start in startLog.starts[seen...] where start.time >= killed && start.node != victim {
                if let token = held[start.app], start.epoch > token, startedElsewhere[start.app] == nil {
                    startedElsewhere[start.app] = start.time - killed
                }
            }
            seen = startLog.starts.count
        }
        let missing = held.keys.filter { startedElsewhere[$0] == nil }.sorted()
        let latencies = startedElsewhere.values.sorted()
        log("kill \(round): \(latencies.count) of \(held.count) apps started elsewhere, max \(milliseconds(latencies.last ?? 0)) ms")
        try await Task.sleep(for: .seconds(1))
        try nodes[victim]!.start()
        _ = try await waitSettled(nodeNames, timeout: .seconds(60) + options.ttl * 4)
        let (returned, balancing) = try await waitBalanced(nodeNames, limit: options.noBalance ? .zero : options.rebalanceWait)
        if let returned { spread = returned }
        log("kill \(round): spread \(balancing) after \(victim) returned: \(returned?.text ?? "not settled")")
        kills.append(KillResult(node: victim, apps: held.count, latencies: latencies, missing: missing, spreadAfterReturn: returned, balancing: balancing))
    }

    // Report.
    let goalMs = options.ttl.nanoseconds / 1_000_000 + 500
    let allLatencies = kills.flatMap(\.latencies).sorted()
    let cpus = nodeNames.map { cpu[$0]! }.sorted()
    let rssMB = nodeNames.map { Double(rss[$0]!) / 1024 }.sorted()
    var text = "### Scale: \(options.apps) apps on \(options.nodes) batond nodes, one nats-server (`Benchmarks/ScaleBenchmark`)\n\n"
    text += "- Command: `\(CommandLine.arguments.joined(separator: " "))`\n"
    text += "- Date: \(ISO8601DateFormatter().string(from: Date())); machine: \(machineDescription()); load before/after: \(loadBefore) / \(loadAverage())\n"
    text += "- Server: \(server.version); lease ttl \(Int(options.ttl.nanoseconds / 1_000_000)) ms (defaults for renew, fence_budget, skew); nodes started \(Int(options.stagger.nanoseconds / 1_000_000)) ms apart\n"
    #if DEBUG
    text += "- **Debug build**: numbers are not representative.\n"
    #endif
    text += "\n| node | active apps | idle CPU % of a core | context switches/s | RSS MB | of it anonymous MB | of it file-backed MB | peak RSS MB |\n|---|--:|--:|--:|--:|--:|--:|--:|\n"
    func mb(_ kib: Int64?) -> String { String(format: "%.1f", Double(kib ?? 0) / 1024) }
    for name in nodeNames {
        text += "| \(name) | \(activeCount[name] ?? 0) | \(String(format: "%.2f", cpu[name]!)) | \(Int(wakeups[name] ?? 0)) | \(mb(rss[name])) | \(mb(anonymous[name])) | \(mb(fileBacked[name])) | \(mb(peak[name])) |\n"
    }
    text += "\n| goal | measured | met |\n|---|---|---|\n"
    text += "| idle CPU per node ≤ 1 % of a core | max \(String(format: "%.2f", cpus.last ?? 0)) %, median \(String(format: "%.2f", cpus[cpus.count / 2])) % over \(Int(idleSeconds)) s | \((cpus.last ?? 0) <= 1 ? "yes" : "no") |\n"
    text += "| RSS per node ≤ 40 MB | max \(String(format: "%.1f", rssMB.last ?? 0)) MB | \((rssMB.last ?? 0) <= 40 ? "yes" : "no") |\n"
    if !kills.isEmpty {
        let worst = allLatencies.last ?? 0
        let missing = kills.reduce(0) { $0 + $1.missing.count }
        text += "| every app of a killed node running elsewhere within ttl + 500 ms (\(goalMs) ms) | \(kills.count) kills, \(allLatencies.count) apps moved: p50 \(milliseconds(percentile(allLatencies, 50))) ms, p99 \(milliseconds(percentile(allLatencies, 99))) ms, max \(milliseconds(worst)) ms\(missing > 0 ? ", \(missing) never started" : "") | \(missing == 0 && worst <= goalMs * 1_000_000 ? "yes" : "no") |\n"
    }
    func took(_ duration: Duration) -> String { "\(Int(duration.seconds.rounded())) s" }
    text += "| actives within one app of the fair share after settling | \(options.noBalance ? "balancing off (--no-balance); " : "")after the staggered start (\(startSpread.balanced ? "balanced" : "not balanced") after \(took(startBalancing))): \(startSpread.text) (worst \(String(format: "%.1f", startSpread.worstDeviation)) from \(String(format: "%.1f", startSpread.fairShare)))"
    var balanced = startSpread.balanced
    for (index, kill) in kills.enumerated() {
        if let after = kill.spreadAfterReturn {
            text += "; after kill \(index + 1) (\(kill.node), \(kill.apps) apps) and its return (\(after.balanced ? "balanced" : "not balanced") after \(took(kill.balancing))): \(after.text) (worst \(String(format: "%.1f", after.worstDeviation)))"
            balanced = balanced && after.balanced
        } else {
            text += "; after kill \(index + 1): not settled"
            balanced = false
        }
    }
    text += " | \(balanced ? "yes" : "no") |\n"
    return text
}

let options = Options.parseOrExit()
installKillers(timeLimit: options.timeLimit, doing: "killing everything this benchmark started", log: { log($0) }, abort: { children.abort() })
var status: Int32 = 0
do {
    let report = try await run(options)
    print(report)
    if let path = options.markdown { try report.write(toFile: path, atomically: true, encoding: .utf8) }
} catch {
    log("error: \(error)")
    status = 1
}
let leftovers = children.killAll()
if leftovers > 0 { log("killed \(leftovers) leftover process(es) of this run") }
if !options.keep, status == 0 { try? FileManager.default.removeItem(atPath: workDirectoryForStrays) } else if !workDirectoryForStrays.isEmpty { log("work directory kept: \(workDirectoryForStrays)") }
exit(status)
