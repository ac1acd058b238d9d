import NIOCore

// Subscriptions: sids, SUB/UNSUB frames, delivery counts for `UNSUB sid max`.
extension NATSConnectionStateMachine {
    /// Adds a subscription; returns its sid and the connection to schedule a flush on (the SUB
    /// is written now when connected, and with the other subscriptions after each connect).
    mutating func subscribe(subject: String, queue: String?, sink: Sink) throws(NATSError) -> (sid: UInt64, flush: Connection?) {
        guard !isClosed else {
            throw NATSError(.connectionClosed, "cannot subscribe to \"\(subject)\": the client was closed")
        }
        let sid = nextSid
        nextSid += 1
        subscriptions[sid] = Subscription(subject: subject, queue: queue, sink: sink, max: nil, delivered: 0)
        guard isConnected else { return (sid, nil) }
        ClientOperationEncoder.writeSubscribe(into: &pending, subject: subject, queue: queue, sid: sid)
        return (sid, scheduleFlush())
    }

    /// Unsubscribes `sid` now, or after `max` messages in total. Returns the sink to finish when
    /// the subscription ended now, and the connection to schedule a flush on.
    mutating func unsubscribe(sid: UInt64, after max: Int?) -> (finished: Sink?, flush: Connection?) {
        guard let subscription = subscriptions[sid] else { return (nil, nil) }
        if let max, subscription.delivered < max {
            subscriptions[sid]?.max = max
            guard isConnected else { return (nil, nil) }
            ClientOperationEncoder.writeUnsubscribe(into: &pending, sid: sid, max: max)
            return (nil, scheduleFlush())
        }
        subscriptions[sid] = nil
        guard isConnected else { return (subscription.sink, nil) }
        ClientOperationEncoder.writeUnsubscribe(into: &pending, sid: sid, max: nil)
        return (subscription.sink, scheduleFlush())
    }

    struct MessageDelivery: Sendable {
        var sink: Sink
        var subject: String
        /// The subscription reached its `max` with this message: finish the sink after delivering.
        var finished: Bool
    }

    /// A message for `sid` arrived. Returns where it goes, or nil for an unknown sid (a message
    /// that crossed an UNSUB).
    mutating func messageReceived(sid: UInt64) -> MessageDelivery? {
        guard let index = subscriptions.index(forKey: sid) else { return nil }
        subscriptions.values[index].delivered += 1
        let subscription = subscriptions.values[index]
        if let max = subscription.max, subscription.delivered >= max {
            subscriptions.remove(at: index)
            return MessageDelivery(sink: subscription.sink, subject: subscription.subject, finished: true)
        }
        return MessageDelivery(sink: subscription.sink, subject: subscription.subject, finished: false)
    }

    /// A subscription's reader fell behind and `dropped` messages were dropped so far.
    mutating func slowConsumer(subject: String, sid: UInt64, dropped: Int) {
        emit(.slowConsumer(subject: subject, sid: sid, dropped: dropped))
    }
}
