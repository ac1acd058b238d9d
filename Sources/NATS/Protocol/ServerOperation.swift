import NIOCore

/// One operation sent by the server.
public enum ServerOperation: Sendable, Hashable {
    case info(ServerInfo)
    case message(NATSMessage)
    case ping
    case pong
    case ok
    case error(String)
}

extension ServerInfo: Hashable {
    public func hash(into hasher: inout Hasher) {
        hasher.combine(serverID)
        hasher.combine(version)
        hasher.combine(nonce)
    }
}
