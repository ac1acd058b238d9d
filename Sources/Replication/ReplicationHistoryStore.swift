import Foundation
import Logging
import NATS
import NIOCore

/// One app's durable record of its newest data and the nodes' reports of what they hold: the
/// KV bucket ``ReplicationHistoryBucket`` (no TTL, so it outlives a lost or expired WAL stream),
/// and a copy of the newest record in each node's state directory (`<app>.newest.json`), so
/// that a deleted bucket does not erase it either.
public struct ReplicationHistoryStore: Sendable {
    let configuration: ReplicationConfiguration
    let jetStream: JetStream

    /// Creates the store of the app in `configuration`.
    public init(configuration: ReplicationConfiguration, jetStream: JetStream) {
        self.configuration = configuration
        self.jetStream = jetStream
    }

    /// `<state_dir>/<app>.newest.json`.
    public var localPath: String { (configuration.stateDirectory as NSString).appendingPathComponent("\(configuration.app).newest.json") }

    func bucket() async throws -> KeyValue {
        try await ReplicationHistoryBucket.open(jetStream: jetStream, cluster: configuration.cluster, replicas: configuration.streamReplicas)
    }

    /// The newest record in the bucket (nil when absent or the bucket is gone).
    public func remoteNewest() async throws -> (record: ReplicationHistoryRecord, revision: UInt64)? {
        try await ReplicationHistoryBucket.newest(in: try await bucket(), app: configuration.app)
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
        let key = ReplicationHistoryBucket.newestKey(app: configuration.app)
        let value = try ReplicationHistoryBucket.encode(record)
        for _ in 0..<3 {
            let current = try await kv.entry(key)
            if let current, current.operation == .put {
                let existing = try ReplicationHistoryBucket.decode(ReplicationHistoryRecord.self, current.value, what: "the newest record of \(configuration.app)")
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
        _ = try await kv.put(ReplicationHistoryBucket.nodeKey(app: configuration.app, node: holding.copy.node), value: try ReplicationHistoryBucket.encode(holding))
    }

    /// Every node's report about the app.
    public func reports() async throws -> [NodeHoldingReport] {
        try await ReplicationHistoryBucket.reports(in: try await bucket(), app: configuration.app)
    }
}
