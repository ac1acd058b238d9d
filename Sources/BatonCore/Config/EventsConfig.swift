/// The `events:` section: retention of the cluster's event history (stream
/// `BATON_<cluster>_EVENTS`). Optional; the defaults keep a week in at most 64 MiB.
public struct EventsConfig: Sendable, Hashable {
    /// Events older than this are removed (`max_age`, default 168h).
    public var maxAge: Duration
    /// The stream's size limit in bytes, oldest events removed first (`max_bytes`, default
    /// 64 MiB; an integer, or a number with KiB, MiB or GiB).
    public var maxBytes: Int64

    public static let defaultMaxAge: Duration = .seconds(168 * 3600)
    public static let defaultMaxBytes: Int64 = 64 * 1_048_576

    /// Creates a retention (without validation).
    public init(maxAge: Duration = defaultMaxAge, maxBytes: Int64 = defaultMaxBytes) {
        self.maxAge = maxAge
        self.maxBytes = maxBytes
    }

    /// Parses `64MiB`, `512KiB`, `1GiB` or a plain number of bytes; nil when it is none of these.
    public static func parseSize(_ text: String) -> Int64? {
        let units: [(String, Int64)] = [("KiB", 1024), ("MiB", 1_048_576), ("GiB", 1_073_741_824), ("", 1)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            guard !number.isEmpty, number.allSatisfy(\.isNumber), let value = Int64(number) else { continue }
            let (product, overflow) = value.multipliedReportingOverflow(by: factor)
            return overflow ? nil : product
        }
        return nil
    }
}

extension EventsConfig: ConfigSection {
    static let keys = ["max_age", "max_bytes"]

    init?(fields: ConfigFields) {
        let maxAge = fields.optional("max_age", default: Self.defaultMaxAge) { $0.duration(.positive) }
        let maxBytes = fields.optional("max_bytes", default: Self.defaultMaxBytes) { value -> Int64? in
            guard let text = value.scalarText(expected: "a size like \"64MiB\"") else { return nil }
            guard let size = Self.parseSize(text), size >= 4096 else {
                value.error("expected a size of at least 4096 bytes like \"64MiB\", \"512KiB\" or 1048576, got \(quoted(text))")
                return nil
            }
            return size
        }
        guard let maxAge, let maxBytes else { return nil }
        self.init(maxAge: maxAge, maxBytes: maxBytes)
    }
}
