import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// A NATS client: one connection (re-established automatically) shared by every publisher,
/// subscriber and requester in the process.
///
/// ```swift
/// let client = try NATSClient(options: NATSClientOptions(servers: ["nats://127.0.0.1:4222"]), logger: logger)
/// try await client.connect()
/// let subscription = try await client.subscribe(to: "greetings")
/// try await client.publish("greetings", payload: ByteBuffer(string: "hello"))
/// ```
///
/// Publishes are batched: each call appends to a buffer that is written to the socket at the next
/// turn of the connection's event loop. While disconnected, publishes wait in a bounded buffer
/// and go out after the reconnect, after every live subscription has been restored. Requests in
/// flight when the connection drops fail with ``NATSError/Code/connectionLost`` (their outcome is
/// unknown); those made while disconnected go out after the reconnect.
///
/// The decisions live in a ``NATSConnectionStateMachine`` kept behind a lock; the client feeds it
/// events and runs the actions it returns (resume waiters, schedule flushes and timers, log)
/// after releasing the lock.
public final class NATSClient: Sendable {
    /// The options the client was created with.
    public let options: NATSClientOptions
    let logger: Logger
    let group: any EventLoopGroup
    let allocator = ByteBufferAllocator()
    let machine: NIOLockedValueBox<Machine>
    let tlsContext: NIOSSLContext?
    let requestInbox: String
    let backoff: ReconnectBackoff
    /// The idle-heartbeat checks of this client's ordered consumers (KV watches, Object Store reads).
    let consumerHeartbeats = ConsumerHeartbeatMonitor()

    /// What the state machine keeps for the live client.
    enum LiveTypes: NATSConnectionStateMachineTypes {
        typealias Connection = LiveConnection
        typealias Timer = Scheduled<Void>
        typealias ReplyWaiter = CheckedContinuation<NATSMessage, any Error>
        typealias PongWaiter = CheckedContinuation<Void, any Error>
        typealias DrainWaiter = CheckedContinuation<Void, Never>
        typealias Sink = SubscriptionSink
        typealias Listener = AsyncStream<NATSConnectionEvent>.Continuation
        typealias ReconnectTask = Task<Void, Never>
    }

    typealias Machine = NATSConnectionStateMachine<LiveTypes>

    /// An established connection: its channel and the handler at the end of its pipeline.
    struct LiveConnection: Identifiable, Sendable {
        let channel: any Channel
        let handler: NATSChannelHandler
        var id: ObjectIdentifier { ObjectIdentifier(channel) }
    }

    /// Creates a client. Nothing is sent until ``connect()``.
    ///
    /// Throws when a server URL cannot be parsed or a TLS file cannot be read.
    public init(
        options: NATSClientOptions,
        logger: Logger = Logger(label: "nats", factory: { _ in SwiftLogNoOpLogHandler() }),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) throws {
        guard !options.servers.isEmpty else {
            throw NATSError(.invalidURL, "no server URL given")
        }
        var addresses: [NATSServerAddress] = []
        for url in options.servers {
            addresses.append(try NATSServerAddress(parsing: url))
        }
        self.options = options
        self.logger = logger
        self.group = eventLoopGroup
        if options.tls != nil || addresses.contains(where: \.requiresTLS) {
            self.tlsContext = try Self.makeTLSContext(options.tls ?? NATSTLSOptions())
        } else {
            self.tlsContext = nil
        }
        self.requestInbox = "\(options.inboxPrefix).\(NUID.next())"
        self.backoff = ReconnectBackoff(options)
        self.machine = NIOLockedValueBox(Machine(configuration: .init(options), servers: addresses))
    }

    /// Creates a client and connects it.
    public static func connect(
        options: NATSClientOptions,
        logger: Logger = Logger(label: "nats", factory: { _ in SwiftLogNoOpLogHandler() }),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> NATSClient {
        let client = try NATSClient(options: options, logger: logger, eventLoopGroup: eventLoopGroup)
        try await client.connect()
        return client
    }

    // MARK: - Driving the state machine

    /// Feeds one event to the state machine under the lock and returns its action; then, outside
    /// the lock, delivers the connection events the event produced (one caller at a time, in
    /// order). The caller runs the action afterwards, outside the lock too.
    func withMachine<Action>(_ body: (inout Machine) throws -> Action) rethrows -> Action {
        var deliver = false
        defer { if deliver { deliverEvents() } }
        return try machine.withLockedValue { machine in
            defer { deliver = machine.claimEventDelivery() }
            return try body(&machine)
        }
    }

    private func deliverEvents() {
        while let deliveries = machine.withLockedValue({ $0.takeEvents() }) {
            for delivery in deliveries {
                switch delivery {
                case .event(let event, let listeners):
                    for listener in listeners { listener.yield(event) }
                case .finish(let listeners):
                    for listener in listeners { listener.finish() }
                }
            }
        }
    }

    /// Queues the flush the machine scheduled on `connection`'s event loop.
    func flush(on connection: LiveConnection?) {
        guard let connection else { return }
        let id = connection.id
        connection.channel.eventLoop.execute { self.flushPending(connection: id) }
    }

    func flushPending(connection: ObjectIdentifier) {
        guard let flush = withMachine({ $0.flushDue(connection) }) else { return }
        flush.connection.channel.writeAndFlush(flush.bytes, promise: nil)
        for waiter in flush.drainWaiters { waiter.resume() }
    }

    /// Resumes the waiters of a lost connection or a closed client with their error.
    func fail(_ failures: Machine.Failures) {
        for (waiter, timer) in failures.pongWaiters {
            timer?.cancel()
            waiter.resume(throwing: failures.error)
        }
        for (waiter, timer) in failures.requests {
            timer?.cancel()
            waiter.resume(throwing: failures.error)
        }
    }

    // MARK: - Public state

    /// Whether a connection is up right now.
    public var isConnected: Bool { machine.withLockedValue { $0.isConnected } }

    /// The last INFO of the server connected to (or last connected to).
    public var serverInfo: ServerInfo? { machine.withLockedValue { $0.info } }

    /// The server connected to right now, if any.
    public var connectedServer: String? { machine.withLockedValue { $0.connectedServer?.description } }

    /// The servers the client knows (configured and discovered).
    public var knownServers: [String] { machine.withLockedValue { $0.pool.entries.map(\.address.description) } }

    /// A new unique subject for replies.
    public func newInbox() -> String { "\(options.inboxPrefix).\(NUID.next())" }

    /// A stream of connection events from now on. Each call returns an independent stream; it
    /// ends when the client is closed.
    public func events() -> AsyncStream<NATSConnectionEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: NATSConnectionEvent.self, bufferingPolicy: .bufferingNewest(1024))
        switch machine.withLockedValue({ $0.addListener(continuation) }) {
        case .success(let id):
            continuation.onTermination = { [weak self] _ in
                self?.machine.withLockedValue { $0.removeListener(id) }
            }
        case .failure(let closed):
            continuation.yield(.closed(reason: closed.reason))
            continuation.finish()
        }
        return stream
    }

    // MARK: - Connecting

    /// Connects to the first reachable server of the list. Subscriptions made and messages
    /// published before this call are sent once connected.
    ///
    /// Throws ``NATSError/Code/connectionFailed`` (or ``NATSError/Code/authorizationViolation``)
    /// naming every server tried and why it failed, unless
    /// ``NATSClientOptions/retryOnFailedInitialConnect`` is set, in which case it keeps trying.
    public func connect() async throws {
        guard try withMachine({ try $0.connectRequested() }) == .start else { return }
        if options.retryOnFailedInitialConnect {
            try await runConnectRounds(initial: true)
        } else {
            var failures: [(NATSServerAddress, any Error)] = []
            let servers = withMachine { $0.serversToTry() }
            for server in servers {
                do {
                    let connection = try await establish(server)
                    if install(connection, server: server, isReconnect: false) { return }
                    throw NATSError(.connectionClosed, "the client was closed while connecting")
                } catch let error as NATSError where error.code == .connectionClosed {
                    throw error
                } catch {
                    logger.debug("connection attempt failed", metadata: ["server": "\(server)", "error": "\(error)"])
                    failures.append((server, error))
                }
            }
            withMachine { $0.initialConnectFailed() }
            let detail = failures.map { "\($0.0): \(Self.describe($0.1))" }.joined(separator: "; ")
            let allAuth = !failures.isEmpty && failures.allSatisfy { ($0.1 as? NATSError)?.code == .authorizationViolation }
            throw NATSError(allAuth ? .authorizationViolation : .connectionFailed, "could not connect to any server: \(detail)")
        }
    }

    /// Tries rounds over the server list with backoff until a connection is installed, the client
    /// closes, or the round limit is reached.
    private func runConnectRounds(initial: Bool) async throws {
        while true {
            let round = try withMachine { try $0.connectRound() }
            let delay = backoff.delay(round: round, jitterNanoseconds: backoff.randomJitter())
            if delay > .zero {
                try? await Task.sleep(for: delay)
            }
            let servers = withMachine { $0.serversToTry() }
            for server in servers {
                if withMachine({ $0.isClosed }) {
                    throw NATSError(.connectionClosed, "the client was closed")
                }
                do {
                    let connection = try await establish(server)
                    if install(connection, server: server, isReconnect: !initial) { return }
                    throw NATSError(.connectionClosed, "the client was closed")
                } catch let error as NATSError where error.code == .connectionClosed {
                    throw error
                } catch {
                    logger.debug("connection attempt failed", metadata: ["server": "\(server)", "error": "\(error)"])
                }
            }
            switch withMachine({ $0.roundFailed() }) {
            case .retry:
                continue
            case .giveUp(let reason):
                await closeNow(reason: reason)
                throw NATSError(.connectionFailed, reason)
            case .closed:
                throw NATSError(.connectionClosed, "the client was closed")
            }
        }
    }

    /// Makes an established connection the client's connection: restores subscriptions, sends
    /// what was buffered, and tells listeners. Returns false (and closes the channel) when the
    /// client was closed meanwhile.
    private func install(_ established: EstablishedConnection, server: NATSServerAddress, isReconnect: Bool) -> Bool {
        let connection = LiveConnection(channel: established.channel, handler: established.handler)
        switch withMachine({ $0.connectionEstablished(connection, server: server, info: established.info, isReconnect: isReconnect) }) {
        case .activate(let connection):
            flush(on: connection)
            connection.handler.activate()
            logger.info(isReconnect ? "reconnected to NATS" : "connected to NATS", metadata: ["server": "\(server)"])
            return true
        case .close(let connection):
            connection.channel.close(promise: nil)
            return false
        }
    }

    /// Starts reconnect rounds after the connection of `generation` was lost.
    func startReconnecting(generation: UInt64) {
        let task = Task { [weak self] in
            _ = try? await self?.runConnectRounds(initial: false)
        }
        withMachine { $0.reconnectTaskStarted(task, generation: generation) }?.cancel()
    }

    // MARK: - Closing

    /// Flushes what is buffered (waiting up to a second for the server), then closes the
    /// connection, ends every subscription and stops reconnecting. Idempotent.
    public func close() async {
        if isConnected {
            try? await flush(timeout: .seconds(1))
        }
        await closeNow(reason: nil)
    }

    private func closeNow(reason: String?) async {
        guard let close = withMachine({ $0.closeRequested(reason: reason) }) else { return }
        close.reconnectTask?.cancel()
        fail(close.failures)
        for waiter in close.drainWaiters { waiter.resume() }
        for sink in close.sinks { sink.finish() }
        if let connection = close.connection {
            try? await connection.channel.close()
        }
    }
}
