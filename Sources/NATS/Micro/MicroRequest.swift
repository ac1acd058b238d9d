import Foundation
import NIOCore

/// A request delivered to a micro service endpoint.
public struct MicroRequest: Sendable {
    /// The name of the endpoint that received the request.
    public var endpoint: String
    /// The subject the request was published to (concrete, even when the endpoint subject has
    /// wildcards).
    public var subject: String
    /// The requester's reply subject; nil for a plain publish, which gets no reply.
    public var replyTo: String?
    /// The request headers, when there are any.
    public var headers: NATSHeaders?
    /// The request body.
    public var payload: ByteBuffer

    /// Creates a request (the service does this; tests of handlers may too).
    public init(endpoint: String, subject: String, replyTo: String? = nil, headers: NATSHeaders? = nil, payload: ByteBuffer = ByteBuffer()) {
        self.endpoint = endpoint
        self.subject = subject
        self.replyTo = replyTo
        self.headers = headers
        self.payload = payload
    }

    /// The body decoded as UTF-8.
    public var string: String { String(decoding: payload.readableBytesView, as: UTF8.self) }

    /// Decodes the body as JSON. A body that does not decode is the requester's mistake, so the
    /// failure is thrown as a ``MicroServiceError`` with code 400.
    public func decodeJSON<Value: Decodable>(_ type: Value.Type, decoder: JSONDecoder = JSONDecoder()) throws -> Value {
        do {
            return try decoder.decode(type, from: Data(payload.readableBytesView))
        } catch {
            throw MicroServiceError(code: 400, description: "request body is not a valid \(type): \(error)")
        }
    }
}

/// What an endpoint handler answers with: a body and optional headers.
public struct MicroResponse: Sendable {
    /// The reply body.
    public var payload: ByteBuffer
    /// Headers for the reply, if any.
    public var headers: NATSHeaders?

    /// A reply with `payload` (empty by default).
    public init(payload: ByteBuffer = ByteBuffer(), headers: NATSHeaders? = nil) {
        self.payload = payload
        self.headers = headers
    }

    /// A reply whose body is `string` in UTF-8.
    public init(string: String, headers: NATSHeaders? = nil) {
        self.init(payload: ByteBuffer(string: string), headers: headers)
    }

    /// A reply whose body is `value` encoded as JSON.
    public init<Value: Encodable>(json value: Value, encoder: JSONEncoder = JSONEncoder(), headers: NATSHeaders? = nil) throws {
        self.init(payload: ByteBuffer(bytes: try encoder.encode(value)), headers: headers)
    }
}

/// An error a micro service reports to the requester: the reply carries the
/// `Nats-Service-Error` (``description``) and `Nats-Service-Error-Code` (``code``) headers.
///
/// Throw it from an endpoint handler to answer with an error. Any other error thrown by a
/// handler is reported with code 500 and the error's text. On the requesting side,
/// ``init(reply:)`` recognises such a reply.
public struct MicroServiceError: Error, Hashable, Sendable {
    /// The error code, by convention an HTTP-like status (400 bad request, 404 not found, 500
    /// internal error...).
    public var code: Int
    /// What went wrong, in words that can be shown to the user.
    public var description: String
    /// An optional body sent with the error reply.
    public var payload: ByteBuffer

    /// Creates an error.
    public init(code: Int, description: String, payload: ByteBuffer = ByteBuffer()) {
        self.code = code
        self.description = description
        self.payload = payload
    }

    /// Reads the error out of a reply, or returns nil when the reply is not a service error
    /// (it has no `Nats-Service-Error-Code` header). A code that is not a number reads as 500.
    public init?(reply: NATSMessage) {
        guard let headers = reply.headers, let codeText = headers[NATSHeaderName.serviceErrorCode] else { return nil }
        self.init(
            code: Int(codeText.trimmingCharacters(in: .whitespaces)) ?? 500,
            description: headers[NATSHeaderName.serviceError] ?? "",
            payload: reply.payload
        )
    }

    /// The two headers that mark a reply as this error. Line breaks in the description, which
    /// a header cannot carry, become spaces.
    public var headers: NATSHeaders {
        var headers = NATSHeaders()
        headers[NATSHeaderName.serviceError] = Self.headerSafe(description)
        headers[NATSHeaderName.serviceErrorCode] = String(code)
        return headers
    }

    static func headerSafe(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") }) else { return text }
        return String(text.map { $0 == "\r" || $0 == "\n" || $0 == "\r\n" ? " " : $0 })
    }
}
