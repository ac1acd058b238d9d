import Foundation
import Logging
import NATS
import NIOCore

/// Where the durable record of an app's newest data and the nodes' reports of what they hold
/// live: the KV bucket `baton_<cluster>__replication` (no TTL, so it outlives a lost or expired
/// WAL stream; keys `<app>.newest` and `<app>.node.<node>`), and a copy of the newest record in
/// each node's state directory (`<app>.newest.json`), so that a deleted bucket does not erase it
/// either.
public struct ReplicationHistoryStore: Sendable {
    /// The KV bucket of a cluster: `baton_<cluster>__replication`.
    public static func bucket(cluster: String) -> String { "baton_\(cluster)__replication" }
    /// The key of an app's newest record.
    public static func newestKey(app: String) -> String { "\(app).newest" }
    /// The key of a node's report about an app.
    public static func nodeKey(app: String, node: String) -> String { "\(app).node.\(node)" }

    let configuration: ReplicationConfiguration
    let jetStream: JetStream

    /// Creates the store of the app in `configuration`.
    public init(configuration: ReplicationConfiguration, jetStream: JetStream) {
        self.configuration = configuration
        self.jetStream = jetStream
    }

    /// `<state_dir>/<app>.newest.json`.
    public var localPath: String { (configuration.stateDirectory as NSString).appendingPathComponent("\(configuration.app).newest.json") }

    /// Binds to the bucket, creating it when missing (history 8, no TTL).
    public static func open(jetStream: JetStream, cluster: String, replicas: Int) async throws -> KeyValue {
        let bucket = bucket(cluster: cluster)
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

    func bucket() async throws -> KeyValue {
        try await Self.open(jetStream: jetStream, cluster: configuration.cluster, replicas: configuration.streamReplicas)
    }

    /// The newest record in the bucket (nil when absent or the bucket is gone).
    public func remoteNewest() async throws -> (record: ReplicationHistoryRecord, revision: UInt64)? {
        let kv = try await bucket()
        guard let entry = try await kv.get(Self.newestKey(app: configuration.app)) else { return nil }
        return (try Self.decode(ReplicationHistoryRecord.self, entry.value, what: "the newest record of \(configuration.app)"), entry.revision)
    }

    /// The copy in this node's state directory.
    public func localNewest() throws -> ReplicationHistoryRecord? {
        guard FileIO.exists(localPath) else { return nil }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: localPath))
        } catch {
            throw ReplicationError(.io, "cannot read \(localPath): \(error)")
        }
        do {
            return try JSONDecoder.history.decode(ReplicationHistoryRecord.self, from: data)
        } catch {
            throw ReplicationError(.malformedRecord, "\(localPath) is not a replication history record: \(error)")
        }
    }

    /// Keeps `record` in this node's state directory (temporary file, fsync, rename).
    public func storeLocally(_ record: ReplicationHistoryRecord) throws {
        try FileIO.makeDirectory(configuration.stateDirectory)
        try FileIO.writeAtomically(Array(try JSONEncoder.history.encode(record)), to: localPath)
    }

    /// Writes the newest record, unless the bucket holds a newer one (a record of a newer token,
    /// or one an operator forced since `forcedSeen`): compare-and-set on the revision read, so a
    /// stale writer never overwrites a newer record. Returns false when it did not write.
    @discardableResult
    public func recordNewest(_ record: ReplicationHistoryRecord) async throws -> Bool {
        let kv = try await bucket()
        let key = Self.newestKey(app: configuration.app)
        let value = ByteBuffer(bytes: try JSONEncoder.history.encode(record))
        for _ in 0..<3 {
            let current = try await kv.entry(key)
            if let current, current.operation == .put {
                let existing = try Self.decode(ReplicationHistoryRecord.self, current.value, what: "the newest record of \(configuration.app)")
                if existing.newest.token > record.newest.token { return false }
                // After an operator forced a copy, only the claim of the promotion that accepted
                // it (or another forced record) replaces it: a stale shipper's progress does not.
                if existing.forced != nil, record.forced == nil, record.event != HistoryEvent.claim { return false }
            }
            do {
                if let current {
                    _ = try await kv.update(key, value: value, revision: current.revision)
                } else {
                    _ = try await kv.create(key, value: value)
                }
                try? storeLocally(record)
                return true
            } catch let error as KeyValueError where error.code == .wrongLastRevision || error.code == .keyExists {
                continue
            }
        }
        return false
    }

    /// Publishes what this node holds (its report for `batonctl replica status` and for other
    /// nodes' promotion decisions).
    public func report(_ holding: NodeHoldingReport) async throws {
        let kv = try await bucket()
        _ = try await kv.put(Self.nodeKey(app: configuration.app, node: holding.copy.node), value: ByteBuffer(bytes: try JSONEncoder.history.encode(holding)))
    }

    /// Every node's report about the app.
    public func reports() async throws -> [NodeHoldingReport] {
        try await Self.reports(in: try await bucket(), app: configuration.app)
    }

    /// Every node's report about `app` in `kv`.
    public static func reports(in kv: KeyValue, app: String) async throws -> [NodeHoldingReport] {
        let prefix = "\(app).node."
        var result: [NodeHoldingReport] = []
        for key in try await kv.keys() where key.hasPrefix(prefix) {
            guard let entry = try await kv.get(key) else { continue }
            if let report = try? decode(NodeHoldingReport.self, entry.value, what: key) { result.append(report) }
        }
        return result.sorted { $0.copy.node < $1.copy.node }
    }

    static func decode<T: Decodable>(_ type: T.Type, _ buffer: ByteBuffer, what: String) throws -> T {
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
    static var history: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }
}

extension JSONDecoder {
    static var history: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
