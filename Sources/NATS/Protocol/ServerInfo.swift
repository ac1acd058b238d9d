/// The server's `INFO` announcement. Only the fields the client uses are decoded; unknown fields are
/// ignored so newer servers keep working.
public struct ServerInfo: Sendable, Decodable, Equatable {
    public var serverID: String
    public var serverName: String?
    public var version: String
    public var proto: Int?
    public var host: String?
    public var port: Int?
    public var headers: Bool?
    public var maxPayload: Int
    public var clientID: UInt64?
    public var clientIP: String?
    public var authRequired: Bool?
    public var tlsRequired: Bool?
    public var tlsVerify: Bool?
    public var tlsAvailable: Bool?
    public var connectURLs: [String]?
    public var lameDuckMode: Bool?
    public var jetStream: Bool?
    public var nonce: String?
    public var cluster: String?
    public var domain: String?

    enum CodingKeys: String, CodingKey {
        case serverID = "server_id"
        case serverName = "server_name"
        case version, proto, host, port, headers
        case maxPayload = "max_payload"
        case clientID = "client_id"
        case clientIP = "client_ip"
        case authRequired = "auth_required"
        case tlsRequired = "tls_required"
        case tlsVerify = "tls_verify"
        case tlsAvailable = "tls_available"
        case connectURLs = "connect_urls"
        case lameDuckMode = "ldm"
        case jetStream = "jetstream"
        case nonce, cluster, domain
    }

    /// Creates an INFO value; used by tests and by the parser.
    public init(serverID: String, version: String, maxPayload: Int) {
        self.serverID = serverID
        self.version = version
        self.maxPayload = maxPayload
    }
}
