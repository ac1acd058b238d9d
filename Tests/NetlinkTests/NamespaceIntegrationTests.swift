import Foundation
import Logging
import NetnsLab
import TestSupport
import Testing

@testable import Netlink

/// Runs as root in private network namespaces on a bridge (see ``NetnsLab/withHostAndPeer(_:)``).
@Suite("Netlink in network namespaces", .serialized, .timeLimit(.minutes(1)))
struct NamespaceIntegrationTests {
    static let logger = Logger(label: "NetlinkTests")

    @Test("IPv4: add, add again, list, label, remove, remove again")
    func ipv4AddressLifecycle() async throws {
        try await NetnsLab.withHostAndPeer { lab in
            let manager = VIPAddressManager(namespace: .named(lab.hostNamespace), logger: Self.logger)
            let vip = try VIPAddress("10.77.0.100/24")
            let interface = lab.hostInterface

            #expect(try await manager.add(vip, to: interface) == .added)
            #expect(try await manager.add(vip, to: interface) == .alreadyPresent)
            #expect(try await manager.contains(vip, on: interface))
            let listed = try await manager.addresses(on: interface)
            #expect(listed.map(\.vip).contains(try VIPAddress("10.77.0.1/24")))
            #expect(listed.contains { $0.vip == vip && $0.label == interface })
            #expect(try await lab.ip(["-n", lab.hostNamespace, "-4", "addr", "show", "dev", interface]).contains("inet 10.77.0.100/24 "))

            let labelled = try VIPAddress("10.77.0.101/32")
            #expect(try await manager.add(labelled, to: interface, label: interface + ":v") == .added)
            #expect(try await manager.addresses(on: interface).contains { $0.vip == labelled && $0.label == interface + ":v" })

            #expect(try await manager.remove(vip, from: interface) == .removed)
            #expect(try await manager.remove(vip, from: interface) == .absent)
            #expect(try await manager.remove(labelled, from: interface) == .removed)
            let after = try await manager.addresses(on: interface).map(\.vip)
            #expect(!after.contains(vip))
            #expect(!after.contains(labelled))
            #expect(after.contains(try VIPAddress("10.77.0.1/24")), "the interface's own address stays")
            #expect(!(try await lab.ip(["-n", lab.hostNamespace, "-4", "addr", "show", "dev", interface]).contains("10.77.0.100")))
        }
    }

    @Test("IPv6: added without DAD (not tentative), idempotent, removed")
    func ipv6AddressLifecycle() async throws {
        try await NetnsLab.withHostAndPeer { lab in
            let manager = VIPAddressManager(namespace: .named(lab.hostNamespace), logger: Self.logger)
            let vip = try VIPAddress("2001:db8:77::100/64")
            let interface = lab.hostInterface

            #expect(try await manager.add(vip, to: interface) == .added)
            #expect(try await manager.add(vip, to: interface) == .alreadyPresent)
            let entry = try #require(try await manager.addresses(on: interface).first { $0.vip == vip })
            #expect(!entry.isTentative)
            #expect(entry.label == nil)
            let shown = try await lab.ip(["-n", lab.hostNamespace, "-6", "-o", "addr", "show", "dev", interface])
            let line = try #require(shown.split(separator: "\n").first { $0.contains("inet6 2001:db8:77::100/64 ") })
            #expect(line.contains("nodad"))
            #expect(!line.contains("tentative"))

            #expect(try await manager.remove(vip, from: interface) == .removed)
            #expect(try await manager.remove(vip, from: interface) == .absent)
            #expect(!(try await manager.contains(vip, on: interface)))
        }
    }

    @Test("the same address with another prefix length is a conflict, not a no-op")
    func conflictingPrefixLength() async throws {
        try await NetnsLab.withHostAndPeer { lab in
            let manager = VIPAddressManager(namespace: .named(lab.hostNamespace), logger: Self.logger)
            let interface = lab.hostInterface
            let subnetVIP = try VIPAddress("10.77.0.100/24")
            let hostVIP = try VIPAddress("10.77.0.100/32")
            #expect(try await manager.add(subnetVIP, to: interface) == .added)
            let conflict = await #expect(throws: NetlinkError.self) {
                try await manager.add(hostVIP, to: interface)
            }
            #expect(conflict?.kind == .conflictingPrefixLength)
            #expect(conflict?.description == "cannot add 10.77.0.100/32 to \(interface): 10.77.0.100 is already on \(interface) as 10.77.0.100/24")
            #expect(try await manager.remove(hostVIP, from: interface) == .absent)
            #expect(try await manager.contains(subnetVIP, on: interface))
        }
    }

    @Test("an unknown interface, a bad label and a missing namespace are named in the error")
    func errors() async throws {
        try await NetnsLab.withHostAndPeer { lab in
            let manager = VIPAddressManager(namespace: .named(lab.hostNamespace), logger: Self.logger)
            let vip = try VIPAddress("10.77.0.100/24")

            let unknown = await #expect(throws: NetlinkError.self) { try await manager.add(vip, to: "nosuch0") }
            #expect(unknown?.kind == .unknownInterface)
            #expect(unknown?.description == "cannot add 10.77.0.100/24 to nosuch0: no interface named \"nosuch0\" in network namespace /var/run/netns/\(lab.hostNamespace)")
            let unknownList = await #expect(throws: NetlinkError.self) { try await manager.addresses(on: "nosuch0") }
            #expect(unknownList?.kind == .unknownInterface)
            let unknownRemove = await #expect(throws: NetlinkError.self) { try await manager.remove(vip, from: "nosuch0") }
            #expect(unknownRemove?.kind == .unknownInterface)

            let label = await #expect(throws: NetlinkError.self) {
                try await manager.add(vip, to: lab.hostInterface, label: "other:v")
            }
            #expect(label?.kind == .invalidLabel)

            let announcer = VIPAnnouncer(namespace: .named(lab.hostNamespace), logger: Self.logger)
            let announceError = await #expect(throws: NetlinkError.self) {
                try await announcer.announce(vip, on: "nosuch0", burst: .single)
            }
            #expect(announceError?.kind == .unknownInterface)
            let loopback = await #expect(throws: NetlinkError.self) {
                try await announcer.announce(vip, on: "lo", burst: .single)
            }
            #expect(loopback?.kind == .unsupportedInterface)

            let missing = VIPAddressManager(namespace: .named(lab.hostNamespace + "-missing"), logger: Self.logger)
            let namespaceError = await #expect(throws: NetlinkError.self) { try await missing.addresses(on: "lo") }
            #expect(namespaceError?.kind == .namespaceUnavailable)
            #expect(namespaceError?.description.contains("/var/run/netns/\(lab.hostNamespace)-missing") == true)

            manager.shutdown()
            let closed = await #expect(throws: NetlinkError.self) { try await manager.addresses(on: "lo") }
            #expect(closed?.kind == .shutDown)
        }
    }

    @Test("a gratuitous ARP (a burst, then a periodic refresh) moves the peer's neighbour entry for the VIP to the announcer's MAC")
    func gratuitousARPIsLearned() async throws {
        try await NetnsLab.withHostAndPeer { lab in
            let vip = try VIPAddress("10.77.0.100/24")
            let hostMAC = try await lab.macAddress(of: lab.hostInterface, in: lab.hostNamespace)
            // The peer believes another host owns the VIP, as after a failover; Linux updates an
            // existing entry from a gratuitous ARP (it creates none unless arp_accept is set).
            try await lab.ip([
                "-n", lab.peerNamespace, "neigh", "replace", "10.77.0.100", "lladdr", "02:00:00:00:00:99",
                "dev", lab.peerInterface, "nud", "stale",
            ])
            #expect(try await lab.peerNeighbour("10.77.0.100") == "02:00:00:00:00:99")

            let manager = VIPAddressManager(namespace: .named(lab.hostNamespace), logger: Self.logger)
            #expect(try await manager.add(vip, to: lab.hostInterface) == .added)
            let announcer = VIPAnnouncer(namespace: .named(lab.hostNamespace), logger: Self.logger)
            try await announcer.announce(vip, on: lab.hostInterface, burst: AnnouncementBurst(count: 2, interval: .milliseconds(50)))

            var entry: String?
            try await eventually("the peer's entry for the VIP to be \(hostMAC) (is \(entry ?? "none"))", timeout: .seconds(5)) {
                entry = try await lab.peerNeighbour("10.77.0.100")
                return entry == hostMAC
            }

            // The peer is misled again; a periodic refresh corrects it.
            try await lab.ip([
                "-n", lab.peerNamespace, "neigh", "replace", "10.77.0.100", "lladdr", "02:00:00:00:00:98",
                "dev", lab.peerInterface, "nud", "stale",
            ])
            #expect(try await lab.peerNeighbour("10.77.0.100") == "02:00:00:00:00:98")
            let refresh = Task { await announcer.refresh(vip, on: lab.hostInterface, every: .milliseconds(100)) }
            defer { refresh.cancel() }
            try await eventually("the refresh restoring the peer's entry to \(hostMAC) (is \(entry ?? "none"))", timeout: .seconds(5)) {
                entry = try await lab.peerNeighbour("10.77.0.100")
                return entry == hostMAC
            }
            refresh.cancel()
            await refresh.value
        }
    }

    @Test("an unsolicited NA moves the peer's neighbour entry for the IPv6 VIP to the announcer's MAC")
    func neighborAdvertisementIsLearned() async throws {
        try await NetnsLab.withHostAndPeer { lab in
            let vip = try VIPAddress("2001:db8:77::100/64")
            let hostMAC = try await lab.macAddress(of: lab.hostInterface, in: lab.hostNamespace)
            try await lab.ip([
                "-n", lab.peerNamespace, "-6", "neigh", "replace", "2001:db8:77::100", "lladdr", "02:00:00:00:00:99",
                "dev", lab.peerInterface, "nud", "stale",
            ])
            #expect(try await lab.peerNeighbour("2001:db8:77::100") == "02:00:00:00:00:99")

            let manager = VIPAddressManager(namespace: .named(lab.hostNamespace), logger: Self.logger)
            #expect(try await manager.add(vip, to: lab.hostInterface) == .added)
            let announcer = VIPAnnouncer(namespace: .named(lab.hostNamespace), logger: Self.logger)
            try await announcer.announce(vip, on: lab.hostInterface, burst: AnnouncementBurst(count: 2, interval: .milliseconds(50)))

            // The kernel drops an NA with a wrong checksum or hop limit, so learning the MAC
            // also checks those.
            var entry: String?
            try await eventually("the peer's entry for the IPv6 VIP to be \(hostMAC) (is \(entry ?? "none"))", timeout: .seconds(5)) {
                entry = try await lab.peerNeighbour("2001:db8:77::100")
                return entry == hostMAC
            }
        }
    }
}
