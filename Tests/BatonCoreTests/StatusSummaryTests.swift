import BatonCore
import Testing

@Suite("STATUS= summary line")
struct StatusSummaryTests {
    func app(_ name: String, _ role: AppStatus.Role, paused: Bool = false) -> AppStatus {
        AppStatus(name: name, role: role, paused: paused, priority: 0, leader: nil, token: nil, backendRunning: false, lastEvent: nil)
    }

    @Test func groupsAppsByRoleThenNATS() {
        let status = NodeStatus(
            node: "n", instance: "i", cluster: "c", version: "v", natsConnected: true,
            apps: [app("cache", .passive), app("web", .active), app("db", .active), app("jobs", .passive, paused: true), app("mail", .promoting)])
        #expect(status.summaryLine == "active: web, db; promoting: mail; passive: cache, jobs (paused); NATS ok")
    }

    @Test func saysWhenThereIsNothingAndNATSIsDown() {
        let status = NodeStatus(node: "n", instance: "i", cluster: "c", version: "v", natsConnected: false, apps: [])
        #expect(status.summaryLine == "no apps; NATS disconnected")
    }
}
