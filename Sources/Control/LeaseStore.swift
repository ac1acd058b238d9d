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

/// One app's lease in NATS KV: bucket `baton_<cluster>_<app>` (history ``history``), key `leader`.
/// Acquire is a create (or an update over the stale revision a passive node waited out), renew
/// an update on the last revision, release a delete on the last revision — all compare-and-set,
/// so two nodes can never both succeed. The bucket's TTL only collects garbage: no node relies
/// on a key expiring, and it never shrinks (see ``open(jetStream:cluster:app:ttl:replicas:floor:logger:)``).
///
/// Fencing tokens never go backwards: every store has a ``TokenFloor``; a bucket whose last
/// sequence is below it (deleted and recreated, or restored) is moved past it before any acquire,
/// a bucket deleted under a running node is recreated (floor first) when the watch finds it gone,
/// and an acquire that still lands at or below the floor is redone above it.
public struct LeaseStore: Sendable {
    /// The key holding the lease.
    public static let key = "leader"
    public let kv: KeyValue
    public let app: String
    /// The highest token (durable) and revision (in memory) this node has seen for the app.
    public let floor: TokenFloor
    /// The bucket's config, to create it again when it is gone; nil for a store that only
    /// reads (``init(kv:app:)``).
    private let config: KeyValueConfig?
    private let logger: Logger?

    /// A store over a bound bucket that never creates it again (for watchers such as batonctl).
    public init(kv: KeyValue, app: String) {
        self.init(kv: kv, app: app, floor: TokenFloor(), config: nil, logger: nil)
    }

    private init(kv: KeyValue, app: String, floor: TokenFloor, config: KeyValueConfig?, logger: Logger?) {
        self.kv = kv
        self.app = app
        self.floor = floor
        self.config = config
        self.logger = logger
    }

    /// How many revisions of the key the bucket keeps. More than one, so that an acquisition
    /// can check it was the write that directly followed the revision it was conditioned on
    /// (see ``acquire(as:ttl:replacing:)``): with one, the earlier of two writes is gone by the
    /// time the later one is acknowledged.
    public static let history = 4

    /// The lease bucket's `max_bytes`. JetStream reserves it on the server, which keeps room for
    /// the lease's writes however full other (limited) streams get.
    public static let maxBytes: Int64 = 1 << 20

    /// The bucket name for an app of a cluster.
    public static func bucketName(cluster: String, app: String) -> String { "baton_\(cluster)_\(app)" }

    /// Creates or binds the app's lease bucket, and moves it past `floor` when its last sequence
    /// is below it (see ``applyFloor()``).
    ///
    /// The bucket's TTL (max_age) only ever grows: a bucket whose TTL is shorter than `ttl` is
    /// raised to it; a longer one is kept, because another node (or this node before a config
    /// change) may hold the lease under a longer ttl, and a shorter max_age would make its key
    /// expire under it. The history likewise only grows (at least ``history``). Other
    /// differences (replicas, description) are updated in place.
    public static func open(
        jetStream: JetStream, cluster: String, app: String, ttl: Duration, replicas: Int, floor: TokenFloor = TokenFloor(), logger: Logger? = nil
    ) async throws -> LeaseStore {
        var config = KeyValueConfig(bucket: bucketName(cluster: cluster, app: app), history: history, ttl: ttl, replicas: replicas)
        config.description = "Baton lease of app \(app) in cluster \(cluster)"
        // Reserved on the server (a few records need a few KiB), so streams without limits
        // cannot take the space a renew needs.
        config.maxBytes = maxBytes
        let kv = try await bind(jetStream: jetStream, config: config, app: app, logger: logger)
        let store = LeaseStore(kv: kv, app: app, floor: floor, config: config, logger: logger)
        try await store.applyFloor()
        return store
    }

    private static func bind(jetStream: JetStream, config: KeyValueConfig, app: String, logger: Logger?) async throws -> KeyValue {
        do {
            return try await jetStream.createKeyValue(config)
        } catch let error as KeyValueError where error.code == .bucketConfigConflict {
            var wanted = config.streamConfig
            let existing = try await jetStream.streamInfo(wanted.name).config
            if let current = existing.maxAge, let ttl = config.ttl, current > ttl {
                wanted.maxAge = current
                logger?.notice(
                    "the lease bucket keeps its longer TTL: another node may hold the lease under a longer ttl",
                    metadata: ["app": "\(app)", "bucket_ttl": "\(current.configString)", "config_ttl": "\(ttl.configString)"])
            }
            if let current = existing.maxMessagesPerSubject, let mine = wanted.maxMessagesPerSubject, current > mine {
                wanted.maxMessagesPerSubject = current
            }
            if wanted != existing {
                _ = try await jetStream.updateStream(wanted)
            }
            return try await jetStream.keyValue(config.bucket)
        }
    }

    /// Moves the bucket past the floor: when the stream's last sequence is below the highest
    /// token or revision this node has seen (the bucket was deleted and recreated, or restored
    /// from an old backup), purges it with `seq` = floor + 1. A JetStream purge whose `seq` is
    /// above the last sequence empties the stream and makes `seq` its first sequence, so the
    /// next write — the next acquire — gets at least that revision (checked on nats-server
    /// 2.9.10 and 2.15.1, file and memory storage). A purge only removes what lies below the
    /// floor, which no live lease can be: every write after the floor was applied is above it.
    public func applyFloor() async throws {
        let highest = floor.highest
        guard highest > 0 else { return }
        let state = try await kv.jetStream.streamInfo(kv.streamName).state
        guard state.lastSequence < highest else { return }
        _ = try await kv.jetStream.purgeStream(kv.streamName, upToSequence: highest + 1)
        logger?.warning(
            "the lease bucket was behind this node's token floor (deleted and recreated?): moved it past the floor, so tokens keep growing",
            metadata: ["app": "\(app)", "bucket_last_revision": "\(state.lastSequence)", "floor": "\(highest)"])
    }

    /// Creates the bucket again when it is gone (its stream was deleted under a running
    /// cluster), binds it otherwise, then applies the floor.
    public func recreateIfMissing() async throws {
        do {
            _ = try await kv.jetStream.streamInfo(kv.streamName)
        } catch let error as JetStreamAPIError where error.errorCode == .streamNotFound {
            guard let config else { throw error }
            logger?.warning("the lease bucket is gone; creating it again", metadata: ["app": "\(app)", "bucket": "\(config.bucket)"])
            _ = try await Self.bind(jetStream: kv.jetStream, config: config, app: app, logger: logger)
        }
        try await applyFloor()
    }

    /// The record as JSON with its keys sorted: a renew then writes the same bytes every time,
    /// which lets every watcher skip decoding it again (``LeaseWatch``).
    private func encode(_ record: LeaseRecord) throws -> ByteBuffer {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return ByteBuffer(bytes: try encoder.encode(record))
    }

    /// Tries to take the lease, holding it for `ttl` per write. With `replacing`, over the stale
    /// entry at that revision (the caller waited out its holder's ttl); if that entry is gone
    /// meanwhile (expired or deleted), by creating the key. Returns the new revision (the fencing
    /// token), always above the ``floor``; the floor is on disk before this returns.
    ///
    /// Before it returns, the acquisition is checked against the stream: the first entry of the
    /// key after the revision the write was conditioned on must be this write. A clustered
    /// nats-server that lets two compare-and-sets with the same expectation both pass (2.9.x,
    /// nats-server #4320) stores them one after the other; the later writer finds the earlier
    /// one there and gets ``LeaseWriteError/conflict`` instead of a second lease. The leader
    /// answers the read from its applied state, which holds both writes once it has
    /// acknowledged the later one.
    public func acquire(as holder: LeaseHolder, ttl: Duration? = nil, replacing: UInt64? = nil) async throws(LeaseWriteError) -> UInt64 {
        let record = LeaseRecord(node: holder.node, instance: holder.instance, token: 0, ttl: ttl)
        // The floor as it was before this write: the watch notes this node's own write as soon
        // as it is stored, which must not make the write look "below the floor".
        let highest = floor.highest
        let write = try await self.write(record, replacing: replacing)
        if write.revision <= highest {
            try await writeLandedAtOrBelowTheFloor(write.revision, floor: highest)
        }
        let token = write.revision
        do {
            try await floor.raise(to: token)
        } catch {
            throw .unavailable("cannot keep the token floor: \(error)")
        }
        try await verifyAcquisition(revision: token, after: write.after)
        return token
    }

    /// The acquiring write got a revision at or below a token or revision this node saw
    /// before. If the stream is behind the floor, the bucket was deleted and recreated without
    /// this node noticing: it is moved past the floor (a purge below floor + 1, which removes this
    /// write and anything older) and the acquisition gives up for now (`unavailable`: the
    /// lifecycle waits a ttl), so that a node that took the lease in the recreated bucket below
    /// the floor — its entry is gone with the purge — fences before this node takes the lease.
    /// Otherwise the stream is ahead: a later write superseded this one (a conflict).
    private func writeLandedAtOrBelowTheFloor(_ revision: UInt64, floor highest: UInt64) async throws(LeaseWriteError) -> Never {
        let lastSequence: UInt64
        do {
            lastSequence = try await kv.jetStream.streamInfo(kv.streamName).state.lastSequence
        } catch {
            throw .unavailable("acquired at revision \(revision), at or below the token floor \(highest), and could not read the bucket: \(error)")
        }
        guard lastSequence < highest else {
            logger?.notice(
                "the acquiring write was superseded: a later revision of the lease was already seen",
                metadata: ["app": "\(app)", "revision": "\(revision)", "floor": "\(highest)"])
            throw .conflict
        }
        logger?.warning(
            "acquired at a revision below the token floor (the bucket was recreated); moving it past the floor and trying again after a ttl",
            metadata: ["app": "\(app)", "revision": "\(revision)", "floor": "\(highest)"])
        do {
            _ = try await kv.jetStream.purgeStream(kv.streamName, upToSequence: highest + 1)
        } catch {
            throw .unavailable("cannot move the lease bucket past the token floor \(highest): \(error)")
        }
        throw .unavailable("the lease bucket was behind the token floor \(highest) (recreated); moved it past the floor")
    }

    /// Checks that the write at `revision`, conditioned on the key being at `after`, is the
    /// first entry of the key after `after`; throws ``LeaseWriteError/conflict`` when another
    /// write got there first (the server let both compare-and-sets pass).
    func verifyAcquisition(revision: UInt64, after: UInt64) async throws(LeaseWriteError) {
        let first: UInt64?
        do {
            first = try await kv.firstRevision(of: Self.key, after: after)
        } catch {
            throw .unavailable("acquired at revision \(revision) but could not check the acquisition: \(error)")
        }
        guard first == revision else {
            logger?.error(
                "NATS accepted two acquisitions of the lease: this node's compare-and-set over revision \(after) passed, but revision \(first.map(String.init) ?? "none") got there first; not taking the lease (a nats-server that lets two compare-and-sets pass: 2.9.x clusters, nats-server #4320)",
                metadata: ["app": "\(app)", "revision": "\(revision)"])
            throw .conflict
        }
    }

    private func write(_ record: LeaseRecord, replacing: UInt64?) async throws(LeaseWriteError) -> (revision: UInt64, after: UInt64) {
        if let replacing {
            do {
                return (try await kv.update(Self.key, value: try encode(record), revision: replacing), replacing)
            } catch let error as KeyValueError where error.code == .wrongLastRevision {
                // Renewed (then create fails too), or gone: try a create.
            } catch {
                throw .unavailable("\(error)")
            }
        }
        do {
            return try await kv.createConditioned(Self.key, value: try encode(record))
        } catch let error as KeyValueError where error.code == .keyExists || error.code == .wrongLastRevision {
            throw .conflict
        } catch {
            throw .unavailable("\(error)")
        }
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
            let renewed = try await write { try await kv.update(Self.key, value: try encode(record), revision: revision) }
            floor.noteRevision(renewed)
            return .renewed(renewed)
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
        floor.noteRevision(try await write { try await kv.delete(Self.key, lastRevision: revision, note: try encode(note)) })
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

    /// Watches the lease and turns KV entries into observations. The watch's heartbeats come
    /// every second, so a bucket deleted under it is noticed within a few seconds; a bucket that
    /// is gone is created again (floor first) before the watch starts.
    public func watch() async throws -> LeaseWatch {
        let options = KeyValueWatchOptions(idleHeartbeat: .seconds(1))
        do {
            return LeaseWatch(watcher: try await kv.watch(Self.key, options: options), floor: floor)
        } catch let error as JetStreamAPIError where error.errorCode == .streamNotFound && config != nil {
            try await recreateIfMissing()
            return LeaseWatch(watcher: try await kv.watch(Self.key, options: options), floor: floor)
        }
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
}

/// Lease observations from a KV watch, in order. Every token and revision seen raises the
/// ``TokenFloor``.
public struct LeaseWatch: AsyncSequence, Sendable {
    public typealias Element = LeaseWatchEvent
    let watcher: KeyValueWatcher
    let floor: TokenFloor

    init(watcher: KeyValueWatcher, floor: TokenFloor = TokenFloor()) {
        self.watcher = watcher
        self.floor = floor
    }

    /// Stops the watch.
    public func stop() async { await watcher.stop() }

    public func makeAsyncIterator() -> Iterator { Iterator(inner: watcher.makeAsyncIterator(), floor: floor) }

    /// Iterates observations.
    public struct Iterator: AsyncIteratorProtocol {
        var inner: KeyValueWatcher.Iterator
        let floor: TokenFloor
        var sawInitialValue = false
        /// The last value put and its record: a renew writes the same bytes every time, so a
        /// passive node decodes each holder's record once, not once per renew.
        var lastPut: (value: ByteBuffer, record: LeaseRecord)?

        public mutating func next() async throws -> LeaseWatchEvent? {
            while let event = try await inner.next() {
                switch event {
                case .initialValuesDone:
                    if !sawInitialValue {
                        sawInitialValue = true
                        // Nothing stored. Whether a holder must still be waited out (the bucket
                        // was deleted and recreated under it) is the lifecycle's call.
                        return .observed(.vanished)
                    }
                    continue
                case .entry(let entry):
                    sawInitialValue = true
                    floor.noteRevision(entry.revision)
                    switch entry.operation {
                    case .put:
                        let decoded: LeaseRecord?
                        if let lastPut, lastPut.value == entry.value {
                            decoded = lastPut.record
                        } else {
                            decoded = try? JSONDecoder().decode(LeaseRecord.self, from: Data(entry.value.readableBytesView))
                            lastPut = decoded.map { (entry.value, $0) }
                        }
                        guard let record = decoded else {
                            // A value Baton did not write: treat it as held by an unknown holder, so
                            // nobody acquires until it expires or is deleted.
                            return .observed(.held(LeaseHolder(node: "?", instance: "?"), revision: entry.revision, token: entry.revision))
                        }
                        let token = record.token == 0 ? entry.revision : record.token
                        // Best effort: a floor that cannot be written now is written by the
                        // next acquire, which fails rather than hand out a token not on disk.
                        try? await floor.raise(to: token)
                        return .observed(
                            .held(LeaseHolder(node: record.node, instance: record.instance), revision: entry.revision, token: token, ttl: record.ttl))
                    case .delete, .purge:
                        // A release by Baton carries a note naming the holder and the token it
                        // releases; a delete without one (`nats kv del`, an expiry marker) frees
                        // nothing by itself.
                        guard let note = try? JSONDecoder().decode(LeaseRecord.self, from: Data(entry.value.readableBytesView)), note.token > 0 else {
                            return .observed(.vanished)
                        }
                        try? await floor.raise(to: note.token)
                        return .observed(.released(LeaseHolder(node: note.node, instance: note.instance), token: note.token, handoffTo: note.handoffTo))
                    }
                }
            }
            return nil
        }
    }
}
