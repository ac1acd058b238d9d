import NIOCore

// Publishing, PING round trips, subscribing and request/reply: each call feeds one event to the
// state machine and runs its action outside the lock.
extension NATSClient {
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
        let action = try withMachine { try $0.publish(subject: subject, replyTo: replyTo, headerBlock: headerBlock, payload: payload) }
        flush(on: action.flush)
        if action.waitForDrain {
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

    private func waitForDrain() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            withMachine { $0.drainWaiterAdded(continuation) }?.resume()
        }
    }

    // MARK: - PING round trips

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
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            switch withMachine({ $0.pingRequested(continuation) }) {
            case .fail(let waiter, let error):
                waiter.resume(throwing: error)
            case .sent(let id, let connection, let flush):
                // The timer first, then the flush: both land in one turn of the event loop.
                let timer = connection.channel.eventLoop.scheduleTask(in: timeout.timeAmount) { [weak self] () -> Void in
                    guard let self else { return }
                    self.withMachine { $0.pongTimedOut(id: id) }?
                        .resume(throwing: NATSError(.timeout, "server did not answer PING within \(timeout)"))
                }
                withMachine { $0.pongTimerScheduled(id: id, timer: timer) }?.cancel()
                self.flush(on: flush)
            }
        }
        return clock.now - start
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
        let (sid, flush) = try withMachine { try $0.subscribe(subject: subject, queue: queue, sink: sink) }
        self.flush(on: flush)
        return sid
    }

    /// Unsubscribes `sid` now, or after `max` messages in total.
    func unsubscribe(sid: UInt64, after max: Int?) throws(NATSError) {
        let (finished, flush) = withMachine { $0.unsubscribe(sid: sid, after: max) }
        self.flush(on: flush)
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
        let prefixLength = requestInbox.utf8.count + 1
        let (token, inboxFlush) = try withMachine {
            try $0.requestStarted(inboxSubject: "\(requestInbox).*") {
                SubscriptionSink(.handler { [weak self] message in
                    self?.deliverReply(message, token: message.subject.utf8.count > prefixLength ? Substring(message.subject.utf8.dropFirst(prefixLength)) : "")
                })
            }
        }
        flush(on: inboxFlush)
        let replyTo = "\(requestInbox).\(token)"
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<NATSMessage, any Error>) in
                let action = withMachine {
                    $0.requestIssued(token: token, waiter: continuation, subject: subject, replyTo: replyTo, headerBlock: headerBlock, payload: payload)
                }
                switch action {
                case .fail(let waiter, let error):
                    waiter.resume(throwing: error)
                case .sent(let timerOn, let flush):
                    // The timer first, then the flush, in one task on the connection's event loop:
                    // one wake-up of the loop per request, not one for each. (A reply that beats
                    // the timer makes the machine hand the timer back, cancelled below.)
                    let loop = timerOn?.channel.eventLoop ?? group.next()
                    let flushHere = flush.map { $0.channel.eventLoop === loop } ?? false
                    let armAndFlush: @Sendable () -> Void = { [self] in
                        let timer = loop.scheduleTask(in: timeout.timeAmount) { [weak self] () -> Void in
                            self?.failRequest(token: token, NATSError(.timeout, "no reply to request on \"\(subject)\" within \(timeout)"))
                        }
                        withMachine { $0.requestTimerScheduled(token: token, timer: timer) }?.cancel()
                        if flushHere, let flush { flushPending(connection: flush.id) }
                    }
                    if loop.inEventLoop { armAndFlush() } else { loop.execute(armAndFlush) }
                    if !flushHere { self.flush(on: flush) }
                }
            }
        } onCancel: {
            failRequest(token: token, NATSError(.cancelled, "request on \"\(subject)\" was cancelled"))
        }
    }

    private func deliverReply(_ message: NATSMessage, token: Substring) {
        complete(withMachine { $0.replyReceived(token: token, message: message) })
    }

    private func failRequest(token: Substring, _ error: NATSError) {
        complete(withMachine { $0.requestFailed(token: token, error: error) })
    }

    /// Ends a request: cancels its timer and resumes its waiter with the result.
    func complete(_ outcome: Machine.RequestOutcome?) {
        guard let outcome else { return }
        outcome.timer?.cancel()
        switch outcome.result {
        case .success(let message): outcome.waiter.resume(returning: message)
        case .failure(let error): outcome.waiter.resume(throwing: error)
        }
    }
}
