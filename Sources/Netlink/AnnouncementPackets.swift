/// The Ethernet frames that tell a link's neighbours which MAC address now owns a virtual IP.
/// Pure functions of the address and the MAC, so the bytes can be checked in unit tests.
enum AnnouncementPackets {
    static let broadcastMAC: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
    /// The Ethernet multicast address of ff02::1 (33:33 followed by its last 32 bits).
    static let allNodesMAC: [UInt8] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01]
    /// ff02::1, all nodes on the link.
    static let allNodesAddress: [UInt8] = [0xFF, 0x02] + [UInt8](repeating: 0, count: 13) + [0x01]

    static let etherTypeARP: UInt16 = 0x0806
    static let etherTypeIPv4: UInt16 = 0x0800
    static let etherTypeIPv6: UInt16 = 0x86DD
    static let icmpv6NextHeader: UInt8 = 58
    static let neighborAdvertisementType: UInt8 = 136
    static let targetLinkLayerAddressOption: UInt8 = 2
    /// The override flag of a neighbor advertisement (router 0x80, solicited 0x40, override 0x20).
    static let overrideFlag: UInt8 = 0x20

    /// A gratuitous ARP request (42 bytes): "who-has VIP tell VIP" from `hardwareAddress` to
    /// the broadcast MAC. The VIP is both sender and target protocol address; the target hardware
    /// address is zero (RFC 5227 announcement). Linux updates an existing neighbour entry from
    /// this form (a request whose sender is the VIP), which is what moves clients to the new
    /// owner; a request from the interface's primary address does not.
    static func gratuitousARP(for address: IPAddress, hardwareAddress: [UInt8]) -> [UInt8] {
        precondition(address.family == .ipv4 && hardwareAddress.count == 6)
        var frame: [UInt8] = []
        frame.reserveCapacity(42)
        frame += broadcastMAC
        frame += hardwareAddress
        frame += bigEndian(etherTypeARP)
        frame += bigEndian(1)              // hardware type: Ethernet
        frame += bigEndian(etherTypeIPv4)  // protocol type
        frame += [6, 4]                    // hardware and protocol address lengths
        frame += bigEndian(1)              // operation: request
        frame += hardwareAddress           // sender hardware address
        frame += address.bytes             // sender protocol address: the VIP
        frame += [UInt8](repeating: 0, count: 6)  // target hardware address: unknown
        frame += address.bytes             // target protocol address: the VIP
        return frame
    }

    /// An ARP probe (42 bytes, RFC 5227 §2.1.1): "who-has VIP tell 0.0.0.0" from
    /// `hardwareAddress` to the broadcast MAC. A host that owns the VIP answers it; a zero sender
    /// address makes no neighbour learn anything from the probe itself.
    static func arpProbe(for address: IPAddress, hardwareAddress: [UInt8]) -> [UInt8] {
        precondition(address.family == .ipv4 && hardwareAddress.count == 6)
        var frame = gratuitousARP(for: address, hardwareAddress: hardwareAddress)
        frame.replaceSubrange(28..<32, with: [0, 0, 0, 0])  // sender protocol address: unspecified
        return frame
    }

    /// The sender of an ARP frame (request or reply) for IPv4 over Ethernet: its hardware and
    /// protocol addresses, or nil when `frame` is not such a frame.
    static func arpSender(of frame: [UInt8]) -> (hardwareAddress: [UInt8], address: [UInt8])? {
        guard frame.count >= 42, frame[12] == 0x08, frame[13] == 0x06,  // EtherType ARP
              frame[14] == 0, frame[15] == 1, frame[16] == 0x08, frame[17] == 0x00,  // Ethernet, IPv4
              frame[18] == 6, frame[19] == 4 else { return nil }
        return (Array(frame[22..<28]), Array(frame[28..<32]))
    }

    /// An unsolicited neighbor advertisement (86 bytes, RFC 4861 §7.2.6): Ethernet to
    /// 33:33:00:00:00:01, IPv6 from the VIP to ff02::1 with hop limit 255, ICMPv6 type 136 with
    /// the override flag set and the solicited and router flags clear, target = the VIP, and a
    /// target link-layer address option carrying `hardwareAddress`.
    static func unsolicitedNeighborAdvertisement(for address: IPAddress, hardwareAddress: [UInt8]) -> [UInt8] {
        precondition(address.family == .ipv6 && hardwareAddress.count == 6)
        var message: [UInt8] = []
        message += [neighborAdvertisementType, 0, 0, 0]  // type, code, checksum (filled below)
        message += [overrideFlag, 0, 0, 0]                // flags and reserved
        message += address.bytes                         // target address
        message += [targetLinkLayerAddressOption, 1]     // option type, length in units of 8 bytes
        message += hardwareAddress
        let checksum = icmpv6Checksum(source: address.bytes, destination: allNodesAddress, message: message)
        message[2] = UInt8(checksum >> 8)
        message[3] = UInt8(checksum & 0xFF)

        var frame: [UInt8] = []
        frame.reserveCapacity(14 + 40 + message.count)
        frame += allNodesMAC
        frame += hardwareAddress
        frame += bigEndian(etherTypeIPv6)
        frame += [0x60, 0, 0, 0]                  // version 6, traffic class 0, flow label 0
        frame += bigEndian(UInt16(message.count)) // payload length
        frame += [icmpv6NextHeader, 255]          // next header, hop limit (RFC 4861 requires 255)
        frame += address.bytes                    // source: the VIP, as the kernel's own unsolicited NAs do
        frame += allNodesAddress
        frame += message
        return frame
    }

    /// The ICMPv6 checksum (RFC 4443 §2.3, RFC 8200 §8.1): the one's complement of the one's
    /// complement sum of the pseudo-header (source, destination, upper-layer length, next
    /// header 58) and the message with its checksum field zero.
    static func icmpv6Checksum(source: [UInt8], destination: [UInt8], message: [UInt8]) -> UInt16 {
        var pseudoHeader = source + destination
        pseudoHeader += bigEndian32(UInt32(message.count))
        pseudoHeader += [0, 0, 0, icmpv6NextHeader]
        return ~onesComplementSum(pseudoHeader + message)
    }

    /// The 16-bit one's complement sum of `bytes` (an odd length is padded with a zero byte).
    static func onesComplementSum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var index = 0
        while index + 1 < bytes.count {
            sum += UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1])
            index += 2
        }
        if index < bytes.count { sum += UInt32(bytes[index]) << 8 }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        return UInt16(sum)
    }

    private static func bigEndian(_ value: UInt16) -> [UInt8] {
        [UInt8(value >> 8), UInt8(value & 0xFF)]
    }

    private static func bigEndian32(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
    }
}
