import NIOCore

// The outgoing buffer (publish, flush to the socket, back-pressure) and PING/PONG (keep-alive
// and callers' round trips).
extension NATSConnectionStateMachine {
    struct PublishAction: Sendable {
        /// Schedule a flush on this connection's event loop.
        var flush: Connection?
        /// More than `maxPendingBytes` wait for the socket: the publisher should wait for the
        /// buffer to drain (``drainWaiterAdded(_:)``).
        var waitForDrain: Bool
    }

    /// A message is published (also a request's message). While disconnected it waits in the
    /// reconnect buffer, up to `reconnectBufferSize` bytes.
    mutating func publish(subject: String, replyTo: String?, headerBlock: ByteBuffer?, payload: ByteBuffer) throws(NATSError) -> PublishAction {
        let size = (headerBlock?.readableBytes ?? 0) + payload.readableBytes
        if let info {
            if size > info.maxPayload {
                let parts = headerBlock.map { " (headers \($0.readableBytes) + payload \(payload.readableBytes))" } ?? ""
                throw NATSError(.maxPayloadExceeded, "message to \"\(subject)\" is \(size) bytes\(parts), over the server's max_payload of \(info.maxPayload) bytes")
            }
            if headerBlock != nil, info.headers == false {
                throw NATSError(.headersNotSupported, "server \(info.serverName ?? info.serverID) does not support headers")
            }
        }
        switch state {
        case .closed:
            throw NATSError(.connectionClosed, "cannot publish to \"\(subject)\": the client was closed")
        case .connected:
            ClientOperationEncoder.writePublish(into: &pending, subject: subject, replyTo: replyTo, headerBlock: headerBlock, payload: payload)
            let flush = scheduleFlush()
            return PublishAction(flush: flush, waitForDrain: pending.readableBytes > configuration.maxPendingBytes)
        case .idle, .connecting, .reconnecting:
            let estimate = size + subject.utf8.count + (replyTo?.utf8.count ?? 0) + 32
            if pending.readableBytes + estimate > configuration.reconnectBufferSize {
                throw NATSError(
                    .reconnectBufferExceeded,
                    "not connected, and the \(configuration.reconnectBufferSize)-byte reconnect buffer is full; message to \"\(subject)\" not sent")
            }
            ClientOperationEncoder.writePublish(into: &pending, subject: subject, replyTo: replyTo, headerBlock: headerBlock, payload: payload)
            return PublishAction(flush: nil, waitForDrain: false)
        }
    }

    /// A publisher waits for the buffer to drain. Returns the waiter when it must be resumed at
    /// once (not connected, or the buffer drained meanwhile); otherwise it is resumed by the next
    /// flush, or when the connection drops or the client closes.
    mutating func drainWaiterAdded(_ waiter: DrainWaiter) -> DrainWaiter? {
        let maxPendingBytes = configuration.maxPendingBytes
        let pendingBytes = pending.readableBytes
        let kept: Bool =
            withConnected { connected in
                guard pendingBytes > maxPendingBytes else { return false }
                connected.drainWaiters.append(waiter)
                return true
            } ?? false
        return kept ? nil : waiter
    }

    struct FlushAction: Sendable {
        var connection: Connection
        var bytes: ByteBuffer
        /// Publishers waiting for the buffer to drain, to resume.
        var drainWaiters: [DrainWaiter]
    }

    /// The flush scheduled on connection `id` runs: returns the bytes to write, or nil (another
    /// connection, nothing to write, or the socket is not writable).
    mutating func flushDue(_ id: ConnectionID) -> FlushAction? {
        guard connection?.id == id else { return nil }
        flushScheduled = false
        let writable = withConnected { $0.writable } ?? false
        guard writable, pending.readableBytes > 0 else { return nil }
        let outgoing = pending
        pending = ByteBufferAllocator().buffer(capacity: min(max(outgoing.readableBytes, 4096), 256 * 1024))
        return withConnected { connected in
            connected.pingsInPending = 0
            let waiters = connected.drainWaiters
            connected.drainWaiters.removeAll()
            return FlushAction(connection: connected.connection, bytes: outgoing, drainWaiters: waiters)
        }
    }

    /// The socket of connection `id` became writable or not. Returns the connection to schedule
    /// a flush on when bytes wait and it became writable.
    mutating func writabilityChanged(_ id: ConnectionID, writable: Bool) -> Connection? {
        guard connection?.id == id else { return nil }
        withConnected { $0.writable = writable }
        guard writable, pending.readableBytes > 0 else { return nil }
        return scheduleFlush()
    }

    // MARK: - PING and PONG

    enum KeepaliveAction: Sendable {
        /// A tick of an old connection; ignore it.
        case ignore
        /// A PING was written; schedule a flush on `flush` if given.
        case ping(flush: Connection?)
        /// `maxPingsOutstanding` PINGs went unanswered: the connection is stale, close it.
        case stale
    }

    /// The keep-alive timer of connection `id` fired.
    mutating func keepaliveTick(_ id: ConnectionID) -> KeepaliveAction {
        guard connection?.id == id else { return .ignore }
        let maxOutstanding = configuration.maxPingsOutstanding
        let sent: Bool =
            withConnected { connected in
                if connected.keepalivesOutstanding >= maxOutstanding { return false }
                connected.keepalivesOutstanding += 1
                connected.pingsInPending += 1
                connected.pongWaiters.append(.keepalive)
                return true
            } ?? false
        guard sent else { return .stale }
        ClientOperationEncoder.writePing(into: &pending)
        return .ping(flush: scheduleFlush())
    }

    /// A PONG arrived on connection `id`. Returns the caller it answers (with its timer to
    /// cancel), if any: PONGs of PINGs written before a reconnect, of keep-alives and of callers
    /// that timed out answer nobody.
    mutating func pongReceived(_ id: ConnectionID) -> (PongWaiter, Timer?)? {
        guard connection?.id == id else { return nil }
        return withConnected { connected -> (PongWaiter, Timer?)? in
            connected.keepalivesOutstanding = 0
            if connected.orphanPongs > 0 {
                connected.orphanPongs -= 1
                return nil
            }
            if case .caller(_, let waiter, let timer) = connected.pongWaiters.popFirst() {
                return (waiter, timer)
            }
            return nil
        } ?? nil
    }

    enum PingAction: Sendable {
        /// Not connected: fail the waiter with this error.
        case fail(PongWaiter, NATSError)
        /// The PING is written: schedule the waiter's timeout on `connection`'s event loop and
        /// report it with ``pongTimerScheduled(id:timer:)``; schedule a flush on `flush` if given.
        case sent(id: UInt64, connection: Connection, flush: Connection?)
    }

    /// A caller wants a PONG (flush, rtt).
    mutating func pingRequested(_ waiter: PongWaiter) -> PingAction {
        let id = nextWaiterID
        nextWaiterID += 1
        guard let connection else {
            return .fail(waiter, NATSError(.notConnected, "not connected to any server"))
        }
        ClientOperationEncoder.writePing(into: &pending)
        withConnected { connected in
            connected.pingsInPending += 1
            connected.pongWaiters.append(.caller(id: id, waiter, timer: nil))
        }
        return .sent(id: id, connection: connection, flush: scheduleFlush())
    }

    /// The timeout of PONG waiter `id` is scheduled. Returns the timer when it must be cancelled
    /// (the PONG came, or the connection dropped, meanwhile).
    mutating func pongTimerScheduled(id: UInt64, timer: Timer) -> Timer? {
        let stored: Bool =
            withConnected { connected in
                guard let index = connected.pongWaiters.firstIndex(where: { $0.isCaller(id) }),
                    case .caller(_, let waiter, nil) = connected.pongWaiters[index]
                else { return false }
                connected.pongWaiters[index] = .caller(id: id, waiter, timer: timer)
                return true
            } ?? false
        return stored ? nil : timer
    }

    /// PONG waiter `id` timed out: returns it to fail. Its PONG, when it comes, answers nobody.
    mutating func pongTimedOut(id: UInt64) -> PongWaiter? {
        withConnected { connected -> PongWaiter? in
            guard let index = connected.pongWaiters.firstIndex(where: { $0.isCaller(id) }),
                case .caller(_, let waiter, _) = connected.pongWaiters[index]
            else { return nil }
            connected.pongWaiters[index] = .abandoned
            return waiter
        } ?? nil
    }
}

extension NATSConnectionStateMachine.PongEntry {
    func isCaller(_ id: UInt64) -> Bool {
        if case .caller(id, _, _) = self { return true }
        return false
    }
}
