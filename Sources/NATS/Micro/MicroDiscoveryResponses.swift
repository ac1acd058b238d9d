import Foundation

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
        guard let started = RFC3339Timestamp.parse(startedText) else {
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
        try container.encode(RFC3339Timestamp.format(started), forKey: .started)
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

/// RFC 3339 timestamps as micro services exchange them.
///
/// Written in UTC with exactly six fractional digits (`2024-02-29T13:05:09.123456Z`): Go's
/// `time.Time` reads any number of digits, while nats-py parses `started` with `%f`, which takes
/// at most six. Reading accepts any number of digits and a `Z` or `±hh:mm` offset.
enum RFC3339Timestamp {
    static func format(_ date: Date) -> String {
        let microseconds = Int64((date.timeIntervalSince1970 * 1_000_000).rounded(.down))
        let (seconds, fraction) = floorDivision(microseconds, 1_000_000)
        let (days, secondOfDay) = floorDivision(seconds, 86_400)
        let (year, month, day) = civilDate(fromDaysSinceEpoch: days)
        func pad(_ value: Int64, _ width: Int) -> String {
            let digits = String(value)
            return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(secondOfDay / 3600, 2)):\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2)).\(pad(fraction, 6))Z"
    }

    static func parse(_ text: String) -> Date? {
        let bytes = Array(text.utf8)
        var index = 0
        func number(_ width: Int) -> Int64? {
            guard index + width <= bytes.count else { return nil }
            var value: Int64 = 0
            for byte in bytes[index..<index + width] {
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                value = value * 10 + Int64(byte - UInt8(ascii: "0"))
            }
            index += width
            return value
        }
        func expect(_ characters: String) -> Bool {
            guard index < bytes.count, characters.utf8.contains(bytes[index]) else { return false }
            index += 1
            return true
        }
        guard let year = number(4), expect("-"), let month = number(2), expect("-"), let day = number(2),
            expect("Tt "), let hour = number(2), expect(":"), let minute = number(2), expect(":"),
            let second = number(2)
        else { return nil }
        guard (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else { return nil }
        var fraction = 0.0
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            var scale = 0.1
            let start = index
            while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
                fraction += Double(bytes[index] - UInt8(ascii: "0")) * scale
                scale /= 10
                index += 1
            }
            if index == start { return nil }
        }
        var offsetSeconds: Int64 = 0
        if expect("Zz") {
        } else if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
            let sign: Int64 = bytes[index] == UInt8(ascii: "-") ? -1 : 1
            index += 1
            guard let offsetHours = number(2), expect(":"), let offsetMinutes = number(2) else { return nil }
            offsetSeconds = sign * (offsetHours * 3600 + offsetMinutes * 60)
        } else {
            return nil
        }
        guard index == bytes.count else { return nil }
        let days = daysSinceEpoch(year: year, month: month, day: day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offsetSeconds
        return Date(timeIntervalSince1970: Double(seconds) + fraction)
    }

    private static func floorDivision(_ value: Int64, _ divisor: Int64) -> (Int64, Int64) {
        let quotient = value / divisor
        let remainder = value % divisor
        return remainder < 0 ? (quotient - 1, remainder + divisor) : (quotient, remainder)
    }

    /// Proleptic Gregorian calendar: days since 1970-01-01 from a date. Works in 400-year eras
    /// starting on March 1st, so the leap day is the last day of its year.
    static func daysSinceEpoch(year: Int64, month: Int64, day: Int64) -> Int64 {
        let marchYear = month <= 2 ? year - 1 : year
        let era = floorDivision(marchYear, 400).0
        let yearOfEra = marchYear - era * 400
        let monthFromMarch = (month + 9) % 12
        let dayOfYear = (153 * monthFromMarch + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    /// The inverse of ``daysSinceEpoch(year:month:day:)``.
    static func civilDate(fromDaysSinceEpoch days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let shifted = days + 719_468
        let era = floorDivision(shifted, 146_097).0
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthFromMarch = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthFromMarch + 2) / 5 + 1
        let month = monthFromMarch < 10 ? monthFromMarch + 3 : monthFromMarch - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }
}
