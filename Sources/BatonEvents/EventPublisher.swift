import BatonCore
import Logging
import NATS
import NIOCore
import Synchronization

/// Publishes a node's events to the cluster's event history, off the lease path.
///
/// ``publish(_:)`` never waits: it puts the event in a bounded buffer (``capacity`` events) and
/// returns; when the buffer is full (NATS slow or away) the new event is dropped and counted in
/// ``dropped``. ``run()`` creates or updates the stream, then publishes the buffered events one
/// by one, each retried a few times before it is counted in ``failed``. Lease writes never wait
/// for any of it.
public final class EventPublisher: Sendable {
    /// The buffer size.
    public let capacity: Int
    public let cluster: String
    private let jetStream: JetStream
    private let retention: EventStream.Retention
    private let replicas: Int
    private let logger: Logger
    private let stream: AsyncStream<BatonEvent>
    private let continuation: AsyncStream<BatonEvent>.Continuation
    private let droppedCount = Atomic<Int>(0)
    private let failedCount = Atomic<Int>(0)
    private let publishedCount = Atomic<Int>(0)
    /// When the last drop warning was logged (nanoseconds since ``clockOrigin``).
    private let lastDropLog = Atomic<Int64>(0)
    private static let clockOrigin = ContinuousClock.now
    private let listeners = Mutex<[Int: AsyncStream<BatonEvent>.Continuation]>([:])
    private let nextListener = Atomic<Int>(0)

    /// Creates a publisher for `cluster`'s stream; nothing is sent before ``run()``.
    /// `replicas` is the stream's replica count (the config's `nats.replicas`).
    public init(
        jetStream: JetStream, cluster: String, retention: EventStream.Retention = EventStream.Retention(), replicas: Int, capacity: Int = 1024,
        logger: Logger
    ) {
        precondition(capacity > 0, "the event buffer needs room for at least one event")
        self.jetStream = jetStream
        self.cluster = cluster
        self.retention = retention
        self.replicas = replicas
        self.capacity = capacity
        self.logger = logger
        (stream, continuation) = AsyncStream.makeStream(of: BatonEvent.self, bufferingPolicy: .bufferingOldest(capacity))
    }

    /// Events dropped because the buffer was full.
    public var dropped: Int { droppedCount.load(ordering: .relaxed) }
    /// Events the server did not accept after the retries.
    public var failed: Int { failedCount.load(ordering: .relaxed) }
    /// Events the server acknowledged.
    public var published: Int { publishedCount.load(ordering: .relaxed) }

    /// Queues `event` for publishing and returns at once (dropped, and counted, when the buffer
    /// is full). Local listeners (``localEvents()``) see it now.
    public func publish(_ event: BatonEvent) {
        for listener in listeners.withLock({ Array($0.values) }) { listener.yield(event) }
        if case .dropped = continuation.yield(event) {
            let total = droppedCount.add(1, ordering: .relaxed).newValue
            // The first drop, then at most one line a minute while drops go on.
            let now = ContinuousClock.now
            let elapsed = now - Self.clockOrigin
            let nowNanoseconds = elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
            let last = lastDropLog.load(ordering: .relaxed)
            if total == 1 || nowNanoseconds - last >= 60_000_000_000,
                lastDropLog.compareExchange(expected: last, desired: nowNanoseconds, ordering: .relaxed).exchanged
            {
                logger.warning("event history buffer full; events dropped", metadata: ["dropped": "\(total)", "capacity": "\(capacity)"])
            }
        }
    }

    /// This node's events as they are queued (before they reach NATS), for a live view such as
    /// the web page. The stream keeps the newest 256 when its reader lags; it ends when the
    /// reading task is cancelled.
    public func localEvents() -> AsyncStream<BatonEvent> {
        let id = nextListener.add(1, ordering: .relaxed).newValue
        let (stream, continuation) = AsyncStream.makeStream(of: BatonEvent.self, bufferingPolicy: .bufferingNewest(256))
        continuation.onTermination = { [weak self] _ in _ = self?.listeners.withLock { $0.removeValue(forKey: id) } }
        listeners.withLock { $0[id] = continuation }
        return stream
    }

    /// Creates the stream, then publishes queued events until the task is cancelled.
    public func run() async {
        var attempt = 0
        while !Task.isCancelled {
            do {
                try await EventStream.ensure(jetStream: jetStream, cluster: cluster, retention: retention, replicas: replicas)
                break
            } catch {
                attempt += 1
                if attempt == 1 || attempt.isMultiple(of: 30) {
                    logger.warning("cannot create the event history stream yet; events are buffered", metadata: [
                        "stream": "\(EventSubjects.stream(cluster: cluster))", "error": "\(error)", "attempt": "\(attempt)",
                    ])
                }
                try? await Task.sleep(for: .milliseconds(min(2000, 100 * attempt)))
            }
        }
        for await event in stream {
            if Task.isCancelled { break }
            await send(event)
        }
    }

    /// Stops accepting events; ``run()`` returns after the queued ones were tried.
    public func finish() {
        continuation.finish()
    }

    private func send(_ event: BatonEvent) async {
        let subject = EventSubjects.subject(cluster: cluster, app: event.app, kind: event.kind)
        let payload: ByteBuffer
        do {
            payload = try EventStream.encode(event)
        } catch {
            failedCount.add(1, ordering: .relaxed)
            logger.error("cannot encode an event", metadata: ["subject": "\(subject)", "error": "\(error)"])
            return
        }
        for attempt in 1...3 {
            do {
                try await jetStream.publish(subject, payload: payload, options: PublishOptions(expectedStream: EventSubjects.stream(cluster: cluster)))
                publishedCount.add(1, ordering: .relaxed)
                return
            } catch {
                if attempt == 3 || Task.isCancelled {
                    let total = failedCount.add(1, ordering: .relaxed).newValue
                    logger.warning("event not recorded in the history", metadata: ["subject": "\(subject)", "error": "\(error)", "failed": "\(total)"])
                    return
                }
                try? await Task.sleep(for: .milliseconds(200 * attempt))
            }
        }
    }
}
