/// Something that happened to the client's connection. Observe them with
/// ``NATSClient/events()``; the election uses them to know when NATS was unreachable.
public enum NATSConnectionEvent: Sendable, Hashable {
    /// The first connection succeeded.
    case connected(server: String)
    /// The connection dropped; the client is reconnecting. `reason` says why when known.
    case disconnected(server: String, reason: String?)
    /// A new connection is up after a disconnect; subscriptions were restored.
    case reconnected(server: String)
    /// The client was closed (by the application, or after giving up reconnecting).
    case closed(reason: String?)
    /// The server sent `-ERR` (for example a permissions violation).
    case serverError(String)
    /// The server announced it is shutting down (lame duck mode); the client prefers others.
    case lameDuckMode(server: String)
    /// The cluster announced servers the client did not know.
    case discoveredServers([String])
    /// A subscription's reader fell behind and messages were dropped.
    case slowConsumer(subject: String, sid: UInt64, dropped: Int)
}
