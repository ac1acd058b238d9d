import BatonCore
import Foundation
import NATS

/// Reads a cluster's event history (for `batonctl events`, the web page, a flight record).
public struct EventReader: Sendable {
    public let jetStream: JetStream
    public let cluster: String

    /// Creates a reader of `cluster`'s stream.
    public init(jetStream: JetStream, cluster: String) {
        self.jetStream = jetStream
        self.cluster = cluster
    }

    /// The stream's name.
    public var streamName: String { EventSubjects.stream(cluster: cluster) }

    private func filter(app: String?) -> String {
        app.map { EventSubjects.app(cluster: cluster, app: $0) } ?? EventSubjects.all(cluster: cluster)
    }

    /// The events of `app` (every app and node when nil) stored since `since` (all when nil),
    /// oldest first; the newest `limit` of them when given. Throws ``EventStreamError`` naming
    /// the stream when the history does not exist.
    public func recentEvents(app: String? = nil, since: Date? = nil, limit: Int? = nil) async throws -> [BatonEvent] {
        _ = try await historyInfo()
        var events = try await read(app: app, from: since.map { .byStartTime($0) } ?? .all)
        if let limit, events.count > limit { events.removeFirst(events.count - limit) }
        return events
    }

    /// The last `count` events of every app and node, oldest first: only the stream's last
    /// `count` messages are read (the web page's history). Throws ``EventStreamError`` naming
    /// the stream when the history does not exist.
    public func lastEvents(_ count: Int) async throws -> [BatonEvent] {
        let state = try await historyInfo().state
        guard count > 0, state.messages > 0 else { return [] }
        let start = max(state.firstSequence, state.lastSequence >= UInt64(count) ? state.lastSequence - UInt64(count) + 1 : 1)
        var events = try await read(app: nil, from: .byStartSequence(start))
        if events.count > count { events.removeFirst(events.count - count) }
        return events
    }

    private func historyInfo() async throws -> StreamInfo {
        do {
            return try await jetStream.streamInfo(streamName)
        } catch let error as JetStreamAPIError where error.errorCode == .streamNotFound {
            throw EventStreamError("the event history \(streamName) does not exist (no batond of cluster \(cluster) with events has run on this NATS yet)")
        }
    }

    /// The stored events of `app` (all when nil) from `from` to the stream's end, oldest first.
    private func read(app: String?, from: DeliverPolicy) async throws -> [BatonEvent] {
        // A durable of its own (pull consumers need one here), removed after the read and by
        // the server after 30 s of inactivity if this reader dies first.
        var config = ConsumerConfig(
            durableName: "reader_\(NUID.next())", deliverPolicy: from, ackPolicy: .none, filterSubject: filter(app: app))
        config.inactiveThreshold = .seconds(30)
        config.memoryStorage = true
        config.replicas = 1
        let consumer = try await jetStream.createPullConsumer(stream: streamName, config: config)
        var events: [BatonEvent] = []
        do {
            var remaining = try await consumer.info().numPending
            while remaining > 0 {
                let batch = try await consumer.fetch(batch: Int(min(remaining, 256)), expires: .seconds(2))
                if batch.isEmpty { break }  // expired or deleted meanwhile
                for message in batch {
                    events.append(try EventStream.decode(message.payload, subject: message.subject, sequence: message.metadata.streamSequence))
                    remaining = message.metadata.pending
                }
            }
        } catch {
            try? await jetStream.deleteConsumer(stream: streamName, name: consumer.name)
            throw error
        }
        try? await jetStream.deleteConsumer(stream: streamName, name: consumer.name)
        return events
    }

    /// The last event of `kind` about `app`, nil when there is none.
    public func lastEvent(app: String, kind: BatonEvent.Kind) async throws -> BatonEvent? {
        let subject = EventSubjects.subject(cluster: cluster, app: app, kind: kind)
        do {
            let message = try await jetStream.getLastMessage(stream: streamName, subject: subject)
            return try EventStream.decode(message.payload, subject: subject, sequence: message.sequence)
        } catch let error as JetStreamAPIError where error.errorCode == .noMessageFound || error.errorCode == .streamNotFound {
            return nil
        }
    }

    /// Events of `app` (all when nil) as they are stored, starting with those since `since`
    /// (only new ones when nil), until the task is cancelled. Survives reconnects (an ordered
    /// consumer); a body that is not an event ends the sequence with ``EventStreamError``.
    public func follow(app: String? = nil, since: Date? = nil) async throws -> AsyncThrowingStream<BatonEvent, any Error> {
        let consumer = try await jetStream.orderedConsumer(
            stream: streamName, options: OrderedConsumerOptions(filterSubject: filter(app: app), deliverPolicy: since.map { .byStartTime($0) } ?? .new))
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    for try await message in consumer {
                        continuation.yield(try EventStream.decode(message.payload, subject: message.subject, sequence: message.metadata.streamSequence))
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
                await consumer.stop()
            }
            continuation.onTermination = { _ in
                task.cancel()
                Task { await consumer.stop() }
            }
        }
    }
}
