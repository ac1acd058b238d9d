import Testing

@testable import Netlink

@Suite("announcement packets")
struct AnnouncementPacketTests {
    static let mac: [UInt8] = [0x02, 0x42, 0xAC, 0x11, 0x00, 0x02]

    @Test("gratuitous ARP: a broadcast request who-has VIP tell VIP from the interface's MAC")
    func gratuitousARP() throws {
        let frame = AnnouncementPackets.gratuitousARP(for: try IPAddress("192.0.2.10"), hardwareAddress: Self.mac)
        #expect(frame == [
            0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,   // destination: broadcast
            0x02, 0x42, 0xAC, 0x11, 0x00, 0x02,   // source: the interface
            0x08, 0x06,                           // ARP
            0x00, 0x01, 0x08, 0x00, 6, 4,         // Ethernet, IPv4, address lengths
            0x00, 0x01,                           // request
            0x02, 0x42, 0xAC, 0x11, 0x00, 0x02,   // sender MAC
            192, 0, 2, 10,                        // sender IP: the VIP
            0, 0, 0, 0, 0, 0,                     // target MAC: unknown
            192, 0, 2, 10,                        // target IP: the VIP
        ])
    }

    @Test("unsolicited NA: all-nodes, hop limit 255, override set, solicited clear, target option")
    func neighborAdvertisement() throws {
        let target: [UInt8] = [0x20, 0x01, 0x0D, 0xB8] + Array(repeating: 0, count: 11) + [0x10]
        let allNodes: [UInt8] = [0xFF, 0x02] + Array(repeating: 0, count: 13) + [0x01]
        let frame = AnnouncementPackets.unsolicitedNeighborAdvertisement(
            for: try IPAddress("2001:db8::10"), hardwareAddress: Self.mac)
        let expected: [UInt8] =
            [0x33, 0x33, 0x00, 0x00, 0x00, 0x01]   // destination: the all-nodes multicast MAC
            + Self.mac
            + [0x86, 0xDD]                         // IPv6
            + [0x60, 0, 0, 0, 0, 32, 58, 255]      // version 6, payload 32, ICMPv6, hop limit 255
            + target + allNodes                    // from the VIP to ff02::1
            + [136, 0, 0x4C, 0xB8]                 // NA, code 0, checksum
            + [0x20, 0, 0, 0]                      // override only
            + target
            + [2, 1] + Self.mac                    // target link-layer address option
        #expect(frame.count == 86)
        #expect(frame == expected)
    }

    /// The checksum 0x4cb8 above was computed independently (a Python one's complement sum over
    /// the RFC 8200 pseudo-header); here the receiver's check is repeated: the sum over the
    /// pseudo-header and the message, checksum included, must be 0xffff.
    @Test("the NA checksum verifies like a receiver checks it")
    func checksumVerifies() throws {
        for text in ["2001:db8::10", "fe80::1", "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe"] {
            let address = try IPAddress(text)
            let frame = AnnouncementPackets.unsolicitedNeighborAdvertisement(for: address, hardwareAddress: Self.mac)
            let message = Array(frame[54...])
            let pseudoHeader = address.bytes + AnnouncementPackets.allNodesAddress + [0, 0, 0, 32, 0, 0, 0, 58]
            #expect(AnnouncementPackets.onesComplementSum(pseudoHeader + message) == 0xFFFF, "\(text)")
        }
    }

    @Test("one's complement sum: carries fold back, an odd byte is padded")
    func onesComplementSum() {
        #expect(AnnouncementPackets.onesComplementSum([0xFF, 0xFF, 0x00, 0x01]) == 0x0001)
        #expect(AnnouncementPackets.onesComplementSum([0x12, 0x34, 0x56]) == 0x6834)
        // RFC 1071 §3 example: 0001 f203 f4f5 f6f7 sums to ddf2.
        #expect(AnnouncementPackets.onesComplementSum([0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7]) == 0xDDF2)
    }

    @Test("the default burst is 5 × 200 ms")
    func defaultBurst() {
        #expect(AnnouncementBurst.default == AnnouncementBurst(count: 5, interval: .milliseconds(200)))
        #expect(AnnouncementBurst.single.count == 1)
        #expect(AnnouncementBurst(count: 0, interval: .zero).count == 0, "announce.count: 0 sends none")
    }
}
