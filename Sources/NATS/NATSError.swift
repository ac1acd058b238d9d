/// An error from the NATS client. Compare ``code`` to tell cases apart; ``message`` says what
/// happened in words an operator can act on.
///
/// The set of codes may grow, so switch over them with a `default` case.
public struct NATSError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: String, Hashable, Sendable {
            case invalidURL, invalidSubject, invalidQueueGroup, invalidHeader, maxPayloadExceeded
            case notConnected, connectionClosed, connectionLost, connectionFailed, authorizationViolation
            case timeout, noResponders, reconnectBufferExceeded, protocolError, serverError
            case tlsFailure, invalidCredentials, headersNotSupported, cancelled, permissionViolation
        }
        fileprivate let base: Base
        public var description: String { base.rawValue }

        /// A URL in the server list could not be parsed.
        public static let invalidURL = Code(base: .invalidURL)
        /// A subject is empty, has an empty token, whitespace, or a misplaced wildcard.
        public static let invalidSubject = Code(base: .invalidSubject)
        /// A queue group name contains whitespace or is empty.
        public static let invalidQueueGroup = Code(base: .invalidQueueGroup)
        /// A header name or value cannot be encoded (CR/LF, colon in a name, empty name).
        public static let invalidHeader = Code(base: .invalidHeader)
        /// Header plus payload exceed the server's `max_payload`.
        public static let maxPayloadExceeded = Code(base: .maxPayloadExceeded)
        /// The operation needs a live connection and there is none right now.
        public static let notConnected = Code(base: .notConnected)
        /// The client was closed.
        public static let connectionClosed = Code(base: .connectionClosed)
        /// The connection dropped while the operation was in flight; its outcome is unknown.
        public static let connectionLost = Code(base: .connectionLost)
        /// No server in the list could be reached.
        public static let connectionFailed = Code(base: .connectionFailed)
        /// The server refused the credentials.
        public static let authorizationViolation = Code(base: .authorizationViolation)
        /// No answer within the allowed time.
        public static let timeout = Code(base: .timeout)
        /// A request reached no subscriber (status 503).
        public static let noResponders = Code(base: .noResponders)
        /// Publishes made while disconnected exceed the reconnect buffer.
        public static let reconnectBufferExceeded = Code(base: .reconnectBufferExceeded)
        /// The server sent bytes that are not valid NATS protocol.
        public static let protocolError = Code(base: .protocolError)
        /// The server sent `-ERR`.
        public static let serverError = Code(base: .serverError)
        /// TLS was required but could not be set up.
        public static let tlsFailure = Code(base: .tlsFailure)
        /// A credentials file, nkey seed or TLS file is unusable.
        public static let invalidCredentials = Code(base: .invalidCredentials)
        /// The server does not support headers.
        public static let headersNotSupported = Code(base: .headersNotSupported)
        /// The calling task was cancelled.
        public static let cancelled = Code(base: .cancelled)
        /// The server's permissions for this user deny a publish or subscription the operation
        /// needs (`-ERR 'Permissions Violation for Publish to "..."'`); the message names the
        /// subject.
        public static let permissionViolation = Code(base: .permissionViolation)
    }

    /// What kind of failure this is.
    public var code: Code
    /// A sentence describing the failure.
    public var message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "NATS \(code): \(message)" }
}

/// The server sent bytes that are not valid NATS protocol. The connection is closed when this
/// happens; the error says what was wrong and shows the start of the offending line.
public struct NATSProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What was wrong.
    public var reason: String
    /// The start of the offending control line, with control bytes escaped.
    public var excerpt: String

    /// Creates a protocol error.
    public init(_ reason: String, excerpt: String = "") {
        self.reason = reason
        self.excerpt = excerpt
    }

    public var description: String {
        excerpt.isEmpty ? "NATS protocol error: \(reason)" : "NATS protocol error: \(reason) in \"\(excerpt)\""
    }
}
