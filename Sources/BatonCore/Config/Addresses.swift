/// Syntax checks for the addresses a config holds. Each returns the reason a text is wrong, for
/// messages like `invalid tcp address "127.0.0.1": missing port; ...`.
enum AddressSyntax {
    /// `host`, `host:port`, `[v6]` or `[v6]:port`.
    static func hostPort(_ text: Substring, portRequired: Bool) -> Result<(host: String, port: Int?), Reason> {
        var host: Substring
        var portText: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                return .failure(Reason("missing \"]\" after the IPv6 address"))
            }
            host = text[text.index(after: text.startIndex)..<close]
            let after = text[text.index(after: close)...]
            if after.hasPrefix(":") {
                portText = after.dropFirst()
            } else if !after.isEmpty {
                return .failure(Reason("unexpected \(quoted(String(after))) after the IPv6 address"))
            }
        } else if let colon = text.firstIndex(of: ":") {
            if text[text.index(after: colon)...].contains(":") {
                return .failure(Reason("put an IPv6 address in brackets, like \"[::1]:8080\""))
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        } else {
            host = text
        }
        if host.isEmpty { return .failure(Reason("missing host")) }
        if let bad = host.first(where: { "/?#@[]".contains($0) }) {
            return .failure(Reason("unexpected \(quoted(String(bad))) in the host \(quoted(String(host)))"))
        }
        guard let portText else {
            if portRequired { return .failure(Reason("missing port")) }
            return .success((String(host), nil))
        }
        guard portText.allSatisfy(\.isASCII), let port = Int(portText), (1...65535).contains(port),
              !portText.hasPrefix("+") else {
            return .failure(Reason("port \(quoted(String(portText))) is not a number from 1 to 65535"))
        }
        return .success((String(host), port))
    }

    /// A NATS server URL as the NATS client accepts it: `nats://[user[:password]@]host[:port]`,
    /// `tls://...` or `host[:port]`.
    static func checkServerURL(_ text: String) -> Reason? {
        if text.contains(where: \.isWhitespace) { return Reason("contains whitespace") }
        var rest = Substring(text)
        if let range = rest.range(of: "://") {
            let scheme = rest[..<range.lowerBound].lowercased()
            guard scheme == "nats" || scheme == "tls" else {
                return Reason("scheme \(quoted(scheme)) is not supported (use nats:// or tls://)")
            }
            rest = rest[range.upperBound...]
        }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        if case .failure(let reason) = hostPort(rest, portRequired: false) { return reason }
        return nil
    }

    /// An `http://` or `https://` URL without credentials.
    static func httpEndpoint(_ text: String) -> Result<HTTPEndpoint, Reason> {
        if text.contains(where: \.isWhitespace) { return .failure(Reason("contains whitespace")) }
        let secure: Bool
        var rest: Substring
        if text.lowercased().hasPrefix("http://") {
            secure = false
            rest = text.dropFirst("http://".count)
        } else if text.lowercased().hasPrefix("https://") {
            secure = true
            rest = text.dropFirst("https://".count)
        } else {
            return .failure(Reason("use http:// or https://"))
        }
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var target = String(rest[authorityEnd...])
        if target.hasPrefix("?") { target = "/" + target }
        if target.isEmpty { target = "/" }
        if authority.contains("@") { return .failure(Reason("credentials in the URL are not supported")) }
        switch hostPort(authority, portRequired: false) {
        case .failure(let reason):
            return .failure(reason)
        case .success(let (host, port)):
            return .success(HTTPEndpoint(
                url: text, isSecure: secure, host: host, port: port ?? (secure ? 443 : 80), target: target))
        }
    }

    /// `host:port` for a TCP check.
    static func tcpAddress(_ text: String) -> Result<HostPort, Reason> {
        if text.contains(where: \.isWhitespace) { return .failure(Reason("contains whitespace")) }
        switch hostPort(Substring(text), portRequired: true) {
        case .failure(let reason):
            return .failure(reason)
        case .success(let (host, port)):
            return .success(HostPort(host: host, port: port ?? 0))
        }
    }

    /// `address/prefix` for a VIP: IPv4 or IPv6, the prefix length required; the address comes
    /// back in its normal text form.
    static func addressPrefix(_ text: String) -> Result<(address: String, prefix: Int, isIPv6: Bool), Reason> {
        if text.contains(where: \.isWhitespace) { return .failure(Reason("contains whitespace")) }
        guard let slash = text.firstIndex(of: "/") else {
            return .failure(Reason("missing prefix length; write it like \"192.0.2.10/24\" or \"2001:db8::10/64\""))
        }
        let addressText = String(text[..<slash])
        let prefixText = text[text.index(after: slash)...]
        let isIPv6 = addressText.contains(":")
        guard let bytes = IPAddressText.parse(addressText, v6: isIPv6) else {
            return .failure(Reason("\(quoted(addressText)) is not an IPv\(isIPv6 ? 6 : 4) address"))
        }
        let maximum = isIPv6 ? 128 : 32
        guard prefixText.allSatisfy({ $0.isASCII && $0.isNumber }), let prefix = Int(prefixText), (1...maximum).contains(prefix) else {
            return .failure(Reason("prefix length \(quoted(String(prefixText))) is not a number from 1 to \(maximum)"))
        }
        if !isIPv6 && (bytes[0] == 0 || bytes[0] == 127 || bytes[0] >= 224) {
            return .failure(Reason("\(addressText) is not a unicast address a host can own"))
        }
        if isIPv6 && (bytes[0] == 0xff || bytes.allSatisfy({ $0 == 0 }) || bytes == [UInt8](repeating: 0, count: 15) + [1]) {
            return .failure(Reason("\(addressText) is not a unicast address a host can own"))
        }
        return .success((IPAddressText.format(bytes), prefix, isIPv6))
    }

    /// Why a text is not a Linux interface name (at most 15 bytes, no `/`, `:` or whitespace).
    static func interfaceNameProblem(_ name: String) -> String? {
        if name.isEmpty { return "empty" }
        if name.utf8.count > 15 { return "longer than 15 bytes" }
        if name == "." || name == ".." { return "not a name" }
        if let bad = name.first(where: { $0 == "/" || $0 == ":" || $0.isWhitespace }) {
            return "contains \(quoted(String(bad)))"
        }
        return nil
    }

    /// Why an address is wrong.
    struct Reason: Error, CustomStringConvertible {
        var description: String

        init(_ description: String) {
            self.description = description
        }
    }
}

/// Why a systemd unit name is not one Baton can start, or nil when it is fine.
/// A template (`worker@.service`) is fine only for a pool, whose instances instantiate it.
func systemdUnitProblem(_ unit: String, templateAllowed: Bool = false) -> String? {
    let suffixes = SystemdBackendConfig.unitSuffixes
    guard let suffix = suffixes.first(where: { unit.hasSuffix($0) && unit.count > $0.count }) else {
        return "unit \(quoted(unit)) has no known suffix; use a full unit name like \"myapp.service\" (one of \(suffixes.joined(separator: ", ")))"
    }
    if unit.contains(where: { $0.isWhitespace || $0 == "/" }) {
        return "unit \(quoted(unit)) contains whitespace or \"/\""
    }
    let stem = unit.dropLast(suffix.count)
    if stem.hasSuffix("@"), !templateAllowed {
        return "unit \(quoted(unit)) is a template; name an instance, like \(quoted(stem + "1" + suffix)), or run the app on several nodes with instances:"
    }
    return nil
}

/// IPv4 and IPv6 addresses in text, without the C library (BatonCore does no I/O and stays
/// portable).
enum IPAddressText {
    /// The address's bytes (4 or 16), or nil when `text` is not one.
    static func parse(_ text: String, v6: Bool) -> [UInt8]? {
        v6 ? parseIPv6(Substring(text)) : parseIPv4(Substring(text))
    }

    private static func parseIPv4(_ text: Substring) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  !(part.count > 1 && part.hasPrefix("0")), let value = UInt8(part) else { return nil }
            bytes.append(value)
        }
        return bytes
    }

    private static func parseIPv6(_ text: Substring) -> [UInt8]? {
        if text.contains("%") { return nil }  // zone ids name no global address
        let halves = text.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String, allowIPv4Tail: Bool) -> [UInt8]? {
            if part.isEmpty { return [] }
            var bytes: [UInt8] = []
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            for (index, piece) in pieces.enumerated() {
                if allowIPv4Tail, index == pieces.count - 1, piece.contains(".") {
                    guard let v4 = parseIPv4(piece) else { return nil }
                    bytes += v4
                    continue
                }
                guard (1...4).contains(piece.count), let value = UInt16(piece, radix: 16) else { return nil }
                bytes += [UInt8(value >> 8), UInt8(value & 0xff)]
            }
            return bytes
        }
        if halves.count == 1 {
            guard let bytes = groups(halves[0], allowIPv4Tail: true), bytes.count == 16 else { return nil }
            return bytes
        }
        guard let head = groups(halves[0], allowIPv4Tail: false), let tail = groups(halves[1], allowIPv4Tail: true),
              head.count + tail.count <= 14 else { return nil }
        return head + [UInt8](repeating: 0, count: 16 - head.count - tail.count) + tail
    }

    /// The normal text form: dotted quad, or RFC 5952 for IPv6 (lower case, longest run of two or
    /// more zero groups as `::`).
    static func format(_ bytes: [UInt8]) -> String {
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        let groups = stride(from: 0, to: 16, by: 2).map { UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]) }
        var bestStart = -1
        var bestLength = 1
        var index = 0
        while index < 8 {
            if groups[index] == 0 {
                var end = index
                while end < 8 && groups[end] == 0 { end += 1 }
                if end - index > bestLength { bestStart = index; bestLength = end - index }
                index = end
            } else {
                index += 1
            }
        }
        func hex(_ slice: ArraySlice<UInt16>) -> String { slice.map { String($0, radix: 16) }.joined(separator: ":") }
        if bestStart < 0 { return hex(groups[...]) }
        return hex(groups[..<bestStart]) + "::" + hex(groups[(bestStart + bestLength)...])
    }
}
