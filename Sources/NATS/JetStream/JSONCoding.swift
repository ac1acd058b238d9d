import Foundation
import Timestamps

/// JSON helpers shared by the JetStream, KV and Object Store code: nanosecond durations and
/// RFC 3339 times with up to nanosecond precision, as the server writes them.
enum JetStreamJSON {
    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(formatRFC3339(date))
        }
        return encoder
    }

    static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = parseRFC3339(text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an RFC 3339 time: \(text)")
            }
            return date
        }
        return decoder
    }

    /// Parses `2024-05-01T12:34:56.123456789Z` or with a `+hh:mm` offset.
    static func parseRFC3339(_ text: String) -> Date? {
        RFC3339.parse(text).map(Date.init(timeIntervalSince1970:))
    }

    /// With nanoseconds when there are any, as the server writes times.
    static func formatRFC3339(_ date: Date) -> String {
        let text = RFC3339.format(secondsSince1970: date.timeIntervalSince1970, fractionDigits: 9)
        return text.hasSuffix(".000000000Z") ? text.dropLast(11) + "Z" : text
    }
}

extension KeyedDecodingContainer {
    func decodeNanos(_ key: Key) throws -> Duration? {
        try decodeIfPresent(Int64.self, forKey: key).map { .nanoseconds($0) }
    }
}

extension KeyedEncodingContainer {
    mutating func encodeNanos(_ value: Duration?, forKey key: Key) throws {
        if let value { try encode(value.nanoseconds, forKey: key) }
    }
}
