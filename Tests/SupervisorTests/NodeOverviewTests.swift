import BatonCore
import Control
import Testing

@Suite("batonctl nodes: merging the registry, the directory and the status answers")
struct NodeOverviewTests {
    static func record(_ node: String, instance: String, started: String = "2026-12-05T09:00:00.000Z", labels: [String: String]? = nil)
        -> NodeRecord
    {
        NodeRecord(node: node, instance: instance, hostname: "host-\(node)", pid: 42, started: started, version: "1.2.3", labels: labels)
    }

    static func status(_ node: String, instance: String, apps: [AppStatus]) -> NodeStatus {
        NodeStatus(node: node, instance: instance, cluster: "demo", version: "1.2.4", natsConnected: true, apps: apps)
    }

    static func app(_ name: String, role: AppStatus.Role, leader: String?) -> AppStatus {
        AppStatus(name: name, role: role, paused: false, priority: 100, leader: leader, token: 7, backendRunning: role == .active, lastEvent: nil)
    }

    /// 2026-12-05T10:00:00Z.
    static let now = 1_796_464_800.0

    @Test func everyKnownNodeIsShownWithWhyItIsNotUp() throws {
        let a = Self.record("node-a", instance: "ia", labels: ["zone": "a"])
        let b = Self.record("node-b", instance: "ib")
        let c = Self.record("node-c", instance: "ic", labels: ["zone": "c"])
        let d = Self.record("node-d", instance: "id")
        let statuses = [
            Self.status("node-a", instance: "ia", apps: [Self.app("web", role: .active, leader: "node-a"), Self.app("db", role: .passive, leader: "node-c")])
        ]
        let nodes = NodeOverview.merge(
            registry: [.init(record: a, at: Self.now - 0.5), .init(record: b, at: Self.now - 1)],
            directory: [
                .init(record: a, at: Self.now - 5), .init(record: c, at: Self.now - 40),
                .init(record: d, at: Self.now - 600, stopped: "2026-12-05T09:50:00Z"),
            ],
            statuses: statuses, now: Self.now)
        #expect(nodes.map(\.node) == ["node-a", "node-b", "node-c", "node-d"])
        #expect(nodes.map(\.state) == [.up, .unresponsive, .unresponsive, .stopped])

        #expect(nodes[0].labels == ["zone": "a"])
        #expect(nodes[0].activeApps == ["web"])
        #expect(nodes[0].version == "1.2.4")  // what the running batond says
        #expect(nodes[0].uptimeSeconds == 3600)
        #expect(nodes[0].detail == nil)

        #expect(nodes[1].detail == "heartbeats, but its control service does not answer")
        #expect(nodes[1].uptimeSeconds == nil)

        // A crashed node: still holding db as far as node-a knows, last seen at its last write.
        #expect(nodes[2].activeApps == ["db"])
        #expect(nodes[2].labels == ["zone": "c"])
        #expect(nodes[2].lastSeen == "2026-12-05T09:59:20Z")
        #expect(nodes[2].detail?.hasPrefix("no heartbeat since about 2026-12-05T09:59:20Z") == true)

        #expect(nodes[3].lastSeen == "2026-12-05T09:50:00Z")
        #expect(nodes[3].detail == "batond stopped at 2026-12-05T09:50:00Z")
        #expect(nodes[3].version == "1.2.3")
    }

    @Test func aNodeThatAnswersButPredatesTheDirectoryIsStillListed() {
        let nodes = NodeOverview.merge(
            registry: [], directory: [], statuses: [Self.status("old", instance: "x", apps: [Self.app("web", role: .active, leader: "old")])],
            now: Self.now)
        #expect(nodes.count == 1)
        #expect(nodes[0].state == .up)
        #expect(nodes[0].labels.isEmpty)
        #expect(nodes[0].activeApps == ["web"])
        #expect(nodes[0].uptimeSeconds == nil)  // no record to tell its start
    }

    @Test func aRestartedNodeIsUpWithItsNewInstancesUptime() {
        let old = Self.record("node-a", instance: "old", started: "2026-12-01T00:00:00.000Z")
        let new = Self.record("node-a", instance: "new", started: "2026-12-05T09:59:00.000Z")
        let nodes = NodeOverview.merge(
            registry: [.init(record: new, at: Self.now)], directory: [.init(record: old, at: Self.now - 100, stopped: "2026-12-05T09:58:20Z")],
            statuses: [Self.status("node-a", instance: "new", apps: [])], now: Self.now)
        #expect(nodes.map(\.state) == [.up])
        #expect(nodes[0].uptimeSeconds == 60)
        #expect(nodes[0].started == "2026-12-05T09:59:00.000Z")
    }
}
