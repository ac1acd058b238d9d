import NIOCore

/// How the client proves who it is.
public enum NATSAuthentication: Sendable {
    /// No credentials (or only those embedded in server URLs as `user:pass@`).
    case none
    /// A user name and password.
    case userPassword(user: String, password: String)
    /// An authorization token.
    case token(String)
    /// An nkey seed (`SU...`); the client signs the server's nonce with it.
    case nkeySeed(String)
    /// A credentials file holding a user JWT and its nkey seed.
    case credentialsFile(path: String)
    /// Parsed credentials (a user JWT and its nkey).
    case credentials(NATSCredentials)
}

/// TLS settings. When present, TLS is required for every server.
public struct NATSTLSOptions: Sendable {
    /// PEM file with the certificate authorities to trust; the system roots when nil.
    public var caFile: String?
    /// PEM file with the client certificate chain, for servers that verify clients.
    public var certificateFile: String?
    /// PEM file with the client certificate's private key.
    public var keyFile: String?
    /// The name to verify the server certificate against; the URL's host when nil (an IP
    /// address is checked against the certificate's IP addresses).
    public var serverName: String?
    /// Whether to verify the server certificate. Only turn this off in tests.
    public var verifyServer: Bool

    /// Creates TLS settings.
    public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil, serverName: String? = nil, verifyServer: Bool = true) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.serverName = serverName
        self.verifyServer = verifyServer
    }
}

/// Settings for a ``NATSClient``.
public struct NATSClientOptions: Sendable {
    /// Server URLs such as `nats://127.0.0.1:4222`, `tls://host:4443` or `host:port`
    /// (`user:password@` and `token@` are accepted in URLs).
    public var servers: [String]
    /// The connection name shown by the server's monitoring.
    public var name: String?
    /// Credentials.
    public var authentication: NATSAuthentication
    /// TLS settings; nil means TLS only when the URL says `tls://` or the server requires it.
    public var tls: NATSTLSOptions?
    /// How long one connection attempt (TCP, INFO, TLS, CONNECT/PONG) may take.
    public var connectTimeout: Duration
    /// How often the client sends its own PING.
    public var pingInterval: Duration
    /// How many of our PINGs may go unanswered before the connection is treated as dead.
    public var maxPingsOutstanding: Int
    /// The first wait between reconnect rounds; it doubles each round up to ``maxReconnectWait``.
    public var reconnectWait: Duration
    /// The longest wait between reconnect rounds.
    public var maxReconnectWait: Duration
    /// A random extra wait up to this much, so many clients do not reconnect in lock step.
    public var reconnectJitter: Duration
    /// Reconnect rounds before the client gives up and closes; nil reconnects forever.
    public var maxReconnectRounds: Int?
    /// Whether the first ``NATSClient/connect()`` keeps retrying (like a reconnect) instead of
    /// failing after one round over the servers.
    public var retryOnFailedInitialConnect: Bool
    /// Bytes of publishes kept while disconnected; past this, publishes fail with
    /// ``NATSError/Code/reconnectBufferExceeded``.
    public var reconnectBufferSize: Int
    /// Bytes waiting for the socket before ``NATSClient/publish(_:payload:headers:replyTo:)``
    /// suspends until the socket drains.
    public var maxPendingBytes: Int
    /// Messages buffered per subscription for a slow reader before new ones are dropped (and
    /// reported).
    public var subscriptionPendingLimit: Int
    /// Payload bytes buffered per subscription for a slow reader before new messages are dropped
    /// (and reported), whatever ``subscriptionPendingLimit`` allows: a count alone lets 64k
    /// messages of 1 MiB pile up in memory. A message is always taken when nothing is buffered.
    public var subscriptionPendingBytesLimit: Int
    /// The default time a request waits for its reply.
    public var requestTimeout: Duration
    /// The prefix of reply subjects.
    public var inboxPrefix: String
    /// Whether to ignore the servers a cluster announces in `connect_urls`.
    public var ignoreDiscoveredServers: Bool
    /// Whether the server should not send this connection its own publishes.
    public var noEcho: Bool

    /// Creates options with sensible defaults for the given servers.
    public init(servers: [String] = ["nats://127.0.0.1:4222"]) {
        self.servers = servers
        self.name = nil
        self.authentication = .none
        self.tls = nil
        self.connectTimeout = .seconds(2)
        self.pingInterval = .seconds(30)
        self.maxPingsOutstanding = 2
        self.reconnectWait = .milliseconds(50)
        self.maxReconnectWait = .seconds(2)
        self.reconnectJitter = .milliseconds(50)
        self.maxReconnectRounds = nil
        self.retryOnFailedInitialConnect = false
        self.reconnectBufferSize = 8 * 1024 * 1024
        self.maxPendingBytes = 8 * 1024 * 1024
        self.subscriptionPendingLimit = 65_536
        self.subscriptionPendingBytesLimit = 64 * 1024 * 1024
        self.requestTimeout = .seconds(5)
        self.inboxPrefix = "_INBOX"
        self.ignoreDiscoveredServers = false
        self.noEcho = false
    }
}

extension Duration {
    var timeAmount: TimeAmount {
        let (seconds, attoseconds) = components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
