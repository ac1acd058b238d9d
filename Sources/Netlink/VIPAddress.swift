/// An IPv4 or IPv6 address: 4 or 16 bytes in network order. Two addresses are equal when their
/// bytes are, so `2001:db8::10` equals `2001:0db8:0:0::0010`.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    public enum Family: Sendable, Hashable, CustomStringConvertible {
        case ipv4
        case ipv6

        /// 32 or 128.
        public var bitCount: Int { self == .ipv4 ? 32 : 128 }

        public var description: String { self == .ipv4 ? "IPv4" : "IPv6" }
    }

    public let family: Family
    /// The address in network byte order: 4 bytes for IPv4, 16 for IPv6.
    public let bytes: [UInt8]

    /// An address from its bytes in network order; `nil` unless there are 4 or 16 of them.
    public init?(bytes: some Collection<UInt8>) {
        switch bytes.count {
        case 4: family = .ipv4
        case 16: family = .ipv6
        default: return nil
        }
        self.bytes = Array(bytes)
    }

    /// Parses `192.0.2.10` or `2001:db8::10` (no prefix length, no zone index).
    ///
    /// - Throws: ``NetlinkError`` of kind ``NetlinkError/Kind/malformedAddress`` naming what is
    ///   wrong.
    public init(_ text: String) throws(NetlinkError) {
        switch AddressParser.address(Substring(text)) {
        case .success(let address): self = address
        case .failure(let reason):
            throw NetlinkError(.malformedAddress, operation: .parseAddress, address: text, reason: reason.description)
        }
    }

    /// Dotted decimal for IPv4; RFC 5952 text for IPv6 (lower case, longest run of zero groups
    /// shortened to `::`).
    public var description: String {
        switch family {
        case .ipv4:
            return bytes.map(String.init).joined(separator: ".")
        case .ipv6:
            let groups = (0..<8).map { UInt16(bytes[2 * $0]) << 8 | UInt16(bytes[2 * $0 + 1]) }
            // The longest run of two or more zero groups (the first one on a tie) becomes "::".
            var best: (start: Int, length: Int) = (0, 0)
            var index = 0
            while index < 8 {
                guard groups[index] == 0 else {
                    index += 1
                    continue
                }
                var end = index
                while end < 8 && groups[end] == 0 { end += 1 }
                if end - index > best.length { best = (index, end - index) }
                index = end
            }
            let hex = groups.map { String($0, radix: 16) }
            guard best.length >= 2 else { return hex.joined(separator: ":") }
            let head = hex[..<best.start].joined(separator: ":")
            let tail = hex[(best.start + best.length)...].joined(separator: ":")
            return head + "::" + tail
        }
    }

    var isUnspecified: Bool { bytes.allSatisfy { $0 == 0 } }

    var isMulticast: Bool {
        family == .ipv4 ? bytes[0] & 0xF0 == 0xE0 : bytes[0] == 0xFF
    }
}

/// A virtual IP: an address with the prefix length it is added with, as in `192.0.2.10/24` or
/// `2001:db8::10/64`.
///
/// Without a prefix length the address is a host address: `/32` for IPv4, `/128` for IPv6. It
/// then reaches no neighbours by itself, so give the prefix of the interface's subnet when the
/// VIP lives in it (the usual case). Two values are equal when both the address bytes and the
/// prefix length are equal; presence on an interface is decided the same way.
public struct VIPAddress: Sendable, Hashable, CustomStringConvertible {
    public let address: IPAddress
    /// 1...32 for IPv4, 1...128 for IPv6.
    public let prefixLength: Int

    public var family: IPAddress.Family { address.family }

    /// Parses `ADDRESS[/PREFIX]`, e.g. `192.0.2.10/24`, `2001:db8::10/64`, `192.0.2.10` (= /32).
    ///
    /// Refused, with the reason in the error: anything that is not an address, a prefix length
    /// that is missing after `/`, not decimal, zero or too long for the family, the unspecified
    /// address, multicast addresses, the IPv4 broadcast address, and IPv6 zone indexes (`%eth0`).
    ///
    /// - Throws: ``NetlinkError`` of kind ``NetlinkError/Kind/malformedAddress``.
    public init(_ text: String) throws(NetlinkError) {
        switch AddressParser.vip(text) {
        case .success(let vip): self = vip
        case .failure(let reason):
            throw NetlinkError(.malformedAddress, operation: .parseAddress, address: text, reason: reason.description)
        }
    }

    /// A VIP from an address and a prefix length.
    ///
    /// - Throws: ``NetlinkError`` of kind ``NetlinkError/Kind/malformedAddress`` when the prefix
    ///   length is out of range or the address cannot be a VIP.
    public init(address: IPAddress, prefixLength: Int) throws(NetlinkError) {
        if let reason = AddressParser.checkVIP(address, prefixLength: prefixLength) {
            throw NetlinkError(
                .malformedAddress, operation: .parseAddress, address: "\(address)/\(prefixLength)",
                reason: reason)
        }
        self.address = address
        self.prefixLength = prefixLength
    }

    init(unchecked address: IPAddress, prefixLength: Int) {
        self.address = address
        self.prefixLength = prefixLength
    }

    /// `ADDRESS/PREFIX`, the prefix length always shown.
    public var description: String { "\(address)/\(prefixLength)" }
}

/// The parsers behind ``IPAddress/init(_:)`` and ``VIPAddress/init(_:)``. Each failure is the
/// reason only; the caller adds the text and the operation.
enum AddressParser {
    static func vip(_ text: String) -> Result<VIPAddress, FailureReason> {
        if text.isEmpty { return .failure("empty address") }
        if text.contains(where: \.isWhitespace) { return .failure("contains whitespace") }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count > 2 { return .failure("more than one \"/\"") }
        let address: IPAddress
        switch self.address(parts[0]) {
        case .success(let parsed): address = parsed
        case .failure(let reason): return .failure(reason)
        }
        var prefixLength = address.family.bitCount
        if parts.count == 2 {
            let prefixText = parts[1]
            if prefixText.isEmpty { return .failure("missing prefix length after \"/\"") }
            guard prefixText.allSatisfy({ $0.isASCII && $0.isNumber }), prefixText.count <= 3,
                  let value = Int(prefixText) else {
                return .failure("prefix length \(quoted(String(prefixText))) is not a decimal number")
            }
            prefixLength = value
        }
        if let reason = checkVIP(address, prefixLength: prefixLength) { return .failure(FailureReason(reason)) }
        return .success(VIPAddress(unchecked: address, prefixLength: prefixLength))
    }

    static func checkVIP(_ address: IPAddress, prefixLength: Int) -> String? {
        let maximum = address.family.bitCount
        if prefixLength > maximum {
            return "prefix length \(prefixLength) is greater than \(maximum), the \(address.family) maximum"
        }
        if prefixLength < 1 { return "prefix length \(prefixLength) is less than 1" }
        if address.isUnspecified { return "\(address) is the unspecified address" }
        if address.isMulticast { return "\(address) is a multicast address" }
        if address.family == .ipv4 && address.bytes.allSatisfy({ $0 == 0xFF }) {
            return "255.255.255.255 is the broadcast address"
        }
        return nil
    }

    static func address(_ text: Substring) -> Result<IPAddress, FailureReason> {
        if text.isEmpty { return .failure("missing address") }
        if text.contains("%") { return .failure("a zone index (\"%...\") is not allowed in a virtual IP") }
        if text.contains(":") { return ipv6(text) }
        if text.contains(".") { return ipv4(text) }
        return .failure("\(quoted(String(text))) is neither an IPv4 nor an IPv6 address")
    }

    static func ipv4(_ text: Substring) -> Result<IPAddress, FailureReason> {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else {
            return .failure("an IPv4 address has 4 dot-separated numbers, found \(parts.count)")
        }
        var bytes: [UInt8] = []
        for (index, part) in parts.enumerated() {
            let position = "number \(index + 1)"
            if part.isEmpty { return .failure("\(position) is empty") }
            guard part.allSatisfy({ $0.isASCII && $0.isNumber }) else {
                return .failure("\(position) \(quoted(String(part))) is not a decimal number")
            }
            if part.count > 1 && part.hasPrefix("0") {
                return .failure("\(position) \(quoted(String(part))) has a leading zero")
            }
            guard part.count <= 3, let value = Int(part), value <= 255 else {
                return .failure("\(position) \(quoted(String(part))) is greater than 255")
            }
            bytes.append(UInt8(value))
        }
        return .success(IPAddress(bytes: bytes)!)
    }

    static func ipv6(_ text: Substring) -> Result<IPAddress, FailureReason> {
        let halves = text.split(separator: "::", omittingEmptySubsequences: false).map(String.init)
        if halves.count > 2 { return .failure("\"::\" may appear only once in an IPv6 address") }
        let compressed = halves.count == 2

        func groups(_ half: String, isLast: Bool) -> Result<[UInt8], FailureReason> {
            if half.isEmpty { return .success([]) }
            let fields = half.split(separator: ":", omittingEmptySubsequences: false)
            var bytes: [UInt8] = []
            for (index, field) in fields.enumerated() {
                if field.isEmpty { return .failure("empty group in the IPv6 address (a single \":\" at the start, end or twice in a row)") }
                if field.contains(".") {
                    guard isLast && index == fields.count - 1 else {
                        return .failure("an embedded IPv4 address may only end an IPv6 address")
                    }
                    switch ipv4(field) {
                    case .success(let embedded): bytes += embedded.bytes
                    case .failure(let reason): return .failure("embedded IPv4 address: \(reason)")
                    }
                    continue
                }
                guard field.allSatisfy(\.isHexDigit), field.allSatisfy(\.isASCII) else {
                    return .failure("group \(quoted(String(field))) is not hexadecimal")
                }
                guard field.count <= 4, let value = UInt16(field, radix: 16) else {
                    return .failure("group \(quoted(String(field))) has more than 4 hex digits")
                }
                bytes += [UInt8(value >> 8), UInt8(value & 0xFF)]
            }
            return .success(bytes)
        }

        let head: [UInt8]
        let tail: [UInt8]
        switch groups(halves[0], isLast: !compressed) {
        case .success(let bytes): head = bytes
        case .failure(let reason): return .failure(reason)
        }
        if compressed {
            switch groups(halves[1], isLast: true) {
            case .success(let bytes): tail = bytes
            case .failure(let reason): return .failure(reason)
            }
        } else {
            tail = []
        }
        let count = head.count + tail.count
        if compressed {
            guard count <= 14 else {
                return .failure("an IPv6 address with \"::\" has at most 7 groups, found \(count / 2)")
            }
            return .success(IPAddress(bytes: head + Array(repeating: 0, count: 16 - count) + tail)!)
        }
        guard count == 16 else {
            return .failure("an IPv6 address without \"::\" has 8 groups, found \(count / 2)")
        }
        return .success(IPAddress(bytes: head)!)
    }
}

/// Why a text or a reply was refused: the message only, to be wrapped in a ``NetlinkError``.
struct FailureReason: Error, Hashable, CustomStringConvertible, ExpressibleByStringInterpolation {
    let description: String

    init(_ description: String) { self.description = description }
    init(stringLiteral value: String) { description = value }
    init(stringInterpolation: DefaultStringInterpolation) { description = String(stringInterpolation: stringInterpolation) }
}
