import BatonCore
import Foundation
import Logging
import NATS
import NIOCore

/// The value of an app's `leader` key.
///
/// `token` is the fencing token: the revision of the write that acquired the lease. The
/// acquiring write cannot know its own revision, so it writes 0 and every renew writes the real
/// token; readers take the entry's revision when they see 0. `handoffTo` is set by the last
/// write of a switchover, just before the release, so that other nodes let the target go first.
public struct LeaseRecord: Codable, Sendable, Hashable {
    public var node: String
    public var instance: String
    public var token: UInt64
    public var handoffTo: String?

    enum CodingKeys: String, CodingKey {
        case node, instance, token
        case handoffTo = "handoff_to"
    }

    /// Creates a record.
    public init(node: String, instance: String, token: UInt64, handoffTo: String? = nil) {
        self.node = node
        self.instance = instance
        self.token = token
        self.handoffTo = handoffTo
    }
}

/// One app's lease in NATS KV: bucket `baton_<cluster>_<app>` (TTL = the lease ttl, history 1),
/// key `leader`. Acquire is a create, renew an update on the last revision, release a delete on
/// the last revision — all compare-and-set, so two nodes can never both succeed.
public struct LeaseStore: Sendable {
    /// The key holding the lease.
    public static let key = "leader"
    public let kv: KeyValue
    public let app: String

    /// The bucket name for an app of a cluster.
    public static func bucketName(cluster: String, app: String) -> String { "baton_\(cluster)_\(app)" }

    /// Creates or binds the app's lease bucket.
    ///
    /// A bucket whose TTL differs (the lease ttl changed in the config) is updated in place: its
    /// entries are tiny and short-lived, and the new TTL applies to the next write.
    public static func open(jetStream: JetStream, cluster: String, app: String, ttl: Duration, replicas: Int) async throws -> LeaseStore {
        var config = KeyValueConfig(bucket: bucketName(cluster: cluster, app: app), history: 1, ttl: ttl, replicas: replicas)
        config.description = "Baton lease of app \(app) in cluster \(cluster)"
        do {
            return LeaseStore(kv: try await jetStream.createKeyValue(config), app: app)
        } catch let error as KeyValueError where error.code == .bucketConfigConflict {
            try await jetStream.updateStream(config.streamConfig)
            return LeaseStore(kv: try await jetStream.keyValue(config.bucket), app: app)
        }
    }

    private func encode(_ record: LeaseRecord) throws -> ByteBuffer {
        ByteBuffer(bytes: try JSONEncoder().encode(record))
    }

    /// Tries to take the lease. Returns the new revision (the fencing token).
    public func acquire(as holder: LeaseHolder) async throws(LeaseWriteError) -> UInt64 {
        try await write { try await kv.create(Self.key, value: try encode(LeaseRecord(node: holder.node, instance: holder.instance, token: 0))) }
    }

    /// Renews a held lease; returns the new revision.
    public func renew(as holder: LeaseHolder, token: UInt64, revision: UInt64) async throws(LeaseWriteError) -> UInt64 {
        try await write {
            try await kv.update(Self.key, value: try encode(LeaseRecord(node: holder.node, instance: holder.instance, token: token)), revision: revision)
        }
    }

    /// Gives the lease up if `revision` is still the latest. A switchover's target travels in
    /// the delete marker itself, so every watcher sees it even if it missed earlier writes.
    public func release(as holder: LeaseHolder, token: UInt64, revision: UInt64, handoffTo: String?) async throws(LeaseWriteError) {
        let note = LeaseRecord(node: holder.node, instance: holder.instance, token: token, handoffTo: handoffTo)
        _ = try await write { try await kv.delete(Self.key, lastRevision: revision, note: try encode(note)) }
    }

    private func write(_ body: () async throws -> UInt64) async throws(LeaseWriteError) -> UInt64 {
        do {
            return try await body()
        } catch let error as KeyValueError where error.code == .keyExists || error.code == .wrongLastRevision {
            throw .conflict
        } catch {
            throw .unavailable("\(error)")
        }
    }

    /// Watches the lease and turns KV entries into observations.
    public func watch() async throws -> LeaseWatch {
        LeaseWatch(watcher: try await kv.watch(Self.key))
    }
}

/// A lease write that did not go through.
public enum LeaseWriteError: Error, Sendable, Hashable {
    /// The compare-and-set lost.
    case conflict
    /// The outcome is unknown (timeout, disconnected, server error).
    case unavailable(String)

    /// The failure as the lifecycle takes it.
    public var failure: LeaseWriteFailure {
        switch self {
        case .conflict: .conflict
        case .unavailable(let reason): .unavailable(reason)
        }
    }
}

/// What a lease watch reports.
public enum LeaseWatchEvent: Sendable, Hashable {
    case observed(LeaseObservation)
    /// The current state was delivered (the key may be absent).
    case initialStateKnown
}

/// Lease observations from a KV watch, in order.
public struct LeaseWatch: AsyncSequence, Sendable {
    public typealias Element = LeaseWatchEvent
    let watcher: KeyValueWatcher

    /// Stops the watch.
    public func stop() async { await watcher.stop() }

    public func makeAsyncIterator() -> Iterator { Iterator(inner: watcher.makeAsyncIterator()) }

    /// Iterates observations.
    public struct Iterator: AsyncIteratorProtocol {
        var inner: KeyValueWatcher.Iterator
        var sawInitialValue = false

        public mutating func next() async throws -> LeaseWatchEvent? {
            while let event = try await inner.next() {
                switch event {
                case .initialValuesDone:
                    if !sawInitialValue {
                        sawInitialValue = true
                        return .observed(.free(handoffTo: nil))  // nothing stored: the lease is free
                    }
                    return .initialStateKnown
                case .entry(let entry):
                    sawInitialValue = true
                    switch entry.operation {
                    case .put:
                        guard let record = try? JSONDecoder().decode(LeaseRecord.self, from: Data(entry.value.readableBytesView)) else {
                            // A value Baton did not write: treat it as held by an unknown holder, so
                            // nobody acquires until it expires or is deleted.
                            return .observed(.held(LeaseHolder(node: "?", instance: "?"), revision: entry.revision, token: entry.revision))
                        }
                        let token = record.token == 0 ? entry.revision : record.token
                        return .observed(.held(LeaseHolder(node: record.node, instance: record.instance), revision: entry.revision, token: token))
                    case .delete, .purge:
                        let note = try? JSONDecoder().decode(LeaseRecord.self, from: Data(entry.value.readableBytesView))
                        return .observed(.free(handoffTo: note?.handoffTo))
                    }
                }
            }
            return nil
        }
    }
}
