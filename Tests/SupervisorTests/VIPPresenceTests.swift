import BatonCore
import Foundation
import Logging
import NATSTestSupport
import Netlink
import NetnsLab
import Supervisor
import Testing

@Suite("VIP presence from the kernel's addresses")
struct VIPPresenceTests {
    func app(_ name: String, _ vips: [(String, Int, String)]) -> AppConfig {
        AppConfig(
            name: name, lease: LeaseTiming(ttl: .seconds(3), renew: .seconds(1), fenceBudget: .milliseconds(500), skew: .milliseconds(200)), backend: .process(ProcessBackendConfig(command: ["/bin/true"])),
            vips: vips.map { VIPConfig(address: $0.0, prefixLength: $0.1, isIPv6: $0.0.contains(":"), interface: $0.2) })
    }

    @Test("each configured VIP is present when its interface lists the address, whatever the prefix")
    func presences() throws {
        let apps = [
            app("web", [("192.0.2.10", 24, "eth0"), ("2001:db8::10", 64, "eth0")]),
            app("db", [("192.0.2.20", 32, "eth1")]),
            app("cache", []),
        ]
        let kernel: [String: [IPAddress]] = [
            "eth0": [try IPAddress("192.0.2.1"), try IPAddress("192.0.2.10")],
            "eth1": [try IPAddress("192.0.2.10")],
        ]
        #expect(
            VIPPresence.presences(apps: apps, kernel: kernel) == [
                VIPPresence(app: "web", address: "192.0.2.10/24", interface: "eth0", present: true),
                VIPPresence(app: "web", address: "2001:db8::10/64", interface: "eth0", present: false),
                // The address on another interface does not count.
                VIPPresence(app: "db", address: "192.0.2.20/32", interface: "eth1", present: false),
            ])
        // An interface the kernel has not listed (it does not exist) holds none.
        #expect(VIPPresence.presences(apps: apps, kernel: [:]).allSatisfy { !$0.present })
    }

    /// The reader in a real network namespace: a VIP added and removed by hand (`ip addr`) shows
    /// up and goes; a VIP on an interface that does not exist is absent.
    @Test("the kernel's addresses in a network namespace, changed by hand")
    func readsTheKernel() async throws {
        guard geteuid() == 0 else {
            try Integration.missingPrerequisite(MissingPrerequisite(
                name: "root", reason: "the test creates a network namespace", remedy: "running the tests as root"))
        }
        let ipPath = try Integration.requireExecutable("ip", remedy: "`apt-get install iproute2`")
        let lab = try await NetnsLab.create(hosts: ["node"], ipPath: ipPath, prefix: "bvp", subnet: "10.79.0")
        do {
            let host = lab.host("node")
            let reader = VIPPresenceReader(namespace: .named(host.namespace), logger: Logger(label: "VIPPresenceTests"))
            defer { reader.shutdown() }
            let apps = [app("web", [("10.79.0.100", 24, host.interface), ("10.79.0.101", 32, "nope0")])]
            #expect(await reader.read(apps: apps).map(\.present) == [false, false])
            _ = try await lab.ip(["-n", host.namespace, "addr", "add", "10.79.0.100/24", "dev", host.interface])
            #expect(await reader.read(apps: apps).map(\.present) == [true, false])
            _ = try await lab.ip(["-n", host.namespace, "addr", "del", "10.79.0.100/24", "dev", host.interface])
            #expect(await reader.read(apps: apps).map(\.present) == [false, false])
            // Present with another prefix length too.
            _ = try await lab.ip(["-n", host.namespace, "addr", "add", "10.79.0.100/32", "dev", host.interface])
            #expect(await reader.read(apps: apps).map(\.present) == [true, false])
        } catch {
            await lab.destroy()
            throw error
        }
        await lab.destroy()
    }
}
