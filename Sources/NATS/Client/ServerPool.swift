import Foundation

/// One server the client can connect to.
public struct NATSServerAddress: Sendable, Hashable, CustomStringConvertible {
    /// Whether the URL asked for TLS (`tls://`).
    public var requiresTLS: Bool
    /// Host name or IP address.
    public var host: String
    /// TCP port.
    public var port: Int
    /// A user name (or token) embedded in the URL.
    public var user: String?
    /// A password embedded in the URL.
    public var password: String?

    /// Parses `nats://[user[:password]@]host[:port]`, `tls://...`, or `host[:port]`.
    public init(parsing text: String) throws(NATSError) {
        var rest = Substring(text.trimmingCharacters(in: .whitespaces))
        requiresTLS = false
        if let range = rest.range(of: "://") {
            let scheme = rest[..<range.lowerBound].lowercased()
            switch scheme {
            case "nats": break
            case "tls": requiresTLS = true
            default: throw NATSError(.invalidURL, "server URL \"\(text)\": scheme \"\(scheme)\" is not supported (use nats:// or tls://)")
            }
            rest = rest[range.upperBound...]
        }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                user = String(userInfo[..<colon]).removingPercentEncoding
                password = String(userInfo[userInfo.index(after: colon)...]).removingPercentEncoding
            } else {
                user = String(userInfo).removingPercentEncoding
            }
        }
        var portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else {
                throw NATSError(.invalidURL, "server URL \"\(text)\": unterminated IPv6 address")
            }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() } else if !after.isEmpty {
                throw NATSError(.invalidURL, "server URL \"\(text)\": unexpected \"\(after)\" after the address")
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            portText = rest[rest.index(after: colon)...]
        } else {
            host = String(rest)
        }
        if host.isEmpty {
            throw NATSError(.invalidURL, "server URL \"\(text)\" has no host")
        }
        if let portText {
            guard let value = Int(portText), (1...65535).contains(value) else {
                throw NATSError(.invalidURL, "server URL \"\(text)\": port \"\(portText)\" is not a number from 1 to 65535")
            }
            port = value
        } else {
            port = 4222
        }
    }

    public var description: String {
        let bracketed = host.contains(":") ? "[\(host)]" : host
        return "\(requiresTLS ? "tls" : "nats")://\(bracketed):\(port)"
    }

    var hostIsIPAddress: Bool {
        host.contains(":") || host.split(separator: ".").count == 4 && host.allSatisfy { $0.isNumber || $0 == "." }
    }
}

/// The servers the client knows, in the order it tries them.
struct ServerPool: Sendable {
    struct Entry: Sendable {
        var address: NATSServerAddress
        var discovered: Bool
        var lameDuck: Bool
        var lastError: String?
    }

    private(set) var entries: [Entry]

    init(_ addresses: [NATSServerAddress]) {
        entries = addresses.map { Entry(address: $0, discovered: false, lameDuck: false) }
    }

    /// The order for one round of attempts: starting after `current`, lame-duck servers last.
    func round(after current: NATSServerAddress?) -> [NATSServerAddress] {
        var ordered = entries
        if let current, let index = ordered.firstIndex(where: { $0.address.host == current.host && $0.address.port == current.port }) {
            ordered = Array(ordered[(index + 1)...] + ordered[...index])
        }
        return ordered.filter { !$0.lameDuck }.map(\.address) + ordered.filter(\.lameDuck).map(\.address)
    }

    /// Adds servers announced in `connect_urls`; returns those that were new.
    mutating func addDiscovered(_ urls: [String], template: NATSServerAddress) -> [NATSServerAddress] {
        var added: [NATSServerAddress] = []
        for url in urls {
            guard var address = try? NATSServerAddress(parsing: url) else { continue }
            if entries.contains(where: { $0.address.host == address.host && $0.address.port == address.port }) { continue }
            address.requiresTLS = address.requiresTLS || template.requiresTLS
            address.user = template.user
            address.password = template.password
            entries.append(Entry(address: address, discovered: true, lameDuck: false))
            added.append(address)
        }
        return added
    }

    mutating func markLameDuck(_ address: NATSServerAddress) {
        for index in entries.indices where entries[index].address.host == address.host && entries[index].address.port == address.port {
            entries[index].lameDuck = true
        }
    }

    mutating func clearLameDuck(_ address: NATSServerAddress) {
        for index in entries.indices where entries[index].address.host == address.host && entries[index].address.port == address.port {
            entries[index].lameDuck = false
        }
    }
}
