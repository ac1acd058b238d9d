import NIOCore

// Connecting, reconnect rounds, installing a connection, losing it, closing.
extension NATSConnectionStateMachine {
    enum ConnectRequestAction: Equatable, Sendable {
        /// Run the first connect.
        case start
        /// A connect already ran or runs; nothing to do.
        case alreadyStarted
    }

    /// ``NATSClient/connect()`` was called.
    mutating func connectRequested() throws(NATSError) -> ConnectRequestAction {
        switch state {
        case .idle:
            state = .connecting(round: 0)
            return .start
        case .closed:
            throw NATSError(.connectionClosed, "the client was closed")
        case .connecting, .connected, .reconnecting:
            return .alreadyStarted
        }
    }

    /// The first connect (without retry) found no server: back to idle, a later connect may try
    /// again.
    mutating func initialConnectFailed() {
        if case .connecting = state { state = .idle }
    }

    /// The round of attempts about to start (0 = the first, tried after jitter alone). Throws when
    /// the client was closed, which ends the rounds.
    func connectRound() throws(NATSError) -> Int {
        switch state {
        case .connecting(let round): return round
        case .reconnecting(let reconnecting): return reconnecting.round
        case .closed: throw NATSError(.connectionClosed, "the client was closed")
        case .idle, .connected: return 0
        }
    }

    /// The servers to try in this round: after the last one connected to, lame-duck servers last.
    func serversToTry() -> [NATSServerAddress] {
        pool.round(after: currentServer)
    }

    enum RoundFailedAction: Equatable, Sendable {
        /// Wait the backoff of `round`, then try again.
        case retry(round: Int)
        /// The round limit is reached: close the client with `reason`, and fail the connect.
        case giveUp(reason: String)
        /// The client was closed meanwhile.
        case closed
    }

    /// Every server of a round failed.
    mutating func roundFailed() -> RoundFailedAction {
        let round: Int
        switch state {
        case .connecting(let current):
            round = current + 1
            state = .connecting(round: round)
        case .reconnecting(var reconnecting):
            round = reconnecting.round + 1
            reconnecting.round = round
            state = .reconnecting(reconnecting)
        case .closed, .idle, .connected:
            return .closed
        }
        if let limit = configuration.maxReconnectRounds, round >= limit {
            return .giveUp(reason: "no server reachable after \(round) reconnect rounds")
        }
        return .retry(round: round)
    }

    enum EstablishedAction: Sendable {
        /// The connection is the client's now: queue the flush already scheduled on it (it
        /// carries the re-subscriptions and everything buffered), then start its keep-alive.
        case activate(Connection)
        /// The client was closed meanwhile: close this connection.
        case close(Connection)
    }

    /// A connection finished its handshake with `server`. Restores every live subscription with
    /// its sid (and what remains of its `max`), then the buffered bytes, in one write.
    mutating func connectionEstablished(
        _ connection: Connection, server: NATSServerAddress, info: ServerInfo, isReconnect: Bool
    ) -> EstablishedAction {
        let orphanPongs: Int
        switch state {
        case .closed, .connected:
            return .close(connection)
        case .idle, .connecting:
            orphanPongs = 0
        case .reconnecting(let reconnecting):
            orphanPongs = reconnecting.orphanPongs
        }
        currentServer = server
        self.info = info
        if info.lameDuckMode == true {
            pool.markLameDuck(server)
            emit(.lameDuckMode(server: server.description))
        } else {
            pool.clearLameDuck(server)
        }
        if !configuration.ignoreDiscoveredServers, let urls = info.connectURLs {
            let added = pool.addDiscovered(urls, template: server)
            if !added.isEmpty { emit(.discoveredServers(added.map(\.description))) }
        }
        var prelude = ByteBufferAllocator().buffer(capacity: pending.readableBytes + 64 * subscriptions.count)
        for (sid, subscription) in subscriptions.sorted(by: { $0.key < $1.key }) {
            ClientOperationEncoder.writeSubscribe(into: &prelude, subject: subscription.subject, queue: subscription.queue, sid: sid)
            if let max = subscription.max {
                ClientOperationEncoder.writeUnsubscribe(into: &prelude, sid: sid, max: max - subscription.delivered)
            }
        }
        prelude.writeBuffer(&pending)
        pending = prelude
        state = .connected(
            Connected(
                connection: connection, writable: true, pongWaiters: [], pingsInPending: 0,
                orphanPongs: orphanPongs, keepalivesOutstanding: 0, drainWaiters: []))
        flushScheduled = true
        emit(isReconnect ? .reconnected(server: server.description) : .connected(server: server.description))
        return .activate(connection)
    }

    /// Waiters to resume with an error, and timers to cancel.
    struct Failures: Sendable {
        var error: NATSError
        var pongWaiters: [(PongWaiter, Timer?)] = []
        var requests: [(ReplyWaiter, Timer?)] = []
    }

    enum ConnectionClosedAction: Sendable {
        /// Not the current connection; nothing to do.
        case none
        /// Fail the waiters, resume the drain waiters, log, and start reconnect rounds (a task
        /// reported back with ``reconnectTaskStarted(_:generation:)``).
        case reconnect(Reconnect)
    }

    struct Reconnect: Sendable {
        var failures: Failures
        var drainWaiters: [DrainWaiter]
        var server: NATSServerAddress?
        var reason: String?
        var generation: UInt64
    }

    /// The connection `id` closed (`reason` when known). PONG waiters and the requests sent on it
    /// fail with ``NATSError/Code/connectionLost`` (their outcome is unknown); requests still in
    /// the buffer stay and go out after the reconnect, as do buffered publishes.
    mutating func connectionClosed(_ id: ConnectionID, reason: String?) -> ConnectionClosedAction {
        guard case .connected(var connected) = state, connected.connection.id == id else { return .none }
        state = .idle
        let error = NATSError(
            .connectionLost, "connection to \(currentServer?.description ?? "server") lost\(reason.map { ": \($0)" } ?? ""); outcome unknown")
        var failures = Failures(error: error)
        failPongWaiters(&connected, into: &failures)
        failRequests(sentOn: id, into: &failures)
        reconnectGeneration += 1
        flushScheduled = false
        state = .reconnecting(Reconnecting(round: 0, orphanPongs: connected.pingsInPending, generation: reconnectGeneration, task: nil))
        emit(.disconnected(server: currentServer?.description ?? "", reason: reason))
        return .reconnect(
            Reconnect(failures: failures, drainWaiters: connected.drainWaiters, server: currentServer, reason: reason, generation: reconnectGeneration))
    }

    /// The reconnect task of `generation` started. Returns the task when it must be cancelled
    /// (the client closed meanwhile).
    mutating func reconnectTaskStarted(_ task: ReconnectTask, generation: UInt64) -> ReconnectTask? {
        switch state {
        case .reconnecting(var reconnecting) where reconnecting.generation == generation:
            reconnecting.task = task
            state = .reconnecting(reconnecting)
            return nil
        case .closed:
            return task
        default:
            return nil
        }
    }

    struct CloseAction: Sendable {
        /// The connection to close, if one was up.
        var connection: Connection?
        /// Sinks of every subscription, to finish.
        var sinks: [Sink]
        var failures: Failures
        var drainWaiters: [DrainWaiter]
        var reconnectTask: ReconnectTask?
    }

    /// The client closes (by the application, or after giving up reconnecting). Returns nil when
    /// it was closed already.
    mutating func closeRequested(reason: String?) -> CloseAction? {
        var failures = Failures(error: NATSError(.connectionClosed, "the client was closed"))
        var action = CloseAction(connection: nil, sinks: [], failures: failures, drainWaiters: [], reconnectTask: nil)
        switch state {
        case .closed:
            return nil
        case .connected(var connected):
            action.connection = connected.connection
            failPongWaiters(&connected, into: &failures)
            action.drainWaiters = connected.drainWaiters
        case .reconnecting(let reconnecting):
            action.reconnectTask = reconnecting.task
        case .idle, .connecting:
            break
        }
        state = .closed(reason: reason)
        flushScheduled = false
        action.sinks = subscriptions.sorted(by: { $0.key < $1.key }).map(\.value.sink)
        subscriptions.removeAll()
        failRequests(sentOn: nil, into: &failures)
        action.failures = failures
        emit(.closed(reason: reason))
        if !listeners.isEmpty {
            outbox.append(.finish(Array(listeners.values)))
        }
        listeners.removeAll()
        pending.clear()
        return action
    }

    /// Takes every caller waiting for a PONG; the PINGs still in the buffer will be answered on
    /// the next connection without a waiter.
    private func failPongWaiters(_ connected: inout Connected, into failures: inout Failures) {
        while let entry = connected.pongWaiters.popFirst() {
            if case .caller(_, let waiter, let timer) = entry {
                failures.pongWaiters.append((waiter, timer))
            }
        }
    }

    /// Takes the requests sent on `connection` (every request when nil).
    private mutating func failRequests(sentOn connection: ConnectionID?, into failures: inout Failures) {
        for (token, request) in requests.sorted(by: { $0.key < $1.key }) where connection == nil || request.sentOn == connection {
            requests[token] = nil
            failures.requests.append((request.waiter, request.timer))
        }
    }

    // MARK: - Server INFO and errors

    /// A later INFO on connection `id`: learns discovered servers; returns the server when it
    /// announced lame duck mode (to log).
    mutating func infoReceived(_ id: ConnectionID, info: ServerInfo) -> NATSServerAddress? {
        guard let server = currentServer, connection?.id == id else { return nil }
        self.info = info
        if !configuration.ignoreDiscoveredServers, let urls = info.connectURLs {
            let added = pool.addDiscovered(urls, template: server)
            if !added.isEmpty { emit(.discoveredServers(added.map(\.description))) }
        }
        if info.lameDuckMode == true {
            pool.markLameDuck(server)
            emit(.lameDuckMode(server: server.description))
            return server
        }
        return nil
    }
}
