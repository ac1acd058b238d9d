import NIOCore

/// A message received from the server on a subscription.
public struct NATSMessage: Sendable, Hashable {
    /// The subject the message was published to.
    public var subject: String
    /// The reply subject the publisher asked for, if any.
    public var replyTo: String?
    /// The header block, when the message was sent with headers (`HMSG`).
    public var headers: NATSHeaders?
    /// The message body.
    public var payload: ByteBuffer
    /// The subscription id this message was delivered on.
    public var sid: UInt64

    /// Creates a message.
    public init(subject: String, replyTo: String? = nil, headers: NATSHeaders? = nil, payload: ByteBuffer, sid: UInt64 = 0) {
        self.subject = subject
        self.replyTo = replyTo
        self.headers = headers
        self.payload = payload
        self.sid = sid
    }

    /// The payload as bytes.
    public var bytes: [UInt8] { Array(payload.readableBytesView) }

    /// The payload decoded as UTF-8.
    public var string: String { String(decoding: payload.readableBytesView, as: UTF8.self) }

    /// The header status code (for example 503 for "no responders"), if any.
    public var status: Int? { headers?.status }
}
