import Foundation
import NIOCore

/// Delivery details JetStream puts in a consumer message's reply subject
/// (`$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`, or the longer form
/// with domain and account hash).
public struct JetStreamMessageMetadata: Sendable, Hashable {
    public var domain: String?
    public var stream: String
    public var consumer: String
    /// How many times this message was delivered.
    public var deliveries: UInt64
    public var streamSequence: UInt64
    public var consumerSequence: UInt64
    /// When the message was stored, in nanoseconds since 1970.
    public var timestampNanos: Int64
    /// Messages left for the consumer after this one.
    public var pending: UInt64

    /// Parses an ack subject; nil when it is not one. Works on the UTF-8 bytes: every message
    /// a consumer delivers is parsed, and splitting a `String` by `Character` costs far more.
    public init?(ackSubject: String) {
        let tokens = ackSubject.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard tokens.count >= 9, tokens[0].elementsEqual("$JS".utf8), tokens[1].elementsEqual("ACK".utf8) else { return nil }
        let offset: Int
        if tokens.count == 9 {
            offset = 2
            domain = nil
        } else if tokens.count >= 11 {
            offset = 4
            domain = tokens[2].elementsEqual("_".utf8) ? nil : String(Substring(tokens[2]))
        } else {
            return nil
        }
        guard let deliveries = Self.number(tokens[offset + 2]), let streamSequence = Self.number(tokens[offset + 3]),
            let consumerSequence = Self.number(tokens[offset + 4]), let timestamp = Self.number(tokens[offset + 5]),
            timestamp <= UInt64(Int64.max), let pending = Self.number(tokens[offset + 6])
        else { return nil }
        stream = String(Substring(tokens[offset]))
        consumer = String(Substring(tokens[offset + 1]))
        self.deliveries = deliveries
        self.streamSequence = streamSequence
        self.consumerSequence = consumerSequence
        self.timestampNanos = Int64(timestamp)
        self.pending = pending
    }

    /// A token of decimal digits as a number; nil when empty, not all digits, or too large.
    private static func number(_ token: Substring.UTF8View) -> UInt64? {
        guard !token.isEmpty else { return nil }
        var value: UInt64 = 0
        for byte in token {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(UInt64(byte - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { return nil }
            value = sum
        }
        return value
    }

    /// When the message was stored.
    public var timestamp: Date { Date(timeIntervalSince1970: Double(timestampNanos) / 1e9) }
}

/// A message delivered by a JetStream consumer.
public struct JetStreamMessage: Sendable {
    /// The message as received.
    public var message: NATSMessage
    /// Delivery details from the ack subject.
    public var metadata: JetStreamMessageMetadata
    let client: NATSClient

    init?(_ message: NATSMessage, client: NATSClient) {
        guard let replyTo = message.replyTo, let metadata = JetStreamMessageMetadata(ackSubject: replyTo) else { return nil }
        self.message = message
        self.metadata = metadata
        self.client = client
    }

    /// The subject the message was stored under.
    public var subject: String { message.subject }
    /// The message's headers.
    public var headers: NATSHeaders? { message.headers }
    /// The message body.
    public var payload: ByteBuffer { message.payload }

    /// Acknowledges the message.
    public func ack() async throws { try await reply("+ACK") }

    /// Acknowledges the message and waits until the server confirms it recorded the ack.
    public func ackSync(timeout: Duration? = nil) async throws {
        guard let replyTo = message.replyTo else { return }
        _ = try await client.request(replyTo, payload: ByteBuffer(string: "+ACK"), timeout: timeout)
    }

    /// Asks for redelivery, optionally after `delay`.
    public func nak(delay: Duration? = nil) async throws {
        if let delay {
            try await reply("-NAK {\"delay\":\(delay.nanoseconds)}")
        } else {
            try await reply("-NAK")
        }
    }

    /// Tells the server the message is still being worked on (resets the ack timer).
    public func inProgress() async throws { try await reply("+WPI") }

    /// Tells the server never to redeliver the message.
    public func terminate() async throws { try await reply("+TERM") }

    private func reply(_ body: String) async throws {
        guard let replyTo = message.replyTo else { return }
        try await client.publish(replyTo, payload: ByteBuffer(string: body))
    }
}

/// A message read from a stream by sequence or subject (`STREAM.MSG.GET` or direct get).
public struct StoredMessage: Sendable, Hashable {
    public var subject: String
    public var sequence: UInt64
    public var headers: NATSHeaders?
    public var payload: ByteBuffer
    public var time: Date
}
