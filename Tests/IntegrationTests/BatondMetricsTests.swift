import Foundation
import NATSTestSupport
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The value of one series (`name{labels}` exactly as exported) in a Prometheus text exposition.
func metricValue(_ exposition: String, _ series: String) -> Double? {
    for line in exposition.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1).split(separator: " ").first ?? "")
    }
    return nil
}

/// The metrics issue 14 left open, scraped from real batond processes on a real nats-server:
/// replication lag in bytes and seconds, snapshot age, per-probe health results, event counts.
@Suite("batond metrics: replication lag, snapshot age, health probes, events", .serialized)
struct BatondMetricsTests {
    /// The passive node's replica is made immutable (`chattr +i`: its writes fail with EPERM),
    /// so it stops applying while its batond keeps answering: its lag in bytes and seconds grows
    /// in `/metrics`, `/status` and `/apps/db/replica?max_lag_seconds=`, and falls back to 0
    /// once the replica is writable again.
    @Test(arguments: NATSServerKind.allCases)
    func lagSnapshotAgeProbesAndEvents(kind: NATSServerKind) async throws {
        let chattr = try Integration.requireExecutable("chattr", remedy: "`apt-get install e2fsprogs`")
        try await HTTPCluster.run(kind, prefix: "baton-metrics") { cluster in
            var replica = ""
            try await eventually("one node answering 200 on /apps/db/replica", timeout: .seconds(30), every: .milliseconds(100), retryingErrors: true) {
                let answers = [try await cluster.get("node-1", "/apps/db/replica"), try await cluster.get("node-2", "/apps/db/replica")]
                guard answers.map(\.status).sorted() == [200, 503] else { return false }
                replica = answers[0].status == 200 ? "node-1" : "node-2"
                return true
            }
            let active = replica == "node-1" ? "node-2" : "node-1"
            func metrics(_ node: String) async throws -> String { try await cluster.get(node, "/metrics").body }
            func series(_ name: String, _ node: String, _ extra: String = "") -> String { "\(name){app=\"db\",node=\"\(node)\"\(extra)}" }

            // Health probes: counted by outcome on the active node, with the last duration.
            let passes = series("baton_health_probes_total", active, ",probe=\"exec\",outcome=\"pass\"")
            try await eventually("\(passes) counting", timeout: .seconds(20), every: .milliseconds(200), retryingErrors: true) {
                (metricValue(try await metrics(active), passes) ?? 0) >= 2
            }
            let probed = try await metrics(active)
            #expect(metricValue(probed, series("baton_health_probes_total", active, ",probe=\"exec\",outcome=\"fail\"")) == 0, "\(probed)")
            #expect(metricValue(probed, series("baton_health_probes_total", active, ",probe=\"exec\",outcome=\"timeout\"")) == 0)
            let duration = try #require(metricValue(probed, series("baton_health_probe_duration_seconds", active, ",probe=\"exec\"")))
            #expect(duration > 0 && duration < 1, "an exec of /bin/true took \(duration)s")

            // Snapshot age: the first start's snapshot, on both nodes, growing with time.
            var ages: [String: Double] = [:]
            try await eventually("the snapshot age on both nodes", timeout: .seconds(20), every: .milliseconds(200), retryingErrors: true) {
                for node in [active, replica] { ages[node] = metricValue(try await metrics(node), series("baton_replication_snapshot_age_seconds", node)) }
                return ages.values.count == 2 && ages.values.allSatisfy { $0 >= 0 }
            }
            try await eventually("the snapshot age growing on \(replica)", timeout: .seconds(10), every: .milliseconds(200), retryingErrors: true) {
                (metricValue(try await metrics(replica), series("baton_replication_snapshot_age_seconds", replica)) ?? 0) >= ages[replica]! + 1
            }

            // Events: published by every node, none dropped.
            for node in [active, replica] {
                try await eventually("\(node) counting its published events", timeout: .seconds(10), every: .milliseconds(200), retryingErrors: true) {
                    (metricValue(try await metrics(node), "baton_events_published_total{node=\"\(node)\"}") ?? 0) >= 1
                }
                let body = try await metrics(node)
                #expect(metricValue(body, "baton_events_dropped_total{node=\"\(node)\",reason=\"buffer_full\"}") == 0, "\(node)")
                #expect(metricValue(body, "baton_events_dropped_total{node=\"\(node)\",reason=\"publish_failed\"}") == 0, "\(node)")
            }

            // VIP presence from the kernel: the paused app's VIP was never claimed, so no node
            // holds it (the netns test of VIPPresenceReader adds one by hand).
            for node in [active, replica] {
                let vip = "baton_vip_present{app=\"vip\",node=\"\(node)\",address=\"192.0.2.99/32\",interface=\"lo\"}"
                try await eventually("\(vip) at 0", timeout: .seconds(10), every: .milliseconds(200), retryingErrors: true) {
                    metricValue(try await metrics(node), vip) == 0
                }
            }

            // Lag: caught up first (the writer commits every 100 ms: a sample between a commit
            // and its apply may show one behind, so wait for a 0).
            let lagBytes = series("baton_replication_lag_bytes", replica)
            let lagSeconds = series("baton_replication_lag_seconds", replica)
            try await eventually("\(replica) caught up", timeout: .seconds(20), every: .milliseconds(100), retryingErrors: true) {
                let body = try await metrics(replica)
                return metricValue(body, lagBytes) == 0 && metricValue(body, lagSeconds) == 0
            }
            #expect(metricValue(try await metrics(active), series("baton_replication_lag_bytes", active)) == 0)

            let replicaFile = cluster.directory.appendingPathComponent(replica).appendingPathComponent("db.replica.db").path
            let frozen = try runCommand(chattr, ["+i", replicaFile])
            #expect(frozen.status == 0, "\(frozen.output)")
            var thawed = false
            defer { if !thawed { _ = try? runCommand(chattr, ["-i", replicaFile]) } }
            var stuck = (bytes: 0.0, seconds: 0.0)
            try await eventually("\(replica)'s lag growing while its replica cannot be written", timeout: .seconds(30), every: .milliseconds(200), retryingErrors: true) {
                let body = try await metrics(replica)
                stuck = (metricValue(body, lagBytes) ?? 0, metricValue(body, lagSeconds) ?? 0)
                return stuck.bytes > 0 && stuck.seconds >= 2
            }
            print("metrics: \(replica) \(Int(stuck.bytes)) bytes and \(stuck.seconds)s behind while its replica was immutable")
            // The same lag in /status (batonctl status --json's schema) and the replica check.
            let statuses = try JSONSerialization.jsonObject(with: Data(try await cluster.get(active, "/status").body.utf8)) as? [[String: Any]]
            let replication = statuses?.first { $0["node"] as? String == replica }
                .flatMap { ($0["apps"] as? [[String: Any]])?.first { $0["name"] as? String == "db" } }?["replication"] as? [String: Any]
            #expect((replication?["lag_bytes"] as? Double ?? 0) > 0, "\(String(describing: replication))")
            #expect((replication?["lag_seconds"] as? Double ?? 0) > 0, "\(String(describing: replication))")
            #expect(replication?["last_snapshot_time"] as? Double != nil, "\(String(describing: replication))")
            let lagging = try await cluster.get(replica, "/apps/db/replica?max_lag_seconds=1")
            #expect(lagging.status == 503, "\(lagging)")

            let unfrozen = try runCommand(chattr, ["-i", replicaFile])
            #expect(unfrozen.status == 0, "\(unfrozen.output)")
            thawed = true
            try await eventually("\(replica) caught up again", timeout: .seconds(30), every: .milliseconds(100), retryingErrors: true) {
                let body = try await metrics(replica)
                return metricValue(body, lagBytes) == 0 && metricValue(body, lagSeconds) == 0
            }
            try await eventually("\(replica) answering 200 on /apps/db/replica?max_lag_seconds=5", timeout: .seconds(20), every: .milliseconds(200), retryingErrors: true) {
                try await cluster.get(replica, "/apps/db/replica?max_lag_seconds=5").status == 200
            }
        }
    }
}
