import BatonCore
import Foundation
import NATSTestSupport
import SystemdTestSupport
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Placement with real batond processes: constraints keep an app on the only node that meets
/// them, and balancing spreads apps over nodes that start one after another.
@Suite("batond placement: constraints and balancing", .serialized)
struct PlacementClusterTests {
    static let lease = "{ttl: 2s, renew: 500ms, fence_budget: 400ms, skew: 200ms}"

    /// A config of `node` (labels `zone: <zone>`) with `apps` (name and extra YAML lines).
    static func config(node: String, zone: String, port: Int, directory: URL, backend: String, apps: [(name: String, extra: String)]) -> String {
        var text = """
            cluster: place
            node: {id: \(node), labels: {zone: \(zone)}, state_dir: \(directory.appendingPathComponent(node).path)}
            nats: {servers: ["nats://127.0.0.1:\(port)"]}
            apps:

            """
        for app in apps {
            text += """
                  - name: \(app.name)
                    lease: \(lease)
                    backend:
                      process:
                        command: ["/usr/bin/python3", "\(backend)"]
                        env: {HEARTBEAT_LOG: "\(directory.appendingPathComponent("heartbeats.\(app.name)").path)"}
                        stop_timeout: 2s
                \(app.extra)

                """
        }
        return text
    }

    /// Every node's status, decoded from `batonctl status --json`.
    static func statuses(port: Int) async throws -> [NodeStatus] {
        let batonctl = try BatondClusterTests.executable("batonctl")
        let result = try await runOnThread(batonctl, ["status", "--json", "--nats", "nats://127.0.0.1:\(port)", "--cluster", "place"])
        guard result.status == 0 else { return [] }
        return try JSONDecoder().decode([NodeStatus].self, from: Data(result.output.utf8))
    }

    /// The active node of each app, from the nodes' own reports (a node reports `active` only
    /// for what it holds).
    static func actives(_ statuses: [NodeStatus]) -> [String: [String]] {
        var actives: [String: [String]] = [:]
        for status in statuses {
            for app in status.apps where app.role == .active { actives[app.name, default: []].append(status.node) }
        }
        return actives
    }

    func start(_ name: String, zone: String, port: Int, directory: URL, backend: String, apps: [(name: String, extra: String)]) throws -> BatondProcess {
        let path = directory.appendingPathComponent("\(name).yaml").path
        try Self.config(node: name, zone: zone, port: port, directory: directory, backend: backend, apps: apps)
            .write(toFile: path, atomically: true, encoding: .utf8)
        return try BatondProcess(
            node: name, binary: try BatondClusterTests.executable("batond"), config: path,
            logPath: directory.appendingPathComponent("\(name).log").path,
            environment: ["BATON_FENCE_KEEPER": try BatondClusterTests.executable("baton-fence-keeper")])
    }

    @Test("an app requiring a label only one node has runs there and nowhere else, and the others say why", arguments: NATSServerKind.allCases)
    func requireLabel(kind: NATSServerKind) async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-place-require")
        defer { try? FileManager.default.removeItem(at: directory) }
        let backend = directory.appendingPathComponent("beat.py").path
        try heartbeatBackend.write(toFile: backend, atomically: true, encoding: .utf8)
        let apps = [(name: "web", extra: "    placement: {require: {zone: b}}"), (name: "free", extra: "")]
        try await withNATSServer(kind) { server in
            var nodes: [String: BatondProcess] = [:]
            defer { for node in nodes.values where node.process.isRunning { kill(node.pid, SIGKILL) } }
            // node-1 (zone a) first, alone: it must not take web.
            nodes["node-1"] = try start("node-1", zone: "a", port: server.port, directory: directory, backend: backend, apps: apps)
            var last: [NodeStatus] = []
            try await eventually("node-1 runs free and says why it does not take web (last: \(last))", timeout: .seconds(20), every: .milliseconds(200)) {
                last = try await Self.statuses(port: server.port)
                let web = last.first { $0.node == "node-1" }?.apps.first { $0.name == "web" }
                return Self.actives(last)["free"] == ["node-1"] && web?.placement == "not eligible: requires zone=b (this node: zone=a)"
            }
            try await Task.sleep(for: .seconds(3))  // more than a ttl with web free: still nobody
            #expect(Self.actives(try await Self.statuses(port: server.port))["web"] == nil)
            nodes["node-3"] = try start("node-3", zone: "c", port: server.port, directory: directory, backend: backend, apps: apps)
            nodes["node-2"] = try start("node-2", zone: "b", port: server.port, directory: directory, backend: backend, apps: apps)
            try await eventually("web active on node-2 only (last: \(Self.actives(last)))", timeout: .seconds(20), every: .milliseconds(200)) {
                last = try await Self.statuses(port: server.port)
                return last.count == 3 && Self.actives(last)["web"] == ["node-2"]
            }
            let text = try await runOnThread(
                try BatondClusterTests.executable("batonctl"), ["status", "--nats", "nats://127.0.0.1:\(server.port)", "--cluster", "place"])
            #expect(text.output.contains("placement on node-3: not eligible: requires zone=b (this node: zone=c)"), "\(text.output)")
            // node-2 goes away: web stays down rather than run on a node that does not qualify.
            await nodes["node-2"]!.stop()
            try await Task.sleep(for: .seconds(4))
            last = try await Self.statuses(port: server.port)
            #expect(Self.actives(last)["web"] == nil, "\(Self.actives(last))")
            #expect(Self.actives(last)["free"]?.count == 1)
            for node in nodes.values { await node.stop() }
            Heartbeats(path: directory.appendingPathComponent("heartbeats.web").path).checkSafety()
            #expect(Set(Heartbeats(path: directory.appendingPathComponent("heartbeats.web").path).runs.map(\.node)) == ["node-2"])
        }
    }

    @Test("twelve apps end balanced four per node when three nodes start one after another", arguments: NATSServerKind.allCases)
    func balanceAsNodesJoin(kind: NATSServerKind) async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-place-balance")
        defer { try? FileManager.default.removeItem(at: directory) }
        let backend = directory.appendingPathComponent("beat.py").path
        try heartbeatBackend.write(toFile: backend, atomically: true, encoding: .utf8)
        let apps = (1...12).map { (name: "app-\($0)", extra: "") }
        try await withNATSServer(kind) { server in
            var nodes: [String: BatondProcess] = [:]
            defer { for node in nodes.values where node.process.isRunning { kill(node.pid, SIGKILL) } }
            var last: [String: [String]] = [:]
            func counts() async throws -> [String: Int] {
                last = Self.actives(try await Self.statuses(port: server.port))
                var counts: [String: Int] = [:]
                for holders in last.values { for node in holders { counts[node, default: 0] += 1 } }
                return counts
            }
            nodes["node-1"] = try start("node-1", zone: "a", port: server.port, directory: directory, backend: backend, apps: apps)
            try await eventually("all 12 apps on node-1 (last: \(last))", timeout: .seconds(30), every: .milliseconds(200)) {
                try await counts() == ["node-1": 12]
            }
            nodes["node-2"] = try start("node-2", zone: "b", port: server.port, directory: directory, backend: backend, apps: apps)
            try await eventually("6 and 6 (last: \(last))", timeout: .seconds(60), every: .milliseconds(200)) {
                try await counts() == ["node-1": 6, "node-2": 6]
            }
            nodes["node-3"] = try start("node-3", zone: "c", port: server.port, directory: directory, backend: backend, apps: apps)
            try await eventually("4, 4 and 4 (last: \(last))", timeout: .seconds(60), every: .milliseconds(200)) {
                try await counts() == ["node-1": 4, "node-2": 4, "node-3": 4]
            }
            // Settled: nothing moves any more (hysteresis), for several settle periods.
            let settled = last
            try await Task.sleep(for: .seconds(6))
            #expect(try await counts() == ["node-1": 4, "node-2": 4, "node-3": 4])
            #expect(last == settled, "apps moved after balancing settled: \(settled) -> \(last)")
            for node in nodes.values { await node.stop() }
            for app in apps {
                Heartbeats(path: directory.appendingPathComponent("heartbeats.\(app.name)").path).checkSafety()
            }
        }
    }

    @Test("drain moves every app away and survives a restart of the drained node; undrain and an expired --for bring apps back", arguments: NATSServerKind.allCases)
    func drainAndUndrain(kind: NATSServerKind) async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-place-drain")
        defer { try? FileManager.default.removeItem(at: directory) }
        let backend = directory.appendingPathComponent("beat.py").path
        try heartbeatBackend.write(toFile: backend, atomically: true, encoding: .utf8)
        let apps = (1...6).map { (name: "app-\($0)", extra: "") }
        let batonctl = try BatondClusterTests.executable("batonctl")
        try await withNATSServer(kind) { server in
            let connection = ["--nats", "nats://127.0.0.1:\(server.port)", "--cluster", "place"]
            var nodes: [String: BatondProcess] = [:]
            defer { for node in nodes.values where node.process.isRunning { kill(node.pid, SIGKILL) } }
            var last: [String: [String]] = [:]
            var lastStatuses: [NodeStatus] = []
            func counts() async throws -> [String: Int] {
                lastStatuses = try await Self.statuses(port: server.port)
                last = Self.actives(lastStatuses)
                var counts: [String: Int] = [:]
                for holders in last.values { for node in holders { counts[node, default: 0] += 1 } }
                return counts
            }
            for (name, zone) in [("node-1", "a"), ("node-2", "b"), ("node-3", "c")] {
                nodes[name] = try start(name, zone: zone, port: server.port, directory: directory, backend: backend, apps: apps)
            }
            try await eventually("2, 2 and 2 (last: \(last))", timeout: .seconds(60), every: .milliseconds(200)) {
                try await counts() == ["node-1": 2, "node-2": 2, "node-3": 2]
            }

            // drain --wait returns once node-1 holds nothing; the others hold everything.
            let drain = try await runOnThread(batonctl, ["drain", "node-1", "--until-empty", "--timeout", "30s"] + connection)
            #expect(drain.status == 0, "\(drain.output)")
            #expect(drain.output.contains("node node-1 is drained by"), "\(drain.output)")
            #expect(drain.output.contains("node node-1 holds no app"), "\(drain.output)")
            try await eventually("all six apps on node-2 and node-3 (last: \(last))", timeout: .seconds(20), every: .milliseconds(200)) {
                let now = try await counts()
                return now["node-1"] == nil && now.values.reduce(0, +) == 6
            }
            let text = try await runOnThread(batonctl, ["status"] + connection)
            #expect(text.output.contains("node node-1 is drained by"), "\(text.output)")
            #expect(lastStatuses.first { $0.node == "node-1" }?.drained?.contains("until batonctl undrain") == true)
            // batonctl nodes: node-1 drained, the others not.
            let nodesTable = try await runOnThread(batonctl, ["nodes"] + connection)
            let rows = nodesTable.output.split(separator: "\n").map(String.init)
            #expect(rows.contains { $0.hasPrefix("node-1 ") && $0.hasSuffix(" yes") }, "\(nodesTable.output)")
            #expect(rows.contains { $0.hasPrefix("node-2 ") && $0.hasSuffix(" no") }, "\(nodesTable.output)")
            #expect(nodesTable.output.contains("node-1 is drained by"), "\(nodesTable.output)")

            // A restart of the drained node: it stays drained, and takes nothing.
            await nodes["node-1"]!.stop()
            nodes["node-1"] = try start("node-1", zone: "a", port: server.port, directory: directory, backend: backend, apps: apps)
            try await eventually("node-1 answers again, drained (last: \(lastStatuses.map(\.node)))", timeout: .seconds(20), every: .milliseconds(200)) {
                _ = try await counts()
                return lastStatuses.first { $0.node == "node-1" }?.drained != nil
            }
            try await Task.sleep(for: .seconds(4))
            #expect(try await counts()["node-1"] == nil, "a restarted drained node took apps: \(last)")

            // undrain: balancing brings node-1 its share again.
            let undrain = try await runOnThread(batonctl, ["undrain", "node-1"] + connection)
            #expect(undrain.status == 0 && undrain.output.contains("node node-1 is no longer drained"), "\(undrain.output)")
            try await eventually("2, 2 and 2 after undrain (last: \(last))", timeout: .seconds(60), every: .milliseconds(200)) {
                try await counts() == ["node-1": 2, "node-2": 2, "node-3": 2]
            }

            // A drain with --for ends by itself: node-3 empties, then gets its share back.
            let timed = try await runOnThread(batonctl, ["drain", "node-3", "--for", "8s"] + connection)
            #expect(timed.status == 0 && timed.output.contains("until 20"), "\(timed.output)")
            try await eventually("node-3 empty while drained (last: \(last))", timeout: .seconds(20), every: .milliseconds(200)) {
                try await counts()["node-3"] == nil
            }
            try await eventually("2, 2 and 2 after the drain expired (last: \(last))", timeout: .seconds(60), every: .milliseconds(200)) {
                try await counts() == ["node-1": 2, "node-2": 2, "node-3": 2]
            }
            for node in nodes.values { await node.stop() }
            for app in apps {
                Heartbeats(path: directory.appendingPathComponent("heartbeats.\(app.name)").path).checkSafety()
            }
        }
    }

    @Test("a reload that makes the active node ineligible hands the app over by switchover; with no eligible node it keeps it and says so")
    func reloadMovesTheApp() async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-place-reload")
        defer { try? FileManager.default.removeItem(at: directory) }
        let backend = directory.appendingPathComponent("beat.py").path
        try heartbeatBackend.write(toFile: backend, atomically: true, encoding: .utf8)
        let zones = ["node-1": "a", "node-2": "b"]
        try await withNATSServer(.pypi) { server in
            var nodes: [String: BatondProcess] = [:]
            defer { for node in nodes.values where node.process.isRunning { kill(node.pid, SIGKILL) } }
            for (name, zone) in zones.sorted(by: { $0.key < $1.key }) {
                nodes[name] = try start(name, zone: zone, port: server.port, directory: directory, backend: backend, apps: [(name: "web", extra: "")])
            }
            var last: [NodeStatus] = []
            try await eventually("web active on one node (last: \(Self.actives(last)))", timeout: .seconds(20), every: .milliseconds(200)) {
                last = try await Self.statuses(port: server.port)
                return last.count == 2 && Self.actives(last)["web"]?.count == 1
            }
            let first = Self.actives(last)["web"]![0]
            let other = first == "node-1" ? "node-2" : "node-1"
            func reload(require zone: String) throws {
                for (name, nodeZone) in zones {
                    try Self.config(
                        node: name, zone: nodeZone, port: server.port, directory: directory, backend: backend,
                        apps: [(name: "web", extra: "    placement: {require: {zone: \(zone)}}")]
                    ).write(toFile: directory.appendingPathComponent("\(name).yaml").path, atomically: true, encoding: .utf8)
                    nodes[name]!.signal(SIGHUP)
                }
            }
            // Only the other node's zone qualifies now: the app moves there by switchover.
            try reload(require: zones[other]!)
            try await eventually("web active on \(other) (last: \(Self.actives(last)))", timeout: .seconds(20), every: .milliseconds(200)) {
                last = try await Self.statuses(port: server.port)
                return Self.actives(last)["web"] == [other]
            }
            // The old node's note says "handing over" until its next placement round (500 ms)
            // sees the app gone, then why it may not run it.
            var firstStatus: AppStatus?
            try await eventually("\(first) saying why it may not run web (last: \(String(describing: firstStatus)))", timeout: .seconds(10), every: .milliseconds(200)) {
                firstStatus = try await Self.statuses(port: server.port).first { $0.node == first }?.apps.first { $0.name == "web" }
                return firstStatus?.placement == "not eligible: requires zone=\(zones[other]!) (this node: zone=\(zones[first]!))"
            }
            let log = try String(contentsOfFile: directory.appendingPathComponent("\(first).log").path, encoding: .utf8)
            #expect(log.contains("placement: handing an app over"), "no switchover logged on \(first)")
            // No node qualifies: the active node keeps the app, and says why.
            try reload(require: "z")
            try await eventually("\(other) keeps web and says so (last: \(last.map { ($0.node, $0.apps.first?.placement) }))", timeout: .seconds(20), every: .milliseconds(200)) {
                last = try await Self.statuses(port: server.port)
                let note = last.first { $0.node == other }?.apps.first { $0.name == "web" }?.placement
                return Self.actives(last)["web"] == [other] && note?.hasSuffix("no eligible node to hand it over to: keeping it") == true
            }
            for node in nodes.values { await node.stop() }
            let heartbeats = Heartbeats(path: directory.appendingPathComponent("heartbeats.web").path)
            heartbeats.checkSafety()
            #expect(heartbeats.runs.map(\.node) == [first, other], "\(heartbeats.runs)")
        }
    }

    @Test("prefer_node with failback: auto: the app goes back to its preferred node once that node runs")
    func failbackToThePreferredNode() async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-place-failback")
        defer { try? FileManager.default.removeItem(at: directory) }
        let backend = directory.appendingPathComponent("beat.py").path
        try heartbeatBackend.write(toFile: backend, atomically: true, encoding: .utf8)
        let apps = [(name: "web", extra: "    prefer_node: node-2\n    failback: auto"), (name: "stay", extra: "    prefer_node: node-2")]
        try await withNATSServer(.debian) { server in
            var nodes: [String: BatondProcess] = [:]
            defer { for node in nodes.values where node.process.isRunning { kill(node.pid, SIGKILL) } }
            var last: [String: [String]] = [:]
            nodes["node-1"] = try start("node-1", zone: "a", port: server.port, directory: directory, backend: backend, apps: apps)
            try await eventually("both apps on node-1 (last: \(last))", timeout: .seconds(20), every: .milliseconds(200)) {
                last = Self.actives(try await Self.statuses(port: server.port))
                return last["web"] == ["node-1"] && last["stay"] == ["node-1"]
            }
            nodes["node-2"] = try start("node-2", zone: "b", port: server.port, directory: directory, backend: backend, apps: apps)
            try await eventually("web back on node-2 (last: \(last))", timeout: .seconds(20), every: .milliseconds(200)) {
                last = Self.actives(try await Self.statuses(port: server.port))
                return last["web"] == ["node-2"]
            }
            // failback: manual (the default) stays; balancing leaves it alone too (1 and 1).
            try await Task.sleep(for: .seconds(4))
            last = Self.actives(try await Self.statuses(port: server.port))
            #expect(last["stay"] == ["node-1"] && last["web"] == ["node-2"], "\(last)")
            for node in nodes.values { await node.stop() }
            Heartbeats(path: directory.appendingPathComponent("heartbeats.web").path).checkSafety()
        }
    }
}
