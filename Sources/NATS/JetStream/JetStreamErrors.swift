/// The JetStream API's own error number (`err_code`), for example 10071 "wrong last sequence".
public struct JetStreamErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    public var description: String { String(rawValue) }

    /// A stream with this name does not exist.
    public static let streamNotFound = JetStreamErrorCode(rawValue: 10059)
    /// A consumer with this name does not exist.
    public static let consumerNotFound = JetStreamErrorCode(rawValue: 10014)
    /// The requested message does not exist.
    public static let noMessageFound = JetStreamErrorCode(rawValue: 10037)
    /// An expected-last-sequence (or subject sequence) header did not match: a compare-and-set
    /// lost. Leases depend on telling this apart.
    public static let wrongLastSequence = JetStreamErrorCode(rawValue: 10071)
    /// An expected-last-msg-id header did not match.
    public static let wrongLastMsgID = JetStreamErrorCode(rawValue: 10070)
    /// An expected-stream header named another stream.
    public static let streamNotMatch = JetStreamErrorCode(rawValue: 10060)
    /// A stream with this name exists with a different configuration.
    public static let streamNameInUse = JetStreamErrorCode(rawValue: 10058)
    /// The configuration is invalid.
    public static let invalidConfig = JetStreamErrorCode(rawValue: 10052)
    /// Replicas > 1 asked of a server that is not clustered.
    public static let replicasNotSupported = JetStreamErrorCode(rawValue: 10074)
    /// The message is larger than the stream allows.
    public static let messageTooLarge = JetStreamErrorCode(rawValue: 10054)
    /// Storage or resources exhausted.
    public static let insufficientResources = JetStreamErrorCode(rawValue: 10023)
    /// `discard: new` limit reached (maximum messages, bytes or per-subject messages).
    public static let streamStoreFailed = JetStreamErrorCode(rawValue: 10077)
    /// The server's (or account's) JetStream storage cannot hold or reserve this much.
    public static let storageResourcesExceeded = JetStreamErrorCode(rawValue: 10047)
    /// The stream denies deletes or purges.
    public static let streamPurgeNotAllowed = JetStreamErrorCode(rawValue: 10083)
}

/// An error answer from the JetStream API: `{"error":{"code":N,"err_code":N,"description":"..."}}`.
public struct JetStreamAPIError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The HTTP-like status (400, 404, 500, 503…).
    public var code: Int
    /// The precise JetStream error number.
    public var errorCode: JetStreamErrorCode
    /// The server's explanation.
    public var errorDescription: String

    /// Creates an API error.
    public init(code: Int, errorCode: JetStreamErrorCode, description: String) {
        self.code = code
        self.errorCode = errorCode
        self.errorDescription = description
    }

    /// Whether this is the compare-and-set failure (10071).
    public var isWrongLastSequence: Bool { errorCode == .wrongLastSequence }

    public var description: String { "JetStream API error \(code)/\(errorCode.rawValue): \(errorDescription)" }
}

/// An error raised by the client's JetStream code (not by the server's API).
public struct JetStreamError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate let name: String
        public var description: String { name }
        /// JetStream is not enabled on the server or account (nobody answers `$JS.API`).
        public static let notEnabled = Code(name: "notEnabled")
        /// No stream captures the subject that was published to.
        public static let noStreamForSubject = Code(name: "noStreamForSubject")
        /// The server's answer could not be decoded.
        public static let invalidResponse = Code(name: "invalidResponse")
        /// A stream, consumer or bucket name is invalid.
        public static let invalidName = Code(name: "invalidName")
        /// A consumer was deleted or stopped answering.
        public static let consumerGone = Code(name: "consumerGone")
        /// The server ended a pull request with a status other than "no messages", "timeout" or
        /// "batch completed" before any message arrived (for example `409 Leadership Change`).
        /// The consumer is still there, but messages the server
        /// meant for that request may be in flight to it: a reader that must not skip any
        /// repositions the consumer before pulling again.
        public static let pullRequestEnded = Code(name: "pullRequestEnded")
        /// The operation was given an invalid argument.
        public static let invalidArgument = Code(name: "invalidArgument")
    }

    /// What kind of failure this is.
    public var code: Code
    /// What happened.
    public var message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "JetStream \(code): \(message)" }
}
