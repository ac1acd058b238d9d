import Foundation
import NATS
import NATSTestSupport
import SystemdTestSupport
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 15 items 3 and 4 with real batond processes on a real nats-server: `batonctl nodes`,
/// `batonctl pause --for`, and hooks.
@Suite("batond cluster: nodes, expiring pauses, hooks", .serialized)
struct MaintenanceClusterTests {
    /// A running cluster of batond processes, each with its own config.
    final class Cluster: @unchecked Sendable {
        let directory: URL
        let port: Int
        var nodes: [String: BatondProcess] = [:]
        let batonctl: String

        init(directory: URL, port: Int) throws {
            self.directory = directory
            self.port = port
            self.batonctl = try BatondClusterTests.executable("batonctl")
        }

        var beats: String { directory.appendingPathComponent("beats").path }
        var markers: String { directory.appendingPathComponent("markers").path }

        /// Starts `node` with `apps` (YAML list items, indented two spaces) and `labels`.
        func start(_ node: String, apps: String, labels: String = "{}") throws {
            let configPath = directory.appendingPathComponent("\(node).yaml").path
            let config = """
                cluster: itest
                node: {id: \(node), labels: \(labels), state_dir: \(directory.appendingPathComponent(node).path)}
                nats: {servers: ["nats://127.0.0.1:\(port)"]}
                apps:
                \(apps)
                """
            try config.write(toFile: configPath, atomically: true, encoding: .utf8)
            nodes[node] = try BatondProcess(
                node: node, binary: try BatondClusterTests.executable("batond"), config: configPath,
                logPath: directory.appendingPathComponent("\(node).log").path,
                environment: ["BATON_FENCE_KEEPER": try BatondClusterTests.executable("baton-fence-keeper")])
        }

        func batonctl(_ arguments: [String]) async throws -> (status: Int32, output: String) {
            let result = try await runOnThread(batonctl, arguments + ["--nats", "nats://127.0.0.1:\(port)", "--cluster", "itest"])
            return (result.status, result.output)
        }

        /// `batonctl status --json`, decoded.
        func statuses() async throws -> [[String: Any]] {
            let result = try await batonctl(["status", "--json"])
            guard result.status == 0, let list = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [[String: Any]] else { return [] }
            return list
        }

        /// The marker lines the hooks wrote, in order.
        var markerLines: [String] {
            ((try? String(contentsOfFile: markers, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }

        func logTails(lines: Int = 30) -> String {
            nodes.keys.sorted().map { node in
                let text = (try? String(contentsOfFile: nodes[node]!.logPath, encoding: .utf8)) ?? ""
                return "--- \(node):\n" + text.split(separator: "\n").suffix(lines).joined(separator: "\n")
            }.joined(separator: "\n")
        }

        func killAll() {
            for node in nodes.values where node.process.isRunning { kill(node.pid, SIGKILL) }
        }
    }

    static func withCluster(_ kind: NATSServerKind, prefix: String, _ body: (Cluster) async throws -> Void) async throws {
        let directory = try makeTemporaryDirectory(prefix: prefix)
        defer { try? FileManager.default.removeItem(at: directory) }
        try heartbeatBackend.write(toFile: directory.appendingPathComponent("beat.py").path, atomically: true, encoding: .utf8)
        try await withNATSServer(kind) { server in
            let cluster = try Cluster(directory: directory, port: server.port)
            defer { cluster.killAll() }
            try await body(cluster)
            for node in cluster.nodes.values { await node.stop() }
        }
    }

    /// One app item running the heartbeat backend, with `extra` lines (indented four spaces).
    static func app(_ cluster: Cluster, name: String = "beat", priority: Int = 100, ttl: String = "2s", extra: String = "") -> String {
        """
          - name: \(name)
            priority: \(priority)
            lease: {ttl: \(ttl), renew: 500ms, fence_budget: 400ms, skew: 200ms}
            backend:
              process:
                command: ["/usr/bin/python3", "\(cluster.directory.appendingPathComponent("beat.py").path)"]
                env: {HEARTBEAT_LOG: "\(cluster.beats)", MARK: "from-env"}
                stop_timeout: 2s
        \(extra)
        """
    }

    /// A hook that appends `tag node hook role epoch app MARK` to the markers file, then exits
    /// with `status`.
    static func markerHook(_ cluster: Cluster, tag: String, status: Int = 0, timeout: String = "5s") -> String {
        let script = "echo \"\(tag) $BATON_NODE $BATON_HOOK $BATON_ROLE $BATON_EPOCH $BATON_APP $MARK\" >> \(cluster.markers); exit \(status)"
        return "{command: [\"/bin/sh\", \"-c\", \(jsonQuoted(script))], timeout: \(timeout)}"
    }

    static func jsonQuoted(_ text: String) -> String {
        String(decoding: try! JSONEncoder().encode(text), as: UTF8.self)
    }

    // MARK: - Hooks

    /// Every hook point runs in order with the app's environment and the role and epoch, on a
    /// switchover: node-1 activates, hands over to node-2 (before_passive, after_passive on
    /// node-1; before_active, after_active on node-2).
    @Test(arguments: NATSServerKind.allCases)
    func hooksRunInOrderWithTheirEnvironmentOnASwitchover(kind: NATSServerKind) async throws {
        try await Self.withCluster(kind, prefix: "baton-hooks") { cluster in
            let hooks = """
                    hooks:
                      before_active: [\(Self.markerHook(cluster, tag: "ba1")), \(Self.markerHook(cluster, tag: "ba2"))]
                      after_active: [\(Self.markerHook(cluster, tag: "aa"))]
                      before_passive: [\(Self.markerHook(cluster, tag: "bp"))]
                      after_passive: [\(Self.markerHook(cluster, tag: "ap"))]
                      on_fence: [\(Self.markerHook(cluster, tag: "of"))]
                """
            try cluster.start("node-1", apps: Self.app(cluster, extra: hooks))
            try await eventually("node-1 active with its after_active hook run (markers: \(cluster.markerLines))", timeout: .seconds(20)) {
                cluster.markerLines.contains { $0.hasPrefix("aa node-1") }
            }
            try cluster.start("node-2", apps: Self.app(cluster, priority: 50, extra: hooks))
            try await eventually("node-2 answering status", timeout: .seconds(20), every: .milliseconds(200)) {
                try await cluster.statuses().count == 2
            }
            let switched = try await cluster.batonctl(["switchover", "beat", "--to", "node-2"])
            #expect(switched.status == 0, "\(switched.output)")
            try await eventually("after_active on node-2 (markers: \(cluster.markerLines))", timeout: .seconds(20)) {
                cluster.markerLines.contains { $0.hasPrefix("aa node-2") }
            }
            try await eventually("after_passive on node-1 (markers: \(cluster.markerLines))", timeout: .seconds(10)) {
                cluster.markerLines.contains { $0.hasPrefix("ap node-1") }
            }
            let lines = cluster.markerLines
            let first = try #require(lines.first?.split(separator: " ")[4]).description
            let second = try #require(lines.first { $0.contains(" node-2 ") }?.split(separator: " ")[4]).description
            #expect(
                lines == [
                    "ba1 node-1 before_active active \(first) beat from-env",
                    "ba2 node-1 before_active active \(first) beat from-env",
                    "aa node-1 after_active active \(first) beat from-env",
                    "bp node-1 before_passive passive \(first) beat from-env",
                    "ap node-1 after_passive passive \(first) beat from-env",
                    "ba1 node-2 before_active active \(second) beat from-env",
                    "ba2 node-2 before_active active \(second) beat from-env",
                    "aa node-2 after_active active \(second) beat from-env",
                ] || lines == [
                    // after_passive on node-1 and node-2's promotion run on different hosts: either order.
                    "ba1 node-1 before_active active \(first) beat from-env",
                    "ba2 node-1 before_active active \(first) beat from-env",
                    "aa node-1 after_active active \(first) beat from-env",
                    "bp node-1 before_passive passive \(first) beat from-env",
                    "ba1 node-2 before_active active \(second) beat from-env",
                    "ap node-1 after_passive passive \(first) beat from-env",
                    "ba2 node-2 before_active active \(second) beat from-env",
                    "aa node-2 after_active active \(second) beat from-env",
                ] || (lines.count == 8 && Set(lines).count == 8 && lines.filter { $0.contains("node-2") }.map { $0.prefix(3) } == ["ba1", "ba2", "aa "]
                    && lines.filter { $0.contains("node-1") }.map { $0.prefix(3) } == ["ba1", "ba2", "aa ", "bp ", "ap "]),
                "\(lines)")
            #expect(UInt64(second)! > UInt64(first)!)
            // The status shows the last hooks of each node.
            let statuses = try await cluster.statuses()
            let hooksByNode = Dictionary(uniqueKeysWithValues: statuses.compactMap { status -> (String, String)? in
                guard let node = status["node"] as? String, let app = (status["apps"] as? [[String: Any]])?.first, let hook = app["last_hook"] as? String
                else { return nil }
                return (node, hook)
            })
            #expect(hooksByNode["node-1"] == "after_passive hooks: 1 of 1 ran, ok", "\(hooksByNode)")
            #expect(hooksByNode["node-2"] == "after_active hooks: 1 of 1 ran, ok", "\(hooksByNode)")
            Heartbeats(path: cluster.beats).checkSafety()
        }
    }

    /// A failing before_active on node-1 aborts its promotion (no backend there), and the app
    /// goes to node-2; the failure is in node-1's status and the event history.
    @Test(arguments: NATSServerKind.allCases)
    func aFailingBeforeActiveHandsTheAppToTheOtherNode(kind: NATSServerKind) async throws {
        try await Self.withCluster(kind, prefix: "baton-hooks-fail") { cluster in
            let failing = "    hooks: {before_active: [\(Self.markerHook(cluster, tag: "no", status: 3))]}"
            let passing = "    hooks: {before_active: [\(Self.markerHook(cluster, tag: "ok"))]}"
            try cluster.start("node-1", apps: Self.app(cluster, extra: failing))
            try await eventually("node-1's failing hook ran (markers: \(cluster.markerLines))", timeout: .seconds(20)) {
                cluster.markerLines.contains { $0.hasPrefix("no node-1") }
            }
            try cluster.start("node-2", apps: Self.app(cluster, priority: 50, extra: passing))
            try await eventually("the backend running on node-2 (\(Heartbeats(path: cluster.beats).runs))", timeout: .seconds(30)) {
                Heartbeats(path: cluster.beats).runs.contains { $0.node == "node-2" }
            }
            let runs = Heartbeats(path: cluster.beats).runs
            #expect(!runs.contains { $0.node == "node-1" }, "node-1 started its backend despite its failing before_active hook: \(runs)")
            #expect(cluster.markerLines.contains { $0.hasPrefix("ok node-2 before_active active") })
            let statuses = try await cluster.statuses()
            let node1 = try #require(statuses.first { $0["node"] as? String == "node-1" }?["apps"] as? [[String: Any]]).first
            let lastHook = node1?["last_hook"] as? String ?? ""
            #expect(lastHook.contains("before_active hook 1 (/bin/sh): exited with status 3"), "\(lastHook)")
            let events = try await cluster.batonctl(["events", "beat", "--json"])
            #expect(events.output.contains("hook failed"), "no hook failure in the event history: \(events.output)")
            #expect(events.output.contains("promotion step beforeActive failed"), "\(events.output)")
        }
    }

    /// An on_fence hook that hangs is killed with its process group at its timeout, and the
    /// fence itself (backend killed) did not wait for it; the next on_fence hook then runs.
    @Test(arguments: NATSServerKind.allCases)
    func aHangingHookIsKilledAtItsTimeoutAndNeverDelaysTheFence(kind: NATSServerKind) async throws {
        try await Self.withCluster(kind, prefix: "baton-hooks-hang") { cluster in
            let pids = cluster.directory.appendingPathComponent("hook.pids").path
            let hang = "echo $$ >> \(pids); echo \"hanging in epoch $BATON_EPOCH\" >&2; sleep 60 & echo $! >> \(pids); wait"
            let hooks = """
                    hooks:
                      on_fence:
                        - {command: ["/bin/sh", "-c", \(Self.jsonQuoted(hang))], timeout: 2s}
                        - \(Self.markerHook(cluster, tag: "of2"))
                """
            try cluster.start("node-1", apps: Self.app(cluster, extra: hooks))
            let first = try await BatondClusterTestsAccess.waitForRun(cluster.beats, timeout: .seconds(20))
            // A foreign delete of the lease key: node-1's next renew loses its compare-and-set
            // and it fences at once.
            let client = try await NATSClient.connect(options: NATSClientOptions(servers: ["nats://127.0.0.1:\(cluster.port)"]))
            let kv = try await JetStream(client: client).keyValue("baton_itest_beat")
            let deletedAt = monotonicNow()
            try await kv.delete("leader")
            await client.close()
            try await eventually("the hanging on_fence hook started", timeout: .seconds(10)) {
                ((try? String(contentsOfFile: pids, encoding: .utf8)) ?? "").split(separator: "\n").count == 2
            }
            let beats = Heartbeats(path: cluster.beats).runs
            let fencedRun = try #require(beats.first { $0.epoch == first.epoch })
            // Fenced within a renew interval plus the kill, while the hook was still hanging.
            #expect(fencedRun.last - deletedAt < 1_500_000_000, "the backend ran \(Double(fencedRun.last - deletedAt) / 1e9)s after the delete")
            let hookPIDs = ((try? String(contentsOfFile: pids, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int32($0) }
            #expect(hookPIDs.count == 2)
            try await eventually("the next on_fence hook ran after the hanging one was killed (markers: \(cluster.markerLines))", timeout: .seconds(10)) {
                cluster.markerLines.contains { $0.hasPrefix("of2 node-1 on_fence fenced \(first.epoch) beat") }
            }
            #expect(monotonicNow() - deletedAt >= 2_000_000_000, "the hanging hook was not given its 2s")
            for pid in hookPIDs {
                // Gone, or a zombie waiting for a reaper (this container's PID 1 may not reap
                // orphans): either way it no longer runs.
                let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
                let state = stat.split(separator: ")").last?.split(separator: " ").first ?? ""
                #expect(stat.isEmpty || state == "Z", "hook process \(pid) (or its child) survived its timeout: \(stat)")
            }
            let log = (try? String(contentsOfFile: cluster.nodes["node-1"]!.logPath, encoding: .utf8)) ?? ""
            #expect(log.contains("did not finish within its timeout of 2s; killed with its process group"), "\(cluster.logTails())")
            // What the hook wrote before it was killed is in the log, with its fields.
            #expect(
                log.split(separator: "\n").contains { $0.contains("hanging in epoch \(first.epoch)") && $0.contains("hook=on_fence[1]") && $0.contains("stream=hook-output") },
                "\(cluster.logTails())")
        }
    }

    // MARK: - Expiring pause

    /// `batonctl pause --for 3s`: every node shows when it ends, it ends by itself, and then a
    /// kill of the active node fails over.
    @Test(arguments: NATSServerKind.allCases)
    func aPauseWithAnEndEndsByItselfAndFailoverWorksAgain(kind: NATSServerKind) async throws {
        try await Self.withCluster(kind, prefix: "baton-pause-for") { cluster in
            try cluster.start("node-1", apps: Self.app(cluster))
            let first = try await BatondClusterTestsAccess.waitForRun(cluster.beats, timeout: .seconds(20))
            try cluster.start("node-2", apps: Self.app(cluster, priority: 50))
            try await eventually("both nodes answering status", timeout: .seconds(20), every: .milliseconds(200)) {
                try await cluster.statuses().count == 2
            }
            let paused = try await cluster.batonctl(["pause", "beat", "--for", "3s"])
            #expect(paused.status == 0, "\(paused.output)")
            #expect(paused.output.contains("paused on node-1 for 3s (until "), "\(paused.output)")
            let apps = try await cluster.statuses().compactMap { ($0["apps"] as? [[String: Any]])?.first }
            #expect(apps.count == 2)
            #expect(apps.allSatisfy { $0["paused"] as? Bool == true && ($0["paused_until"] as? String)?.hasSuffix("Z") == true }, "\(apps)")
            let table = try await cluster.batonctl(["status"])
            #expect(table.output.contains("until 20"), "\(table.output)")
            try await eventually("the pause ended on both nodes", timeout: .seconds(10), every: .milliseconds(200)) {
                let apps = try await cluster.statuses().compactMap { ($0["apps"] as? [[String: Any]])?.first }
                return apps.count == 2 && apps.allSatisfy { $0["paused"] as? Bool == false && $0["paused_until"] == nil }
            }
            cluster.nodes[first.node]!.signal(SIGKILL)
            try await eventually("node-2 took over after the active node was killed (\(Heartbeats(path: cluster.beats).runs))", timeout: .seconds(15)) {
                Heartbeats(path: cluster.beats).runs.contains { $0.node == "node-2" && $0.epoch > first.epoch }
            }
            Heartbeats(path: cluster.beats).checkSafety()
            // Bad durations are refused by batonctl before anything is sent.
            let bad = try await cluster.batonctl(["pause", "beat", "--for", "soon"])
            #expect(bad.status != 0)
        }
    }

    // MARK: - batonctl nodes

    /// Three nodes with labels: all up with their apps; then one stopped gracefully and one
    /// killed are still listed, as stopped and unresponsive.
    @Test(arguments: NATSServerKind.allCases)
    func nodesListsEveryNodeIncludingStoppedAndUnresponsiveOnes(kind: NATSServerKind) async throws {
        try await Self.withCluster(kind, prefix: "baton-nodes") { cluster in
            try cluster.start("node-1", apps: Self.app(cluster), labels: "{zone: a, disk: ssd}")
            _ = try await BatondClusterTestsAccess.waitForRun(cluster.beats, timeout: .seconds(20))
            try cluster.start("node-2", apps: Self.app(cluster, priority: 50), labels: "{zone: b}")
            try cluster.start("node-3", apps: Self.app(cluster, priority: 50))
            var nodes: [[String: Any]] = []
            try await eventually("three nodes up in batonctl nodes (last: \(nodes))", timeout: .seconds(20), every: .milliseconds(200)) {
                let result = try await cluster.batonctl(["nodes", "--json"])
                nodes = (try? JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [[String: Any]]) ?? []
                return nodes.filter { $0["state"] as? String == "up" }.count == 3
            }
            #expect(nodes.map { $0["node"] as? String } == ["node-1", "node-2", "node-3"])
            #expect(nodes[0]["labels"] as? [String: String] == ["zone": "a", "disk": "ssd"])
            #expect(nodes[0]["active_apps"] as? [String] == ["beat"])
            #expect(nodes[1]["active_apps"] as? [String] == [])
            #expect(nodes[1]["labels"] as? [String: String] == ["zone": "b"])
            #expect(nodes.allSatisfy { ($0["version"] as? String)?.isEmpty == false && $0["uptime_seconds"] is NSNumber })

            await cluster.nodes["node-3"]!.stop()
            cluster.nodes["node-2"]!.signal(SIGKILL)
            try await eventually("node-3 stopped and node-2 unresponsive (last: \(nodes))", timeout: .seconds(20), every: .milliseconds(200)) {
                let result = try await cluster.batonctl(["nodes", "--json"])
                nodes = (try? JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [[String: Any]]) ?? []
                return nodes.map { $0["state"] as? String } == ["up", "unresponsive", "stopped"]
            }
            #expect((nodes[2]["detail"] as? String)?.hasPrefix("batond stopped at ") == true, "\(nodes[2])")
            #expect(nodes[2]["last_seen"] is String)
            #expect(nodes[1]["labels"] as? [String: String] == ["zone": "b"])
            let table = try await cluster.batonctl(["nodes"])
            #expect(table.status == 0)
            let lines = table.output.split(separator: "\n").map(String.init)
            #expect(lines.first == "cluster itest: 3 nodes, 1 up", "\(table.output)")
            #expect(lines.count > 1 && lines[1].hasPrefix("NODE") && lines[1].contains("LABELS") && lines[1].contains("LAST SEEN"), "\(table.output)")
            #expect(lines.contains { $0.hasPrefix("node-1") && $0.contains("disk=ssd,zone=a") && $0.contains("beat") }, "\(table.output)")
            #expect(lines.contains { $0.hasPrefix("node-3") && $0.contains("stopped") }, "\(table.output)")
        }
    }
}

/// Waits for the first backend run of a heartbeat log.
enum BatondClusterTestsAccess {
    static func waitForRun(_ path: String, timeout: Duration) async throws -> Heartbeats.Run {
        var runs: [Heartbeats.Run] = []
        try await eventually("a backend running (runs: \(runs))", timeout: timeout) {
            runs = Heartbeats(path: path).runs
            return runs.last.map { monotonicNow() - $0.last < 100_000_000 } ?? false
        }
        return runs.last!
    }
}
