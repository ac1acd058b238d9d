import NIOCore

// Request/reply over one wildcard inbox subscription (`<inbox>.*`, one token per request).
extension NATSConnectionStateMachine {
    /// A request is about to be made: subscribes the shared reply inbox on first use (with the
    /// sink `makeInboxSink` builds) and returns the request's token and the connection to
    /// schedule a flush on.
    mutating func requestStarted(inboxSubject: String, makeInboxSink: () -> Sink) throws(NATSError) -> (token: Substring, flush: Connection?) {
        var flush: Connection?
        if requestInboxSid == nil {
            guard !isClosed else { throw NATSError(.connectionClosed, "the client was closed") }
            let sid = nextSid
            nextSid += 1
            subscriptions[sid] = Subscription(subject: inboxSubject, queue: nil, sink: makeInboxSink(), max: nil, delivered: 0)
            requestInboxSid = sid
            if isConnected {
                ClientOperationEncoder.writeSubscribe(into: &pending, subject: inboxSubject, queue: nil, sid: sid)
                flush = scheduleFlush()
            }
        }
        nextRequestID += 1
        return (Substring(String(nextRequestID, radix: 36)), flush)
    }

    enum RequestIssuedAction: Sendable {
        /// The request could not be sent: fail its waiter with this error.
        case fail(ReplyWaiter, NATSError)
        /// The request is registered and its message buffered: schedule its timeout (on
        /// `timerOn`'s event loop, or any when nil) and report it with
        /// ``requestTimerScheduled(token:timer:)``; schedule a flush on `flush` if given.
        case sent(timerOn: Connection?, flush: Connection?)
    }

    /// The request `token` waits for its reply with `waiter`; its message is published with the
    /// reply subject `replyTo`.
    mutating func requestIssued(
        token: Substring, waiter: ReplyWaiter, subject: String, replyTo: String, headerBlock: ByteBuffer?, payload: ByteBuffer
    ) -> RequestIssuedAction {
        let sentOn = connection
        requests[token] = PendingRequest(waiter: waiter, timer: nil, sentOn: sentOn?.id, subject: subject)
        do {
            let published = try publish(subject: subject, replyTo: replyTo, headerBlock: headerBlock, payload: payload)
            return .sent(timerOn: sentOn, flush: published.flush)
        } catch {
            requests[token] = nil
            return .fail(waiter, error)
        }
    }

    /// The timeout of request `token` is scheduled. Returns the timer when it must be cancelled
    /// (the request ended meanwhile).
    mutating func requestTimerScheduled(token: Substring, timer: Timer) -> Timer? {
        guard let index = requests.index(forKey: token), requests.values[index].timer == nil else { return timer }
        requests.values[index].timer = timer
        return nil
    }

    /// The end of a request: its waiter, its timer to cancel, and its result.
    struct RequestOutcome: Sendable {
        var waiter: ReplyWaiter
        var timer: Timer?
        var result: Result<NATSMessage, NATSError>
    }

    /// A reply for `token` arrived. A 503 status means nobody listens on the subject.
    mutating func replyReceived(token: Substring, message: NATSMessage) -> RequestOutcome? {
        guard let request = requests.removeValue(forKey: token) else { return nil }
        if message.status == 503 {
            return RequestOutcome(
                waiter: request.waiter, timer: request.timer, result: .failure(NATSError(.noResponders, "no responders on \"\(request.subject)\"")))
        }
        return RequestOutcome(waiter: request.waiter, timer: request.timer, result: .success(message))
    }

    /// Request `token` ends with `error` (its timeout, or its task was cancelled).
    mutating func requestFailed(token: Substring, error: NATSError) -> RequestOutcome? {
        guard let request = requests.removeValue(forKey: token) else { return nil }
        return RequestOutcome(waiter: request.waiter, timer: request.timer, result: .failure(error))
    }

    /// The server sent `-ERR text` on connection `id`. A denied publish fails the requests sent
    /// to that subject on this connection; a denied subscription to the reply inbox fails every
    /// request sent on it (no reply can arrive). Without this they would wait for their timeout
    /// and say nothing about why.
    mutating func serverError(_ id: ConnectionID, text: String) -> [RequestOutcome] {
        emit(.serverError(text))
        guard let denied = NATSClient.permissionViolation(text) else { return [] }
        let inboxDenied = denied.operation == .subscription && requestInboxSid.flatMap { subscriptions[$0]?.subject } == denied.subject
        let tokens = requests.compactMap { token, request in
            (inboxDenied || (denied.operation == .publish && request.subject == denied.subject)) && request.sentOn == id ? token : nil
        }
        let what = denied.operation == .publish ? "publish to" : "subscribe to"
        return tokens.sorted().compactMap { token in
            guard let request = requests.removeValue(forKey: token) else { return nil }
            let error = NATSError(
                .permissionViolation,
                "permission denied: the NATS server does not let this user \(what) \"\(denied.subject)\" (request on \"\(request.subject)\")")
            return RequestOutcome(waiter: request.waiter, timer: request.timer, result: .failure(error))
        }
    }
}
