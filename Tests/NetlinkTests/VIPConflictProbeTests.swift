import Logging
import NetnsLab
import Testing

@testable import Netlink

@Suite("ARP probe for other owners of a VIP")
struct VIPConflictProbeFrameTests {
    static let mac: [UInt8] = [0x02, 0x00, 0x5E, 0x10, 0x20, 0x30]

    @Test("the probe asks who-has VIP with an unspecified sender address")
    func probeFrame() throws {
        let frame = AnnouncementPackets.arpProbe(for: try IPAddress("192.0.2.10"), hardwareAddress: Self.mac)
        #expect(frame.count == 42)
        #expect(Array(frame[0..<6]) == AnnouncementPackets.broadcastMAC)
        #expect(Array(frame[6..<12]) == Self.mac)
        #expect(Array(frame[12..<14]) == [0x08, 0x06])
        #expect(Array(frame[20..<22]) == [0, 1], "a request")
        #expect(Array(frame[22..<28]) == Self.mac)
        #expect(Array(frame[28..<32]) == [0, 0, 0, 0], "sender protocol address 0.0.0.0 (RFC 5227 probe)")
        #expect(Array(frame[32..<38]) == [0, 0, 0, 0, 0, 0])
        #expect(Array(frame[38..<42]) == [192, 0, 2, 10])
    }

    @Test("the sender of an ARP frame is read; anything else is not ARP")
    func senderParsing() throws {
        let announcement = AnnouncementPackets.gratuitousARP(for: try IPAddress("192.0.2.10"), hardwareAddress: Self.mac)
        let sender = try #require(AnnouncementPackets.arpSender(of: announcement))
        #expect(sender.hardwareAddress == Self.mac)
        #expect(sender.address == [192, 0, 2, 10])
        var notARP = announcement
        notARP[13] = 0x00  // EtherType IPv4
        #expect(AnnouncementPackets.arpSender(of: notARP) == nil)
        #expect(AnnouncementPackets.arpSender(of: Array(announcement.prefix(30))) == nil)
    }
}

@Suite("ARP probe in network namespaces", .serialized, .timeLimit(.minutes(1)))
struct VIPConflictProbeIntegrationTests {
    static let logger = Logger(label: "NetlinkTests")

    @Test("a host that holds the VIP answers the probe; nobody answers for a free one")
    func probeFindsTheOtherOwner() async throws {
        try await NetnsLab.withHostAndPeer { lab in
            let probe = VIPConflictProbe(namespace: .named(lab.hostNamespace), logger: Self.logger)
            defer { probe.shutdown() }
            let vip = try VIPAddress("10.77.0.200/24")
            #expect(try await probe.otherOwners(of: vip, on: lab.hostInterface, listenFor: .milliseconds(200)).isEmpty)

            _ = try await lab.ip(["-n", lab.peerNamespace, "addr", "add", "10.77.0.200/24", "dev", lab.peerInterface])
            let shown = try await lab.ip(["-n", lab.peerNamespace, "link", "show", "dev", lab.peerInterface])
            let peerMAC = try #require(shown.split(separator: " ").drop { $0 != "link/ether" }.dropFirst().first.map(String.init))
            #expect(try await probe.otherOwners(of: vip, on: lab.hostInterface, listenFor: .milliseconds(500)) == [peerMAC])

            // Our own copy of the address is not a conflict.
            let manager = VIPAddressManager(namespace: .named(lab.hostNamespace), logger: Self.logger)
            defer { manager.shutdown() }
            _ = try await lab.ip(["-n", lab.peerNamespace, "addr", "del", "10.77.0.200/24", "dev", lab.peerInterface])
            _ = try await manager.add(vip, to: lab.hostInterface)
            #expect(try await probe.otherOwners(of: vip, on: lab.hostInterface, listenFor: .milliseconds(200)).isEmpty)
            #expect(try await probe.otherOwners(of: try VIPAddress("2001:db8::1/64"), on: lab.hostInterface, listenFor: .milliseconds(10)).isEmpty)
        }
    }

    @Test("an unknown interface is named in the error")
    func unknownInterface() async throws {
        try await NetnsLab.withHostAndPeer { lab in
            let probe = VIPConflictProbe(namespace: .named(lab.hostNamespace), logger: Self.logger)
            defer { probe.shutdown() }
            let vip = try VIPAddress("10.77.0.200/24")
            let error = await #expect(throws: NetlinkError.self) {
                _ = try await probe.otherOwners(of: vip, on: "nosuch0", listenFor: .milliseconds(10))
            }
            #expect(error?.kind == .unknownInterface)
            #expect(error?.description.contains("nosuch0") == true, "\(String(describing: error))")
        }
    }
}
