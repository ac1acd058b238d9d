import Testing

@testable import Netlink

@Suite("VIP address parsing")
struct VIPAddressTests {
    @Test(
        "good addresses parse to the canonical form",
        arguments: [
            ("192.0.2.10/24", "192.0.2.10/24", IPAddress.Family.ipv4),
            ("192.0.2.10", "192.0.2.10/32", .ipv4),
            ("10.0.0.1/32", "10.0.0.1/32", .ipv4),
            ("0.0.0.1/8", "0.0.0.1/8", .ipv4),
            ("2001:db8::10/64", "2001:db8::10/64", .ipv6),
            ("2001:DB8:0:0:0:0:0:0010/64", "2001:db8::10/64", .ipv6),
            ("2001:db8::10", "2001:db8::10/128", .ipv6),
            ("fe80::1/64", "fe80::1/64", .ipv6),
            ("::1/128", "::1/128", .ipv6),
            ("2001:db8:0:1:0:0:1:1/64", "2001:db8:0:1::1:1/64", .ipv6),
            ("2001:0:0:1:0:0:0:1/64", "2001:0:0:1::1/64", .ipv6),
            ("::ffff:192.0.2.1/128", "::ffff:c000:201/128", .ipv6),
            ("1:2:3:4:5:6:7:8/64", "1:2:3:4:5:6:7:8/64", .ipv6),
        ])
    func parses(text: String, canonical: String, family: IPAddress.Family) throws {
        let vip = try VIPAddress(text)
        #expect(vip.description == canonical)
        #expect(vip.family == family)
    }

    @Test("IPv4 bytes and prefix length")
    func ipv4Bytes() throws {
        let vip = try VIPAddress("192.0.2.10/24")
        #expect(vip.address.bytes == [192, 0, 2, 10])
        #expect(vip.prefixLength == 24)
    }

    @Test("IPv6 bytes")
    func ipv6Bytes() throws {
        let vip = try VIPAddress("2001:db8::10/64")
        #expect(vip.address.bytes == [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [0x10])
    }

    @Test("equality is by bytes and prefix length, not by text")
    func equality() throws {
        #expect(try VIPAddress("2001:db8::10/64") == VIPAddress("2001:0db8:0000::0010/64"))
        #expect(try VIPAddress("2001:db8::10/64") != VIPAddress("2001:db8::10/128"))
        #expect(try VIPAddress("192.0.2.10") == VIPAddress("192.0.2.10/32"))
        #expect(try VIPAddress("192.0.2.10/24") != VIPAddress("192.0.2.11/24"))
    }

    @Test(
        "bad addresses are refused with the reason",
        arguments: [
            ("", "malformed address \"\": empty address"),
            ("192.0.2.10/", "malformed address \"192.0.2.10/\": missing prefix length after \"/\""),
            ("192.0.2.10/33", "malformed address \"192.0.2.10/33\": prefix length 33 is greater than 32, the IPv4 maximum"),
            ("2001:db8::1/129", "malformed address \"2001:db8::1/129\": prefix length 129 is greater than 128, the IPv6 maximum"),
            ("192.0.2.10/0", "malformed address \"192.0.2.10/0\": prefix length 0 is less than 1"),
            ("192.0.2.10/2x", "malformed address \"192.0.2.10/2x\": prefix length \"2x\" is not a decimal number"),
            ("192.0.2.10/-1", "malformed address \"192.0.2.10/-1\": prefix length \"-1\" is not a decimal number"),
            ("192.0.2.10/24/1", "malformed address \"192.0.2.10/24/1\": more than one \"/\""),
            ("192.0.2.300/24", "malformed address \"192.0.2.300/24\": number 4 \"300\" is greater than 255"),
            ("192.0.2/24", "malformed address \"192.0.2/24\": an IPv4 address has 4 dot-separated numbers, found 3"),
            ("192.0..2", "malformed address \"192.0..2\": number 3 is empty"),
            ("192.0.02.1", "malformed address \"192.0.02.1\": number 3 \"02\" has a leading zero"),
            ("192.0.a.1", "malformed address \"192.0.a.1\": number 3 \"a\" is not a decimal number"),
            (" 192.0.2.1", "malformed address \" 192.0.2.1\": contains whitespace"),
            ("eth0", "malformed address \"eth0\": \"eth0\" is neither an IPv4 nor an IPv6 address"),
            ("0.0.0.0/24", "malformed address \"0.0.0.0/24\": 0.0.0.0 is the unspecified address"),
            ("::/64", "malformed address \"::/64\": :: is the unspecified address"),
            ("224.0.0.1", "malformed address \"224.0.0.1\": 224.0.0.1 is a multicast address"),
            ("ff02::1", "malformed address \"ff02::1\": ff02::1 is a multicast address"),
            ("255.255.255.255", "malformed address \"255.255.255.255\": 255.255.255.255 is the broadcast address"),
            ("2001:db8::1::2", "malformed address \"2001:db8::1::2\": \"::\" may appear only once in an IPv6 address"),
            ("2001:db8:::1", "malformed address \"2001:db8:::1\": empty group in the IPv6 address (a single \":\" at the start, end or twice in a row)"),
            ("2001:db8::12345", "malformed address \"2001:db8::12345\": group \"12345\" has more than 4 hex digits"),
            ("2001:db8::g", "malformed address \"2001:db8::g\": group \"g\" is not hexadecimal"),
            ("1:2:3:4:5:6:7", "malformed address \"1:2:3:4:5:6:7\": an IPv6 address without \"::\" has 8 groups, found 7"),
            ("1:2:3:4::5:6:7:8", "malformed address \"1:2:3:4::5:6:7:8\": an IPv6 address with \"::\" has at most 7 groups, found 8"),
            ("fe80::1%eth0", "malformed address \"fe80::1%eth0\": a zone index (\"%...\") is not allowed in a virtual IP"),
            ("::1.2.3.4:5", "malformed address \"::1.2.3.4:5\": an embedded IPv4 address may only end an IPv6 address"),
        ])
    func refuses(text: String, message: String) {
        #expect {
            _ = try VIPAddress(text)
        } throws: { error in
            guard let error = error as? NetlinkError else { return false }
            #expect(error.kind == .malformedAddress)
            #expect(error.operation == .parseAddress)
            #expect(error.address == text)
            #expect(error.description == message)
            return true
        }
    }

    @Test("init(address:prefixLength:) checks the range")
    func explicitPrefix() throws {
        let address = try IPAddress("192.0.2.10")
        #expect(try VIPAddress(address: address, prefixLength: 24).description == "192.0.2.10/24")
        #expect(throws: NetlinkError.self) { try VIPAddress(address: address, prefixLength: 40) }
    }

    @Test("interface names follow the kernel's dev_valid_name")
    func interfaceNames() {
        #expect(InterfaceNames.check("eth0") == nil)
        #expect(InterfaceNames.check("enp0s31f6.100") == nil)
        #expect(InterfaceNames.check("") == "empty interface name")
        #expect(InterfaceNames.check("a-very-long-name-0") == "interface name longer than 15 bytes")
        #expect(InterfaceNames.check("eth0:1") == "interface name contains \":\"")
        #expect(InterfaceNames.check("a/b") == "interface name contains \"/\"")
        #expect(InterfaceNames.check("a b") == "interface name contains \" \"")
        #expect(InterfaceNames.check("..") == "\"..\" cannot be an interface name")
    }

    @Test("IPv4 labels start with the interface name and fit in 15 bytes")
    func labels() {
        #expect(InterfaceNames.checkLabel("eth0", interface: "eth0", family: .ipv4) == nil)
        #expect(InterfaceNames.checkLabel("eth0:web", interface: "eth0", family: .ipv4) == nil)
        #expect(
            InterfaceNames.checkLabel("eth1:web", interface: "eth0", family: .ipv4)
                == "label \"eth1:web\" must start with the interface name \"eth0\", like \"eth0:vip\"")
        #expect(
            InterfaceNames.checkLabel("web", interface: "eth0", family: .ipv4)
                == "label \"web\" must start with the interface name \"eth0\", like \"eth0:vip\"")
        #expect(
            InterfaceNames.checkLabel("eth0:a-long-label", interface: "eth0", family: .ipv4)
                == "label \"eth0:a-long-label\" is longer than 15 bytes")
        #expect(
            InterfaceNames.checkLabel("eth0:web", interface: "eth0", family: .ipv6)
                == "labels apply to IPv4 addresses only")
    }

    @Test("error descriptions name the operation, interface, address, errno and capability")
    func errorDescriptions() {
        let denied = NetlinkError.kernel(
            1, operation: .addAddress, interface: "eth0", address: "192.0.2.10/24", reason: "the kernel refused")
        #expect(denied.kind == .permissionDenied)
        #expect(
            denied.description
                == "cannot add 192.0.2.10/24 to eth0: permission denied (EPERM: Operation not permitted); adding and removing addresses needs CAP_NET_ADMIN")
        let raw = NetlinkError.kernel(
            1, operation: .announce, interface: "eth0", address: "192.0.2.10", reason: "sending the frame failed")
        #expect(raw.description.hasSuffix("sending announcements needs CAP_NET_RAW"))
        let kernel = NetlinkError.kernel(
            22, operation: .removeAddress, interface: "eth0", address: "2001:db8::1/64", reason: "the kernel refused")
        #expect(kernel.kind == .kernel)
        #expect(
            kernel.description
                == "cannot remove 2001:db8::1/64 from eth0: the kernel refused (EINVAL: Invalid argument)")
    }
}
