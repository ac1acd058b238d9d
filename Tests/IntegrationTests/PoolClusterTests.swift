import BatonCore
import Foundation
import NATSTestSupport
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Pools with real batond processes: `instances: 2` runs on two different nodes and moves an
/// instance of a killed node to the node that runs none; `instances: all` runs on every node.
@Suite("batond pools: instances of an app on several nodes", .serialized)
struct PoolClusterTests {
    @Test("instances: 2 on two nodes, never both on one; a killed node's instance moves to the free node; instances: all everywhere", arguments: NATSServerKind.allCases)
    func pools(kind: NATSServerKind) async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-pools")
        defer { try? FileManager.default.removeItem(at: directory) }
        let beat = directory.appendingPathComponent("beat.py").path
        try heartbeatBackend.write(toFile: beat, atomically: true, encoding: .utf8)
        // Each instance writes its own heartbeat log, named after BATON_APP and BATON_INSTANCE.
        let launcher = directory.appendingPathComponent("launch.sh").path
        try """
            #!/bin/sh
            HEARTBEAT_LOG="\(directory.path)/heartbeats.$BATON_APP.instance-$BATON_INSTANCE" exec /usr/bin/python3 \(beat)
            """.write(toFile: launcher, atomically: true, encoding: .utf8)
        chmod(launcher, 0o755)
        let names = ["node-1", "node-2", "node-3"]
        func config(_ node: String, port: Int) -> String {
            """
            cluster: place
            node: {id: \(node), state_dir: \(directory.appendingPathComponent(node).path)}
            nats: {servers: ["nats://127.0.0.1:\(port)"]}
            apps:
              - name: worker
                instances: 2
                lease: \(PlacementClusterTests.lease)
                backend: {process: {command: ["\(launcher)"], stop_timeout: 2s}}
              - name: agent
                instances: all
                lease: \(PlacementClusterTests.lease)
                backend: {process: {command: ["\(launcher)"], stop_timeout: 2s}}

            """
        }
        try await withNATSServer(kind) { server in
            var nodes: [String: BatondProcess] = [:]
            defer { for node in nodes.values where node.process.isRunning { kill(node.pid, SIGKILL) } }
            for name in names {
                let path = directory.appendingPathComponent("\(name).yaml").path
                try config(name, port: server.port).write(toFile: path, atomically: true, encoding: .utf8)
                nodes[name] = try BatondProcess(
                    node: name, binary: try BatondClusterTests.executable("batond"), config: path,
                    logPath: directory.appendingPathComponent("\(name).log").path,
                    environment: ["BATON_FENCE_KEEPER": try BatondClusterTests.executable("baton-fence-keeper")])
            }
            var last: [String: [String]] = [:]
            var sameNode: [String] = []
            /// Active instances per app; records every sighting of both workers on one node.
            func actives() async throws -> [String: [String]] {
                let statuses = try await PlacementClusterTests.statuses(port: server.port)
                for status in statuses {
                    let workers = status.apps.filter { $0.name.hasPrefix("worker-") && $0.role == .active }.map(\.name)
                    if workers.count > 1 { sameNode.append("\(status.node): \(workers)") }
                }
                last = PlacementClusterTests.actives(statuses)
                return last
            }
            try await eventually("two workers on two nodes, an agent on each node (last: \(last))", timeout: .seconds(30), every: .milliseconds(200)) {
                let now = try await actives()
                guard let one = now["worker-1"], let two = now["worker-2"], one.count == 1, two.count == 1, one != two else { return false }
                return names.allSatisfy { now["agent-\($0)"] == [$0] }
            }
            let first = last["worker-1"]![0]
            let second = last["worker-2"]![0]
            let free = names.first { $0 != first && $0 != second }!
            // kill -9 the node of worker-1: it moves to the node that runs no worker, never next
            // to worker-2; the dead node's agent runs nowhere else.
            kill(nodes[first]!.pid, SIGKILL)
            func workerLines() -> String {
                names.map { name in
                    let log = (try? String(contentsOf: directory.appendingPathComponent("\(name).log"), encoding: .utf8)) ?? ""
                    return "\(name):\n" + log.split(separator: "\n").filter { $0.contains("worker") }.suffix(15).joined(separator: "\n")
                }.joined(separator: "\n")
            }
            try await eventually("worker-1 on \(free), worker-2 still on \(second) (last: \(last))\n\(workerLines())", timeout: .seconds(30), every: .milliseconds(200)) {
                let now = try await actives()
                return now["worker-1"] == [free] && now["worker-2"] == [second]
            }
            #expect(last["agent-\(first)"] == nil, "\(last)")
            #expect(sameNode.isEmpty, "both workers active on one node: \(sameNode)")
            for node in nodes.values { await node.stop() }
            for instance in ["worker-1.instance-1", "worker-2.instance-2"] + names.map({ "agent-\($0).instance-\($0)" }) {
                let heartbeats = Heartbeats(path: directory.appendingPathComponent("heartbeats.\(instance)").path)
                #expect(!heartbeats.runs.isEmpty, "no heartbeats of \(instance) (BATON_INSTANCE not set?)")
                heartbeats.checkSafety()
            }
            #expect(Set(Heartbeats(path: directory.appendingPathComponent("heartbeats.worker-1.instance-1").path).runs.map(\.node)) == [first, free])
        }
    }
}
