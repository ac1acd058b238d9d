import Foundation
import Timestamps

// The JSON documents a micro service answers `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` with, in
// the shapes of ADR-32 and of the JSON schemas the NATS CLI validates responses against. Encoding
// always writes `metadata` as an object and `description`/`last_error` as strings, as the schemas
// require; decoding also accepts the `null`s some implementations send.

/// The `type` values of the discovery responses.
public enum MicroResponseType {
    /// The `type` of a `$SRV.PING` response.
    public static let ping = "io.nats.micro.v1.ping_response"
    /// The `type` of a `$SRV.INFO` response.
    public static let info = "io.nats.micro.v1.info_response"
    /// The `type` of a `$SRV.STATS` response.
    public static let stats = "io.nats.micro.v1.stats_response"
}

/// The reply to `$SRV.PING`: who the instance is.
public struct MicroPingResponse: Codable, Sendable, Hashable {
    /// Always ``MicroResponseType/ping`` when sent by a conforming service.
    public var type: String
    /// The service name (its kind).
    public var name: String
    /// The instance id.
    public var id: String
    /// The service version.
    public var version: String
    /// The instance metadata.
    public var metadata: [String: String]

    /// Creates a ping response.
    public init(name: String, id: String, version: String, metadata: [String: String]) {
        self.type = MicroResponseType.ping
        self.name = name
        self.id = id
        self.version = version
        self.metadata = metadata
    }

    enum CodingKeys: String, CodingKey {
        case type, name, id, version, metadata
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        type = try container.decode(String.self, forKey: .type)
        name = try container.decode(String.self, forKey: .name)
        id = try container.decode(String.self, forKey: .id)
        version = try container.decode(String.self, forKey: .version)
        metadata = try container.decodeIfPresent([String: String].self, forKey: .metadata) ?? [:]
    }
}

/// One endpoint as `$SRV.INFO` describes it.
public struct MicroEndpointInfo: Codable, Sendable, Hashable {
    /// The endpoint name.
    public var name: String
    /// The subject the endpoint listens on, group prefix included.
    public var subject: String
    /// The queue group the endpoint subscribes in; empty when queue groups are disabled.
    public var queueGroup: String
    /// The endpoint metadata.
    public var metadata: [String: String]

    /// Creates an endpoint description.
    public init(name: String, subject: String, queueGroup: String, metadata: [String: String]) {
        self.name = name
        self.subject = subject
        self.queueGroup = queueGroup
        self.metadata = metadata
    }

    enum CodingKeys: String, CodingKey {
        case name, subject, metadata
        case queueGroup = "queue_group"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        subject = try container.decode(String.self, forKey: .subject)
        queueGroup = try container.decodeIfPresent(String.self, forKey: .queueGroup) ?? ""
        metadata = try container.decodeIfPresent([String: String].self, forKey: .metadata) ?? [:]
    }
}

/// The reply to `$SRV.INFO`: the instance and its endpoints.
public struct MicroInfoResponse: Codable, Sendable, Hashable {
    /// Always ``MicroResponseType/info`` when sent by a conforming service.
    public var type: String
    /// The service name (its kind).
    public var name: String
    /// The instance id.
    public var id: String
    /// The service version.
    public var version: String
    /// The instance metadata.
    public var metadata: [String: String]
    /// The service description (empty when none was given).
    public var description: String
    /// Every endpoint of the instance, in the order they were added.
    public var endpoints: [MicroEndpointInfo]

    /// Creates an info response.
    public init(name: String, id: String, version: String, metadata: [String: String], description: String, endpoints: [MicroEndpointInfo]) {
        self.type = MicroResponseType.info
        self.name = name
        self.id = id
        self.version = version
        self.metadata = metadata
        self.description = description
        self.endpoints = endpoints
    }

    enum CodingKeys: String, CodingKey {
        case type, name, id, version, metadata, description, endpoints
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        type = try container.decode(String.self, forKey: .type)
        name = try container.decode(String.self, forKey: .name)
        id = try container.decode(String.self, forKey: .id)
        version = try container.decode(String.self, forKey: .version)
        metadata = try container.decodeIfPresent([String: String].self, forKey: .metadata) ?? [:]
        description = try container.decodeIfPresent(String.self, forKey: .description) ?? ""
        endpoints = try container.decodeIfPresent([MicroEndpointInfo].self, forKey: .endpoints) ?? []
    }
}

/// The counters of one endpoint as `$SRV.STATS` reports them.
public struct MicroEndpointStats: Codable, Sendable, Hashable {
    /// The endpoint name.
    public var name: String
    /// The subject the endpoint listens on, group prefix included.
    public var subject: String
    /// The queue group the endpoint subscribes in; empty when queue groups are disabled.
    public var queueGroup: String
    /// Requests handled (counted when the handler finishes).
    public var numRequests: Int
    /// Requests whose handler threw, plus replies that could not be sent.
    public var numErrors: Int
    /// The last error, or an empty string when there has been none.
    public var lastError: String
    /// Time spent in the handler, over all requests (JSON: integer nanoseconds).
    public var processingTime: Duration
    /// ``processingTime`` divided by ``numRequests``, zero when there were no requests
    /// (JSON: integer nanoseconds).
    public var averageProcessingTime: Duration

    /// Creates endpoint statistics.
    public init(
        name: String,
        subject: String,
        queueGroup: String,
        numRequests: Int = 0,
        numErrors: Int = 0,
        lastError: String = "",
        processingTime: Duration = .zero,
        averageProcessingTime: Duration = .zero
    ) {
        self.name = name
        self.subject = subject
        self.queueGroup = queueGroup
        self.numRequests = numRequests
        self.numErrors = numErrors
        self.lastError = lastError
        self.processingTime = processingTime
        self.averageProcessingTime = averageProcessingTime
    }

    enum CodingKeys: String, CodingKey {
        case name, subject
        case queueGroup = "queue_group"
        case numRequests = "num_requests"
        case numErrors = "num_errors"
        case lastError = "last_error"
        case processingTime = "processing_time"
        case averageProcessingTime = "average_processing_time"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        subject = try container.decode(String.self, forKey: .subject)
        queueGroup = try container.decodeIfPresent(String.self, forKey: .queueGroup) ?? ""
        numRequests = try container.decode(Int.self, forKey: .numRequests)
        numErrors = try container.decode(Int.self, forKey: .numErrors)
        lastError = try container.decodeIfPresent(String.self, forKey: .lastError) ?? ""
        processingTime = .nanoseconds(try container.decode(Int64.self, forKey: .processingTime))
        averageProcessingTime = .nanoseconds(try container.decode(Int64.self, forKey: .averageProcessingTime))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(subject, forKey: .subject)
        try container.encode(queueGroup, forKey: .queueGroup)
        try container.encode(numRequests, forKey: .numRequests)
        try container.encode(numErrors, forKey: .numErrors)
        try container.encode(lastError, forKey: .lastError)
        try container.encode(processingTime.saturatingNanoseconds, forKey: .processingTime)
        try container.encode(averageProcessingTime.saturatingNanoseconds, forKey: .averageProcessingTime)
    }
}

/// The reply to `$SRV.STATS`: per-endpoint counters since the instance started (or was reset).
public struct MicroStatsResponse: Codable, Sendable, Hashable {
    /// Always ``MicroResponseType/stats`` when sent by a conforming service.
    public var type: String
    /// The service name (its kind).
    public var name: String
    /// The instance id.
    public var id: String
    /// The service version.
    public var version: String
    /// The instance metadata.
    public var metadata: [String: String]
    /// When the instance started, or when its statistics were last reset (JSON: an RFC 3339
    /// UTC timestamp with microseconds).
    public var started: Date
    /// The counters of every endpoint, in the order they were added.
    public var endpoints: [MicroEndpointStats]

    /// Creates a stats response.
    public init(name: String, id: String, version: String, metadata: [String: String], started: Date, endpoints: [MicroEndpointStats]) {
        self.type = MicroResponseType.stats
        self.name = name
        self.id = id
        self.version = version
        self.metadata = metadata
        self.started = started
        self.endpoints = endpoints
    }

    enum CodingKeys: String, CodingKey {
        case type, name, id, version, metadata, started, endpoints
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        type = try container.decode(String.self, forKey: .type)
        name = try container.decode(String.self, forKey: .name)
        id = try container.decode(String.self, forKey: .id)
        version = try container.decode(String.self, forKey: .version)
        metadata = try container.decodeIfPresent([String: String].self, forKey: .metadata) ?? [:]
        let startedText = try container.decode(String.self, forKey: .started)
        guard let started = RFC3339.parse(startedText).map(Date.init(timeIntervalSince1970:)) else {
            throw DecodingError.dataCorruptedError(
                forKey: .started, in: container, debugDescription: "\"\(startedText)\" is not an RFC 3339 timestamp")
        }
        self.started = started
        endpoints = try container.decodeIfPresent([MicroEndpointStats].self, forKey: .endpoints) ?? []
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(type, forKey: .type)
        try container.encode(name, forKey: .name)
        try container.encode(id, forKey: .id)
        try container.encode(version, forKey: .version)
        try container.encode(metadata, forKey: .metadata)
        // Six fractional digits: Go's time.Time reads any number, nats-py's %f at most six.
        try container.encode(RFC3339.format(secondsSince1970: started.timeIntervalSince1970, fractionDigits: 6), forKey: .started)
        try container.encode(endpoints, forKey: .endpoints)
    }
}

extension Duration {
    /// The duration in whole nanoseconds, saturating at the bounds of `Int64`.
    var saturatingNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (fromSeconds, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (total, overflow2) = fromSeconds.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow2 { return seconds < 0 ? .min : .max }
        return total
    }
}
