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

    /// Why an address is wrong.
    struct Reason: Error, CustomStringConvertible {
        var description: String

        init(_ description: String) {
            self.description = description
        }
    }
}

/// Why a systemd unit name is not one Baton can start, or nil when it is fine.
func systemdUnitProblem(_ unit: String) -> String? {
    let suffixes = SystemdBackendConfig.unitSuffixes
    guard let suffix = suffixes.first(where: { unit.hasSuffix($0) && unit.count > $0.count }) else {
        return "unit \(quoted(unit)) has no known suffix; use a full unit name like \"myapp.service\" (one of \(suffixes.joined(separator: ", ")))"
    }
    if unit.contains(where: { $0.isWhitespace || $0 == "/" }) {
        return "unit \(quoted(unit)) contains whitespace or \"/\""
    }
    let stem = unit.dropLast(suffix.count)
    if stem.hasSuffix("@") {
        return "unit \(quoted(unit)) is a template; name an instance, like \(quoted(stem + "1" + suffix))"
    }
    return nil
}
