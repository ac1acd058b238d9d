/// The top-level `http:` section: batond's HTTP server (status, health and load-balancer checks,
/// Prometheus metrics, the live web page and authenticated control endpoints). The server is off
/// when the section is absent.
public struct HTTPConfig: Sendable, Hashable {
    /// The default `listen` address.
    public static let defaultListen = "127.0.0.1:9180"

    /// The address to listen on (`listen`, `host:port`; an IPv6 host in brackets, `[::1]:9180`).
    public var host: String
    /// The TCP port to listen on (1–65535).
    public var port: Int
    /// Serve HTTPS with this certificate and key (`tls: {cert, key}`), plain HTTP when nil.
    public var tls: HTTPTLSConfig?
    /// A file holding the bearer token the control endpoints (switchover, stepdown, pause,
    /// resume) require (`control_token_file`, absolute). Without one those endpoints are refused.
    public var controlTokenFile: String?

    /// Creates an HTTP section.
    public init(host: String = "127.0.0.1", port: Int = 9180, tls: HTTPTLSConfig? = nil, controlTokenFile: String? = nil) {
        self.host = host
        self.port = port
        self.tls = tls
        self.controlTokenFile = controlTokenFile
    }

    /// `host:port` as it would be written in `listen` (IPv6 hosts in brackets).
    public var listen: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Splits `host:port` (`[v6]:port` for IPv6); nil with the reason when it is not one.
    public static func parseListen(_ text: String) -> Result<(host: String, port: Int), ListenError> {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return .failure(ListenError("an IPv6 host needs a closing \"]\"")) }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return .failure(ListenError("a port must follow the host, like [::1]:9180")) }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return .failure(ListenError("expected host:port, like 127.0.0.1:9180")) }
            host = text[..<colon]
            if host.contains(":") { return .failure(ListenError("put an IPv6 host in brackets, like [::1]:9180")) }
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty else { return .failure(ListenError("the host is empty; use 0.0.0.0 to listen on every IPv4 address")) }
        guard let port = Int(portText), (1...65535).contains(port) else {
            return .failure(ListenError("the port must be a number from 1 to 65535, got \"\(portText)\""))
        }
        return .success((String(host), port))
    }

    /// Why a `listen` value is not `host:port`.
    public struct ListenError: Error, Sendable, Hashable {
        /// The reason, for the config error.
        public var reason: String
        init(_ reason: String) { self.reason = reason }
    }
}

/// `http.tls:`: the server's certificate chain and private key (PEM files, absolute paths).
public struct HTTPTLSConfig: Sendable, Hashable {
    /// PEM certificate chain file (`cert`).
    public var certificatePath: String
    /// PEM private key file (`key`).
    public var keyPath: String

    /// Creates a TLS section.
    public init(certificatePath: String, keyPath: String) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
    }
}

extension HTTPConfig: ConfigSection {
    static let keys = ["listen", "tls", "control_token_file"]

    init?(fields: ConfigFields) {
        var ok = true
        var host = "127.0.0.1"
        var port = 9180
        if let value = fields.optional("listen") {
            if let text = value.string(expected: "an address like \"127.0.0.1:9180\"") {
                switch Self.parseListen(text) {
                case .success(let parsed): (host, port) = parsed
                case .failure(let error):
                    value.error("invalid listen address \(quoted(text)): \(error.reason)")
                    ok = false
                }
            } else {
                ok = false
            }
        }
        let tls = fields.optional("tls").map { $0.section(HTTPTLSConfig.self) }
        let tokenFile = fields.optional("control_token_file").map { $0.absolutePath() }
        guard ok, !tls.failed, !tokenFile.failed else { return nil }
        self.init(host: host, port: port, tls: tls ?? nil, controlTokenFile: tokenFile ?? nil)
    }
}

extension HTTPTLSConfig: ConfigSection {
    static let keys = ["cert", "key"]

    init?(fields: ConfigFields) {
        let cert = fields.required("cert")?.absolutePath()
        let key = fields.required("key")?.absolutePath()
        guard let cert, let key else { return nil }
        self.init(certificatePath: cert, keyPath: key)
    }
}
