import Foundation

/// How a stream decides when to remove messages.
public enum RetentionPolicy: String, Codable, Sendable {
    case limits, interest, workqueue
}

/// What a stream does when a limit is reached.
public enum DiscardPolicy: String, Codable, Sendable {
    /// Remove the oldest messages.
    case old
    /// Refuse new messages.
    case new
}

/// Where a stream keeps its messages.
public enum StorageType: String, Codable, Sendable {
    case file, memory
}

/// A stream's configuration. Fields left nil take the server's default and are not sent, so the
/// same code works on servers that do not know newer fields.
public struct StreamConfig: Codable, Sendable, Hashable {
    public var name: String
    public var description: String?
    public var subjects: [String]?
    public var retention: RetentionPolicy?
    public var maxConsumers: Int?
    public var maxMessages: Int64?
    public var maxBytes: Int64?
    /// How long messages are kept (`max_age`); nil or zero keeps them forever.
    public var maxAge: Duration?
    public var maxMessagesPerSubject: Int64?
    public var maxMessageSize: Int32?
    public var discard: DiscardPolicy?
    public var storage: StorageType?
    public var replicas: Int?
    public var noAck: Bool?
    public var duplicateWindow: Duration?
    public var sealed: Bool?
    public var denyDelete: Bool?
    public var denyPurge: Bool?
    /// Whether `Nats-Rollup` headers are honoured (`allow_rollup_hdrs`).
    public var allowRollup: Bool?
    /// Whether direct get is enabled (`allow_direct`).
    public var allowDirect: Bool?
    public var mirrorDirect: Bool?
    public var discardNewPerSubject: Bool?
    /// Per-message TTL through `Nats-TTL` (server 2.11 and later).
    public var allowMessageTTL: Bool?
    /// How long delete markers stay after `max_age` removes a subject's last message (2.11+).
    public var subjectDeleteMarkerTTL: Duration?
    public var metadata: [String: String]?

    /// Creates a configuration with the given name and subjects; everything else server defaults.
    public init(name: String, subjects: [String]? = nil) {
        self.name = name
        self.subjects = subjects
    }

    enum CodingKeys: String, CodingKey {
        case name, description, subjects, retention
        case maxConsumers = "max_consumers"
        case maxMessages = "max_msgs"
        case maxBytes = "max_bytes"
        case maxAge = "max_age"
        case maxMessagesPerSubject = "max_msgs_per_subject"
        case maxMessageSize = "max_msg_size"
        case discard, storage
        case replicas = "num_replicas"
        case noAck = "no_ack"
        case duplicateWindow = "duplicate_window"
        case sealed
        case denyDelete = "deny_delete"
        case denyPurge = "deny_purge"
        case allowRollup = "allow_rollup_hdrs"
        case allowDirect = "allow_direct"
        case mirrorDirect = "mirror_direct"
        case discardNewPerSubject = "discard_new_per_subject"
        case allowMessageTTL = "allow_msg_ttl"
        case subjectDeleteMarkerTTL = "subject_delete_marker_ttl"
        case metadata
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        subjects = try c.decodeIfPresent([String].self, forKey: .subjects)
        retention = try c.decodeIfPresent(RetentionPolicy.self, forKey: .retention)
        maxConsumers = try c.decodeIfPresent(Int.self, forKey: .maxConsumers)
        maxMessages = try c.decodeIfPresent(Int64.self, forKey: .maxMessages)
        maxBytes = try c.decodeIfPresent(Int64.self, forKey: .maxBytes)
        maxAge = try c.decodeNanos(.maxAge)
        maxMessagesPerSubject = try c.decodeIfPresent(Int64.self, forKey: .maxMessagesPerSubject)
        maxMessageSize = try c.decodeIfPresent(Int32.self, forKey: .maxMessageSize)
        discard = try c.decodeIfPresent(DiscardPolicy.self, forKey: .discard)
        storage = try c.decodeIfPresent(StorageType.self, forKey: .storage)
        replicas = try c.decodeIfPresent(Int.self, forKey: .replicas)
        noAck = try c.decodeIfPresent(Bool.self, forKey: .noAck)
        duplicateWindow = try c.decodeNanos(.duplicateWindow)
        sealed = try c.decodeIfPresent(Bool.self, forKey: .sealed)
        denyDelete = try c.decodeIfPresent(Bool.self, forKey: .denyDelete)
        denyPurge = try c.decodeIfPresent(Bool.self, forKey: .denyPurge)
        allowRollup = try c.decodeIfPresent(Bool.self, forKey: .allowRollup)
        allowDirect = try c.decodeIfPresent(Bool.self, forKey: .allowDirect)
        mirrorDirect = try c.decodeIfPresent(Bool.self, forKey: .mirrorDirect)
        discardNewPerSubject = try c.decodeIfPresent(Bool.self, forKey: .discardNewPerSubject)
        allowMessageTTL = try c.decodeIfPresent(Bool.self, forKey: .allowMessageTTL)
        subjectDeleteMarkerTTL = try c.decodeNanos(.subjectDeleteMarkerTTL)
        metadata = try c.decodeIfPresent([String: String].self, forKey: .metadata)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encodeIfPresent(description, forKey: .description)
        try c.encodeIfPresent(subjects, forKey: .subjects)
        try c.encodeIfPresent(retention, forKey: .retention)
        try c.encodeIfPresent(maxConsumers, forKey: .maxConsumers)
        try c.encodeIfPresent(maxMessages, forKey: .maxMessages)
        try c.encodeIfPresent(maxBytes, forKey: .maxBytes)
        try c.encodeNanos(maxAge, forKey: .maxAge)
        try c.encodeIfPresent(maxMessagesPerSubject, forKey: .maxMessagesPerSubject)
        try c.encodeIfPresent(maxMessageSize, forKey: .maxMessageSize)
        try c.encodeIfPresent(discard, forKey: .discard)
        try c.encodeIfPresent(storage, forKey: .storage)
        try c.encodeIfPresent(replicas, forKey: .replicas)
        try c.encodeIfPresent(noAck, forKey: .noAck)
        try c.encodeNanos(duplicateWindow, forKey: .duplicateWindow)
        try c.encodeIfPresent(sealed, forKey: .sealed)
        try c.encodeIfPresent(denyDelete, forKey: .denyDelete)
        try c.encodeIfPresent(denyPurge, forKey: .denyPurge)
        try c.encodeIfPresent(allowRollup, forKey: .allowRollup)
        try c.encodeIfPresent(allowDirect, forKey: .allowDirect)
        try c.encodeIfPresent(mirrorDirect, forKey: .mirrorDirect)
        try c.encodeIfPresent(discardNewPerSubject, forKey: .discardNewPerSubject)
        try c.encodeIfPresent(allowMessageTTL, forKey: .allowMessageTTL)
        try c.encodeNanos(subjectDeleteMarkerTTL, forKey: .subjectDeleteMarkerTTL)
        try c.encodeIfPresent(metadata, forKey: .metadata)
    }
}

/// A stream's counters.
public struct StreamState: Codable, Sendable, Hashable {
    public var messages: UInt64
    public var bytes: UInt64
    public var firstSequence: UInt64
    public var lastSequence: UInt64
    public var consumerCount: Int
    public var numSubjects: Int?
    public var firstTime: Date?
    public var lastTime: Date?

    enum CodingKeys: String, CodingKey {
        case messages, bytes
        case firstSequence = "first_seq"
        case lastSequence = "last_seq"
        case consumerCount = "consumer_count"
        case numSubjects = "num_subjects"
        case firstTime = "first_ts"
        case lastTime = "last_ts"
    }
}

/// A stream's configuration and state, as the server reports it.
public struct StreamInfo: Codable, Sendable {
    public var config: StreamConfig
    public var created: Date
    public var state: StreamState
    public var cluster: ClusterInfo?
}

/// Where a stream or consumer's replicas live.
public struct ClusterInfo: Codable, Sendable, Hashable {
    public var name: String?
    public var leader: String?
}

/// The server's acknowledgement of a JetStream publish.
public struct PubAck: Codable, Sendable, Hashable {
    /// The stream that stored the message.
    public var stream: String
    /// The message's sequence in the stream (a KV entry's revision).
    public var sequence: UInt64
    /// Whether the message was a duplicate within the duplicate window (not stored again).
    public var duplicate: Bool?
    public var domain: String?

    enum CodingKeys: String, CodingKey {
        case stream
        case sequence = "seq"
        case duplicate, domain
    }
}

/// Account-level JetStream usage and limits.
public struct AccountInfo: Codable, Sendable {
    public struct Limits: Codable, Sendable {
        public var maxMemory: Int64
        public var maxStorage: Int64
        public var maxStreams: Int
        public var maxConsumers: Int
        enum CodingKeys: String, CodingKey {
            case maxMemory = "max_memory"
            case maxStorage = "max_storage"
            case maxStreams = "max_streams"
            case maxConsumers = "max_consumers"
        }
    }
    public struct APIStats: Codable, Sendable {
        public var total: Int
        public var errors: Int
    }
    public var memory: Int64
    public var storage: Int64
    public var streams: Int
    public var consumers: Int
    public var limits: Limits
    public var api: APIStats
    public var domain: String?
}

/// Expectations and options for a JetStream publish.
public struct PublishOptions: Sendable, Hashable {
    /// `Nats-Msg-Id`: the stream drops a second message with the same id within its duplicate
    /// window.
    public var messageID: String?
    /// `Nats-Expected-Stream`: fail unless the message lands in this stream.
    public var expectedStream: String?
    /// `Nats-Expected-Last-Sequence`: fail unless the stream's last sequence is this.
    public var expectedLastSequence: UInt64?
    /// `Nats-Expected-Last-Subject-Sequence`: fail unless the subject's last sequence is this
    /// (0: no message on the subject).
    public var expectedLastSubjectSequence: UInt64?
    /// `Nats-Expected-Last-Msg-Id`: fail unless the stream's last message id is this.
    public var expectedLastMessageID: String?
    /// `Nats-Rollup`: `sub` replaces the subject's earlier messages, `all` the stream's.
    public var rollup: Rollup?
    /// `Nats-TTL`: this message's time to live (server 2.11+, stream must allow it).
    public var ttl: Duration?

    /// What a rollup removes.
    public enum Rollup: String, Sendable, Hashable {
        case subject = "sub"
        case all = "all"
    }

    /// Creates options.
    public init(
        messageID: String? = nil, expectedStream: String? = nil, expectedLastSequence: UInt64? = nil,
        expectedLastSubjectSequence: UInt64? = nil, expectedLastMessageID: String? = nil, rollup: Rollup? = nil, ttl: Duration? = nil
    ) {
        self.messageID = messageID
        self.expectedStream = expectedStream
        self.expectedLastSequence = expectedLastSequence
        self.expectedLastSubjectSequence = expectedLastSubjectSequence
        self.expectedLastMessageID = expectedLastMessageID
        self.rollup = rollup
        self.ttl = ttl
    }

    func apply(to headers: inout NATSHeaders) {
        if let messageID { headers[NATSHeaderName.msgID] = messageID }
        if let expectedStream { headers[NATSHeaderName.expectedStream] = expectedStream }
        if let expectedLastSequence { headers[NATSHeaderName.expectedLastSequence] = String(expectedLastSequence) }
        if let expectedLastSubjectSequence { headers[NATSHeaderName.expectedLastSubjectSequence] = String(expectedLastSubjectSequence) }
        if let expectedLastMessageID { headers[NATSHeaderName.expectedLastMsgID] = expectedLastMessageID }
        if let rollup { headers[NATSHeaderName.rollup] = rollup.rawValue }
        if let ttl {
            let (seconds, attoseconds) = ttl.components
            headers[NATSHeaderName.messageTTL] = attoseconds == 0 ? "\(seconds)s" : "\(ttl.nanoseconds / 1_000_000)ms"
        }
    }
}
