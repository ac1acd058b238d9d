/// Who sent a control command, as the sender says: a NATS micro request carries no user, so
/// `batonctl` puts this in the request body. It is self-reported — only as trustworthy as the
/// NATS permissions that decide who may send commands at all (`batonctl permissions`).
public struct ControlRequester: Codable, Sendable, Hashable, CustomStringConvertible {
    /// The NATS user name the sender connected with, when it used a user and password.
    public var natsUser: String?
    /// The credentials (.creds) or nkey seed file the sender connected with, when it used one.
    public var credentials: String?
    /// The NATS connection name (`batonctl`).
    public var client: String?
    /// The host the sender runs on.
    public var host: String?
    /// The local (operating-system) user of the sender.
    public var localUser: String?
    /// The sender's process id.
    public var pid: Int32?
    /// For a command given over batond's HTTP API: the HTTP client's address (the sender is then
    /// that node's batond, which checked the bearer token).
    public var httpClient: String?

    /// Creates a description of a sender.
    public init(
        natsUser: String? = nil, credentials: String? = nil, client: String? = nil, host: String? = nil, localUser: String? = nil, pid: Int32? = nil,
        httpClient: String? = nil
    ) {
        self.natsUser = natsUser
        self.credentials = credentials
        self.client = client
        self.host = host
        self.localUser = localUser
        self.pid = pid
        self.httpClient = httpClient
    }

    enum CodingKeys: String, CodingKey {
        case natsUser = "nats_user", credentials, client, host, localUser = "local_user", pid, httpClient = "http_client"
    }

    /// `nats user alice (batonctl, root@host-1 pid 42)`, leaving out what is unknown.
    public var description: String {
        if let httpClient {
            return "HTTP client \(httpClient) with the control token (through \(client ?? "batond's HTTP API"))"
        }
        var who: [String] = []
        if let natsUser { who.append("nats user \(natsUser)") }
        if let credentials { who.append("credentials \(credentials)") }
        var origin: [String] = []
        if let client { origin.append(client) }
        switch (localUser, host) {
        case let (user?, host?): origin.append("\(user)@\(host)")
        case let (nil, host?): origin.append(host)
        case let (user?, nil): origin.append(user)
        case (nil, nil): break
        }
        if let pid { origin.append("pid \(pid)") }
        let head = who.isEmpty ? "unauthenticated or unnamed NATS user" : who.joined(separator: ", ")
        return origin.isEmpty ? head : "\(head) (\(origin.joined(separator: ", ")))"
    }
}
