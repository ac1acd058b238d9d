import NIOCore

/// The types a ``NATSConnectionStateMachine`` keeps but never looks into: the connection handle,
/// timers, the waiters it hands back to be resumed, subscription sinks, event listeners and the
/// reconnect task. ``NATSClient`` uses NIO channels, `Scheduled` timers and checked
/// continuations; the unit tests use plain values, so every transition is tested without I/O.
protocol NATSConnectionStateMachineTypes {
    /// One established connection; its `id` tells callbacks of an old connection from the
    /// current one.
    associatedtype Connection: Identifiable & Sendable where Connection.ID: Sendable
    /// A scheduled timeout, handed back to be cancelled.
    associatedtype Timer: Sendable
    /// Whoever waits for a request's reply.
    associatedtype ReplyWaiter: Sendable
    /// Whoever waits for a PONG (``NATSClient/flush(timeout:)``, ``NATSClient/rtt(timeout:)``).
    associatedtype PongWaiter: Sendable
    /// A publisher waiting for the outgoing buffer to drain.
    associatedtype DrainWaiter: Sendable
    /// Where a subscription's messages go.
    associatedtype Sink: Sendable
    /// A listener of connection events.
    associatedtype Listener: Sendable
    /// The task running reconnect rounds, handed back to be cancelled on close.
    associatedtype ReconnectTask: Sendable
}

/// The decisions of a NATS client connection, without I/O.
///
/// Each method takes one event (connect requested, connection established, PONG received,
/// request issued, ...), updates the state and returns what the caller must do: resume waiters,
/// schedule a flush on a connection's event loop, schedule or cancel a timer, close a channel,
/// log. ``NATSClient`` calls it under its lock and runs the returned actions after releasing the
/// lock. Connection events (``NATSConnectionEvent``) go into an outbox in the order they happen;
/// one caller at a time delivers them (``claimEventDelivery()``, ``takeEvents()``), so listeners
/// see them in order without anyone yielding under the lock.
///
/// Data that only exists with a connection (the write state, PONG waiters, keep-alive count,
/// drain waiters) lives in the `connected` case; the reconnect round and generation live in
/// `reconnecting`.
struct NATSConnectionStateMachine<Types: NATSConnectionStateMachineTypes>: Sendable {
    typealias Connection = Types.Connection
    typealias ConnectionID = Types.Connection.ID
    typealias Timer = Types.Timer
    typealias ReplyWaiter = Types.ReplyWaiter
    typealias PongWaiter = Types.PongWaiter
    typealias DrainWaiter = Types.DrainWaiter
    typealias Sink = Types.Sink
    typealias Listener = Types.Listener
    typealias ReconnectTask = Types.ReconnectTask

    /// The options the machine decides with.
    struct Configuration: Sendable {
        var maxPingsOutstanding: Int
        var maxPendingBytes: Int
        var reconnectBufferSize: Int
        var maxReconnectRounds: Int?
        var ignoreDiscoveredServers: Bool

        init(_ options: NATSClientOptions) {
            maxPingsOutstanding = options.maxPingsOutstanding
            maxPendingBytes = options.maxPendingBytes
            reconnectBufferSize = options.reconnectBufferSize
            maxReconnectRounds = options.maxReconnectRounds
            ignoreDiscoveredServers = options.ignoreDiscoveredServers
        }
    }

    enum State: Sendable {
        /// Created, ``NATSClient/connect()`` not called yet (or the first connect failed).
        case idle
        /// The first connect is trying servers; `round` counts rounds over the server list.
        case connecting(round: Int)
        case connected(Connected)
        /// The connection dropped; reconnect rounds run in a task.
        case reconnecting(Reconnecting)
        case closed(reason: String?)
    }

    struct Connected: Sendable {
        var connection: Connection
        var writable: Bool
        /// One entry per PING written (keep-alive or caller), in order; PONGs answer in order.
        var pongWaiters: CircularBuffer<PongEntry>
        /// PINGs in `pending` that have not reached the socket yet.
        var pingsInPending: Int
        /// PONGs still to come for PINGs that no waiter owns (written before a reconnect).
        var orphanPongs: Int
        var keepalivesOutstanding: Int
        var drainWaiters: [DrainWaiter]
    }

    struct Reconnecting: Sendable {
        var round: Int
        var orphanPongs: Int
        /// Tells the task of this disconnect from an older one.
        var generation: UInt64
        var task: ReconnectTask?
    }

    enum PongEntry: Sendable {
        case keepalive
        case caller(id: UInt64, PongWaiter, timer: Timer?)
        /// A caller whose timeout passed; its PONG is consumed silently.
        case abandoned
    }

    struct Subscription: Sendable {
        var subject: String
        var queue: String?
        var sink: Sink
        var max: Int?
        var delivered: Int
    }

    struct PendingRequest: Sendable {
        var waiter: ReplyWaiter
        var timer: Timer?
        /// The connection the request went out on; nil while it waits in the reconnect buffer.
        var sentOn: ConnectionID?
        var subject: String
    }

    /// One step of event delivery: yield an event to the listeners registered when it happened,
    /// or end listeners (after the client closed).
    enum Delivery: Sendable {
        case event(NATSConnectionEvent, to: [Listener])
        case finish([Listener])
    }

    let configuration: Configuration
    // Changed only by the machine's methods (in this file and its extensions).
    var state: State = .idle
    var pool: ServerPool
    var currentServer: NATSServerAddress?
    var info: ServerInfo?
    /// Bytes waiting for the socket (or, while disconnected, for the next connection).
    var pending: ByteBuffer
    /// A flush task is queued on the current connection's event loop. Only true while
    /// connected (set by the install, cleared by a disconnect); kept outside the `connected`
    /// case because every publish reads it, and reading it there copies the case's payload
    /// (which cost a sixth of the publish throughput in NATSBenchmark).
    var flushScheduled = false
    var nextSid: UInt64 = 1
    var subscriptions: [UInt64: Subscription] = [:]
    var requestInboxSid: UInt64?
    var requests: [Substring: PendingRequest] = [:]
    var nextRequestID: UInt64 = 0
    var nextWaiterID: UInt64 = 0
    var listeners: [UInt64: Listener] = [:]
    var nextListenerID: UInt64 = 0
    var outbox: [Delivery] = []
    var delivering = false
    var reconnectGeneration: UInt64 = 0

    init(configuration: Configuration, servers: [NATSServerAddress]) {
        self.configuration = configuration
        self.pool = ServerPool(servers)
        self.pending = ByteBufferAllocator().buffer(capacity: 64 * 1024)
    }

    // MARK: - Reading

    var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    var closeReason: String? {
        if case .closed(let reason) = state { return reason }
        return nil
    }

    /// The current connection, if connected.
    var connection: Connection? {
        if case .connected(let connected) = state { return connected.connection }
        return nil
    }

    var isConnected: Bool { connection != nil }

    var connectedServer: NATSServerAddress? { isConnected ? currentServer : nil }

    /// Runs `body` on the connected data, writing it back without copying its buffers.
    mutating func withConnected<Result>(_ body: (inout Connected) -> Result) -> Result? {
        guard case .connected(var connected) = state else { return nil }
        state = .idle  // drop the enum's reference so `connected` is mutated in place
        let result = body(&connected)
        state = .connected(connected)
        return result
    }

    /// Marks a flush as scheduled; returns the connection whose event loop must run it, or nil
    /// when one is already queued or there is no connection.
    mutating func scheduleFlush() -> Connection? {
        guard !flushScheduled, let connection else { return nil }
        flushScheduled = true
        return connection
    }

    // MARK: - Events to listeners

    mutating func emit(_ event: NATSConnectionEvent) {
        guard !listeners.isEmpty else { return }
        outbox.append(.event(event, to: Array(listeners.values)))
    }

    /// Registers a listener; returns its id, or the close reason when the client is closed.
    mutating func addListener(_ listener: Listener) -> Result<UInt64, ClosedClient> {
        if case .closed(let reason) = state { return .failure(ClosedClient(reason: reason)) }
        let id = nextListenerID
        nextListenerID += 1
        listeners[id] = listener
        return .success(id)
    }

    /// The close reason of a closed client, for a listener that came too late.
    struct ClosedClient: Error, Sendable {
        var reason: String?
    }

    mutating func removeListener(_ id: UInt64) {
        listeners[id] = nil
    }

    /// Whether the caller must deliver the outbox now: true for exactly one caller while
    /// deliveries wait, until ``takeEvents()`` returns nil.
    mutating func claimEventDelivery() -> Bool {
        guard !delivering, !outbox.isEmpty else { return false }
        delivering = true
        return true
    }

    /// The deliveries waiting, in order; nil (and delivery released) when there are none.
    mutating func takeEvents() -> [Delivery]? {
        guard !outbox.isEmpty else {
            delivering = false
            return nil
        }
        defer { outbox.removeAll(keepingCapacity: true) }
        return outbox
    }
}
