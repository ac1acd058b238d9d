import Foundation

/// Where a consumer starts in its stream.
public enum DeliverPolicy: Sendable, Hashable {
    case all
    case last
    case new
    case lastPerSubject
    case byStartSequence(UInt64)
    case byStartTime(Date)
}

/// How a consumer expects acknowledgements.
public enum AckPolicy: String, Codable, Sendable {
    case none, all, explicit
}

/// How fast a consumer replays stored messages.
public enum ReplayPolicy: String, Codable, Sendable {
    case instant, original
}

/// A consumer's configuration. Nil fields take the server's default and are not sent.
public struct ConsumerConfig: Codable, Sendable, Hashable {
    public var name: String?
    public var durableName: String?
    public var description: String?
    public var deliverPolicy: DeliverPolicy
    public var ackPolicy: AckPolicy
    public var ackWait: Duration?
    public var maxDeliver: Int?
    public var filterSubject: String?
    public var replayPolicy: ReplayPolicy
    public var maxAckPending: Int?
    public var maxWaiting: Int?
    public var idleHeartbeat: Duration?
    public var flowControl: Bool?
    public var headersOnly: Bool?
    public var deliverSubject: String?
    public var deliverGroup: String?
    public var maxBatch: Int?
    public var maxExpires: Duration?
    public var inactiveThreshold: Duration?
    public var replicas: Int?
    public var memoryStorage: Bool?
    public var metadata: [String: String]?

    /// Creates a configuration.
    public init(
        name: String? = nil, durableName: String? = nil, deliverPolicy: DeliverPolicy = .all, ackPolicy: AckPolicy = .explicit,
        filterSubject: String? = nil
    ) {
        self.name = name
        self.durableName = durableName
        self.deliverPolicy = deliverPolicy
        self.ackPolicy = ackPolicy
        self.filterSubject = filterSubject
        self.replayPolicy = .instant
    }

    enum CodingKeys: String, CodingKey {
        case name
        case durableName = "durable_name"
        case description
        case deliverPolicy = "deliver_policy"
        case optStartSequence = "opt_start_seq"
        case optStartTime = "opt_start_time"
        case ackPolicy = "ack_policy"
        case ackWait = "ack_wait"
        case maxDeliver = "max_deliver"
        case filterSubject = "filter_subject"
        case replayPolicy = "replay_policy"
        case maxAckPending = "max_ack_pending"
        case maxWaiting = "max_waiting"
        case idleHeartbeat = "idle_heartbeat"
        case flowControl = "flow_control"
        case headersOnly = "headers_only"
        case deliverSubject = "deliver_subject"
        case deliverGroup = "deliver_group"
        case maxBatch = "max_batch"
        case maxExpires = "max_expires"
        case inactiveThreshold = "inactive_threshold"
        case replicas = "num_replicas"
        case memoryStorage = "mem_storage"
        case metadata
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        durableName = try c.decodeIfPresent(String.self, forKey: .durableName)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        switch try c.decodeIfPresent(String.self, forKey: .deliverPolicy) ?? "all" {
        case "last": deliverPolicy = .last
        case "new": deliverPolicy = .new
        case "last_per_subject": deliverPolicy = .lastPerSubject
        case "by_start_sequence": deliverPolicy = .byStartSequence(try c.decodeIfPresent(UInt64.self, forKey: .optStartSequence) ?? 0)
        case "by_start_time": deliverPolicy = .byStartTime(try c.decodeIfPresent(Date.self, forKey: .optStartTime) ?? Date(timeIntervalSince1970: 0))
        default: deliverPolicy = .all
        }
        ackPolicy = try c.decodeIfPresent(AckPolicy.self, forKey: .ackPolicy) ?? .none
        ackWait = try c.decodeNanos(.ackWait)
        maxDeliver = try c.decodeIfPresent(Int.self, forKey: .maxDeliver)
        filterSubject = try c.decodeIfPresent(String.self, forKey: .filterSubject)
        replayPolicy = try c.decodeIfPresent(ReplayPolicy.self, forKey: .replayPolicy) ?? .instant
        maxAckPending = try c.decodeIfPresent(Int.self, forKey: .maxAckPending)
        maxWaiting = try c.decodeIfPresent(Int.self, forKey: .maxWaiting)
        idleHeartbeat = try c.decodeNanos(.idleHeartbeat)
        flowControl = try c.decodeIfPresent(Bool.self, forKey: .flowControl)
        headersOnly = try c.decodeIfPresent(Bool.self, forKey: .headersOnly)
        deliverSubject = try c.decodeIfPresent(String.self, forKey: .deliverSubject)
        deliverGroup = try c.decodeIfPresent(String.self, forKey: .deliverGroup)
        maxBatch = try c.decodeIfPresent(Int.self, forKey: .maxBatch)
        maxExpires = try c.decodeNanos(.maxExpires)
        inactiveThreshold = try c.decodeNanos(.inactiveThreshold)
        replicas = try c.decodeIfPresent(Int.self, forKey: .replicas)
        memoryStorage = try c.decodeIfPresent(Bool.self, forKey: .memoryStorage)
        metadata = try c.decodeIfPresent([String: String].self, forKey: .metadata)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(name, forKey: .name)
        try c.encodeIfPresent(durableName, forKey: .durableName)
        try c.encodeIfPresent(description, forKey: .description)
        switch deliverPolicy {
        case .all: try c.encode("all", forKey: .deliverPolicy)
        case .last: try c.encode("last", forKey: .deliverPolicy)
        case .new: try c.encode("new", forKey: .deliverPolicy)
        case .lastPerSubject: try c.encode("last_per_subject", forKey: .deliverPolicy)
        case .byStartSequence(let sequence):
            try c.encode("by_start_sequence", forKey: .deliverPolicy)
            try c.encode(sequence, forKey: .optStartSequence)
        case .byStartTime(let date):
            try c.encode("by_start_time", forKey: .deliverPolicy)
            try c.encode(date, forKey: .optStartTime)
        }
        try c.encode(ackPolicy, forKey: .ackPolicy)
        try c.encodeNanos(ackWait, forKey: .ackWait)
        try c.encodeIfPresent(maxDeliver, forKey: .maxDeliver)
        try c.encodeIfPresent(filterSubject, forKey: .filterSubject)
        try c.encode(replayPolicy, forKey: .replayPolicy)
        try c.encodeIfPresent(maxAckPending, forKey: .maxAckPending)
        try c.encodeIfPresent(maxWaiting, forKey: .maxWaiting)
        try c.encodeNanos(idleHeartbeat, forKey: .idleHeartbeat)
        try c.encodeIfPresent(flowControl, forKey: .flowControl)
        try c.encodeIfPresent(headersOnly, forKey: .headersOnly)
        try c.encodeIfPresent(deliverSubject, forKey: .deliverSubject)
        try c.encodeIfPresent(deliverGroup, forKey: .deliverGroup)
        try c.encodeIfPresent(maxBatch, forKey: .maxBatch)
        try c.encodeNanos(maxExpires, forKey: .maxExpires)
        try c.encodeNanos(inactiveThreshold, forKey: .inactiveThreshold)
        try c.encodeIfPresent(replicas, forKey: .replicas)
        try c.encodeIfPresent(memoryStorage, forKey: .memoryStorage)
        try c.encodeIfPresent(metadata, forKey: .metadata)
    }
}

/// Sequence numbers a consumer has reached.
public struct SequenceInfo: Codable, Sendable, Hashable {
    public var consumerSequence: UInt64
    public var streamSequence: UInt64
    enum CodingKeys: String, CodingKey {
        case consumerSequence = "consumer_seq"
        case streamSequence = "stream_seq"
    }
}

/// A consumer's configuration and progress, as the server reports it.
public struct ConsumerInfo: Codable, Sendable {
    public var streamName: String
    public var name: String
    public var created: Date
    public var config: ConsumerConfig
    public var delivered: SequenceInfo
    public var ackFloor: SequenceInfo
    public var numAckPending: Int
    public var numRedelivered: Int
    public var numWaiting: Int
    /// Messages matching the consumer that it has not delivered yet.
    public var numPending: UInt64
    public var cluster: ClusterInfo?

    enum CodingKeys: String, CodingKey {
        case streamName = "stream_name"
        case name, created, config, delivered
        case ackFloor = "ack_floor"
        case numAckPending = "num_ack_pending"
        case numRedelivered = "num_redelivered"
        case numWaiting = "num_waiting"
        case numPending = "num_pending"
        case cluster
    }
}
