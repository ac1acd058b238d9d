import BatonCore
import Foundation
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

@Suite("Replication sync status")
struct ReplicationSyncStatusTests {
    @Test func describesTheDownloadAndTheVerification() {
        var sync = ReplicationStatus.Sync(
            initial: true, txid: 90, phase: "downloading", bytesDone: 105 * 1_048_576, bytesTotal: 256 * 1_048_576, bytesPerSecond: 98.2 * 1_048_576)
        #expect(sync.text == "initial sync 41% (105.0 of 256.0 MiB, 98.2 MiB/s) to txid 90")
        sync.initial = false
        sync.phase = "verifying"
        #expect(sync.text == "resync verifying 256.0 MiB of txid 90")
        sync.bytesTotal = 0
        sync.phase = "downloading"
        #expect(sync.percent == 0)
    }

    @Test func travelsInTheStatusJSON() throws {
        var status = ReplicationStatus(role: .applying)
        status.sync = ReplicationStatus.Sync(initial: true, txid: 3, phase: "downloading", bytesDone: 10, bytesTotal: 40, bytesPerSecond: 5)
        let data = try JSONEncoder().encode(status)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("\"bytes_done\":10") && text.contains("\"bytes_total\":40"))
        #expect(try JSONDecoder().decode(ReplicationStatus.self, from: data) == status)
        // A status from a node without the field still decodes.
        let old = try JSONDecoder().decode(ReplicationStatus.self, from: Data(#"{"role":"applying","txid":4}"#.utf8))
        #expect(old.sync == nil && old.txid == 4)
    }
}
