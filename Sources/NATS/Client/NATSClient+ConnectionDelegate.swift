import NIOCore

// Callbacks of the connection's channel handler (on its event loop): each is one event for the
// state machine, and its action runs after the lock is released.
extension NATSClient: NATSConnectionDelegate {
    func connection(_ connection: ObjectIdentifier, received message: NATSMessage) {
        guard let delivery = withMachine({ $0.messageReceived(sid: message.sid) }) else { return }
        if let dropped = delivery.sink.deliver(message), dropped == 1 || dropped % 10_000 == 0 {
            logger.warning("slow consumer: dropping messages", metadata: ["subject": "\(delivery.subject)", "sid": "\(message.sid)", "dropped": "\(dropped)"])
            withMachine { $0.slowConsumer(subject: delivery.subject, sid: message.sid, dropped: dropped) }
        }
        if delivery.finished { delivery.sink.finish() }
    }

    func connection(_ connection: ObjectIdentifier, receivedInfo info: ServerInfo) {
        if let lameDuck = withMachine({ $0.infoReceived(connection, info: info) }) {
            logger.warning("server entered lame duck mode; other servers will be preferred", metadata: ["server": "\(lameDuck)"])
        }
    }

    func connectionReceivedPong(_ connection: ObjectIdentifier) {
        guard let (waiter, timer) = withMachine({ $0.pongReceived(connection) }) else { return }
        timer?.cancel()
        waiter.resume()
    }

    func connection(_ connection: ObjectIdentifier, receivedError text: String) {
        logger.warning("server error", metadata: ["error": "\(text)"])
        for outcome in withMachine({ $0.serverError(connection, text: text) }) {
            complete(outcome)
        }
    }

    func connection(_ connection: ObjectIdentifier, writabilityChanged writable: Bool) {
        flush(on: withMachine { $0.writabilityChanged(connection, writable: writable) })
    }

    func connectionKeepaliveTick(_ connection: ObjectIdentifier) -> Bool {
        switch withMachine({ $0.keepaliveTick(connection) }) {
        case .ignore:
            return true
        case .ping(let flush):
            self.flush(on: flush)
            return true
        case .stale:
            return false
        }
    }

    func connection(_ connection: ObjectIdentifier, closedWith error: (any Error)?) {
        let reason = error.map(Self.describe)
        guard case .reconnect(let reconnect) = withMachine({ $0.connectionClosed(connection, reason: reason) }) else { return }
        fail(reconnect.failures)
        for waiter in reconnect.drainWaiters { waiter.resume() }
        startReconnecting(generation: reconnect.generation)
        if let server = reconnect.server {
            logger.warning("disconnected from NATS; reconnecting", metadata: ["server": "\(server)", "reason": "\(reason ?? "closed")"])
        }
    }
}
