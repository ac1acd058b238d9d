import BatonCore
import Foundation
import Logging
import NATS
import NIOCore

/// The value of an app's `leader` key.
///
/// `token` is the fencing token: the revision of the write that acquired the lease. The
/// acquiring write cannot know its own revision, so it writes 0 and every renew writes the real
/// token; readers take the entry's revision when they see 0. `ttlMilliseconds` is the holder's
/// lease ttl: every node judges the lease by it, so a node whose config says otherwise (a rolling
/// ttl change) never takes a lease early. `handoffTo` is set by the last write of a switchover,
/// just before the release, so that other nodes let the target go first.
public struct LeaseRecord: Codable, Sendable, Hashable {
    public var node: String
    public var instance: String
    public var token: UInt64
    public var ttlMilliseconds: UInt64?
    public var handoffTo: String?

    enum CodingKeys: String, CodingKey {
        case node, instance, token
        case ttlMilliseconds = "ttl_ms"
        case handoffTo = "handoff_to"
    }

    /// Creates a record.
    public init(node: String, instance: String, token: UInt64, ttl: Duration? = nil, handoffTo: String? = nil) {
        self.node = node
        self.instance = instance
        self.token = token
        self.ttlMilliseconds = ttl.map { UInt64(max(0, $0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000)) }
        self.handoffTo = handoffTo
    }

    /// The holder's ttl, when the record says.
    public var ttl: Duration? { ttlMilliseconds.map { .milliseconds(Int64(clamping: $0)) } }
}

/// How a renew went through.
public enum LeaseRenewal: Sendable, Hashable {
    /// This write went through at the revision.
    case renewed(UInt64)
    /// This write lost the compare-and-set to an earlier renew of this same holder and token
    /// that the caller saw time out (it reached NATS after all): the lease is still the
    /// holder's, at the revision.
    case recognized(UInt64)
}

/// One app's lease in NATS KV: bucket `baton_<cluster>_<app>` (history 1), key `leader`.
/// Acquire is a create (or an update over the stale revision a passive node waited out), renew
/// an update on the last revision, release a delete on the last revision — all compare-and-set,
/// so two nodes can never both succeed. The bucket's TTL only collects garbage: no node relies
/// on a key expiring, and it never shrinks (see ``open(jetStream:cluster:app:ttl:replicas:logger:)``).
public struct LeaseStore: Sendable {
    /// The key holding the lease.
    public static let key = "leader"
    public let kv: KeyValue
    public let app: String

    /// The bucket name for an app of a cluster.
    public static func bucketName(cluster: String, app: String) -> String { "baton_\(cluster)_\(app)" }

    /// Creates or binds the app's lease bucket.
    ///
    /// The bucket's TTL (max_age) only ever grows: a bucket whose TTL is shorter than `ttl` is
    /// raised to it; a longer one is kept, because another node (or this node before a config
    /// change) may hold the lease under a longer ttl, and a shorter max_age would make its key
    /// expire under it. Other differences (replicas, description) are updated in place.
    public static func open(
        jetStream: JetStream, cluster: String, app: String, ttl: Duration, replicas: Int, logger: Logger? = nil
    ) async throws -> LeaseStore {
        var config = KeyValueConfig(bucket: bucketName(cluster: cluster, app: app), history: 1, ttl: ttl, replicas: replicas)
        config.description = "Baton lease of app \(app) in cluster \(cluster)"
        do {
            return LeaseStore(kv: try await jetStream.createKeyValue(config), app: app)
        } catch let error as KeyValueError where error.code == .bucketConfigConflict {
            var wanted = config.streamConfig
            let existing = try await jetStream.streamInfo(wanted.name).config
            if let current = existing.maxAge, current > ttl {
                wanted.maxAge = current
                logger?.notice(
                    "the lease bucket keeps its longer TTL: another node may hold the lease under a longer ttl",
                    metadata: ["app": "\(app)", "bucket_ttl": "\(current.configString)", "config_ttl": "\(ttl.configString)"])
            }
            if wanted != existing {
                _ = try await jetStream.updateStream(wanted)
            }
            return LeaseStore(kv: try await jetStream.keyValue(config.bucket), app: app)
        }
    }

    private func encode(_ record: LeaseRecord) throws -> ByteBuffer {
        ByteBuffer(bytes: try JSONEncoder().encode(record))
    }

    /// Tries to take the lease, holding it for `ttl` per write. With `replacing`, over the stale
    /// entry at that revision (the caller waited out its holder's ttl); if that entry is gone
    /// meanwhile (expired or deleted), by creating the key. Returns the new revision (the fencing
    /// token).
    public func acquire(as holder: LeaseHolder, ttl: Duration? = nil, replacing: UInt64? = nil) async throws(LeaseWriteError) -> UInt64 {
        let record = LeaseRecord(node: holder.node, instance: holder.instance, token: 0, ttl: ttl)
        if let replacing {
            do {
                return try await kv.update(Self.key, value: try encode(record), revision: replacing)
            } catch let error as KeyValueError where error.code == .wrongLastRevision {
                // Renewed (then create fails too), or gone: try a create.
            } catch {
                throw .unavailable("\(error)")
            }
        }
        return try await write { try await kv.create(Self.key, value: try encode(record)) }
    }

    /// Renews a held lease at `revision`.
    ///
    /// Renews are idempotent: when the compare-and-set fails because the latest entry is this
    /// holder's own write under the same token (an earlier renew that timed out for the caller
    /// but reached the server, say during a NATS stall), the answer is
    /// ``LeaseRenewal/recognized(_:)`` with that revision, not a conflict.
    public func renew(as holder: LeaseHolder, token: UInt64, ttl: Duration? = nil, revision: UInt64) async throws(LeaseWriteError) -> LeaseRenewal {
        let record = LeaseRecord(node: holder.node, instance: holder.instance, token: token, ttl: ttl)
        do {
            return .renewed(try await write { try await kv.update(Self.key, value: try encode(record), revision: revision) })
        } catch .conflict {
            let entry: KeyValueEntry?
            do {
                entry = try await kv.entry(Self.key)
            } catch {
                throw .unavailable("the renew lost the compare-and-set and the lease could not be read: \(error)")
            }
            guard let entry, entry.operation == .put, entry.revision > revision,
                let current = try? JSONDecoder().decode(LeaseRecord.self, from: Data(entry.value.readableBytesView)),
                current.node == holder.node, current.instance == holder.instance, current.token == token
            else { throw .conflict }
            return .recognized(entry.revision)
        }
    }

    /// Gives the lease up if `revision` is still the latest. A switchover's target travels in
    /// the delete marker itself, so every watcher sees it even if it missed earlier writes.
    public func release(as holder: LeaseHolder, token: UInt64, ttl: Duration? = nil, revision: UInt64, handoffTo: String?) async throws(LeaseWriteError) {
        let note = LeaseRecord(node: holder.node, instance: holder.instance, token: token, ttl: ttl, handoffTo: handoffTo)
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
                        return .observed(
                            .held(LeaseHolder(node: record.node, instance: record.instance), revision: entry.revision, token: token, ttl: record.ttl))
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
