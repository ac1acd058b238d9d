/// The header block of a NATS message (`NATS/1.0[ status[ description]]` followed by fields).
///
/// Header names are case-sensitive, as they are on the server. A name may appear more than once;
/// the order of fields is kept.
public struct NATSHeaders: Sendable, Hashable {
    /// One `Name: value` line.
    public struct Field: Sendable, Hashable {
        /// The header name, compared case-sensitively.
        public var name: String
        /// The header value.
        public var value: String

        /// Creates a field.
        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    /// The status code on the first line (for example 503 "no responders", 100 "idle heartbeat"),
    /// when the server set one.
    public var status: Int?
    /// The text after the status code, when present.
    public var statusDescription: String?
    /// All fields, in order.
    public private(set) var fields: [Field]

    /// Creates an empty header block.
    public init() {
        self.fields = []
    }

    /// Creates a header block from name/value pairs.
    public init(_ pairs: KeyValuePairs<String, String>) {
        self.fields = pairs.map { Field(name: $0.key, value: $0.value) }
    }

    /// The length of the block on the wire: `NATS/1.0[ status[ description]]\r\n`, each
    /// `Name: value\r\n`, and the closing `\r\n`.
    public var encodedSize: Int {
        var size = 8 + 2 + 2
        if let status { size += 1 + String(status).utf8.count }
        if let statusDescription { size += 1 + statusDescription.utf8.count }
        for field in fields { size += field.name.utf8.count + 2 + field.value.utf8.count + 2 }
        return size
    }

    /// Whether there are no fields and no status.
    public var isEmpty: Bool { fields.isEmpty && status == nil }

    /// The first value for `name`, or nil. Setting replaces every value for `name`
    /// (nil removes them).
    public subscript(name: String) -> String? {
        get { fields.first { $0.name == name }?.value }
        set {
            if let index = fields.firstIndex(where: { $0.name == name }) {
                fields.removeAll { $0.name == name }
                if let newValue { fields.insert(Field(name: name, value: newValue), at: index) }
            } else if let newValue {
                fields.append(Field(name: name, value: newValue))
            }
        }
    }

    /// Every value given for `name`, in order.
    public func values(for name: String) -> [String] {
        fields.filter { $0.name == name }.map(\.value)
    }

    /// Adds a field, keeping any existing values of the same name.
    public mutating func append(name: String, value: String) {
        fields.append(Field(name: name, value: value))
    }

    /// Removes every value for `name`.
    public mutating func remove(name: String) {
        fields.removeAll { $0.name == name }
    }
}

extension NATSHeaders: Sequence {
    public func makeIterator() -> IndexingIterator<[Field]> { fields.makeIterator() }
}

extension NATSHeaders: CustomStringConvertible {
    public var description: String {
        var text = "NATS/1.0"
        if let status { text += " \(status)" }
        if let statusDescription { text += " \(statusDescription)" }
        for field in fields { text += "; \(field.name): \(field.value)" }
        return text
    }
}

/// Header names Baton's client reads or writes, as spelled on the wire.
public enum NATSHeaderName {
    public static let msgID = "Nats-Msg-Id"
    public static let expectedStream = "Nats-Expected-Stream"
    public static let expectedLastSequence = "Nats-Expected-Last-Sequence"
    public static let expectedLastSubjectSequence = "Nats-Expected-Last-Subject-Sequence"
    public static let expectedLastMsgID = "Nats-Expected-Last-Msg-Id"
    public static let rollup = "Nats-Rollup"
    public static let stream = "Nats-Stream"
    public static let sequence = "Nats-Sequence"
    public static let subject = "Nats-Subject"
    public static let timeStamp = "Nats-Time-Stamp"
    public static let lastSequence = "Nats-Last-Sequence"
    public static let lastConsumer = "Nats-Last-Consumer"
    public static let lastStream = "Nats-Last-Stream"
    public static let consumerStalled = "Nats-Consumer-Stalled"
    public static let numPending = "Nats-Num-Pending"
    public static let messageTTL = "Nats-TTL"
    public static let markerReason = "Nats-Marker-Reason"
    public static let serviceError = "Nats-Service-Error"
    public static let serviceErrorCode = "Nats-Service-Error-Code"
}
