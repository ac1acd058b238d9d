import Atomics
import NIOConcurrencyHelpers
import NIOCore

/// Where the client puts a subscription's messages: an async stream for the application, or a
/// handler the client calls on the connection's event loop (for its own inboxes).
final class SubscriptionSink: Sendable {
    enum Target: Sendable {
        case stream(AsyncStream<NATSMessage>.Continuation)
        case handler(@Sendable (NATSMessage) -> Void)
    }

    let target: Target
    let dropped = ManagedAtomic<Int>(0)

    init(_ target: Target) {
        self.target = target
    }

    /// Delivers a message; returns the running count of dropped messages when it was dropped.
    func deliver(_ message: NATSMessage) -> Int? {
        switch target {
        case .stream(let continuation):
            switch continuation.yield(message) {
            case .enqueued, .terminated:
                return nil
            case .dropped:
                return dropped.wrappingIncrementThenLoad(ordering: .relaxed)
            @unknown default:
                return nil
            }
        case .handler(let handler):
            handler(message)
            return nil
        }
    }

    func finish() {
        if case .stream(let continuation) = target {
            continuation.finish()
        }
    }
}

/// A subscription: an `AsyncSequence` of the messages published to its subject.
///
/// Messages wait in a bounded buffer (``NATSClientOptions/subscriptionPendingLimit``) so a slow
/// reader never blocks the connection; when the buffer is full new messages are dropped, counted
/// in ``droppedMessages`` and reported as ``NATSConnectionEvent/slowConsumer(subject:sid:dropped:)``.
/// The sequence ends after ``unsubscribe(after:)`` or when the client closes. Iterate it from one
/// task.
public final class NATSSubscription: AsyncSequence, Sendable {
    public typealias Element = NATSMessage

    /// The subject (possibly with wildcards) this subscription listens on.
    public let subject: String
    /// The queue group, if any.
    public let queue: String?
    /// The subscription id on the wire.
    public let sid: UInt64
    private let stream: AsyncStream<NATSMessage>
    private let sink: SubscriptionSink
    private let client: NATSClient

    init(subject: String, queue: String?, sid: UInt64, stream: AsyncStream<NATSMessage>, sink: SubscriptionSink, client: NATSClient) {
        self.subject = subject
        self.queue = queue
        self.sid = sid
        self.stream = stream
        self.sink = sink
        self.client = client
    }

    /// Messages dropped so far because the reader fell behind.
    public var droppedMessages: Int { sink.dropped.load(ordering: .relaxed) }

    /// Stops the subscription now, or after `max` messages in total have been delivered.
    public func unsubscribe(after max: Int? = nil) async throws {
        try client.unsubscribe(sid: sid, after: max)
    }

    public func makeAsyncIterator() -> AsyncStream<NATSMessage>.AsyncIterator {
        stream.makeAsyncIterator()
    }
}
