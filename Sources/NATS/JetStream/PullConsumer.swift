import Foundation
import NIOCore

/// A durable pull consumer: the reader asks for batches with ``fetch(batch:expires:noWait:)``
/// and acknowledges each message.
public struct PullConsumer: Sendable {
    /// The JetStream context.
    public let jetStream: JetStream
    /// The stream the consumer reads.
    public let stream: String
    /// The consumer's name.
    public let name: String

    private struct NextRequest: Encodable {
        var batch: Int
        var max_bytes: Int?
        var expires: Int64?
        var no_wait: Bool?
    }

    /// The bytes a message counts for in a pull request's `max_bytes` budget, as the server
    /// counts them: subject, reply (ack) subject, header block and payload.
    public static func deliveredSize(of message: NATSMessage) -> Int {
        message.subject.utf8.count + (message.replyTo?.utf8.count ?? 0) + (message.headers.map(\.encodedSize) ?? 0) + message.payload.readableBytes
    }

    /// Fetches up to `batch` messages, waiting up to `expires` for them to arrive (or not at all
    /// with `noWait`). Returns what arrived, possibly nothing.
    ///
    /// With `maxBytes` the server also stops once the next message would take the batch's bytes
    /// (``deliveredSize(of:)`` summed) over `maxBytes` (the pull request's `max_bytes`): the
    /// data in flight to this client stays bounded whatever the messages' sizes. When the very
    /// first message is bigger than `maxBytes` nothing can be delivered and the fetch throws
    /// ``JetStreamError/Code/invalidArgument``. The messages wait in a subscription sized for
    /// the request (`batch` messages, `maxBytes` bytes), so none is dropped client-side. When the
    /// connection drops, the fetch returns at once with what arrived (the request is gone).
    ///
    /// A `409 Batch Completed` status (nats-server 2.11+, requests with `maxBytes`) says how many
    /// messages the server dispatched; the fetch waits for all of them, since on a replicated
    /// consumer the status arrives before the batch's last messages.
    public func fetch(batch: Int, maxBytes: Int? = nil, expires: Duration = .seconds(5), noWait: Bool = false) async throws -> [JetStreamMessage] {
        guard batch > 0 else { throw JetStreamError(.invalidArgument, "fetch batch must be at least 1") }
        if let maxBytes, maxBytes <= 0 { throw JetStreamError(.invalidArgument, "fetch max bytes must be at least 1") }
        let client = jetStream.client
        let inbox = client.newInbox()
        // Room for the whole batch plus the status messages that end or accompany it.
        let subscription = try await client.subscribe(
            to: inbox, pendingLimit: batch + 16, pendingBytesLimit: maxBytes.map { max($0, client.options.subscriptionPendingBytesLimit) } ?? .max)
        let request = NextRequest(batch: batch, max_bytes: maxBytes, expires: noWait ? nil : expires.nanoseconds, no_wait: noWait ? true : nil)
        let body = try JetStreamJSON.encoder().encode(request)
        let localDeadline = noWait ? jetStream.timeout : expires + .seconds(1)
        let timer = Task {
            try? await Task.sleep(for: localDeadline)
            try? await subscription.unsubscribe()
        }
        // The server forgets a pull request with the connection it came on: stop waiting for it.
        let events = client.events()
        let disconnects = Task {
            for await event in events {
                if case .disconnected = event {
                    try? await subscription.unsubscribe()
                    return
                }
            }
        }
        defer {
            timer.cancel()
            disconnects.cancel()
            Task { try? await subscription.unsubscribe() }
        }
        try await client.publish("\(jetStream.apiPrefix).CONSUMER.MSG.NEXT.\(stream).\(name)", payload: ByteBuffer(bytes: body), replyTo: inbox)
        var messages: [JetStreamMessage] = []
        // How many messages the server dispatched to this request when it said the batch is
        // complete; some of them may still be on their way (see `batchCompleted` below).
        var dispatched: Int?
        for await message in subscription {
            if let status = message.headers?.status {
                switch status {
                case 100:
                    continue
                case 409 where Self.meansBatchCompleted(message.headers?.statusDescription):
                    // A replicated consumer (R > 1, explicit acks) sends a message only once its
                    // delivery is replicated, while nats-server 2.11+ sends "Batch Completed" as
                    // soon as the batch is taken: the status overtakes the batch's last messages.
                    // Wait for them (within the request's deadline) instead of dropping them.
                    let remaining = message.headers?[Self.pendingMessagesHeader].flatMap { Int($0) } ?? 0
                    let expected = max(0, batch - remaining)
                    dispatched = expected
                    if messages.count >= expected { return messages }
                    continue
                case 404, 408:
                    return messages
                case 409:
                    let text = message.headers?.statusDescription ?? "conflict"
                    if text.lowercased().contains("exceeds maxbytes") {
                        // The budget is spent (or the next message alone is bigger than it).
                        if messages.isEmpty {
                            throw JetStreamError(.invalidArgument, "the next message of consumer \(name) on \(stream) is larger than the fetch's max bytes \(maxBytes ?? 0)")
                        }
                        return messages
                    }
                    if Self.meansConsumerGone(text) {
                        if messages.isEmpty {
                            throw JetStreamError(.consumerGone, "fetch from consumer \(name) on \(stream) failed: \(text)")
                        }
                        return messages
                    }
                    // Anything else ends this pull request, not the consumer: "Leadership
                    // Change", "Exceeded MaxWaiting".
                    if messages.isEmpty {
                        throw JetStreamError(.pullRequestEnded, "the pull request to consumer \(name) on \(stream) ended: \(text)")
                    }
                    return messages
                default:
                    if messages.isEmpty {
                        throw JetStreamAPIError(code: status, errorCode: JetStreamErrorCode(rawValue: 0), description: message.headers?.statusDescription ?? "fetch failed")
                    }
                    return messages
                }
            }
            if let delivered = JetStreamMessage(message, client: client) {
                messages.append(delivered)
                if messages.count >= (dispatched ?? batch) { return messages }
            }
        }
        return messages
    }

    /// The header of a pull request's status that says how many messages of its batch were
    /// not sent.
    static let pendingMessagesHeader = "Nats-Pending-Messages"

    /// Whether a 409 status of a pull request says its batch is complete: every message it
    /// asked for was dispatched (nats-server 2.11+ when the request also set `max_bytes`).
    static func meansBatchCompleted(_ description: String?) -> Bool {
        description?.lowercased().contains("batch completed") ?? false
    }

    /// Whether a 409 status of a pull request says the consumer itself is gone or unusable
    /// for pulls (as opposed to this one request ending).
    static func meansConsumerGone(_ description: String) -> Bool {
        let lower = description.lowercased()
        return lower.contains("consumer deleted") || lower.contains("push based")
    }

    /// The consumer's configuration and progress.
    public func info() async throws -> ConsumerInfo {
        try await jetStream.consumerInfo(stream: stream, name: name)
    }
}

extension JetStream {
    /// Creates (or updates) a durable pull consumer. The configuration must name it
    /// (`durableName`) and must not set a deliver subject.
    public func createPullConsumer(stream: String, config: ConsumerConfig) async throws -> PullConsumer {
        guard config.durableName ?? config.name != nil else {
            throw JetStreamError(.invalidArgument, "a pull consumer needs a durable name")
        }
        guard config.deliverSubject == nil else {
            throw JetStreamError(.invalidArgument, "a pull consumer cannot have a deliver subject")
        }
        let info = try await createConsumer(stream: stream, config: config)
        return PullConsumer(jetStream: self, stream: stream, name: info.name)
    }

    /// Binds to an existing pull consumer (fails when it does not exist or is a push consumer).
    public func pullConsumer(stream: String, name: String) async throws -> PullConsumer {
        let info = try await consumerInfo(stream: stream, name: name)
        guard info.config.deliverSubject == nil else {
            throw JetStreamError(.invalidArgument, "consumer \(name) on \(stream) is a push consumer")
        }
        return PullConsumer(jetStream: self, stream: stream, name: name)
    }
}
