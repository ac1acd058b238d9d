import Foundation
import NATSTestSupport
import NetnsLab

/// The netlink suites' view of the shared ``NetnsLab``: two hosts on 10.77.0.0/24 (namespaces
/// `bnl-<tag>-host` and `bnl-<tag>-peer`, each with `eth0` on the lab's bridge): the announcer's
/// side (`host`, 10.77.0.1) and a peer that watches (`peer`, 10.77.0.2).
extension NetnsLab {
    /// Runs `body` in a fresh two-host lab and destroys the lab afterwards, whether `body` threw
    /// or not. Skips (or fails under BATON_REQUIRE_INTEGRATION=1) when not root or `ip` is missing.
    static func withHostAndPeer<Result: Sendable>(_ body: (NetnsLab) async throws -> Result) async throws -> Result {
        guard geteuid() == 0 else {
            try Integration.missingPrerequisite(MissingPrerequisite(
                name: "root", reason: "network namespace tests create namespaces and veth pairs",
                remedy: "running the tests as root, e.g. `sudo swift test --filter NetlinkTests`"))
        }
        let ipPath = try Integration.requireExecutable("ip", remedy: "`apt-get install iproute2`")
        let lab = try await NetnsLab.create(hosts: ["host", "peer"], ipPath: ipPath, prefix: "bnl", subnet: "10.77.0")
        do {
            let result = try await body(lab)
            await lab.destroy()
            return result
        } catch {
            await lab.destroy()
            throw error
        }
    }

    /// The announcer's namespace.
    var hostNamespace: String { host("host").namespace }
    /// The announcer's interface (on the bridge).
    var hostInterface: String { host("host").interface }
    /// The watching peer's namespace.
    var peerNamespace: String { host("peer").namespace }
    /// The watching peer's interface (on the bridge).
    var peerInterface: String { host("peer").interface }

    /// The link-layer address the peer's neighbour table holds for `address`, or `nil`.
    func peerNeighbour(_ address: String) async throws -> String? {
        try await neighbour(address, in: host("peer"))
    }
}
