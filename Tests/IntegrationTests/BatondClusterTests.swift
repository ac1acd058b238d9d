import Foundation
import NATS
import FaultProxy
import NATSTestSupport
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The CLOCK_MONOTONIC reading, the same clock the test backend writes into its heartbeats.
func monotonicNow() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
}

/// The test backend: writes "monotonic-ns node epoch" to a shared log every 5 ms while it runs,
/// so the log shows exactly when each epoch's backend was alive, even if it is SIGKILLed.
let heartbeatBackend = """
    import os, sys, time
    fd = os.open(os.environ["HEARTBEAT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    node, epoch = os.environ["BATON_NODE"], os.environ["BATON_EPOCH"]
    while True:
        os.write(fd, f"{time.monotonic_ns()} {node} {epoch}\\n".encode())
        time.sleep(0.005)
    """

/// Reads the heartbeat log: per epoch, the node and its first and last heartbeat.
struct Heartbeats {
    struct Run: CustomStringConvertible {
        var node: String
        var epoch: UInt64
        var first: Int64
        var last: Int64
        var description: String { "\(node)#\(epoch) [\(first)…\(last)]" }
    }

    var runs: [Run]

    init(path: String) {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        var byEpoch: [UInt64: Run] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count == 3, let time = Int64(fields[0]), let epoch = UInt64(fields[2]) else { continue }
            if var run = byEpoch[epoch] {
                run.first = min(run.first, time)
                run.last = max(run.last, time)
                byEpoch[epoch] = run
            } else {
                byEpoch[epoch] = Run(node: String(fields[1]), epoch: epoch, first: time, last: time)
            }
        }
        runs = byEpoch.values.sorted { $0.first < $1.first }
    }

    /// Backends of different epochs never ran at the same time, and epochs only grow.
    func checkSafety(sourceLocation: SourceLocation = #_sourceLocation) {
        for (earlier, later) in zip(runs, runs.dropFirst()) {
            #expect(later.epoch > earlier.epoch, "epochs must grow: \(runs)", sourceLocation: sourceLocation)
            #expect(earlier.last < later.first, "backends overlapped: \(earlier) and \(later)", sourceLocation: sourceLocation)
        }
    }
}

/// A batond process of the test cluster.
final class BatondProcess: @unchecked Sendable {
    let node: String
    let process = Process()
    let logPath: String

    init(node: String, binary: String, config: String, logPath: String, environment: [String: String]) throws {
        self.node = node
        self.logPath = logPath
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--config", config, "--log-level", "debug"]
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }

    func signal(_ signal: Int32) { kill(pid, signal) }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    func stop(grace: Duration = .seconds(10)) async {
        guard process.isRunning else { return }
        kill(pid, SIGCONT)
        kill(pid, SIGTERM)
        // Not running after `grace` is no failure here: it gets SIGKILL.
        try? await eventually("batond \(pid) exited after SIGTERM", timeout: grace, every: .milliseconds(20)) { !process.isRunning }
        if process.isRunning { kill(pid, SIGKILL) }
    }
}

@Suite("batond cluster: three processes on one NATS", .serialized)
struct BatondClusterTests {
    /// The directory holding the built executables (next to this test binary).
    private static var binDirectory: URL {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    }

    static func executable(_ name: String) throws -> String {
        var directory = binDirectory
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        try Integration.missingPrerequisite(
            MissingPrerequisite(name: name, reason: "not built next to the test binary (\(binDirectory.path))", remedy: "run `swift build` before `swift test`"))
    }

    static let defaultLease = "{ttl: 2s, renew: 500ms, fence_budget: 400ms, skew: 200ms}"

    private static func config(
        node: String, port: Int, stateDirectory: String, backend: String, heartbeatLog: String, apps: [String] = ["beat"],
        lease: String = defaultLease
    ) -> String {
        var text = """
            cluster: itest
            node: {id: \(node), state_dir: \(stateDirectory)}
            nats: {servers: ["nats://127.0.0.1:\(port)"]}
            apps:

            """
        for app in apps {
            text += """
                  - name: \(app)
                    priority: 100
                    lease: \(lease)
                    backend:
                      process:
                        command: ["/usr/bin/python3", "\(backend)"]
                        env: {HEARTBEAT_LOG: "\(heartbeatLog).\(app)"}
                        stop_timeout: 2s

                """
        }
        return text
    }

    /// Waits until one epoch other than those in `excluding` writes heartbeats, and returns it.
    private func waitForNewRun(_ path: String, excluding: Set<UInt64>, timeout: Duration) async throws -> Heartbeats.Run {
        var found: Heartbeats.Run?
        try await eventually("a new backend (heartbeats: \(Heartbeats(path: path).runs))", timeout: timeout, every: .milliseconds(20)) {
            found = Heartbeats(path: path).runs.last(where: { !excluding.contains($0.epoch) }).flatMap { monotonicNow() - $0.last < 100_000_000 ? $0 : nil }
            return found != nil
        }
        return try #require(found)
    }

    @Test(arguments: NATSServerKind.allCases)
    func killAndFreezeTheActiveNode(kind: NATSServerKind) async throws {
        let batond = try Self.executable("batond")
        let keeper = try Self.executable("baton-fence-keeper")
        let directory = try makeTemporaryDirectory(prefix: "baton-cluster")
        defer { try? FileManager.default.removeItem(at: directory) }
        let backend = directory.appendingPathComponent("beat.py").path
        try heartbeatBackend.write(toFile: backend, atomically: true, encoding: .utf8)
        let heartbeatBase = directory.appendingPathComponent("heartbeats.log").path
        let heartbeatLog = heartbeatBase + ".beat"

        try await withNATSServer(kind) { server in
            var nodes: [String: BatondProcess] = [:]
            defer {
                for node in nodes.values where node.process.isRunning { kill(node.pid, SIGKILL) }
            }
            for name in ["node-1", "node-2", "node-3"] {
                let configPath = directory.appendingPathComponent("\(name).yaml").path
                try Self.config(node: name, port: server.port, stateDirectory: directory.appendingPathComponent(name).path, backend: backend, heartbeatLog: heartbeatBase)
                    .write(toFile: configPath, atomically: true, encoding: .utf8)
                nodes[name] = try BatondProcess(
                    node: name, binary: batond, config: configPath, logPath: directory.appendingPathComponent("\(name).log").path,
                    environment: ["BATON_FENCE_KEEPER": keeper])
            }

            // Exactly one node runs the app.
            let first = try await waitForNewRun(heartbeatLog, excluding: [], timeout: .seconds(20))
            // Sampled over a window on purpose: no second run appears while the cluster settles.
            try await Task.sleep(for: .seconds(2))
            #expect(Heartbeats(path: heartbeatLog).runs.count == 1, "\(Heartbeats(path: heartbeatLog).runs)")

            // kill -9 of the active batond: its backend dies with it, another node takes over
            // within ttl + 1 s.
            let killedAt = monotonicNow()
            nodes[first.node]!.signal(SIGKILL)
            let second = try await waitForNewRun(heartbeatLog, excluding: [first.epoch], timeout: .seconds(10))
            let afterKill = Heartbeats(path: heartbeatLog)
            let firstRun = afterKill.runs.first { $0.epoch == first.epoch }!
            #expect(firstRun.last - killedAt < 1_000_000_000, "the backend outlived its batond: \(firstRun)")
            // Within ttl + 1 s.
            #expect(second.first - killedAt < 3_000_000_000, "takeover took \(Double(second.first - killedAt) / 1e9)s")
            #expect(second.node != first.node)

            // SIGSTOP of the active batond for longer than the ttl: the fence keeper kills its
            // backend before anyone else starts one.
            let frozen = nodes[second.node]!
            frozen.signal(SIGSTOP)
            let third = try await waitForNewRun(heartbeatLog, excluding: [first.epoch, second.epoch], timeout: .seconds(10))
            // Windows on purpose: the frozen node stays stopped a while, then the thawed node is
            // watched for a second (it must not start its backend again; no event says "did not").
            try await Task.sleep(for: .seconds(1))
            frozen.signal(SIGCONT)
            try await Task.sleep(for: .seconds(1))
            #expect(third.node != second.node)
            let final = Heartbeats(path: heartbeatLog)
            // The thawed node did not start its backend again.
            #expect(final.runs.filter { $0.epoch == second.epoch }.allSatisfy { $0.last < third.first })
            #expect(final.runs.count == 3, "\(final.runs)")
            final.checkSafety()

            for node in nodes.values { await node.stop() }
            Heartbeats(path: heartbeatLog).checkSafety()
        }
    }
}

extension BatondClusterTests {
    @Test(arguments: NATSServerKind.allCases)
    func reloadAddsAndRemovesAppsAndAServerRestartKeepsOneActive(kind: NATSServerKind) async throws {
        let batond = try Self.executable("batond")
        let keeper = try Self.executable("baton-fence-keeper")
        let directory = try makeTemporaryDirectory(prefix: "baton-reload")
        defer { try? FileManager.default.removeItem(at: directory) }
        let backend = directory.appendingPathComponent("beat.py").path
        try heartbeatBackend.write(toFile: backend, atomically: true, encoding: .utf8)
        let heartbeatBase = directory.appendingPathComponent("heartbeats.log").path

        try await withNATSServer(kind) { server in
            var nodes: [BatondProcess] = []
            defer {
                for node in nodes where node.process.isRunning { kill(node.pid, SIGKILL) }
            }
            func writeConfigs(apps: [String]) throws {
                for name in ["node-1", "node-2"] {
                    try Self.config(
                        node: name, port: server.port, stateDirectory: directory.appendingPathComponent(name).path, backend: backend,
                        heartbeatLog: heartbeatBase, apps: apps
                    ).write(toFile: directory.appendingPathComponent("\(name).yaml").path, atomically: true, encoding: .utf8)
                }
            }
            try writeConfigs(apps: ["beat"])
            for name in ["node-1", "node-2"] {
                nodes.append(
                    try BatondProcess(
                        node: name, binary: batond, config: directory.appendingPathComponent("\(name).yaml").path,
                        logPath: directory.appendingPathComponent("\(name).log").path, environment: ["BATON_FENCE_KEEPER": keeper]))
            }
            let beat = try await waitForNewRun(heartbeatBase + ".beat", excluding: [], timeout: .seconds(20))

            // SIGHUP with an added app: it starts somewhere; the unchanged app keeps running.
            try writeConfigs(apps: ["beat", "extra"])
            for node in nodes { node.signal(SIGHUP) }
            _ = try await waitForNewRun(heartbeatBase + ".extra", excluding: [], timeout: .seconds(10))
            #expect(Heartbeats(path: heartbeatBase + ".beat").runs.map(\.epoch) == [beat.epoch])

            // A broken config is rejected and everything keeps running.
            for name in ["node-1", "node-2"] {
                try "cluster: itest\napps: [".write(toFile: directory.appendingPathComponent("\(name).yaml").path, atomically: true, encoding: .utf8)
            }
            for node in nodes { node.signal(SIGHUP) }
            // Sampled over a window on purpose: both apps keep running after the rejected reload.
            try await Task.sleep(for: .seconds(1))
            #expect(Heartbeats(path: heartbeatBase + ".beat").runs.map(\.epoch) == [beat.epoch])
            #expect(monotonicNow() - Heartbeats(path: heartbeatBase + ".extra").runs.last!.last < 100_000_000)

            // SIGHUP without the first app: its backend stops, the other keeps running.
            try writeConfigs(apps: ["extra"])
            for node in nodes { node.signal(SIGHUP) }
            try await eventually("the removed app's backend stopped (no heartbeat for 200 ms)", timeout: .seconds(10), every: .milliseconds(20)) {
                monotonicNow() - Heartbeats(path: heartbeatBase + ".beat").runs.last!.last >= 200_000_000
            }

            // A NATS server restart never yields two active backends.
            try await server.restart()
            // Someone runs the app again (the holder may have fenced during the restart; a
            // takeover then waits a ttl after the reconnect).
            try await eventually("someone runs the app after the restart: \(Heartbeats(path: heartbeatBase + ".extra").runs)", timeout: .seconds(20)) {
                monotonicNow() - Heartbeats(path: heartbeatBase + ".extra").runs.last!.last <= 100_000_000
            }
            // Sampled over a window on purpose: still one active a second later.
            try await Task.sleep(for: .seconds(1))
            Heartbeats(path: heartbeatBase + ".extra").checkSafety()

            for node in nodes { await node.stop() }
            Heartbeats(path: heartbeatBase + ".beat").checkSafety()
            Heartbeats(path: heartbeatBase + ".extra").checkSafety()
        }
    }
}

extension BatondClusterTests {
    /// The fence keepers batond runs for `app`: its children whose command line names the app.
    private static func keepers(of batond: Int32, app: String) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")"),
                let parent = Int32(stat[stat.index(close, offsetBy: 2)...].split(separator: " ")[1]), parent == batond,
                let commandLine = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)
            else { return false }
            let arguments = commandLine.split(separator: "\0").map(String.init)
            return arguments.first?.hasSuffix("baton-fence-keeper") == true && arguments.contains(app)
        }
    }

    /// Issue 18: whatever kills the backend while its node holds the lease (here the fence
    /// keeper, and the backend with it) is a backend failure; the app never rests "active" with
    /// no backend.
    @Test
    func killingTheActiveNodesKeeperRestartsTheBackend() async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-keeper-kill")
        defer { try? FileManager.default.removeItem(at: directory) }
        let backend = directory.appendingPathComponent("beat.py").path
        try heartbeatBackend.write(toFile: backend, atomically: true, encoding: .utf8)
        let heartbeatBase = directory.appendingPathComponent("heartbeats.log").path
        let heartbeatLog = heartbeatBase + ".beat"

        try await withNATSServer(.pypi) { server in
            let nodes = try startNodes(
                ["node-1", "node-2"], server: server, directory: directory, backend: backend, heartbeatBase: heartbeatBase, lease: Self.defaultLease)
            defer {
                for node in nodes.values where node.process.isRunning { kill(node.pid, SIGKILL) }
            }
            let first = try await waitForNewRun(heartbeatLog, excluding: [], timeout: .seconds(20))
            let active = try #require(nodes[first.node])
            let keeperPIDs = Self.keepers(of: active.pid, app: "beat")
            try #require(keeperPIDs.count == 1, "keepers of the active node: \(keeperPIDs)")

            let killedAt = monotonicNow()
            kill(keeperPIDs[0], SIGKILL)
            // The backend dies with its keeper; heartbeats must resume within the restart
            // policy's backoff (1 s by default) plus a margin, on this node or another.
            try await eventually("a backend running again after the keeper was killed: \(Heartbeats(path: heartbeatLog).runs)", timeout: .seconds(8)) {
                let log = (try? String(contentsOfFile: active.logPath, encoding: .utf8)) ?? ""
                let restartedAfterExit = log.contains("backend ended while active; restarting") || log.contains("stepping down")
                guard restartedAfterExit, let latest = Heartbeats(path: heartbeatLog).runs.map(\.last).max() else { return false }
                return latest > killedAt + 300_000_000 && monotonicNow() - latest < 100_000_000
            }
            let log = (try? String(contentsOfFile: active.logPath, encoding: .utf8)) ?? ""
            #expect(log.contains("backend ended while active; restarting"), "batond's log does not say the backend is restarted")
            Heartbeats(path: heartbeatLog).checkSafety()

            for node in nodes.values { await node.stop() }
            Heartbeats(path: heartbeatLog).checkSafety()
        }
    }
}

extension BatondClusterTests {
    /// Starts `names` with the heartbeat backend under `lease`; returns them by name.
    private func startNodes(
        _ names: [String], server: NATSServerProcess, port: Int? = nil, directory: URL, backend: String, heartbeatBase: String, lease: String
    ) throws -> [String: BatondProcess] {
        let batond = try Self.executable("batond")
        let keeper = try Self.executable("baton-fence-keeper")
        var nodes: [String: BatondProcess] = [:]
        for name in names {
            let configPath = directory.appendingPathComponent("\(name).yaml").path
            try Self.config(
                node: name, port: port ?? server.port, stateDirectory: directory.appendingPathComponent(name).path, backend: backend,
                heartbeatLog: heartbeatBase, lease: lease
            ).write(toFile: configPath, atomically: true, encoding: .utf8)
            nodes[name] = try BatondProcess(
                node: name, binary: batond, config: configPath, logPath: directory.appendingPathComponent("\(name).log").path,
                environment: ["BATON_FENCE_KEEPER": keeper])
        }
        return nodes
    }

    /// A SIGHUP (`systemctl reload`, or an operator's `kill -HUP`) while batond is still starting
    /// — here NATS is not reachable yet — must not kill it: it is applied once the apps run.
    @Test
    func aSIGHUPDuringStartupIsNotFatal() async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-early-hup")
        defer { try? FileManager.default.removeItem(at: directory) }
        let port = try reserveLoopbackPort()  // nothing listens there
        let backend = directory.appendingPathComponent("beat.py").path
        try heartbeatBackend.write(toFile: backend, atomically: true, encoding: .utf8)
        let configPath = directory.appendingPathComponent("node-1.yaml").path
        try Self.config(
            node: "node-1", port: port, stateDirectory: directory.appendingPathComponent("node-1").path, backend: backend,
            heartbeatLog: directory.appendingPathComponent("heartbeats.log").path
        ).write(toFile: configPath, atomically: true, encoding: .utf8)
        let node = try BatondProcess(
            node: "node-1", binary: try Self.executable("batond"), config: configPath, logPath: directory.appendingPathComponent("node-1.log").path,
            environment: ["BATON_FENCE_KEEPER": try Self.executable("baton-fence-keeper")])
        defer { if node.process.isRunning { kill(node.pid, SIGKILL) } }
        // Wait until its NATS client failed a connection attempt: its signal handling is set up
        // by then. (Not just any mention of NATS: ServiceLifecycle's start line names the
        // client's type before the trap is set, and on a host where another batond runs with
        // this node id that line comes quickly.)
        try await eventually("batond's log saying a NATS connection attempt failed", timeout: .seconds(10)) {
            ((try? String(contentsOfFile: node.logPath, encoding: .utf8)) ?? "").contains("connection attempt failed")
        }
        node.signal(SIGHUP)
        // Sampled over a window on purpose: batond must still run a second after the SIGHUP.
        try await Task.sleep(for: .seconds(1))
        #expect(node.process.isRunning, "batond died of a SIGHUP during startup; log:\n\((try? String(contentsOfFile: node.logPath, encoding: .utf8)) ?? "")")
        await node.stop()
    }

    /// Issue 11, item 1: a passive node whose config is edited to a shorter ttl and reloaded
    /// judges the live lease by its holder's ttl, and the bucket's TTL does not shrink under it.
    /// (Before: the reload set the bucket's max_age to 2 s, the key expired between the
    /// holder's renews, and the passive node created it: two actives.)
    @Test(arguments: NATSServerKind.allCases)
    func aRollingTTLChangeNeverGivesASecondNodeTheLease(kind: NATSServerKind) async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-ttl-change")
        defer { try? FileManager.default.removeItem(at: directory) }
        let backend = directory.appendingPathComponent("beat.py").path
        try heartbeatBackend.write(toFile: backend, atomically: true, encoding: .utf8)
        let heartbeatBase = directory.appendingPathComponent("heartbeats.log").path
        let heartbeatLog = heartbeatBase + ".beat"
        let longLease = "{ttl: 10s, renew: 3s, fence_budget: 1s, skew: 200ms}"

        try await withNATSServer(kind) { server in
            var nodes = try startNodes(
                ["node-1", "node-2"], server: server, directory: directory, backend: backend, heartbeatBase: heartbeatBase, lease: longLease)
            defer {
                for node in nodes.values where node.process.isRunning { kill(node.pid, SIGKILL) }
            }
            let first = try await waitForNewRun(heartbeatLog, excluding: [], timeout: .seconds(20))
            let passiveName = first.node == "node-1" ? "node-2" : "node-1"
            let passive = try #require(nodes[passiveName])

            // The passive node's config now says ttl 2s; SIGHUP.
            try Self.config(
                node: passiveName, port: server.port, stateDirectory: directory.appendingPathComponent(passiveName).path, backend: backend,
                heartbeatLog: heartbeatBase, lease: "{ttl: 2s, renew: 500ms, fence_budget: 400ms, skew: 200ms}"
            ).write(toFile: directory.appendingPathComponent("\(passiveName).yaml").path, atomically: true, encoding: .utf8)
            passive.signal(SIGHUP)

            // Well past the holder's renew interval and the new ttl: still one run, and the
            // reloaded node says its config disagrees with the holder. (A window on purpose:
            // nothing announces that the lease did not move.)
            try await Task.sleep(for: .seconds(8))
            let runs = Heartbeats(path: heartbeatLog).runs
            #expect(runs.count == 1, "the lease moved: \(runs)")
            #expect(monotonicNow() - (runs.last?.last ?? 0) < 100_000_000, "the app stopped running: \(runs)")
            // The reload restarts the app on the passive node; on a busy machine its first look at
            // the lease may come late: poll its log (bounded).
            let expected = "config disagrees with the holder: \(first.node) holds the lease with ttl 10s"
            var log = ""
            try await eventually("the reloaded node reporting the disagreement; its log:\n\(log.suffix(3000))", timeout: .seconds(10), every: .milliseconds(100)) {
                log = (try? String(contentsOfFile: passive.logPath, encoding: .utf8)) ?? ""
                return log.contains(expected)
            }
            Heartbeats(path: heartbeatLog).checkSafety()

            for node in nodes.values { await node.stop() }
            nodes.removeAll()
            Heartbeats(path: heartbeatLog).checkSafety()
        }
    }

    /// Issue 11, item 2: NATS stalls shorter than ttl − fence budget − renew never move an app.
    /// A renew that timed out during a stall still reaches the server afterwards; the retry
    /// used to lose the compare-and-set to it and fence a healthy node.
    @Test(arguments: NATSServerKind.allCases)
    func shortNATSStallsNeverMoveAnApp(kind: NATSServerKind) async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-stall")
        defer { try? FileManager.default.removeItem(at: directory) }
        let backend = directory.appendingPathComponent("beat.py").path
        try heartbeatBackend.write(toFile: backend, atomically: true, encoding: .utf8)
        let heartbeatBase = directory.appendingPathComponent("heartbeats.log").path
        let heartbeatLog = heartbeatBase + ".beat"

        try await withNATSServer(kind) { server in
            // Every node reaches NATS through one proxy that stalls all connections at once, as
            // a stopped server would.
            let proxy = try await StallProxy.start(targetPort: server.port)
            defer { Task { await proxy.close() } }
            var nodes = try startNodes(
                ["node-1", "node-2"], server: server, port: proxy.port, directory: directory, backend: backend, heartbeatBase: heartbeatBase,
                lease: "{ttl: 3s, renew: 750ms, fence_budget: 600ms, skew: 100ms}")
            defer {
                for node in nodes.values where node.process.isRunning { kill(node.pid, SIGKILL) }
            }
            let first = try await waitForNewRun(heartbeatLog, excluding: [], timeout: .seconds(20))
            let active = try #require(nodes[first.node])
            // Five stalls of 1.2 s, each started at a different point of the renew cycle (the
            // sleeps shape the stalls; the check after them samples a window on purpose).
            for stall in 0..<5 {
                try await Task.sleep(for: .milliseconds(1000 + 170 * stall))
                try await proxy.stall()
                try await Task.sleep(for: .milliseconds(1200))
                try await proxy.resume()
            }
            try await Task.sleep(for: .seconds(2))
            let runs = Heartbeats(path: heartbeatLog).runs
            let log = (try? String(contentsOfFile: active.logPath, encoding: .utf8)) ?? ""
            #expect(runs.count == 1, "a stall moved the app: \(runs)")
            #expect(!log.contains("fenced"), "the active node fenced during a stall")
            #expect(monotonicNow() - (runs.last?.last ?? 0) < 100_000_000, "the app stopped running: \(runs)")
            print("[measure] renews recognised as the node's own write after a stall: \(log.components(separatedBy: "a renew that timed out had reached NATS").count - 1)")
            Heartbeats(path: heartbeatLog).checkSafety()

            for node in nodes.values { await node.stop() }
            nodes.removeAll()
            Heartbeats(path: heartbeatLog).checkSafety()
        }
    }
}

/// A backend that beats a few times, then exits with status 1 (to spend the restart budget).
private let crashingBackend = """
    import os, sys, time
    fd = os.open(os.environ["HEARTBEAT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for _ in range(3):
        os.write(fd, f"{time.monotonic_ns()} {os.environ['BATON_NODE']} {os.environ['BATON_EPOCH']}\\n".encode())
        time.sleep(0.01)
    sys.exit(1)
    """

/// A backend whose HTTP health endpoint answers 200 for a second, then 500.
private let sickeningBackend = """
    import http.server, os, threading, time
    port = int(os.environ["HEALTH_PORT"])
    started = time.monotonic()
    fd = os.open(os.environ["HEARTBEAT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    def beat():
        while True:
            os.write(fd, f"{time.monotonic_ns()} {os.environ['BATON_NODE']} {os.environ['BATON_EPOCH']}\\n".encode())
            time.sleep(0.005)
    threading.Thread(target=beat, daemon=True).start()
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if time.monotonic() - started < 1.0 else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """

extension BatondClusterTests {
    private static func singleAppConfig(node: String, port: Int, directory: URL, app: String) -> String {
        """
        cluster: itest
        node: {id: \(node), state_dir: \(directory.appendingPathComponent(node).path)}
        nats: {servers: ["nats://127.0.0.1:\(port)"]}
        apps:
        \(app)
        """
    }

    /// Starts two batond nodes running `app` (YAML of one list item, indented two spaces).
    private func withTwoNodes(
        _ kind: NATSServerKind, prefix: String, app: (URL) -> String, _ body: (URL, [String: BatondProcess]) async throws -> Void
    ) async throws {
        let batond = try Self.executable("batond")
        let keeper = try Self.executable("baton-fence-keeper")
        let directory = try makeTemporaryDirectory(prefix: prefix)
        defer { try? FileManager.default.removeItem(at: directory) }
        try await withNATSServer(kind) { server in
            var nodes: [String: BatondProcess] = [:]
            defer {
                for node in nodes.values where node.process.isRunning { kill(node.pid, SIGKILL) }
            }
            for name in ["node-1", "node-2"] {
                let configPath = directory.appendingPathComponent("\(name).yaml").path
                try Self.singleAppConfig(node: name, port: server.port, directory: directory, app: app(directory))
                    .write(toFile: configPath, atomically: true, encoding: .utf8)
                nodes[name] = try BatondProcess(
                    node: name, binary: batond, config: configPath, logPath: directory.appendingPathComponent("\(name).log").path,
                    environment: ["BATON_FENCE_KEEPER": keeper])
            }
            try await body(directory, nodes)
            for node in nodes.values { await node.stop() }
        }
    }

    /// Waits until heartbeats from at least `count` different nodes were written.
    private func waitForNodes(_ path: String, count: Int, timeout: Duration) async throws -> Heartbeats {
        var heartbeats = Heartbeats(path: path)
        try await eventually("\(count) nodes running the backend: \(heartbeats.runs)", timeout: timeout) {
            heartbeats = Heartbeats(path: path)
            return Set(heartbeats.runs.map(\.node)).count >= count
        }
        return heartbeats
    }

    @Test(arguments: NATSServerKind.allCases)
    func aSpentRestartBudgetHandsTheAppToAnotherNode(kind: NATSServerKind) async throws {
        try await withTwoNodes(kind, prefix: "baton-crashy", app: { directory in
            let script = directory.appendingPathComponent("crash.py").path
            try? crashingBackend.write(toFile: script, atomically: true, encoding: .utf8)
            return """
                  - name: crashy
                    lease: {ttl: 2s, renew: 500ms, fence_budget: 400ms, skew: 200ms}
                    backend:
                      process:
                        command: ["/usr/bin/python3", "\(script)"]
                        env: {HEARTBEAT_LOG: "\(directory.appendingPathComponent("beats").path)"}
                        restart: {max_restarts: 1, window: 60s, backoff: 100ms}
                """
        }) { directory, _ in
            let heartbeats = try await waitForNodes(directory.appendingPathComponent("beats").path, count: 2, timeout: .seconds(20))
            // The first node restarted its backend once under the same epoch, then gave the app up.
            let first = heartbeats.runs[0]
            let second = heartbeats.runs.first { $0.node != first.node }!
            #expect(second.epoch > first.epoch)
            heartbeats.checkSafety()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func aFailingHealthCheckHandsTheAppToAnotherNode(kind: NATSServerKind) async throws {
        let healthPort = try reserveLoopbackPort()
        try await withTwoNodes(kind, prefix: "baton-sick", app: { directory in
            let script = directory.appendingPathComponent("sick.py").path
            try? sickeningBackend.write(toFile: script, atomically: true, encoding: .utf8)
            return """
                  - name: sick
                    lease: {ttl: 2s, renew: 500ms, fence_budget: 400ms, skew: 200ms}
                    backend:
                      process:
                        command: ["/usr/bin/python3", "\(script)"]
                        env: {HEARTBEAT_LOG: "\(directory.appendingPathComponent("beats").path)", HEALTH_PORT: "\(healthPort)"}
                        stop_timeout: 2s
                    health: {http: "http://127.0.0.1:\(healthPort)/", interval: 200ms, timeout: 150ms, failures: 2}
                """
        }) { directory, _ in
            let heartbeats = try await waitForNodes(directory.appendingPathComponent("beats").path, count: 2, timeout: .seconds(20))
            heartbeats.checkSafety()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func sigtermReleasesTheLeaseSoAStandbyTakesOverAtOnce(kind: NATSServerKind) async throws {
        try await withTwoNodes(kind, prefix: "baton-sigterm", app: { directory in
            let script = directory.appendingPathComponent("beat.py").path
            try? heartbeatBackend.write(toFile: script, atomically: true, encoding: .utf8)
            return """
                  - name: steady
                    lease: {ttl: 5s}
                    backend:
                      process:
                        command: ["/usr/bin/python3", "\(script)"]
                        env: {HEARTBEAT_LOG: "\(directory.appendingPathComponent("beats").path)"}
                        stop_timeout: 2s
                """
        }) { directory, nodes in
            let beats = directory.appendingPathComponent("beats").path
            let first = try await waitForNewRun(beats, excluding: [], timeout: .seconds(20))
            let stoppedAt = monotonicNow()
            nodes[first.node]!.signal(SIGTERM)
            let second = try await waitForNewRun(beats, excluding: [first.epoch], timeout: .seconds(10))
            // Well within the 5 s ttl: the lease was released, not left to expire.
            #expect(second.first - stoppedAt < 2_000_000_000, "takeover after SIGTERM took \(Double(second.first - stoppedAt) / 1e9)s")
            #expect(second.node != first.node)
            Heartbeats(path: beats).checkSafety()
        }
    }
}

struct ClusterTestFailure: Error, CustomStringConvertible {
    var description: String
}

extension BatondClusterTests {
    /// Issue 11, item 6: fencing tokens never go backwards, and only a release frees the lease.
    /// The lease bucket's stream is deleted under a running two-node cluster (revisions would
    /// restart at 1): the app regains exactly one active and every later `BATON_EPOCH` is above
    /// every earlier one. Then a third party deletes the key (`nats kv del`, no release note)
    /// while the holder is SIGSTOPped: the other node does not start the app before the
    /// holder's last write + ttl + skew (before: at once, while the frozen holder's backend
    /// could still run).
    @Test(arguments: NATSServerKind.allCases)
    func aDeletedBucketOrAForeignDeleteNeverRewindsTheEpochOrFreesTheLeaseEarly(kind: NATSServerKind) async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-floor")
        defer { try? FileManager.default.removeItem(at: directory) }
        let backend = directory.appendingPathComponent("beat.py").path
        try heartbeatBackend.write(toFile: backend, atomically: true, encoding: .utf8)
        let heartbeatBase = directory.appendingPathComponent("heartbeats.log").path
        let heartbeatLog = heartbeatBase + ".beat"
        let ttlPlusSkew: Int64 = 2_200_000_000  // defaultLease: ttl 2s, skew 200ms

        try await withNATSServer(kind) { server in
            var nodes = try startNodes(
                ["node-1", "node-2"], server: server, directory: directory, backend: backend, heartbeatBase: heartbeatBase, lease: Self.defaultLease)
            defer {
                for node in nodes.values where node.process.isRunning { kill(node.pid, SIGKILL) }
            }
            let client = try await NATSClient.connect(options: NATSClientOptions(servers: ["nats://127.0.0.1:\(server.port)"]))
            let jetStream = JetStream(client: client)
            let bucket = "baton_itest_beat"

            let first = try await waitForNewRun(heartbeatLog, excluding: [], timeout: .seconds(20))
            // Let the renews push the revisions well above the first token (three renews).
            var revision: UInt64 = 0
            try await eventually("the lease's revision above \(first.epoch + 2) (it is \(revision))", timeout: .seconds(10), retryingErrors: true) {
                revision = try await jetStream.keyValue(bucket).entry("leader")?.revision ?? 0
                return revision > first.epoch + 2
            }

            // 1. The bucket's stream is deleted under the running cluster.
            try await jetStream.deleteStream("KV_\(bucket)")
            let second = try await waitForNewRun(heartbeatLog, excluding: [first.epoch], timeout: .seconds(20))
            #expect(second.epoch > first.epoch, "the epoch went backwards after the bucket was deleted: \(first) then \(second)")
            // Sampled over a window on purpose: still one active three seconds later.
            try await Task.sleep(for: .seconds(3))
            var runs = Heartbeats(path: heartbeatLog).runs
            #expect(runs.count == 2, "one active after the bucket came back: \(runs)")
            #expect(monotonicNow() - (runs.last?.last ?? 0) < 100_000_000, "the app is not running: \(runs)")
            Heartbeats(path: heartbeatLog).checkSafety()

            // 2. A third party deletes the key while the holder is frozen.
            let holder = try #require(nodes[second.node])
            holder.signal(SIGSTOP)
            let kv = try await jetStream.keyValue(bucket)
            let lastWrite = try #require(try await kv.entry("leader"))
            #expect(lastWrite.operation == .put)
            let lastWriteAt = monotonicNow() - Int64(Date().timeIntervalSince(lastWrite.created) * 1e9)
            try await kv.delete("leader")
            let third = try await waitForNewRun(heartbeatLog, excluding: [first.epoch, second.epoch], timeout: .seconds(15))
            holder.signal(SIGCONT)
            #expect(third.node != second.node)
            #expect(third.epoch > second.epoch)
            // The frozen holder's last write + ttl + skew (100 ms for the clocks' readings).
            #expect(
                third.first - lastWriteAt >= ttlPlusSkew - 100_000_000,
                "took over \(Double(third.first - lastWriteAt) / 1e9)s after the holder's last write, before its ttl + skew")
            // Sampled over a window on purpose: the thawed holder starts no fourth run.
            try await Task.sleep(for: .seconds(3))
            runs = Heartbeats(path: heartbeatLog).runs
            #expect(runs.count == 3, "\(runs)")
            Heartbeats(path: heartbeatLog).checkSafety()
            let passive = try #require(nodes[second.node == "node-1" ? "node-2" : "node-1"])
            let passiveLog = (try? String(contentsOfFile: passive.logPath, encoding: .utf8)) ?? ""
            #expect(passiveLog.contains("vanished without a release"), "the passive node did not say why it waited")

            for node in nodes.values { await node.stop() }
            nodes.removeAll()
            await client.close()
            Heartbeats(path: heartbeatLog).checkSafety()
        }
    }
}
