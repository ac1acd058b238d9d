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
    /// Payload bytes delivered to the stream and not yet taken by the reader.
    let pendingBytes = ManagedAtomic<Int>(0)
    /// The most payload bytes buffered for the reader (a message is always taken into an empty
    /// buffer, so one message bigger than this still gets through).
    let pendingBytesLimit: Int

    init(_ target: Target, pendingBytesLimit: Int = .max) {
        self.target = target
        self.pendingBytesLimit = pendingBytesLimit
    }

    /// Delivers a message; returns the running count of dropped messages when it was dropped.
    func deliver(_ message: NATSMessage) -> Int? {
        switch target {
        case .stream(let continuation):
            let size = message.payload.readableBytes
            let before = pendingBytes.loadThenWrappingIncrement(by: size, ordering: .relaxed)
            if before > 0, before + size > pendingBytesLimit {
                pendingBytes.wrappingDecrement(by: size, ordering: .relaxed)
                return dropped.wrappingIncrementThenLoad(ordering: .relaxed)
            }
            switch continuation.yield(message) {
            case .enqueued:
                return nil
            case .terminated:
                pendingBytes.wrappingDecrement(by: size, ordering: .relaxed)
                return nil
            case .dropped:
                pendingBytes.wrappingDecrement(by: size, ordering: .relaxed)
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
/// Messages wait in a buffer bounded by count (``NATSClientOptions/subscriptionPendingLimit``)
/// and by payload bytes (``NATSClientOptions/subscriptionPendingBytesLimit``) so a slow reader
/// never blocks the connection; when the buffer is full new messages are dropped, counted
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

    /// Payload bytes buffered for the reader right now.
    public var pendingBytes: Int { sink.pendingBytes.load(ordering: .relaxed) }

    public func makeAsyncIterator() -> Iterator {
        Iterator(inner: stream.makeAsyncIterator(), sink: sink)
    }

    /// Reads the subscription's messages (and releases their bytes from the pending count).
    public struct Iterator: AsyncIteratorProtocol {
        var inner: AsyncStream<NATSMessage>.AsyncIterator
        let sink: SubscriptionSink

        /// The next message, or nil once the subscription ended.
        public mutating func next() async -> NATSMessage? {
            guard let message = await inner.next() else { return nil }
            sink.pendingBytes.wrappingDecrement(by: message.payload.readableBytes, ordering: .relaxed)
            return message
        }

        /// The next message, or nil once the subscription ended.
        public mutating func next(isolation actor: isolated (any Actor)?) async -> NATSMessage? {
            guard let message = await inner.next(isolation: actor) else { return nil }
            sink.pendingBytes.wrappingDecrement(by: message.payload.readableBytes, ordering: .relaxed)
            return message
        }
    }
}
