import Foundation
import NATS
import NIOCore

/// The KV bucket that keeps the durable record of each app's newest replicated data and the
/// nodes' reports of what they hold: `baton_<cluster>__replication` (no TTL, so it outlives a
/// lost or expired WAL stream), keys `<app>.newest` (a ``ReplicationHistoryRecord``) and
/// `<app>.node.<node>` (a ``NodeHoldingReport``), JSON with ISO 8601 dates.
///
/// Names and reads only: the replication module's `ReplicationHistoryStore` writes the records
/// (compare-and-set) and keeps the copy in a node's state directory; `batonctl replica` reads
/// them (and writes a forced record) through this type without linking SQLite.
public enum ReplicationHistoryBucket {
    /// The KV bucket of a cluster: `baton_<cluster>__replication`.
    public static func name(cluster: String) -> String { "baton_\(cluster)__replication" }
    /// The key of an app's newest record.
    public static func newestKey(app: String) -> String { "\(app).newest" }
    /// The key of a node's report about an app.
    public static func nodeKey(app: String, node: String) -> String { "\(app).node.\(node)" }

    /// Binds to the cluster's bucket, creating it when missing (history 8, no TTL).
    public static func open(jetStream: JetStream, cluster: String, replicas: Int) async throws -> KeyValue {
        let bucket = name(cluster: cluster)
        do {
            return try await jetStream.keyValue(bucket)
        } catch let error as KeyValueError where error.code == .bucketNotFound {
            var config = KeyValueConfig(bucket: bucket, history: 8, ttl: nil, storage: .file, replicas: replicas)
            config.description = "Baton: the newest replicated data of each app and what each node holds"
            do {
                return try await jetStream.createKeyValue(config)
            } catch let error as KeyValueError where error.code == .bucketConfigConflict {
                return try await jetStream.keyValue(bucket)
            }
        }
    }

    /// The newest record of `app` in `kv` and its revision (nil when absent); a value that is
    /// not a record throws ``ReplicationError/Code/malformedRecord`` naming the bucket and key.
    public static func newest(in kv: KeyValue, app: String) async throws -> (record: ReplicationHistoryRecord, revision: UInt64)? {
        let key = newestKey(app: app)
        guard let entry = try await kv.get(key) else { return nil }
        return (try decode(ReplicationHistoryRecord.self, entry.value, what: "the newest record of \(app) (key \(key) in bucket \(kv.bucket))"), entry.revision)
    }

    /// Every node's report about `app` in `kv`, by node (unreadable reports are left out).
    public static func reports(in kv: KeyValue, app: String) async throws -> [NodeHoldingReport] {
        let prefix = "\(app).node."
        var result: [NodeHoldingReport] = []
        for key in try await kv.keys() where key.hasPrefix(prefix) {
            guard let entry = try await kv.get(key) else { continue }
            if let report = try? decode(NodeHoldingReport.self, entry.value, what: key) { result.append(report) }
        }
        return result.sorted { $0.copy.node < $1.copy.node }
    }

    /// The bucket's encoding of a record or report.
    public static func encode(_ value: some Encodable) throws -> ByteBuffer {
        ByteBuffer(bytes: try JSONEncoder.history.encode(value))
    }

    /// Decodes a value of the bucket; `what` names it in the error.
    public static func decode<T: Decodable>(_ type: T.Type, _ buffer: ByteBuffer, what: String) throws(ReplicationError) -> T {
        do {
            return try JSONDecoder.history.decode(type, from: Data(buffer.readableBytesView))
        } catch {
            throw ReplicationError(.malformedRecord, "\(what) is not readable: \(error)")
        }
    }
}
/// The events that write the newest record.
public enum HistoryEvent {
    /// A new active node claimed the stream (after its promotion).
    public static let claim = "claim"
    /// A snapshot was published.
    public static let snapshot = "snapshot"
    /// The shipper's periodic update.
    public static let progress = "progress"
    /// A graceful handoff's final marker.
    public static let finalMarker = "final marker"
    /// An operator accepted a node's copy (`batonctl replica promote NODE --force`).
    public static let forced = "forced"
    /// The active node found its stream deleted or lost (it starts a new history above it).
    public static let streamLost = "stream lost"
}

/// What a node reports holding for an app.
public struct NodeHoldingReport: Codable, Sendable, Hashable {
    /// What the node does: `shipping` (active), `applying` (passive), `idle`.
    public var role: String
    /// The copy (its node is the reporting node).
    public var copy: DatabaseCopy
    /// When the node applied (or shipped) ``DatabaseCopy/txid``.
    public var appliedAt: Date?
    /// When the node wrote this report.
    public var reportedAt: Date
    /// What the node's stream view or last promotion said, when something is wrong.
    public var note: String?

    /// Creates a report.
    public init(role: String, copy: DatabaseCopy, appliedAt: Date?, reportedAt: Date, note: String? = nil) {
        self.role = role
        self.copy = copy
        self.appliedAt = appliedAt
        self.reportedAt = reportedAt
        self.note = note
    }
}

extension JSONEncoder {
    /// The encoding of the history bucket and of `<app>.newest.json`: sorted keys, ISO 8601 dates.
    package static var history: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }
}

extension JSONDecoder {
    /// The decoding of the history bucket and of `<app>.newest.json` (ISO 8601 dates).
    package static var history: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
