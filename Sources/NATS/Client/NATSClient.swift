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
public final class NATSClient: Sendable {
    /// The options the client was created with.
    public let options: NATSClientOptions
    let logger: Logger
    let group: any EventLoopGroup
    let allocator = ByteBufferAllocator()
    private let state: NIOLockedValueBox<State>
    private let tlsContext: NIOSSLContext?
    private let requestInbox: String

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
        self.state = NIOLockedValueBox(State(pool: ServerPool(addresses), pending: ByteBufferAllocator().buffer(capacity: 64 * 1024)))
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

    // MARK: - State

    struct Subscription {
        var subject: String
        var queue: String?
        var sink: SubscriptionSink
        var max: Int?
        var delivered: Int
    }

    enum PongWaiter {
        case keepalive
        case caller(id: UInt64, CheckedContinuation<Void, any Error>, timeout: Scheduled<Void>?)
        case abandoned
    }

    struct PendingRequest {
        var continuation: CheckedContinuation<NATSMessage, any Error>
        var timeout: Scheduled<Void>?
        var sentOn: ObjectIdentifier?
        var subject: String
    }

    enum Phase {
        case idle
        case connecting
        case connected(any Channel, NATSChannelHandler)
        case reconnecting
        case closed
    }

    struct State {
        var phase: Phase = .idle
        var pool: ServerPool
        var currentServer: NATSServerAddress?
        var info: ServerInfo?
        var nextSid: UInt64 = 1
        var subscriptions: [UInt64: Subscription] = [:]
        var pending: ByteBuffer
        var flushScheduled = false
        var writable = true
        var pongWaiters = CircularBuffer<PongWaiter>()
        var pingsInPending = 0
        var orphanPongs = 0
        var keepalivesOutstanding = 0
        var nextWaiterID: UInt64 = 0
        var requestInboxSid: UInt64?
        var requests: [Substring: PendingRequest] = [:]
        var nextRequestID: UInt64 = 0
        var listeners: [UInt64: AsyncStream<NATSConnectionEvent>.Continuation] = [:]
        var nextListenerID: UInt64 = 0
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
        var reconnectTask: Task<Void, Never>?
        var closeReason: String?

        var connectionID: ObjectIdentifier? {
            if case .connected(let channel, _) = phase { return ObjectIdentifier(channel) }
            return nil
        }

        var isClosed: Bool {
            if case .closed = phase { return true }
            return false
        }

        func emit(_ event: NATSConnectionEvent) {
            for listener in listeners.values { listener.yield(event) }
        }
    }

    // MARK: - Public state

    /// Whether a connection is up right now.
    public var isConnected: Bool { state.withLockedValue { $0.connectionID != nil } }

    /// The last INFO of the server connected to (or last connected to).
    public var serverInfo: ServerInfo? { state.withLockedValue { $0.info } }

    /// The server connected to right now, if any.
    public var connectedServer: String? {
        state.withLockedValue { $0.connectionID == nil ? nil : $0.currentServer?.description }
    }

    /// The servers the client knows (configured and discovered).
    public var knownServers: [String] { state.withLockedValue { $0.pool.entries.map(\.address.description) } }

    /// A new unique subject for replies.
    public func newInbox() -> String { "\(options.inboxPrefix).\(NUID.next())" }

    /// A stream of connection events from now on. Each call returns an independent stream; it
    /// ends when the client is closed.
    public func events() -> AsyncStream<NATSConnectionEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: NATSConnectionEvent.self, bufferingPolicy: .bufferingNewest(1024))
        let added: Bool = state.withLockedValue { state in
            guard !state.isClosed else { return false }
            let id = state.nextListenerID
            state.nextListenerID += 1
            state.listeners[id] = continuation
            continuation.onTermination = { [weak self] _ in
                self?.state.withLockedValue { _ = $0.listeners.removeValue(forKey: id) }
            }
            return true
        }
        if !added {
            continuation.yield(.closed(reason: state.withLockedValue { $0.closeReason }))
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
        let proceed: Bool = try state.withLockedValue { state in
            switch state.phase {
            case .idle:
                state.phase = .connecting
                return true
            case .closed:
                throw NATSError(.connectionClosed, "the client was closed")
            case .connecting, .connected, .reconnecting:
                return false
            }
        }
        guard proceed else { return }
        if options.retryOnFailedInitialConnect {
            try await runConnectRounds(initial: true)
        } else {
            var failures: [(NATSServerAddress, any Error)] = []
            let servers = state.withLockedValue { $0.pool.round(after: nil) }
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
            state.withLockedValue { state in
                if case .connecting = state.phase { state.phase = .idle }
            }
            let detail = failures.map { "\($0.0): \(Self.describe($0.1))" }.joined(separator: "; ")
            let allAuth = !failures.isEmpty && failures.allSatisfy { ($0.1 as? NATSError)?.code == .authorizationViolation }
            throw NATSError(allAuth ? .authorizationViolation : .connectionFailed, "could not connect to any server: \(detail)")
        }
    }

    /// Tries rounds over the server list with backoff until a connection is installed, the client
    /// closes, or the round limit is reached.
    private func runConnectRounds(initial: Bool) async throws {
        var round = 0
        while true {
            if state.withLockedValue({ $0.isClosed }) {
                throw NATSError(.connectionClosed, "the client was closed")
            }
            let delay = backoff(round: round)
            if delay > .zero {
                try? await Task.sleep(for: delay)
            }
            let servers = state.withLockedValue { $0.pool.round(after: $0.currentServer) }
            for server in servers {
                if state.withLockedValue({ $0.isClosed }) {
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
            round += 1
            if let limit = options.maxReconnectRounds, round >= limit {
                let reason = "no server reachable after \(round) reconnect rounds"
                await closeNow(reason: reason)
                throw NATSError(.connectionFailed, reason)
            }
        }
    }

    private func backoff(round: Int) -> Duration {
        let jitterNanos = options.reconnectJitter.nanoseconds > 0 ? Int64.random(in: 0...options.reconnectJitter.nanoseconds) : 0
        if round == 0 { return .nanoseconds(jitterNanos) }
        let base = options.reconnectWait.nanoseconds
        let exponent = min(round - 1, 20)
        let wait = min(base.multipliedReportingOverflow(by: 1 << exponent).partialValue, options.maxReconnectWait.nanoseconds)
        return .nanoseconds(max(0, wait) + jitterNanos)
    }

    struct EstablishedConnection {
        var channel: any Channel
        var handler: NATSChannelHandler
        var info: ServerInfo
    }

    private func establish(_ server: NATSServerAddress) async throws -> EstablishedConnection {
        let eventLoop = group.next()
        let handler = NATSChannelHandler(eventLoop: eventLoop, delegate: self, pingInterval: options.pingInterval.timeAmount) { [self] info in
            try handshakeReply(to: info, server: server)
        }
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(options.connectTimeout.timeAmount)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandlers(ByteToMessageHandler(NATSOperationDecoder()), handler)
                    }
                }
                .connect(host: server.host, port: server.port)
                .get()
        } catch {
            handler.discard(error)
            throw error
        }
        let timeout = eventLoop.scheduleTask(in: options.connectTimeout.timeAmount) {
            handler.abort(NATSError(.timeout, "handshake did not finish within \(self.options.connectTimeout)"))
        }
        defer { timeout.cancel() }
        do {
            let latestInfo = try await handler.handshakeCompleted.get()
            return EstablishedConnection(channel: channel, handler: handler, info: latestInfo)
        } catch {
            channel.close(promise: nil)
            throw Self.classify(error, server: server)
        }
    }

    /// Decides, on the event loop, how to answer a server's first INFO: TLS or not, and the
    /// CONNECT line with credentials (signing the nonce when needed).
    private func handshakeReply(to info: ServerInfo, server: NATSServerAddress) throws -> NATSChannelHandler.HandshakeReply {
        let wantsTLS = server.requiresTLS || options.tls != nil
        var tlsHandler: (any ChannelHandler)?
        if info.tlsRequired == true || wantsTLS {
            guard let tlsContext else {
                throw NATSError(.tlsFailure, "server \(server) requires TLS; give TLS options or use a tls:// URL")
            }
            if info.tlsRequired != true && info.tlsAvailable != true {
                throw NATSError(.tlsFailure, "TLS is configured but server \(server) does not offer TLS")
            }
            let hostname = options.tls?.serverName ?? (server.hostIsIPAddress ? nil : server.host)
            tlsHandler = try NIOSSLClientHandler(context: tlsContext, serverHostname: hostname)
        }
        if info.headers == false {
            logger.warning("server does not support headers; JetStream features will not work", metadata: ["server": "\(server)"])
        }
        let connectLine = try makeConnectLine(info: info, server: server, tls: tlsHandler != nil)
        return NATSChannelHandler.HandshakeReply(tlsHandler: tlsHandler, connectLine: connectLine)
    }

    private static func classify(_ error: any Error, server: NATSServerAddress) -> any Error {
        if error is NATSError || error is NATSProtocolError { return error }
        if error is NIOSSLError || error is BoringSSLError {
            return NATSError(.tlsFailure, "TLS with \(server) failed: \(error)")
        }
        return error
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? NATSError { return error.message }
        if let error = error as? IOError { return error.description }
        return "\(error)"
    }

    private struct ConnectMessage: Encodable {
        var verbose = false
        var pedantic = false
        var tls_required: Bool
        var name: String?
        var lang = "swift"
        var version = "0.1.0"
        var `protocol` = 1
        var echo: Bool
        var headers = true
        var no_responders = true
        var user: String?
        var pass: String?
        var auth_token: String?
        var nkey: String?
        var sig: String?
        var jwt: String?
    }

    private func makeConnectLine(info: ServerInfo, server: NATSServerAddress, tls: Bool) throws -> ByteBuffer {
        var message = ConnectMessage(tls_required: tls, name: options.name, echo: !options.noEcho)
        if let user = server.user {
            if let password = server.password {
                message.user = user
                message.pass = password
            } else {
                message.auth_token = user
            }
        }
        switch options.authentication {
        case .none:
            break
        case .userPassword(let user, let password):
            message.user = user
            message.pass = password
        case .token(let token):
            message.auth_token = token
        case .nkeySeed(let seed):
            let pair: NKeyPair
            do { pair = try NKeyPair(seed: seed) } catch {
                throw NATSError(.invalidCredentials, "nkey seed is unusable: \(error)")
            }
            message.nkey = pair.publicKey
            if let nonce = info.nonce { message.sig = pair.signNonce(nonce) }
        case .credentialsFile(let path):
            let credentials: NATSCredentials
            do { credentials = try NATSCredentials.load(path: path) } catch {
                throw NATSError(.invalidCredentials, "\(error)")
            }
            message.jwt = credentials.jwt
            if let nonce = info.nonce { message.sig = credentials.nkey.signNonce(nonce) }
        case .credentials(let credentials):
            message.jwt = credentials.jwt
            if let nonce = info.nonce { message.sig = credentials.nkey.signNonce(nonce) }
        }
        let json = try JSONEncoder().encode(message)
        var buffer = allocator.buffer(capacity: json.count + 16)
        ClientOperationEncoder.writeConnect(into: &buffer, json: Array(json))
        return buffer
    }

    /// Makes an established connection the client's connection: restores subscriptions, sends
    /// what was buffered, and tells listeners. Returns false (and closes the channel) when the
    /// client was closed meanwhile.
    private func install(_ connection: EstablishedConnection, server: NATSServerAddress, isReconnect: Bool) -> Bool {
        let installed: Bool = state.withLockedValue { state in
            guard !state.isClosed else { return false }
            state.phase = .connected(connection.channel, connection.handler)
            state.currentServer = server
            state.info = connection.info
            if connection.info.lameDuckMode == true {
                state.pool.markLameDuck(server)
                state.emit(.lameDuckMode(server: server.description))
            } else {
                state.pool.clearLameDuck(server)
            }
            if !options.ignoreDiscoveredServers, let urls = connection.info.connectURLs {
                let added = state.pool.addDiscovered(urls, template: server)
                if !added.isEmpty { state.emit(.discoveredServers(added.map(\.description))) }
            }
            var prelude = allocator.buffer(capacity: state.pending.readableBytes + 64 * state.subscriptions.count)
            for (sid, subscription) in state.subscriptions.sorted(by: { $0.key < $1.key }) {
                ClientOperationEncoder.writeSubscribe(into: &prelude, subject: subscription.subject, queue: subscription.queue, sid: sid)
                if let max = subscription.max {
                    ClientOperationEncoder.writeUnsubscribe(into: &prelude, sid: sid, max: max - subscription.delivered)
                }
            }
            prelude.writeBuffer(&state.pending)
            state.pending.clear()
            state.pingsInPending = 0
            state.flushScheduled = false
            state.writable = true
            state.keepalivesOutstanding = 0
            let channel = connection.channel
            let initialWrite = prelude
            channel.eventLoop.execute { channel.writeAndFlush(initialWrite, promise: nil) }
            state.emit(isReconnect ? .reconnected(server: server.description) : .connected(server: server.description))
            return true
        }
        if installed {
            connection.handler.activate()
            logger.info(isReconnect ? "reconnected to NATS" : "connected to NATS", metadata: ["server": "\(server)"])
        } else {
            connection.channel.close(promise: nil)
        }
        return installed
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
        var channel: (any Channel)?
        var sinks: [SubscriptionSink] = []
        var listeners: [AsyncStream<NATSConnectionEvent>.Continuation] = []
        state.withLockedValue { state in
            if state.isClosed { return }
            if case .connected(let connected, _) = state.phase { channel = connected }
            state.phase = .closed
            state.closeReason = reason
            state.reconnectTask?.cancel()
            state.reconnectTask = nil
            sinks = state.subscriptions.values.map(\.sink)
            state.subscriptions.removeAll()
            Self.failWaiters(&state, NATSError(.connectionClosed, "the client was closed"), connection: nil)
            for waiter in state.drainWaiters { waiter.resume() }
            state.drainWaiters.removeAll()
            state.emit(.closed(reason: reason))
            listeners = Array(state.listeners.values)
            state.listeners.removeAll()
            state.pending.clear()
        }
        for sink in sinks { sink.finish() }
        for listener in listeners { listener.finish() }
        if let channel {
            try? await channel.close()
        }
    }

    /// Fails pong waiters and requests. With a `connection`, only requests sent on it are failed;
    /// requests still waiting in the buffer go out after the reconnect.
    private static func failWaiters(_ state: inout State, _ error: NATSError, connection: ObjectIdentifier?) {
        while let waiter = state.pongWaiters.popFirst() {
            if case .caller(_, let continuation, let timeout) = waiter {
                timeout?.cancel()
                continuation.resume(throwing: error)
            }
        }
        state.orphanPongs = state.pingsInPending
        for (token, request) in state.requests where connection == nil || request.sentOn == connection {
            request.timeout?.cancel()
            state.requests[token] = nil
            request.continuation.resume(throwing: error)
        }
    }

    // MARK: - Writing

    /// Appends bytes produced by `write` to the outgoing buffer and schedules a flush.
    private func scheduleFlush(_ state: inout State) {
        guard !state.flushScheduled, case .connected(let channel, _) = state.phase else { return }
        state.flushScheduled = true
        let id = ObjectIdentifier(channel)
        channel.eventLoop.execute { self.flushPending(connection: id) }
    }

    private func flushPending(connection: ObjectIdentifier) {
        let work: ((any Channel), ByteBuffer, [CheckedContinuation<Void, Never>])? = state.withLockedValue { state in
            guard case .connected(let channel, _) = state.phase, ObjectIdentifier(channel) == connection else { return nil }
            state.flushScheduled = false
            guard state.writable, state.pending.readableBytes > 0 else { return nil }
            let outgoing = state.pending
            state.pending = allocator.buffer(capacity: min(max(outgoing.readableBytes, 4096), 256 * 1024))
            state.pingsInPending = 0
            let waiters = state.drainWaiters
            state.drainWaiters.removeAll()
            return (channel, outgoing, waiters)
        }
        guard let (channel, outgoing, waiters) = work else { return }
        channel.writeAndFlush(outgoing, promise: nil)
        for waiter in waiters { waiter.resume() }
    }

    /// Whether the caller should wait for the buffer to drain before writing more.
    private enum EnqueueResult {
        case done
        case waitForDrain
    }

    private func enqueuePublish(
        _ state: inout State, subject: String, replyTo: String?, headerBlock: ByteBuffer?, payload: ByteBuffer
    ) throws(NATSError) -> EnqueueResult {
        let size = (headerBlock?.readableBytes ?? 0) + payload.readableBytes
        if let info = state.info {
            if size > info.maxPayload {
                let parts = headerBlock.map { " (headers \($0.readableBytes) + payload \(payload.readableBytes))" } ?? ""
                throw NATSError(.maxPayloadExceeded, "message to \"\(subject)\" is \(size) bytes\(parts), over the server's max_payload of \(info.maxPayload) bytes")
            }
            if headerBlock != nil, info.headers == false {
                throw NATSError(.headersNotSupported, "server \(info.serverName ?? info.serverID) does not support headers")
            }
        }
        switch state.phase {
        case .closed:
            throw NATSError(.connectionClosed, "cannot publish to \"\(subject)\": the client was closed")
        case .connected:
            ClientOperationEncoder.writePublish(into: &state.pending, subject: subject, replyTo: replyTo, headerBlock: headerBlock, payload: payload)
            scheduleFlush(&state)
            return state.pending.readableBytes > options.maxPendingBytes ? .waitForDrain : .done
        case .idle, .connecting, .reconnecting:
            let estimate = size + subject.utf8.count + (replyTo?.utf8.count ?? 0) + 32
            if state.pending.readableBytes + estimate > options.reconnectBufferSize {
                throw NATSError(.reconnectBufferExceeded, "not connected, and the \(options.reconnectBufferSize)-byte reconnect buffer is full; message to \"\(subject)\" not sent")
            }
            ClientOperationEncoder.writePublish(into: &state.pending, subject: subject, replyTo: replyTo, headerBlock: headerBlock, payload: payload)
            return .done
        }
    }

    private func waitForDrain() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            state.withLockedValue { state in
                if case .connected = state.phase, state.pending.readableBytes > options.maxPendingBytes {
                    state.drainWaiters.append(continuation)
                } else {
                    continuation.resume()
                }
            }
        }
    }

    // MARK: - Publishing

    /// Publishes a message.
    ///
    /// Returns once the message is in the outgoing buffer; it reaches the server at the next turn
    /// of the event loop (``flush(timeout:)`` waits until the server has processed everything
    /// published before it). Suspends only when more than ``NATSClientOptions/maxPendingBytes``
    /// wait for the socket.
    ///
    /// Throws for an invalid subject or header, a message over the server's `max_payload`, a full
    /// reconnect buffer, or a closed client.
    public func publish(_ subject: String, payload: ByteBuffer = ByteBuffer(), headers: NATSHeaders? = nil, replyTo: String? = nil) async throws {
        try NATSSubject.validatePublish(subject)
        if let replyTo { try NATSSubject.validatePublish(replyTo) }
        let headerBlock = try headers.map { headers throws(NATSError) in try ClientOperationEncoder.headerBlock(headers, allocator: allocator) }
        let result = try state.withLockedValue { state throws(NATSError) in
            try enqueuePublish(&state, subject: subject, replyTo: replyTo, headerBlock: headerBlock, payload: payload)
        }
        if case .waitForDrain = result {
            await waitForDrain()
        }
    }

    /// Publishes a UTF-8 string.
    public func publish(_ subject: String, string: String, headers: NATSHeaders? = nil, replyTo: String? = nil) async throws {
        try await publish(subject, payload: ByteBuffer(string: string), headers: headers, replyTo: replyTo)
    }

    /// Publishes bytes.
    public func publish(_ subject: String, bytes: some Sequence<UInt8>, headers: NATSHeaders? = nil, replyTo: String? = nil) async throws {
        try await publish(subject, payload: ByteBuffer(bytes: bytes), headers: headers, replyTo: replyTo)
    }

    /// Waits until the server has processed everything sent before this call (one PING/PONG
    /// round trip). Throws ``NATSError/Code/notConnected`` while disconnected and
    /// ``NATSError/Code/timeout`` when no PONG comes in time.
    public func flush(timeout: Duration? = nil) async throws {
        _ = try await roundTrip(timeout: timeout ?? options.requestTimeout)
    }

    /// Measures the round-trip time to the server with a PING.
    public func rtt(timeout: Duration? = nil) async throws -> Duration {
        try await roundTrip(timeout: timeout ?? options.requestTimeout)
    }

    private func roundTrip(timeout: Duration) async throws -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        let waiterID = state.withLockedValue { state in
            defer { state.nextWaiterID += 1 }
            return state.nextWaiterID
        }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            state.withLockedValue { state in
                guard case .connected(let channel, _) = state.phase else {
                    continuation.resume(throwing: NATSError(.notConnected, "not connected to any server"))
                    return
                }
                ClientOperationEncoder.writePing(into: &state.pending)
                state.pingsInPending += 1
                let timer = channel.eventLoop.scheduleTask(in: timeout.timeAmount) { [weak self] () -> Void in
                    self?.abandonPongWaiter(id: waiterID, timeout: timeout)
                }
                state.pongWaiters.append(.caller(id: waiterID, continuation, timeout: timer))
                scheduleFlush(&state)
            }
        }
        return clock.now - start
    }

    private func abandonPongWaiter(id: UInt64, timeout: Duration) {
        state.withLockedValue { state in
            guard let index = state.pongWaiters.firstIndex(where: { if case .caller(id, _, _) = $0 { return true } else { return false } }) else { return }
            if case .caller(_, let continuation, _) = state.pongWaiters[index] {
                continuation.resume(throwing: NATSError(.timeout, "server did not answer PING within \(timeout)"))
            }
            state.pongWaiters[index] = .abandoned
        }
    }

    // MARK: - Subscribing

    /// Subscribes to a subject (wildcards allowed), optionally in a queue group.
    ///
    /// - Parameters:
    ///   - pendingLimit: messages buffered for a slow reader before new ones are dropped;
    ///     ``NATSClientOptions/subscriptionPendingLimit`` when nil.
    ///   - pendingBytesLimit: payload bytes buffered for a slow reader before new messages are
    ///     dropped; ``NATSClientOptions/subscriptionPendingBytesLimit`` when nil.
    public func subscribe(to subject: String, queue: String? = nil, pendingLimit: Int? = nil, pendingBytesLimit: Int? = nil) async throws -> NATSSubscription {
        try NATSSubject.validateSubscribe(subject)
        if let queue { try NATSSubject.validateQueueGroup(queue) }
        let (stream, continuation) = AsyncStream.makeStream(
            of: NATSMessage.self, bufferingPolicy: .bufferingOldest(max(1, pendingLimit ?? options.subscriptionPendingLimit)))
        let sink = SubscriptionSink(.stream(continuation), pendingBytesLimit: max(1, pendingBytesLimit ?? options.subscriptionPendingBytesLimit))
        let sid = try addSubscription(subject: subject, queue: queue, sink: sink)
        continuation.onTermination = { [weak self] termination in
            if case .cancelled = termination {
                try? self?.unsubscribe(sid: sid, after: nil)
            }
        }
        return NATSSubscription(subject: subject, queue: queue, sid: sid, stream: stream, sink: sink, client: self)
    }

    /// Subscribes with a handler called on the connection's event loop for each message. The
    /// handler must return quickly and must not block. Returns the subscription id.
    func subscribe(to subject: String, queue: String? = nil, handler: @escaping @Sendable (NATSMessage) -> Void) throws -> UInt64 {
        try NATSSubject.validateSubscribe(subject)
        return try addSubscription(subject: subject, queue: queue, sink: SubscriptionSink(.handler(handler)))
    }

    private func addSubscription(subject: String, queue: String?, sink: SubscriptionSink) throws -> UInt64 {
        try state.withLockedValue { state throws(NATSError) in
            guard !state.isClosed else {
                throw NATSError(.connectionClosed, "cannot subscribe to \"\(subject)\": the client was closed")
            }
            let sid = state.nextSid
            state.nextSid += 1
            state.subscriptions[sid] = Subscription(subject: subject, queue: queue, sink: sink, max: nil, delivered: 0)
            if case .connected = state.phase {
                ClientOperationEncoder.writeSubscribe(into: &state.pending, subject: subject, queue: queue, sid: sid)
                scheduleFlush(&state)
            }
            return sid
        }
    }

    /// Unsubscribes `sid` now, or after `max` messages in total.
    func unsubscribe(sid: UInt64, after max: Int?) throws(NATSError) {
        let finished: SubscriptionSink? = state.withLockedValue { state in
            guard let subscription = state.subscriptions[sid] else { return nil }
            if let max, subscription.delivered < max {
                state.subscriptions[sid]?.max = max
                if case .connected = state.phase {
                    ClientOperationEncoder.writeUnsubscribe(into: &state.pending, sid: sid, max: max)
                    scheduleFlush(&state)
                }
                return nil
            }
            state.subscriptions[sid] = nil
            if case .connected = state.phase {
                ClientOperationEncoder.writeUnsubscribe(into: &state.pending, sid: sid, max: nil)
                scheduleFlush(&state)
            }
            return subscription.sink
        }
        finished?.finish()
    }

    // MARK: - Requests

    /// Sends a request and waits for the first reply.
    ///
    /// Throws ``NATSError/Code/noResponders`` when nobody listens on `subject`,
    /// ``NATSError/Code/timeout`` when no reply comes in time, and
    /// ``NATSError/Code/connectionLost`` when the connection drops while waiting.
    public func request(_ subject: String, payload: ByteBuffer = ByteBuffer(), headers: NATSHeaders? = nil, timeout: Duration? = nil) async throws -> NATSMessage {
        try NATSSubject.validatePublish(subject)
        let headerBlock = try headers.map { headers throws(NATSError) in try ClientOperationEncoder.headerBlock(headers, allocator: allocator) }
        let timeout = timeout ?? options.requestTimeout
        let token: Substring = try state.withLockedValue { state throws(NATSError) in
            if state.requestInboxSid == nil {
                guard !state.isClosed else { throw NATSError(.connectionClosed, "the client was closed") }
                let sid = state.nextSid
                state.nextSid += 1
                let prefixLength = requestInbox.utf8.count + 1
                let sink = SubscriptionSink(.handler { [weak self] message in
                    self?.deliverReply(message, token: message.subject.utf8.count > prefixLength ? Substring(message.subject.utf8.dropFirst(prefixLength)) : "")
                })
                let subject = "\(requestInbox).*"
                state.subscriptions[sid] = Subscription(subject: subject, queue: nil, sink: sink, max: nil, delivered: 0)
                state.requestInboxSid = sid
                if case .connected = state.phase {
                    ClientOperationEncoder.writeSubscribe(into: &state.pending, subject: subject, queue: nil, sid: sid)
                    scheduleFlush(&state)
                }
            }
            state.nextRequestID += 1
            return Substring(String(state.nextRequestID, radix: 36))
        }
        let replyTo = "\(requestInbox).\(token)"
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<NATSMessage, any Error>) in
                do {
                    try state.withLockedValue { state throws in
                        let loop: any EventLoop
                        if case .connected(let channel, _) = state.phase { loop = channel.eventLoop } else { loop = group.next() }
                        let scheduled = loop.scheduleTask(in: timeout.timeAmount) { [weak self] () -> Void in
                            self?.failRequest(token: token, NATSError(.timeout, "no reply to request on \"\(subject)\" within \(timeout)"))
                        }
                        state.requests[token] = PendingRequest(continuation: continuation, timeout: scheduled, sentOn: state.connectionID, subject: subject)
                        do {
                            _ = try enqueuePublish(&state, subject: subject, replyTo: replyTo, headerBlock: headerBlock, payload: payload)
                        } catch {
                            scheduled.cancel()
                            state.requests[token] = nil
                            throw error
                        }
                    }
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            failRequest(token: token, NATSError(.cancelled, "request on \"\(subject)\" was cancelled"))
        }
    }

    private func deliverReply(_ message: NATSMessage, token: Substring) {
        let request: PendingRequest? = state.withLockedValue { $0.requests.removeValue(forKey: token) }
        guard let request else { return }
        request.timeout?.cancel()
        if message.status == 503 {
            request.continuation.resume(throwing: NATSError(.noResponders, "no responders on \"\(request.subject)\""))
        } else {
            request.continuation.resume(returning: message)
        }
    }

    private func failRequest(token: Substring, _ error: NATSError) {
        let request: PendingRequest? = state.withLockedValue { $0.requests.removeValue(forKey: token) }
        guard let request else { return }
        request.timeout?.cancel()
        request.continuation.resume(throwing: error)
    }

    // MARK: - TLS

    static func makeTLSContext(_ options: NATSTLSOptions) throws(NATSError) -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        do {
            if let caFile = options.caFile {
                try Self.checkReadable(caFile, what: "TLS CA file")
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
            }
            if let certificateFile = options.certificateFile {
                try Self.checkReadable(certificateFile, what: "TLS certificate file")
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) }
            }
            if let keyFile = options.keyFile {
                try Self.checkReadable(keyFile, what: "TLS key file")
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
            }
            if (options.certificateFile == nil) != (options.keyFile == nil) {
                throw NATSError(.invalidCredentials, "TLS client certificate and key must be given together")
            }
            if !options.verifyServer {
                configuration.certificateVerification = .none
            }
            return try NIOSSLContext(configuration: configuration)
        } catch let error as NATSError {
            throw error
        } catch {
            throw NATSError(.invalidCredentials, "TLS files unusable: \(error)")
        }
    }

    private static func checkReadable(_ path: String, what: String) throws(NATSError) {
        guard FileManager.default.fileExists(atPath: path) else {
            throw NATSError(.invalidCredentials, "\(what) \(path) does not exist")
        }
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw NATSError(.invalidCredentials, "\(what) \(path) is not readable (permission denied)")
        }
    }
}

// MARK: - Connection callbacks

extension NATSClient: NATSConnectionDelegate {
    func connection(_ connection: ObjectIdentifier, received message: NATSMessage) {
        let delivery: (SubscriptionSink, Bool, String)? = state.withLockedValue { state in
            guard let index = state.subscriptions.index(forKey: message.sid) else { return nil }
            state.subscriptions.values[index].delivered += 1
            let subscription = state.subscriptions.values[index]
            if let max = subscription.max, subscription.delivered >= max {
                state.subscriptions.remove(at: index)
                return (subscription.sink, true, subscription.subject)
            }
            return (subscription.sink, false, subscription.subject)
        }
        guard let (sink, finished, subject) = delivery else { return }
        if let dropped = sink.deliver(message), dropped == 1 || dropped % 10_000 == 0 {
            logger.warning("slow consumer: dropping messages", metadata: ["subject": "\(subject)", "sid": "\(message.sid)", "dropped": "\(dropped)"])
            state.withLockedValue { $0.emit(.slowConsumer(subject: subject, sid: message.sid, dropped: dropped)) }
        }
        if finished { sink.finish() }
    }

    func connection(_ connection: ObjectIdentifier, receivedInfo info: ServerInfo) {
        state.withLockedValue { state in
            guard let server = state.currentServer, state.connectionID == connection else { return }
            state.info = info
            if !options.ignoreDiscoveredServers, let urls = info.connectURLs {
                let added = state.pool.addDiscovered(urls, template: server)
                if !added.isEmpty { state.emit(.discoveredServers(added.map(\.description))) }
            }
            if info.lameDuckMode == true {
                state.pool.markLameDuck(server)
                state.emit(.lameDuckMode(server: server.description))
                logger.warning("server entered lame duck mode; other servers will be preferred", metadata: ["server": "\(server)"])
            }
        }
    }

    func connectionReceivedPong(_ connection: ObjectIdentifier) {
        state.withLockedValue { state in
            guard state.connectionID == connection else { return }
            state.keepalivesOutstanding = 0
            if state.orphanPongs > 0 {
                state.orphanPongs -= 1
                return
            }
            if case .caller(_, let continuation, let timeout) = state.pongWaiters.popFirst() {
                timeout?.cancel()
                continuation.resume()
            }
        }
    }

    func connection(_ connection: ObjectIdentifier, receivedError text: String) {
        logger.warning("server error", metadata: ["error": "\(text)"])
        let denied = Self.permissionViolation(text)
        let failed: [PendingRequest] = state.withLockedValue { state in
            state.emit(.serverError(text))
            guard let denied else { return [] }
            // A denied publish fails the requests sent to that subject; a denied subscription
            // to the reply inbox fails every request (no reply can arrive). Without this they
            // would wait for their timeout and say nothing about why.
            let inboxDenied = denied.operation == .subscription && state.requestInboxSid.flatMap { state.subscriptions[$0]?.subject } == denied.subject
            let tokens = state.requests.compactMap { token, request in
                (inboxDenied || (denied.operation == .publish && request.subject == denied.subject)) && request.sentOn == connection ? token : nil
            }
            return tokens.compactMap { state.requests.removeValue(forKey: $0) }
        }
        guard let denied else { return }
        for request in failed {
            request.timeout?.cancel()
            let what = denied.operation == .publish ? "publish to" : "subscribe to"
            request.continuation.resume(
                throwing: NATSError(
                    .permissionViolation,
                    "permission denied: the NATS server does not let this user \(what) \"\(denied.subject)\" (request on \"\(request.subject)\")"))
        }
    }

    /// The operation and subject of a `Permissions Violation for Publish to "x"` (or
    /// `Subscription to "x"`) error.
    struct PermissionViolation: Equatable {
        enum Operation { case publish, subscription }
        var operation: Operation
        var subject: String
    }

    static func permissionViolation(_ text: String) -> PermissionViolation? {
        let lower = text.lowercased()
        let operation: PermissionViolation.Operation
        if lower.contains("permissions violation for publish to") {
            operation = .publish
        } else if lower.contains("permissions violation for subscription to") {
            operation = .subscription
        } else {
            return nil
        }
        guard let open = text.firstIndex(of: "\"") else { return nil }
        let rest = text[text.index(after: open)...]
        guard let close = rest.firstIndex(of: "\"") else { return nil }
        return PermissionViolation(operation: operation, subject: String(rest[..<close]))
    }

    func connection(_ connection: ObjectIdentifier, writabilityChanged writable: Bool) {
        state.withLockedValue { state in
            guard state.connectionID == connection else { return }
            state.writable = writable
            if writable, state.pending.readableBytes > 0 { scheduleFlush(&state) }
        }
    }

    func connectionKeepaliveTick(_ connection: ObjectIdentifier) -> Bool {
        state.withLockedValue { state in
            guard state.connectionID == connection else { return true }
            if state.keepalivesOutstanding >= options.maxPingsOutstanding { return false }
            state.keepalivesOutstanding += 1
            ClientOperationEncoder.writePing(into: &state.pending)
            state.pingsInPending += 1
            state.pongWaiters.append(.keepalive)
            scheduleFlush(&state)
            return true
        }
    }

    func connection(_ connection: ObjectIdentifier, closedWith error: (any Error)?) {
        let reason = error.map(Self.describe)
        let lost: NATSServerAddress? = state.withLockedValue { state in
            guard state.connectionID == connection else { return nil }
            state.phase = .reconnecting
            Self.failWaiters(&state, NATSError(.connectionLost, "connection to \(state.currentServer?.description ?? "server") lost\(reason.map { ": \($0)" } ?? ""); outcome unknown"), connection: connection)
            for waiter in state.drainWaiters { waiter.resume() }
            state.drainWaiters.removeAll()
            state.flushScheduled = false
            state.writable = true
            state.emit(.disconnected(server: state.currentServer?.description ?? "", reason: reason))
            state.reconnectTask = Task { [weak self] in
                try? await self?.runConnectRounds(initial: false)
            }
            return state.currentServer
        }
        if let lost {
            logger.warning("disconnected from NATS; reconnecting", metadata: ["server": "\(lost)", "reason": "\(reason ?? "closed")"])
        }
    }
}
