import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Settings for an ordered consumer.
public struct OrderedConsumerOptions: Sendable {
    /// Only messages on these subjects (wildcards allowed); the whole stream when nil.
    public var filterSubject: String?
    /// Where to start.
    public var deliverPolicy: DeliverPolicy
    /// Deliver headers only (with `Nats-Msg-Size`), not bodies.
    public var headersOnly: Bool
    /// How often the server sends a heartbeat when idle; three missed heartbeats reset the
    /// consumer.
    public var idleHeartbeat: Duration

    /// Creates options.
    public init(filterSubject: String? = nil, deliverPolicy: DeliverPolicy = .all, headersOnly: Bool = false, idleHeartbeat: Duration = .seconds(5)) {
        self.filterSubject = filterSubject
        self.deliverPolicy = deliverPolicy
        self.headersOnly = headersOnly
        self.idleHeartbeat = idleHeartbeat
    }
}

/// An ordered push consumer (ADR-17): delivers a stream's messages in order, exactly once, and
/// survives reconnects, server restarts and lost messages by recreating its server-side
/// consumer from the last stream sequence it delivered.
///
/// It detects trouble three ways: a gap in consumer sequences, an idle heartbeat whose
/// `Nats-Last-Consumer` disagrees with what was delivered, and heartbeats that stop coming.
/// Flow-control requests are answered only when the messages before them have reached the
/// reader, so a slow reader slows the server instead of piling up messages.
///
/// Iterate it from one task. Call ``stop()`` when done.
public final class OrderedConsumer: AsyncSequence, Sendable {
    public typealias Element = JetStreamMessage
    let core: OrderedConsumerCore

    init(core: OrderedConsumerCore) {
        self.core = core
    }

    /// Stops delivery, removes the server-side consumer and ends the sequence.
    public func stop() async {
        await core.stop()
    }

    /// How many times the consumer was recreated (after gaps, missed heartbeats or reconnects).
    public var resets: Int { core.resetCount }

    public func makeAsyncIterator() -> Iterator {
        Iterator(events: core.makeEventIterator())
    }

    /// Iterates the consumer's messages.
    public struct Iterator: AsyncIteratorProtocol {
        var events: OrderedConsumerCore.EventIterator

        public mutating func next() async throws -> JetStreamMessage? {
            while let event = try await events.next() {
                if case .message(let message) = event { return message }
            }
            return nil
        }
    }
}

extension JetStream {
    /// Starts an ordered consumer on `stream`.
    ///
    /// Throws when the stream does not exist or the first consumer cannot be created; later
    /// failures are retried with backoff for as long as the consumer runs.
    public func orderedConsumer(stream: String, options: OrderedConsumerOptions = OrderedConsumerOptions()) async throws -> OrderedConsumer {
        OrderedConsumer(core: try await OrderedConsumerCore.start(jetStream: self, stream: stream, options: options))
    }
}

/// The machinery of an ordered consumer, shared by ``OrderedConsumer``, KV watchers and Object
/// Store reads.
final class OrderedConsumerCore: Sendable {
    enum Event: Sendable {
        case message(JetStreamMessage)
        /// Everything that was in the stream when the consumer started has been delivered.
        case caughtUp
    }

    enum RawItem: Sendable {
        case message(NATSMessage)
        case heartbeatsMissed
        case reconnected
    }

    private struct State {
        var sid: UInt64 = 0
        var consumerName: String?
        var streamSequence: UInt64 = 0
        var consumerSequence: UInt64 = 0
        var lastActivity = NIODeadline.now()
        var stopped = false
        var initialPending: UInt64 = 0
        var resets = 0
        var tasks: [Task<Void, Never>] = []
    }

    let jetStream: JetStream
    let stream: String
    let options: OrderedConsumerOptions
    private let raw: AsyncStream<RawItem>
    private let rawContinuation: AsyncStream<RawItem>.Continuation
    private let state = NIOLockedValueBox(State())

    private init(jetStream: JetStream, stream: String, options: OrderedConsumerOptions) {
        self.jetStream = jetStream
        self.stream = stream
        self.options = options
        (raw, rawContinuation) = AsyncStream.makeStream(of: RawItem.self, bufferingPolicy: .bufferingOldest(jetStream.client.options.subscriptionPendingLimit))
    }

    deinit {
        for task in state.withLockedValue({ $0.tasks }) { task.cancel() }
        rawContinuation.finish()
    }

    static func start(jetStream: JetStream, stream: String, options: OrderedConsumerOptions) async throws -> OrderedConsumerCore {
        try JetStream.validateName(stream, what: "stream")
        let core = OrderedConsumerCore(jetStream: jetStream, stream: stream, options: options)
        let info = try await core.createConsumer()
        core.state.withLockedValue { $0.initialPending = info.numPending }
        jetStream.client.consumerHeartbeats.watch(core, interval: options.idleHeartbeat)
        let events = jetStream.client.events()
        let watcher = Task { [weak core] in
            for await event in events {
                guard let core else { return }
                if case .reconnected = event { core.rawContinuation.yield(.reconnected) }
            }
        }
        core.state.withLockedValue { $0.tasks = [watcher] }
        return core
    }

    var resetCount: Int { state.withLockedValue { $0.resets } }

    /// The name of the server-side consumer now (for tests).
    var consumerName: String? { state.withLockedValue { $0.consumerName } }

    /// Called by the client's ``ConsumerHeartbeatMonitor``: reports missed heartbeats when
    /// nothing arrived for `silenceLimit` (and counts from now again, so the next report
    /// needs another full silence).
    func checkHeartbeats(silenceLimit: Duration) {
        let missed = state.withLockedValue { state -> Bool in
            let silent = NIODeadline.now() - state.lastActivity > .nanoseconds(silenceLimit.nanoseconds)
            if silent { state.lastActivity = .now() }
            return silent && !state.stopped
        }
        if missed { rawContinuation.yield(.heartbeatsMissed) }
    }

    var initialPending: UInt64 { state.withLockedValue { $0.initialPending } }

    func makeEventIterator() -> EventIterator {
        EventIterator(raw: raw.makeAsyncIterator(), core: self)
    }

    /// Subscribes a fresh inbox and creates a server-side consumer that starts after the last
    /// delivered stream sequence.
    private func createConsumer() async throws -> ConsumerInfo {
        let client = jetStream.client
        let inbox = client.newInbox()
        let continuation = rawContinuation
        let sid = try client.subscribe(to: inbox) { message in
            continuation.yield(.message(message))
        }
        let (oldSid, startSequence) = state.withLockedValue { state -> (UInt64, UInt64) in
            let old = state.sid
            state.sid = sid
            state.consumerSequence = 0
            state.lastActivity = .now()
            return (old, state.streamSequence)
        }
        if oldSid != 0 { try? client.unsubscribe(sid: oldSid, after: nil) }
        var config = ConsumerConfig(
            deliverPolicy: startSequence > 0 ? .byStartSequence(startSequence + 1) : options.deliverPolicy,
            ackPolicy: .none, filterSubject: options.filterSubject)
        config.deliverSubject = inbox
        config.flowControl = true
        config.idleHeartbeat = options.idleHeartbeat
        config.memoryStorage = true
        config.replicas = 1
        config.maxDeliver = 1
        config.headersOnly = options.headersOnly ? true : nil
        config.inactiveThreshold = .seconds(300)
        do {
            let info = try await jetStream.createConsumer(stream: stream, config: config)
            let previous: String? = state.withLockedValue { state in
                defer { state.consumerName = info.name }
                if state.streamSequence == 0, case .new = options.deliverPolicy {
                    // Resume after the stream position at creation, so a reset misses nothing.
                    state.streamSequence = info.delivered.streamSequence
                }
                return state.consumerName
            }
            if let previous {
                let jetStream = jetStream
                let stream = stream
                Task { try? await jetStream.deleteConsumer(stream: stream, name: previous) }
            }
            return info
        } catch {
            try? client.unsubscribe(sid: sid, after: nil)
            throw error
        }
    }

    /// Recreates the consumer, retrying with backoff until it works, the consumer is stopped,
    /// or the stream is gone.
    func reset(reason: String) async throws {
        state.withLockedValue { $0.resets += 1 }
        jetStream.client.logger.debug("resetting ordered consumer", metadata: ["stream": "\(stream)", "reason": "\(reason)"])
        var attempt = 0
        while !Task.isCancelled {
            if state.withLockedValue({ $0.stopped }) { return }
            do {
                _ = try await createConsumer()
                return
            } catch let error as JetStreamAPIError where error.errorCode == .streamNotFound {
                throw error
            } catch let error as NATSError where error.code == .connectionClosed {
                throw error
            } catch {
                attempt += 1
                let wait = Duration.milliseconds(min(2000, 50 << min(attempt, 6)))
                try? await Task.sleep(for: wait)
            }
        }
    }

    func stop() async {
        let (tasks, sid, name) = state.withLockedValue { state -> ([Task<Void, Never>], UInt64, String?) in
            state.stopped = true
            defer { state.tasks = [] }
            return (state.tasks, state.sid, state.consumerName)
        }
        for task in tasks { task.cancel() }
        jetStream.client.consumerHeartbeats.forget(self)
        try? jetStream.client.unsubscribe(sid: sid, after: nil)
        rawContinuation.finish()
        if let name {
            try? await jetStream.deleteConsumer(stream: stream, name: name)
        }
    }

    /// Reads raw deliveries and turns them into in-order messages, handling heartbeats, flow
    /// control and resets.
    struct EventIterator {
        var raw: AsyncStream<RawItem>.Iterator
        let core: OrderedConsumerCore
        var initialDone = false
        var caughtUpQueued = false

        init(raw: AsyncStream<RawItem>.Iterator, core: OrderedConsumerCore) {
            self.raw = raw
            self.core = core
            if core.initialPending == 0 {
                caughtUpQueued = true
                initialDone = true
            }
        }

        mutating func next() async throws -> Event? {
            let client = core.jetStream.client
            while true {
                if caughtUpQueued {
                    caughtUpQueued = false
                    return .caughtUp
                }
                guard let item = await raw.next() else { return nil }
                if core.state.withLockedValue({ $0.stopped }) { return nil }
                switch item {
                case .heartbeatsMissed:
                    try await core.reset(reason: "idle heartbeats missed")
                case .reconnected:
                    try await core.reset(reason: "reconnected")
                case .message(let message):
                    let current = core.state.withLockedValue { state -> (UInt64, UInt64)? in
                        guard message.sid == state.sid else { return nil }
                        state.lastActivity = .now()
                        return (state.consumerSequence, state.streamSequence)
                    }
                    guard let (consumerSequence, _) = current else { continue }
                    if let headers = message.headers, let status = headers.status {
                        if status == 100 {
                            if let replyTo = message.replyTo {
                                // Flow-control request: everything before it has reached the reader.
                                try? await client.publish(replyTo)
                                continue
                            }
                            if let stalled = headers[NATSHeaderName.consumerStalled] {
                                try? await client.publish(stalled)
                            }
                            if let last = headers[NATSHeaderName.lastConsumer], let lastSequence = UInt64(last), lastSequence != consumerSequence {
                                try await core.reset(reason: "heartbeat says consumer sequence \(lastSequence), delivered \(consumerSequence)")
                            }
                            continue
                        }
                        try await core.reset(reason: "status \(status) \(headers.statusDescription ?? "")")
                        continue
                    }
                    guard let delivered = JetStreamMessage(message, client: client) else { continue }
                    if delivered.metadata.consumerSequence != consumerSequence + 1 {
                        try await core.reset(reason: "gap: expected consumer sequence \(consumerSequence + 1), got \(delivered.metadata.consumerSequence)")
                        continue
                    }
                    core.state.withLockedValue { state in
                        state.consumerSequence = delivered.metadata.consumerSequence
                        state.streamSequence = delivered.metadata.streamSequence
                    }
                    if !initialDone, delivered.metadata.pending == 0 {
                        initialDone = true
                        caughtUpQueued = true
                    }
                    return .message(delivered)
                }
            }
        }
    }
}
