import Foundation
import BatonCore
import NATS

/// The cluster's drain bucket (``DrainRecord/bucket(cluster:)``): one key per drained node,
/// history 1, no TTL. batond watches it; `batonctl drain` and `undrain` write and delete keys.
public enum DrainStore {
    /// Opens the bucket, creating it when it is missing (the nodes create it at start; a
    /// batonctl whose NATS user may not create streams needs a node to have run once).
    public static func open(jetStream: JetStream, cluster: String, replicas: Int) async throws -> KeyValue {
        let bucket = DrainRecord.bucket(cluster: cluster)
        do {
            return try await jetStream.keyValue(bucket)
        } catch {
            var config = KeyValueConfig(bucket: bucket, history: 1, replicas: replicas)
            config.description = "Baton drained nodes of cluster \(cluster): one key per drained node (batonctl drain)"
            config.maxBytes = 1 << 20
            do {
                return try await jetStream.createKeyValue(config)
            } catch let error as KeyValueError where error.code == .bucketConfigConflict {
                return try await jetStream.keyValue(bucket)
            }
        }
    }

    /// The drains in force at `now` (seconds since 1970), by node; empty when the bucket does
    /// not exist yet (no node ever ran, or nothing was ever drained). A key that does not decode
    /// is skipped.
    public static func activeDrains(jetStream: JetStream, cluster: String, now: Double) async throws -> [String: DrainRecord] {
        let kv: KeyValue
        do {
            kv = try await jetStream.keyValue(DrainRecord.bucket(cluster: cluster))
        } catch {
            return [:]
        }
        var drains: [String: DrainRecord] = [:]
        for key in try await kv.keys() {
            guard let entry = try await kv.get(key),
                let record = try? JSONDecoder().decode(DrainRecord.self, from: Data(entry.value.readableBytesView)),
                record.isActive(at: now)
            else { continue }
            drains[record.node] = record
        }
        return drains
    }
}
