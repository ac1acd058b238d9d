import Foundation
import NIOCore

/// An Object Store bucket's settings, mapped onto its stream (`OBJ_<bucket>`) the way the
/// reference Go and Python clients do (ADR-20), so buckets are shared with any NATS tool.
public struct ObjectStoreConfig: Sendable, Hashable {
    /// The bucket name (`[a-zA-Z0-9_-]+`).
    public var bucket: String
    /// A description stored on the stream.
    public var description: String?
    /// How long an object's chunks and meta are kept (`max_age`); nil keeps them forever.
    public var ttl: Duration?
    /// The most bytes the bucket may hold, chunks and meta together; nil for no limit.
    public var maxBytes: Int64?
    /// Where the stream keeps its messages.
    public var storage: StorageType
    /// How many copies the cluster keeps (1 on a single server).
    public var replicas: Int

    /// Creates a configuration.
    public init(bucket: String, description: String? = nil, ttl: Duration? = nil, maxBytes: Int64? = nil, storage: StorageType = .file, replicas: Int = 1) {
        self.bucket = bucket
        self.description = description
        self.ttl = ttl
        self.maxBytes = maxBytes
        self.storage = storage
        self.replicas = replicas
    }

    /// The stream configuration this bucket maps to: subjects `$O.<bucket>.C.>` (chunks) and
    /// `$O.<bucket>.M.>` (meta), rollup headers, direct get and `discard: new`.
    public var streamConfig: StreamConfig {
        var config = StreamConfig(name: "OBJ_\(bucket)", subjects: ["$O.\(bucket).C.>", "$O.\(bucket).M.>"])
        config.description = description
        config.maxAge = ttl ?? .zero
        config.maxBytes = maxBytes ?? -1
        config.storage = storage
        config.replicas = replicas
        config.discard = .new
        config.allowRollup = true
        config.allowDirect = true
        return config
    }
}

/// A reference from one object to another object (or to a whole bucket), as written by the Go
/// client's `AddLink` and `AddBucketLink`.
public struct ObjectLink: Sendable, Hashable, Codable {
    /// The bucket of the linked object.
    public var bucket: String
    /// The linked object's name; nil when the link points at the whole bucket.
    public var name: String?

    /// Creates a link.
    public init(bucket: String, name: String? = nil) {
        self.bucket = bucket
        self.name = name
    }

    enum CodingKeys: String, CodingKey {
        case bucket, name
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        bucket = try c.decode(String.self, forKey: .bucket)
        name = try c.decodeIfPresent(String.self, forKey: .name).flatMap { $0.isEmpty ? nil : $0 }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(bucket, forKey: .bucket)
        try c.encodeIfPresent(name, forKey: .name)
    }
}

/// What the store records about one object: its meta (name, description, headers, metadata) and
/// where and how its bytes are stored.
public struct ObjectInfo: Sendable, Hashable {
    /// The object's name (any non-empty string).
    public var name: String
    /// A description stored with the object.
    public var description: String?
    /// Headers stored with the object (the Go client's `nats.Header`).
    public var headers: NATSHeaders?
    /// Free-form metadata stored with the object.
    public var metadata: [String: String]?
    /// The bucket the meta says the object is in.
    public var bucket: String
    /// The unique id of this version of the object; its chunks are on `$O.<bucket>.C.<nuid>`.
    public var nuid: String
    /// The object's size in bytes.
    public var size: UInt64
    /// How many chunks hold the object.
    public var chunks: Int
    /// `SHA-256=<base64url, padded>` of the object's bytes; nil for deleted objects and links.
    public var digest: String?
    /// Whether the object was deleted (only seen with `includeDeleted`).
    public var deleted: Bool
    /// When the meta was stored (the server's time for the meta message; the writer's clock for
    /// the value ``ObjectStore/put(name:data:description:headers:metadata:chunkSize:)`` returns).
    public var modified: Date
    /// The chunk size the writer used (`options.max_chunk_size`), when recorded.
    public var maxChunkSize: Int?
    /// Set when this entry is a link to another object or bucket rather than an object.
    public var link: ObjectLink?

    /// Whether this entry is a link rather than an object with its own bytes.
    public var isLink: Bool { link != nil }
}

/// A bucket's configuration and size.
public struct ObjectStoreStatus: Sendable {
    /// The bucket name.
    public var bucket: String
    /// The bucket's description.
    public var description: String?
    /// How long objects are kept; nil when forever.
    public var ttl: Duration?
    /// Where the stream keeps its messages.
    public var storage: StorageType
    /// How many copies the cluster keeps.
    public var replicas: Int
    /// Whether the bucket was sealed (no more changes).
    public var sealed: Bool
    /// Bytes stored, chunks and meta together.
    public var size: UInt64
    /// The backing stream's information.
    public var streamInfo: StreamInfo
}

/// An error from an Object Store operation.
public struct ObjectStoreError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate let name: String
        /// The code's name.
        public var description: String { name }
        /// The bucket name is not valid (`[a-zA-Z0-9_-]+`).
        public static let invalidBucketName = Code(name: "invalidBucketName")
        /// The object name is not valid (it must not be empty).
        public static let invalidName = Code(name: "invalidName")
        /// The bucket configuration asked for is not valid.
        public static let invalidConfig = Code(name: "invalidConfig")
        /// The chunk size is not positive or exceeds the server's `max_payload`.
        public static let invalidChunkSize = Code(name: "invalidChunkSize")
        /// No such bucket.
        public static let bucketNotFound = Code(name: "bucketNotFound")
        /// The bucket exists with a different configuration.
        public static let bucketConfigConflict = Code(name: "bucketConfigConflict")
        /// No such object, or it was deleted.
        public static let objectNotFound = Code(name: "objectNotFound")
        /// The object's meta cannot be decoded or is inconsistent (no nuid, unknown digest).
        public static let invalidMeta = Code(name: "invalidMeta")
        /// The bytes read do not have the SHA-256 digest the meta records.
        public static let digestMismatch = Code(name: "digestMismatch")
        /// The bytes or chunks read are more or fewer than the meta records (missing or extra
        /// chunks).
        public static let sizeMismatch = Code(name: "sizeMismatch")
        /// Chunks stopped arriving before the object was complete (the object was replaced or
        /// deleted during the read, or the server stopped answering).
        public static let readStalled = Code(name: "readStalled")
        /// The entry is a link to a whole bucket, which has no bytes to get.
        public static let bucketLink = Code(name: "bucketLink")
        /// A local file could not be read or written.
        public static let fileError = Code(name: "fileError")
    }

    /// What kind of failure this is.
    public var code: Code
    /// What happened, naming the bucket and object.
    public var message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The code and the message.
    public var description: String { "Object Store \(code): \(message)" }
}

// MARK: - Wire format

/// The meta message's JSON (ADR-20 `ObjectInfo`), read leniently: Go writes `mtime` as an RFC
/// 3339 time (the zero time since it stopped storing it), nats-py writes Python's isoformat or
/// an empty string for deleted objects; Go writes `headers` as `{"name": ["value", ...]}` while
/// nats-py passes through whatever dict the caller gave, so single strings are accepted too.
struct ObjectMetaRecord: Codable, Sendable {
    struct Options: Codable, Sendable {
        var link: ObjectLink?
        var maxChunkSize: Int?

        enum CodingKeys: String, CodingKey {
            case link
            case maxChunkSize = "max_chunk_size"
        }

        init(link: ObjectLink? = nil, maxChunkSize: Int? = nil) {
            self.link = link
            self.maxChunkSize = maxChunkSize
        }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            link = try c.decodeIfPresent(ObjectLink.self, forKey: .link)
            maxChunkSize = try c.decodeIfPresent(Int.self, forKey: .maxChunkSize)
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encodeIfPresent(link, forKey: .link)
            if let maxChunkSize, maxChunkSize > 0 { try c.encode(maxChunkSize, forKey: .maxChunkSize) }
        }
    }

    /// A header value: Go writes a list, other writers sometimes a single string.
    private struct HeaderValues: Codable {
        var values: [String]

        init(_ values: [String]) { self.values = values }

        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let list = try? c.decode([String].self) {
                values = list
            } else {
                values = [try c.decode(String.self)]
            }
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            try c.encode(values)
        }
    }

    var name: String
    var description: String?
    var headers: NATSHeaders?
    var metadata: [String: String]?
    var options: Options?
    var bucket: String
    var nuid: String
    var size: UInt64
    var mtime: String?
    var chunks: Int
    var digest: String?
    var deleted: Bool

    enum CodingKeys: String, CodingKey {
        case name, description, headers, metadata, options, bucket, nuid, size, mtime, chunks, digest, deleted
    }

    init(info: ObjectInfo, mtime: Date) {
        name = info.name
        description = info.description
        headers = info.headers
        metadata = info.metadata
        options = (info.link != nil || info.maxChunkSize != nil) ? Options(link: info.link, maxChunkSize: info.maxChunkSize) : nil
        bucket = info.bucket
        nuid = info.nuid
        size = info.size
        self.mtime = JetStreamJSON.formatRFC3339(mtime)
        chunks = info.chunks
        digest = info.digest
        deleted = info.deleted
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        description = try c.decodeIfPresent(String.self, forKey: .description).flatMap { $0.isEmpty ? nil : $0 }
        if let map = try c.decodeIfPresent([String: HeaderValues].self, forKey: .headers), !map.isEmpty {
            var headers = NATSHeaders()
            for key in map.keys.sorted() {
                for value in map[key]!.values { headers.append(name: key, value: value) }
            }
            self.headers = headers
        }
        metadata = try c.decodeIfPresent([String: String].self, forKey: .metadata).flatMap { $0.isEmpty ? nil : $0 }
        options = try c.decodeIfPresent(Options.self, forKey: .options)
        bucket = try c.decodeIfPresent(String.self, forKey: .bucket) ?? ""
        nuid = try c.decodeIfPresent(String.self, forKey: .nuid) ?? ""
        size = try c.decodeIfPresent(UInt64.self, forKey: .size) ?? 0
        mtime = try? c.decodeIfPresent(String.self, forKey: .mtime)
        chunks = try c.decodeIfPresent(Int.self, forKey: .chunks) ?? 0
        digest = try c.decodeIfPresent(String.self, forKey: .digest).flatMap { $0.isEmpty ? nil : $0 }
        deleted = try c.decodeIfPresent(Bool.self, forKey: .deleted) ?? false
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        if let description, !description.isEmpty { try c.encode(description, forKey: .description) }
        if let headers, !headers.fields.isEmpty {
            var map: [String: HeaderValues] = [:]
            for field in headers.fields { map[field.name, default: HeaderValues([])].values.append(field.value) }
            try c.encode(map, forKey: .headers)
        }
        if let metadata, !metadata.isEmpty { try c.encode(metadata, forKey: .metadata) }
        try c.encodeIfPresent(options, forKey: .options)
        try c.encode(bucket, forKey: .bucket)
        try c.encode(nuid, forKey: .nuid)
        try c.encode(size, forKey: .size)
        // Go decodes `mtime` as time.Time, so it must always be a valid RFC 3339 time.
        try c.encode(mtime ?? JetStreamJSON.formatRFC3339(Date()), forKey: .mtime)
        try c.encode(chunks, forKey: .chunks)
        if let digest, !digest.isEmpty { try c.encode(digest, forKey: .digest) }
        if deleted { try c.encode(true, forKey: .deleted) }
    }

    /// The public view, with the modification time taken from the meta message (ADR-20: the
    /// stored `mtime` is not authoritative).
    func info(modified: Date) -> ObjectInfo {
        ObjectInfo(
            name: name, description: description, headers: headers, metadata: metadata, bucket: bucket, nuid: nuid, size: size,
            chunks: chunks, digest: digest, deleted: deleted, modified: modified, maxChunkSize: options?.maxChunkSize, link: options?.link)
    }
}
