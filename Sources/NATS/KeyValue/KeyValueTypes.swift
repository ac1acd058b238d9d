import Foundation
import NIOCore

/// A KV bucket's settings, mapped onto its stream (`KV_<bucket>`) the way the reference Go client
/// does, so buckets are shared with any NATS tool.
public struct KeyValueConfig: Sendable, Hashable {
    /// The bucket name (`[a-zA-Z0-9_-]+`).
    public var bucket: String
    public var description: String?
    /// Revisions kept per key (1...64).
    public var history: Int
    /// How long an entry lives after its last write; nil keeps entries forever. On NATS 2.9 this
    /// is bucket-wide and expiry notifies no watcher.
    public var ttl: Duration?
    /// The largest value accepted, in bytes.
    public var maxValueSize: Int32?
    /// The most bytes the bucket may hold.
    public var maxBytes: Int64?
    public var storage: StorageType
    public var replicas: Int
    /// When set (server 2.11+), expiry by TTL leaves a marker that watchers see, kept this long.
    public var limitMarkerTTL: Duration?

    /// Creates a configuration.
    public init(bucket: String, history: Int = 1, ttl: Duration? = nil, storage: StorageType = .file, replicas: Int = 1) {
        self.bucket = bucket
        self.history = history
        self.ttl = ttl
        self.storage = storage
        self.replicas = replicas
    }

    /// The stream configuration this bucket maps to.
    public var streamConfig: StreamConfig {
        var config = StreamConfig(name: "KV_\(bucket)", subjects: ["$KV.\(bucket).>"])
        config.description = description
        config.maxMessagesPerSubject = Int64(history)
        config.maxBytes = maxBytes ?? -1
        config.maxAge = ttl ?? .zero
        config.maxMessageSize = maxValueSize ?? -1
        config.maxMessages = -1
        config.maxConsumers = -1
        config.storage = storage
        config.replicas = replicas
        config.allowRollup = true
        config.denyDelete = true
        config.allowDirect = true
        config.discard = .new
        let twoMinutes = Duration.seconds(120)
        if let ttl, ttl > .zero, ttl < twoMinutes {
            config.duplicateWindow = ttl
        } else {
            config.duplicateWindow = twoMinutes
        }
        if let limitMarkerTTL {
            config.allowMessageTTL = true
            config.subjectDeleteMarkerTTL = limitMarkerTTL
        }
        return config
    }
}

/// What an entry records.
public enum KeyValueOperation: String, Sendable, Hashable {
    case put = "PUT"
    case delete = "DEL"
    case purge = "PURGE"
}

/// One revision of a key.
public struct KeyValueEntry: Sendable, Hashable {
    public var bucket: String
    public var key: String
    public var value: ByteBuffer
    /// The stream sequence of this write; it only grows.
    public var revision: UInt64
    public var created: Date
    /// For watch results: how many newer entries were pending when this one was delivered.
    public var delta: UInt64
    public var operation: KeyValueOperation

    /// The value as UTF-8 text.
    public var string: String { String(decoding: value.readableBytesView, as: UTF8.self) }
}

/// An error from a KV operation.
public struct KeyValueError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate let name: String
        public var description: String { name }
        /// `create` found a live value.
        public static let keyExists = Code(name: "keyExists")
        /// `update`, `delete` or `purge` with an expected revision lost the compare-and-set.
        public static let wrongLastRevision = Code(name: "wrongLastRevision")
        /// The key is not a valid KV key.
        public static let invalidKey = Code(name: "invalidKey")
        /// The bucket name is not valid.
        public static let invalidBucketName = Code(name: "invalidBucketName")
        /// No such bucket.
        public static let bucketNotFound = Code(name: "bucketNotFound")
        /// The bucket exists with a different configuration.
        public static let bucketConfigConflict = Code(name: "bucketConfigConflict")
        /// The configuration asked for is not valid.
        public static let invalidConfig = Code(name: "invalidConfig")
    }

    public var code: Code
    public var message: String
    /// The revision involved, when known (the live revision for `keyExists`).
    public var revision: UInt64?

    /// Creates an error.
    public init(_ code: Code, _ message: String, revision: UInt64? = nil) {
        self.code = code
        self.message = message
        self.revision = revision
    }

    public var description: String { "KV \(code): \(message)" }
}

/// What a KV watcher yields.
public enum KeyValueWatchEvent: Sendable, Hashable {
    /// A value, delete or purge.
    case entry(KeyValueEntry)
    /// Every value that existed when the watch started has been delivered; what follows are
    /// updates.
    case initialValuesDone
}

/// What a watch delivers.
public struct KeyValueWatchOptions: Sendable {
    /// Deliver every stored revision, not only the latest per key.
    public var includeHistory: Bool
    /// Skip delete and purge entries.
    public var ignoreDeletes: Bool
    /// Deliver only changes made after the watch starts.
    public var updatesOnly: Bool
    /// Deliver entries without their values.
    public var metaOnly: Bool
    /// Idle heartbeat of the underlying consumer; three missed ones reset it.
    public var idleHeartbeat: Duration

    /// Creates options.
    public init(includeHistory: Bool = false, ignoreDeletes: Bool = false, updatesOnly: Bool = false, metaOnly: Bool = false, idleHeartbeat: Duration = .seconds(5)) {
        self.includeHistory = includeHistory
        self.ignoreDeletes = ignoreDeletes
        self.updatesOnly = updatesOnly
        self.metaOnly = metaOnly
        self.idleHeartbeat = idleHeartbeat
    }
}

/// A bucket's configuration and size.
public struct KeyValueStatus: Sendable {
    public var bucket: String
    /// Stored entries, counting every kept revision and marker.
    public var values: UInt64
    public var bytes: UInt64
    public var history: Int
    public var ttl: Duration?
    public var streamInfo: StreamInfo
}
