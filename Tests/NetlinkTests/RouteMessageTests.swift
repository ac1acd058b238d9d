import Testing

@testable import Netlink

/// Netlink headers and fixed headers are in host byte order; these expectations are for a
/// little-endian host (x86_64, aarch64), which is all Baton runs on.
@Suite("rtnetlink messages")
struct RouteMessageTests {
    @Test("RTM_NEWADDR for IPv4: NLM_F_CREATE|EXCL|ACK, IFA_LOCAL and IFA_ADDRESS")
    func newAddressIPv4() throws {
        let bytes = RouteMessages.newAddress(
            try VIPAddress("192.0.2.10/24"), interfaceIndex: 7, label: nil, sequence: 42)
        #expect(bytes == [
            40, 0, 0, 0,  20, 0,  0x05, 0x06,  42, 0, 0, 0,  0, 0, 0, 0,  // nlmsghdr: RTM_NEWADDR
            2, 24, 0, 0,  7, 0, 0, 0,                                     // ifaddrmsg: AF_INET /24, index 7
            8, 0, 2, 0,  192, 0, 2, 10,                                   // IFA_LOCAL
            8, 0, 1, 0,  192, 0, 2, 10,                                   // IFA_ADDRESS
        ])
    }

    @Test("RTM_NEWADDR for IPv4 with a label: IFA_LABEL, NUL-terminated and padded")
    func newAddressLabel() throws {
        let bytes = RouteMessages.newAddress(
            try VIPAddress("192.0.2.10/24"), interfaceIndex: 7, label: "eth0:vip", sequence: 1)
        #expect(bytes.count == 56)
        #expect(bytes[0..<4] == [56, 0, 0, 0])
        #expect(Array(bytes[40...]) == [
            13, 0, 3, 0,  0x65, 0x74, 0x68, 0x30, 0x3A, 0x76, 0x69, 0x70, 0,  0, 0, 0,
        ])
    }

    @Test("RTM_NEWADDR for IPv6: IFA_F_NODAD, 16-byte addresses, no label")
    func newAddressIPv6() throws {
        let address: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [0x10]
        let bytes = RouteMessages.newAddress(
            try VIPAddress("2001:db8::10/64"), interfaceIndex: 3, label: "ignored", sequence: 0x01020304)
        #expect(bytes == [
            64, 0, 0, 0,  20, 0,  0x05, 0x06,  4, 3, 2, 1,  0, 0, 0, 0,
            10, 64, 0x02, 0,  3, 0, 0, 0,                                 // AF_INET6 /64, IFA_F_NODAD
            20, 0, 2, 0,
        ] + address + [
            20, 0, 1, 0,
        ] + address)
    }

    @Test("RTM_DELADDR: request and ack only")
    func deleteAddress() throws {
        let bytes = RouteMessages.deleteAddress(try VIPAddress("192.0.2.10/24"), interfaceIndex: 7, sequence: 9)
        #expect(bytes == [
            40, 0, 0, 0,  21, 0,  0x05, 0x00,  9, 0, 0, 0,  0, 0, 0, 0,
            2, 24, 0, 0,  7, 0, 0, 0,
            8, 0, 2, 0,  192, 0, 2, 10,
            8, 0, 1, 0,  192, 0, 2, 10,
        ])
    }

    @Test("RTM_GETADDR dump of every family")
    func dumpAddresses() {
        #expect(RouteMessages.dumpAddresses(sequence: 5) == [
            24, 0, 0, 0,  22, 0,  0x01, 0x03,  5, 0, 0, 0,  0, 0, 0, 0,
            0, 0, 0, 0,  0, 0, 0, 0,
        ])
    }

    @Test("RTM_GETLINK by IFLA_IFNAME")
    func getLink() {
        #expect(RouteMessages.getLink(name: "eth0", sequence: 6) == [
            44, 0, 0, 0,  18, 0,  0x05, 0x00,  6, 0, 0, 0,  0, 0, 0, 0,
            0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,          // ifinfomsg
            9, 0, 3, 0,  0x65, 0x74, 0x68, 0x30, 0,  0, 0, 0,          // IFLA_IFNAME "eth0"
        ])
    }

    // MARK: Replies

    static func header(length: Int, type: UInt16, flags: UInt16, sequence: UInt32, port: UInt32) -> [UInt8] {
        littleEndian(UInt32(length)) + littleEndian16(type) + littleEndian16(flags)
            + littleEndian(sequence) + littleEndian(port)
    }

    static func littleEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 24)]
    }

    static func littleEndian16(_ value: UInt16) -> [UInt8] {
        [UInt8(value & 0xFF), UInt8(value >> 8)]
    }

    /// An RTM_NEWADDR as a dump returns it (NLM_F_MULTI).
    static func newAddressMessage(
        family: UInt8, prefix: UInt8, index: UInt32, address: [UInt8], label: String?,
        flags: UInt32? = nil, sequence: UInt32, port: UInt32
    ) -> [UInt8] {
        var body: [UInt8] = [family, prefix, 0, 0] + littleEndian(index)
        func attribute(_ type: UInt16, _ value: [UInt8]) {
            body += littleEndian16(UInt16(4 + value.count)) + littleEndian16(type) + value
            while body.count % 4 != 0 { body.append(0) }
        }
        attribute(1, address)                 // IFA_ADDRESS
        if family == 2 { attribute(2, address) }  // IFA_LOCAL
        if let label { attribute(3, Array(label.utf8) + [0]) }
        if let flags { attribute(8, littleEndian(flags)) }
        return header(length: 16 + body.count, type: 20, flags: 2, sequence: sequence, port: port) + body
    }

    static func done(sequence: UInt32, port: UInt32) -> [UInt8] {
        header(length: 20, type: 3, flags: 2, sequence: sequence, port: port) + [0, 0, 0, 0]
    }

    static func error(_ code: Int32, sequence: UInt32, port: UInt32) -> [UInt8] {
        // nlmsgerr: the negative errno, then the header of the request.
        header(length: 36, type: 2, flags: 0, sequence: sequence, port: port)
            + littleEndian(UInt32(bitPattern: -code))
            + header(length: 40, type: 20, flags: 0x605, sequence: sequence, port: 0)
    }

    @Test("a dump reply is parsed and filtered by interface index")
    func parseDump() throws {
        let v6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [0x10]
        let bytes =
            Self.newAddressMessage(family: 2, prefix: 24, index: 7, address: [192, 0, 2, 10], label: "eth0:vip", sequence: 11, port: 99)
            + Self.newAddressMessage(family: 2, prefix: 8, index: 1, address: [127, 0, 0, 1], label: "lo", sequence: 11, port: 99)
            + Self.newAddressMessage(family: 10, prefix: 64, index: 7, address: v6, label: nil, flags: 0x40 | 0x80, sequence: 11, port: 99)
            + Self.done(sequence: 11, port: 99)
        guard case .messages(let messages, finished: true) = RouteMessages.parse(bytes, sequence: 11, portID: 99) else {
            Issue.record("expected a finished dump, got \(RouteMessages.parse(bytes, sequence: 11, portID: 99))")
            return
        }
        #expect(messages.count == 3)
        let addresses = try RouteMessages.addresses(from: messages, interfaceIndex: 7).get()
        #expect(addresses.map(\.vip) == [try VIPAddress("192.0.2.10/24"), try VIPAddress("2001:db8::10/64")])
        #expect(addresses[0].label == "eth0:vip")
        #expect(addresses[0].interfaceIndex == 7)
        #expect(addresses[1].label == nil)
        #expect(addresses[1].isTentative)
        #expect(addresses[1].flags == 0xC0)
    }

    @Test("a dump that continues in the next buffer is not finished")
    func parsePartialDump() {
        let bytes = Self.newAddressMessage(family: 2, prefix: 24, index: 7, address: [192, 0, 2, 10], label: nil, sequence: 3, port: 5)
        guard case .messages(let messages, finished: false) = RouteMessages.parse(bytes, sequence: 3, portID: 5) else {
            Issue.record("expected an unfinished dump")
            return
        }
        #expect(messages.count == 1)
    }

    @Test("an ack finishes a reply; an error carries the errno")
    func parseAckAndError() {
        #expect(RouteMessages.parse(Self.error(0, sequence: 4, port: 8), sequence: 4, portID: 8) == .messages([], finished: true))
        #expect(RouteMessages.parse(Self.error(17, sequence: 4, port: 8), sequence: 4, portID: 8) == .kernelError(17))
        #expect(RouteMessages.parse(Self.error(19, sequence: 4, port: 8), sequence: 4, portID: 8) == .kernelError(19))
    }

    @Test("replies to another request, another port or cut short are malformed")
    func parseMalformed() {
        let message = Self.newAddressMessage(family: 2, prefix: 24, index: 7, address: [192, 0, 2, 10], label: nil, sequence: 3, port: 5)
        #expect(RouteMessages.parse(message, sequence: 4, portID: 5)
            == .malformed("a reply with another sequence number than the request's"))
        #expect(RouteMessages.parse(message, sequence: 3, portID: 6) == .malformed("a reply for another netlink port"))
        // A cut message is ignored by mnl_cb_run (it stops at the last whole message), so the
        // dump is simply not finished.
        #expect(RouteMessages.parse(Array(message.prefix(30)), sequence: 3, portID: 5) == .messages([], finished: false))
        // An RTM_NEWADDR whose payload is shorter than an ifaddrmsg.
        let short = Self.header(length: 20, type: 20, flags: 2, sequence: 3, port: 5) + [2, 24, 0, 0]
        #expect(RouteMessages.parse(short, sequence: 3, portID: 5)
            == .malformed("a netlink message of type 20 shorter than its fixed header"))
    }

    @Test("an RTM_NEWLINK reply gives the index and the MAC")
    func parseLink() throws {
        var body: [UInt8] = [0, 0, 1, 0] + Self.littleEndian(12) + Self.littleEndian(0x1043) + Self.littleEndian(0)
        body += [10, 0, 1, 0, 0x02, 0x42, 0xAC, 0x11, 0x00, 0x02, 0, 0]  // IFLA_ADDRESS
        body += [9, 0, 3, 0, 0x65, 0x74, 0x68, 0x30, 0, 0, 0, 0]        // IFLA_IFNAME
        let message = Self.header(length: 16 + body.count, type: 16, flags: 0, sequence: 2, port: 9) + body
        let bytes = message + Self.error(0, sequence: 2, port: 9)
        guard case .messages(let messages, finished: true) = RouteMessages.parse(bytes, sequence: 2, portID: 9) else {
            Issue.record("expected the link and the ack")
            return
        }
        let link = try RouteMessages.link(from: messages).get()
        #expect(link.index == 12)
        #expect(link.hardwareAddress == [0x02, 0x42, 0xAC, 0x11, 0x00, 0x02])
    }

    @Test("the end of an interrupted dump is found whatever its flags")
    func containsEnd() {
        let message = Self.newAddressMessage(family: 2, prefix: 24, index: 7, address: [192, 0, 2, 10], label: nil, sequence: 3, port: 5)
        #expect(!RouteMessages.containsEnd(message))
        #expect(RouteMessages.containsEnd(message + Self.done(sequence: 3, port: 5)))
    }
}
