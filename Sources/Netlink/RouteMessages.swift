import CMnl

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The rtnetlink requests the address manager sends, built with libmnl into plain bytes, and the
/// parser for the kernel's replies. No I/O: everything here is a pure function of its inputs, so
/// the bytes can be checked in unit tests.
enum RouteMessages {
    /// `RTM_GETLINK` for one interface by name (`IFLA_IFNAME`), acknowledged. The kernel answers
    /// with one `RTM_NEWLINK` (index, hardware address) or `ENODEV`.
    static func getLink(name: String, sequence: UInt32) -> [UInt8] {
        build(type: UInt16(RTM_GETLINK), flags: NLM_F_REQUEST | NLM_F_ACK, sequence: sequence) { header in
            let info = mnl_nlmsg_put_extra_header(header, MemoryLayout<ifinfomsg>.size)!
                .bindMemory(to: ifinfomsg.self, capacity: 1)
            info.pointee.ifi_family = UInt8(AF_UNSPEC)
            mnl_attr_put_strz(header, UInt16(IFLA_IFNAME), name)
        }
    }

    /// `RTM_NEWADDR` that adds `vip` to interface `index`, failing with `EEXIST` if it is there
    /// (`NLM_F_CREATE | NLM_F_EXCL`), acknowledged. IPv4 carries `IFA_LOCAL` and `IFA_ADDRESS`
    /// (equal: no peer) and the optional `IFA_LABEL`; IPv6 carries `IFA_LOCAL` and `IFA_ADDRESS`
    /// and sets `IFA_F_NODAD`, so the address is usable at once, without duplicate detection.
    static func newAddress(_ vip: VIPAddress, interfaceIndex: UInt32, label: String?, sequence: UInt32) -> [UInt8] {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        return build(type: UInt16(RTM_NEWADDR), flags: flags, sequence: sequence) { header in
            putAddressHeader(header, vip, interfaceIndex: interfaceIndex)
            putAddresses(header, vip)
            if let label, vip.family == .ipv4 {
                mnl_attr_put_strz(header, UInt16(IFA_LABEL), label)
            }
        }
    }

    /// `RTM_DELADDR` that removes `vip` (address and prefix length) from interface `index`,
    /// acknowledged.
    static func deleteAddress(_ vip: VIPAddress, interfaceIndex: UInt32, sequence: UInt32) -> [UInt8] {
        build(type: UInt16(RTM_DELADDR), flags: NLM_F_REQUEST | NLM_F_ACK, sequence: sequence) { header in
            putAddressHeader(header, vip, interfaceIndex: interfaceIndex)
            putAddresses(header, vip)
        }
    }

    /// `RTM_GETADDR` dump of every address of every family. The kernel ignores the interface
    /// index of a dump request (without strict checking), so replies are filtered afterwards.
    static func dumpAddresses(sequence: UInt32) -> [UInt8] {
        build(type: UInt16(RTM_GETADDR), flags: NLM_F_REQUEST | NLM_F_DUMP, sequence: sequence) { header in
            let message = mnl_nlmsg_put_extra_header(header, MemoryLayout<ifaddrmsg>.size)!
                .bindMemory(to: ifaddrmsg.self, capacity: 1)
            message.pointee.ifa_family = UInt8(AF_UNSPEC)
        }
    }

    private static func putAddressHeader(_ header: UnsafeMutablePointer<nlmsghdr>, _ vip: VIPAddress, interfaceIndex: UInt32) {
        let message = mnl_nlmsg_put_extra_header(header, MemoryLayout<ifaddrmsg>.size)!
            .bindMemory(to: ifaddrmsg.self, capacity: 1)
        message.pointee.ifa_family = UInt8(vip.family == .ipv4 ? AF_INET : AF_INET6)
        message.pointee.ifa_prefixlen = UInt8(vip.prefixLength)
        message.pointee.ifa_flags = vip.family == .ipv6 ? UInt8(IFA_F_NODAD) : 0
        message.pointee.ifa_scope = UInt8(RT_SCOPE_UNIVERSE.rawValue)
        message.pointee.ifa_index = interfaceIndex
    }

    private static func putAddresses(_ header: UnsafeMutablePointer<nlmsghdr>, _ vip: VIPAddress) {
        vip.address.bytes.withUnsafeBytes { bytes in
            mnl_attr_put(header, UInt16(IFA_LOCAL), bytes.count, bytes.baseAddress)
            mnl_attr_put(header, UInt16(IFA_ADDRESS), bytes.count, bytes.baseAddress)
        }
    }

    private static func build(
        type: UInt16, flags: Int32, sequence: UInt32, _ body: (UnsafeMutablePointer<nlmsghdr>) -> Void
    ) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 1024)
        return buffer.withUnsafeMutableBytes { raw in
            let header = mnl_nlmsg_put_header(raw.baseAddress)!
            header.pointee.nlmsg_type = type
            header.pointee.nlmsg_flags = UInt16(flags)
            header.pointee.nlmsg_seq = sequence
            body(header)
            return Array(raw.prefix(Int(header.pointee.nlmsg_len)))
        }
    }

    // MARK: Replies

    /// One data message of a reply: its type, its fixed header (`ifaddrmsg`, `ifinfomsg`) and
    /// its attributes by type (the last one wins on a repeat).
    struct Message: Sendable, Hashable {
        var type: UInt16
        var fixedHeader: [UInt8]
        var attributes: [UInt16: [UInt8]]
    }

    /// What one received buffer held.
    enum Chunk: Sendable, Hashable {
        /// Data messages, and whether the reply is complete (`NLMSG_DONE` or the ack was seen).
        case messages([Message], finished: Bool)
        /// The kernel answered with this errno.
        case kernelError(Int32)
        /// The dump changed while it was read (`NLM_F_DUMP_INTR`): start it again.
        case interrupted
        /// The buffer is not a valid reply to this request.
        case malformed(String)
    }

    /// Parses one buffer received on a netlink socket with libmnl's `mnl_cb_run`, which checks
    /// the sequence number and port id, stops at `NLMSG_DONE` and turns `NLMSG_ERROR` into errno.
    static func parse(_ bytes: [UInt8], sequence: UInt32, portID: UInt32) -> Chunk {
        let collector = MessageCollector()
        let status: Int32
        let code: Int32
        (status, code) = bytes.withUnsafeBytes { raw in
            errno = 0
            let status = mnl_cb_run(
                raw.baseAddress, raw.count, sequence, portID,
                { header, data in
                    let collector = Unmanaged<MessageCollector>.fromOpaque(data!).takeUnretainedValue()
                    return collector.collect(header!)
                },
                Unmanaged.passUnretained(collector).toOpaque())
            return (status, errno)
        }
        if let problem = collector.problem { return .malformed(problem) }
        if status >= MNL_CB_OK { return .messages(collector.messages, finished: false) }
        if status == MNL_CB_STOP { return .messages(collector.messages, finished: true) }
        switch code {
        // libmnl's codes: ESRCH for another port id, EPROTO for another sequence number.
        case ESRCH: return .malformed("a reply for another netlink port")
        case EPROTO: return .malformed("a reply with another sequence number than the request's")
        case EBADMSG: return .malformed("a truncated or malformed netlink message")
        case EINTR: return .interrupted
        case 0: return .malformed("libmnl failed without an errno")
        default: return .kernelError(code)
        }
    }

    /// Whether a buffer holds an `NLMSG_DONE` or `NLMSG_ERROR` (the end of a reply), whatever
    /// its flags.
    static func containsEnd(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            let headerSize = MemoryLayout<nlmsghdr>.size
            while offset + headerSize <= raw.count {
                let header = raw.loadUnaligned(fromByteOffset: offset, as: nlmsghdr.self)
                if header.nlmsg_type == UInt16(NLMSG_DONE) || header.nlmsg_type == UInt16(NLMSG_ERROR) { return true }
                let length = (Int(header.nlmsg_len) + 3) & ~3
                guard length >= headerSize else { return true }
                offset += length
            }
            return false
        }
    }

    /// Collects the data messages of one buffer; a class so the C callback can reach it.
    private final class MessageCollector {
        var messages: [Message] = []
        var problem: String?
        private var attributes: [UInt16: [UInt8]] = [:]

        func collect(_ header: UnsafePointer<nlmsghdr>) -> Int32 {
            let type = header.pointee.nlmsg_type
            let fixedSize: Int
            switch Int32(type) {
            case Int32(RTM_NEWADDR), Int32(RTM_DELADDR): fixedSize = MemoryLayout<ifaddrmsg>.size
            case Int32(RTM_NEWLINK), Int32(RTM_DELLINK): fixedSize = MemoryLayout<ifinfomsg>.size
            default:
                problem = "an unexpected netlink message type \(type)"
                return MNL_CB_ERROR
            }
            guard mnl_nlmsg_get_payload_len(header) >= fixedSize else {
                problem = "a netlink message of type \(type) shorter than its fixed header"
                return MNL_CB_ERROR
            }
            let payload = UnsafeRawBufferPointer(start: mnl_nlmsg_get_payload(header), count: fixedSize)
            attributes = [:]
            let parsed = mnl_attr_parse(header, UInt32(fixedSize), { attribute, data in
                let collector = Unmanaged<MessageCollector>.fromOpaque(data!).takeUnretainedValue()
                let length = Int(mnl_attr_get_payload_len(attribute!))
                let value = UnsafeRawBufferPointer(start: mnl_attr_get_payload(attribute!), count: length)
                collector.attributes[mnl_attr_get_type(attribute!)] = Array(value)
                return MNL_CB_OK
            }, Unmanaged.passUnretained(self).toOpaque())
            guard parsed >= MNL_CB_STOP else {
                problem = "a netlink message of type \(type) with malformed attributes"
                return MNL_CB_ERROR
            }
            messages.append(Message(type: type, fixedHeader: Array(payload), attributes: attributes))
            return MNL_CB_OK
        }
    }

    /// The index and hardware address of the interface an `RTM_NEWLINK` reply describes.
    static func link(from messages: [Message]) -> Result<LinkDescription, FailureReason> {
        guard let message = messages.first(where: { $0.type == UInt16(RTM_NEWLINK) }) else {
            return .failure("no RTM_NEWLINK in the reply")
        }
        let index = message.fixedHeader.withUnsafeBytes { $0.loadUnaligned(as: ifinfomsg.self).ifi_index }
        guard index > 0 else { return .failure("interface index \(index) in the reply") }
        let hardwareAddress = message.attributes[UInt16(IFLA_ADDRESS)]
        return .success(LinkDescription(index: UInt32(index), hardwareAddress: hardwareAddress))
    }

    /// The addresses of interface `interfaceIndex` among the `RTM_NEWADDR` messages of a dump.
    static func addresses(from messages: [Message], interfaceIndex: UInt32) -> Result<[InterfaceAddress], FailureReason> {
        var result: [InterfaceAddress] = []
        for message in messages where message.type == UInt16(RTM_NEWADDR) {
            let header = message.fixedHeader.withUnsafeBytes { $0.loadUnaligned(as: ifaddrmsg.self) }
            guard header.ifa_index == interfaceIndex else { continue }
            guard header.ifa_family == UInt8(AF_INET) || header.ifa_family == UInt8(AF_INET6) else { continue }
            // IFA_LOCAL is the local address when present (IPv4 always, IPv6 with a peer);
            // otherwise IFA_ADDRESS is.
            guard let bytes = message.attributes[UInt16(IFA_LOCAL)] ?? message.attributes[UInt16(IFA_ADDRESS)],
                  let address = IPAddress(bytes: bytes) else {
                return .failure("an RTM_NEWADDR without a 4- or 16-byte address")
            }
            guard (address.family == .ipv4) == (header.ifa_family == UInt8(AF_INET)),
                  Int(header.ifa_prefixlen) <= address.family.bitCount else {
                return .failure("an RTM_NEWADDR whose address does not match its family or prefix length")
            }
            var flags = UInt32(header.ifa_flags)
            if let extended = message.attributes[UInt16(IFA_FLAGS)], extended.count == 4 {
                flags = extended.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            }
            let label = message.attributes[UInt16(IFA_LABEL)].map { bytes in
                String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            }
            result.append(InterfaceAddress(
                vip: VIPAddress(unchecked: address, prefixLength: Int(header.ifa_prefixlen)),
                interfaceIndex: Int(header.ifa_index), label: label, flags: flags, scope: header.ifa_scope))
        }
        return .success(result)
    }
}

/// What `RTM_GETLINK` says about an interface.
struct LinkDescription: Sendable, Hashable {
    var index: UInt32
    /// The link-layer address (6 bytes on Ethernet), absent on some tunnel devices.
    var hardwareAddress: [UInt8]?
}

/// An address on an interface, as a dump lists it.
public struct InterfaceAddress: Sendable, Hashable, CustomStringConvertible {
    /// The address with its prefix length.
    public let vip: VIPAddress
    /// The kernel's index of the interface.
    public let interfaceIndex: Int
    /// The IPv4 label (`eth0`, `eth0:vip`); `nil` for IPv6.
    public let label: String?
    /// `IFA_F_*` flags (from `IFA_FLAGS` when the kernel sends it).
    public let flags: UInt32
    /// `RT_SCOPE_*`: 0 universe, 200 site, 253 link, 254 host.
    public let scope: UInt8

    /// IPv6 duplicate address detection has not finished (the address is not usable yet).
    public var isTentative: Bool { flags & UInt32(IFA_F_TENTATIVE) != 0 }
    /// IPv6 duplicate address detection found another owner.
    public var isDuplicate: Bool { flags & UInt32(IFA_F_DADFAILED) != 0 }

    public var description: String {
        var text = vip.description
        if let label { text += " label \(label)" }
        if isTentative { text += " tentative" }
        if isDuplicate { text += " dadfailed" }
        return text
    }
}
