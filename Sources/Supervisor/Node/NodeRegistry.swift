import Backends
import BatonCore
import Control
import Foundation
import Logging
import NATS
import NIOCore
import Timestamps

#if canImport(Glibc)
import Glibc
#endif

/// Another live batond uses this node id: the starting one refuses to run.
public struct NodeRegistrationRefused: Error, Sendable, CustomStringConvertible {
    /// The node id in question.
    public var node: String
    /// The other instance.
    public var other: NodeRecord
    /// How long this instance watched for the other's heartbeat.
    public var heartbeatWait: Duration

    public var description: String {
        "node id \"\(node)\" is already in use by a running batond: \(other.summary), whose last heartbeat came within the last "
            + "\(heartbeatWait.configString). node.id must be unique per host: give this host its own node.id in its config, "
            + "or stop the other batond first. This batond touched no app and exits."
    }
}

/// The cluster's node registry in NATS KV: bucket `baton_<cluster>__nodes` (history 1, a TTL of
/// a few heartbeat intervals), one key per node id holding the running instance's
/// ``NodeRecord``.
///
/// batond registers before it touches any app (``register(jetStream:cluster:me:heartbeatInterval:replicas:logger:)``
/// refuses when another live instance holds the node id), rewrites its entry every heartbeat
/// interval with a compare-and-set on its own revision (``runHeartbeats(onDuplicate:)``), and
/// deletes it on a graceful exit (``deregister()``). A crashed instance's entry expires with the
/// bucket's TTL; before that, a restart on the same host takes it over at once (its pid is
/// gone), and one elsewhere after waiting ``heartbeatWait`` for a heartbeat that never comes.
/// Nothing relies on expiry notices, so NATS 2.9 (silent expiry) and 2.11+ behave alike.
public actor NodeRegistry {
    /// This instance's record.
    public nonisolated let me: NodeRecord
    /// How often the entry is rewritten.
    public nonisolated let heartbeatInterval: Duration
    private var kv: KeyValue
    private let jetStream: JetStream
    private let cluster: String
    private let replicas: Int
    private let logger: Logger
    /// The revision of our latest write; nil once another instance took the key over (or after
    /// the deregistration).
    private var revision: UInt64?
    private var unavailableSince: MonotonicInstant?
    /// The node directory (``NodeDirectory``); nil until it could be opened.
    private var directory: KeyValue?
    private var heartbeatsSinceSighting = 0

    /// The heartbeat interval batond uses.
    public static let defaultHeartbeatInterval: Duration = .seconds(1)

    /// The registry bucket of a cluster (``NodeRecord/registryBucket(cluster:)``).
    public static func bucketName(cluster: String) -> String { NodeRecord.registryBucket(cluster: cluster) }

    /// How long a starting instance waits for another instance's next heartbeat.
    public static func heartbeatWait(interval: Duration) -> Duration { interval * 2.5 }

    /// The bucket TTL: a crashed instance's entry is gone after this.
    public static func bucketTTL(interval: Duration) -> Duration { interval * 5 }

    private init(
        kv: KeyValue, jetStream: JetStream, cluster: String, me: NodeRecord, heartbeatInterval: Duration, replicas: Int, revision: UInt64,
        logger: Logger
    ) {
        self.kv = kv
        self.jetStream = jetStream
        self.cluster = cluster
        self.me = me
        self.heartbeatInterval = heartbeatInterval
        self.replicas = replicas
        self.revision = revision
        self.logger = logger
    }

    /// Claims `me.node` in the registry: creates the entry, takes over a stale one, or throws
    /// ``NodeRegistrationRefused`` when another live instance holds it. Other errors (NATS
    /// unavailable) are thrown as they come.
    public static func register(
        jetStream: JetStream, cluster: String, me: NodeRecord, heartbeatInterval: Duration = defaultHeartbeatInterval, replicas: Int,
        logger: Logger
    ) async throws -> NodeRegistry {
        let kv = try await openBucket(jetStream: jetStream, cluster: cluster, interval: heartbeatInterval, replicas: replicas)
        var claim = NodeClaim(me: me, heartbeatWait: heartbeatWait(interval: heartbeatInterval))
        let value = try encode(me)
        for _ in 0..<20 {
            let entry = try await read(kv, me.node)
            let step = claim.observe(entry, processAlive: processAlive)
            var written: UInt64?
            switch step {
            case .create:
                written = try await attempt { try await kv.create(me.node, value: value) }
            case .replace(let revision):
                if let stale = entry?.record, stale.instance != me.instance {
                    logger.notice("taking over the node registry entry of a stale instance", metadata: ["previous": "\(stale.summary)"])
                }
                written = try await attempt { try await kv.update(me.node, value: value, revision: revision) }
            case .recheck(let wait):
                logger.notice(
                    "another instance is registered under this node id; waiting for its heartbeat",
                    metadata: ["wait": "\(wait.configString)"])
                try await Task.sleep(for: wait)
            case .refuse(let other):
                throw NodeRegistrationRefused(node: me.node, other: other, heartbeatWait: claim.heartbeatWait)
            }
            if let written {
                logger.info("registered in the node registry", metadata: ["instance": "\(me.instance)", "revision": "\(written)"])
                let registry = NodeRegistry(
                    kv: kv, jetStream: jetStream, cluster: cluster, me: me, heartbeatInterval: heartbeatInterval, replicas: replicas,
                    revision: written, logger: logger)
                await registry.writeSighting()
                return registry
            }
        }
        throw KeyValueError(.wrongLastRevision, "the node registry entry of \(me.node) kept changing under this instance's writes")
    }

    /// Rewrites the entry every heartbeat interval until the task is cancelled or another
    /// instance takes the node id over; then `onDuplicate` is called once with that instance's
    /// record (nil when its value is not a record Baton wrote) and the heartbeats stop.
    public func runHeartbeats(onDuplicate: @Sendable (NodeRecord?) async -> Void) async {
        while !Task.isCancelled {
            // On the wall clock's whole intervals, like every other node's heartbeats: they reach
            // the other nodes' registry watches together.
            let delay = WallClockGrid.delay(toNextMultipleOf: heartbeatInterval, wallClock: MonotonicClock.wallClockNanoseconds())
            do { try await Task.sleep(for: delay) } catch { return }
            if let other = await heartbeat() {
                let message =
                    "another batond took over this node id in the node registry: two instances run as node \(me.node); every app of this one "
                    + "refuses to take a lease until it is restarted. node.id must be unique per host"
                logger.critical("\(message)", metadata: ["other": "\(other.map(\.summary) ?? "a value Baton did not write")"])
                await onDuplicate(other)
                return
            }
        }
    }

    /// One heartbeat write; returns the other instance when one holds the key now.
    func heartbeat() async -> NodeRecord?? {
        guard let current = revision else { return nil }
        do {
            let value = try Self.encode(me)
            do {
                revision = try await kv.update(me.node, value: value, revision: current)
            } catch let error as KeyValueError where error.code == .wrongLastRevision {
                switch NodeHeartbeatConflict.classify(try await Self.read(kv, me.node), me: me) {
                case .ownWrite(let landed):
                    revision = landed
                case .recreate:
                    logger.warning("the node registry entry was gone (expired or deleted); registering again")
                    revision = try await kv.create(me.node, value: value)
                case .duplicate(let other):
                    revision = nil
                    return .some(other)
                }
            }
            if unavailableSince != nil { logger.info("node registry heartbeats go through again") }
            unavailableSince = nil
            heartbeatsSinceSighting += 1
            if heartbeatsSinceSighting >= NodeDirectory.refreshEvery { await writeSighting() }
        } catch {
            if unavailableSince == nil {
                unavailableSince = MonotonicClock.now()
                logger.warning("node registry heartbeat failed; retrying", metadata: ["error": "\(error)"])
            }
            // The bucket may have been deleted (or the server's storage lost): bind it afresh.
            if let reopened = try? await Self.openBucket(jetStream: jetStream, cluster: cluster, interval: heartbeatInterval, replicas: replicas) {
                kv = reopened
            }
        }
        return nil
    }

    /// Writes this instance's entry in the node directory (at start, every
    /// ``NodeDirectory/refreshEvery`` heartbeats, and with `stopped` at a graceful exit). A
    /// failure is logged and retried at the next refresh: the directory only feeds `batonctl
    /// nodes`, never a decision.
    func writeSighting(stopped: String? = nil) async {
        heartbeatsSinceSighting = 0
        do {
            if directory == nil { directory = try await NodeDirectory.open(jetStream: jetStream, cluster: cluster, replicas: replicas) }
            if let directory { try await NodeDirectory.write(NodeSighting(record: me, stopped: stopped), to: directory) }
        } catch {
            directory = nil
            logger.debug("could not write the node directory entry; retrying later", metadata: ["error": "\(error)"])
        }
    }

    /// Deletes the entry if it is still ours (graceful exit): a new instance then starts at once.
    /// The node directory records the exit.
    public func deregister() async {
        guard let current = revision else { return }
        revision = nil
        await writeSighting(stopped: RFC3339.format(secondsSince1970: Date().timeIntervalSince1970))
        do {
            _ = try await kv.delete(me.node, lastRevision: current)
            logger.info("left the node registry")
        } catch {
            logger.warning("could not delete the node registry entry; it expires", metadata: ["error": "\(error)"])
        }
    }

    /// The revision of this instance's latest write (nil when it no longer holds the key).
    public var currentRevision: UInt64? { revision }

    // MARK: - Helpers

    /// The registry bucket's `max_bytes`: room for thousands of nodes' entries.
    static let maxBytes: Int64 = 16 << 20

    static func openBucket(jetStream: JetStream, cluster: String, interval: Duration, replicas: Int) async throws -> KeyValue {
        var config = KeyValueConfig(bucket: bucketName(cluster: cluster), history: 1, ttl: bucketTTL(interval: interval), replicas: replicas)
        config.description = "Baton node registry of cluster \(cluster): one entry per running batond"
        // Reserved on the server, so streams without limits cannot take its space.
        config.maxBytes = maxBytes
        do {
            return try await jetStream.createKeyValue(config)
        } catch let error as KeyValueError where error.code == .bucketConfigConflict {
            var existing = try await jetStream.streamInfo(config.streamConfig.name).config
            if existing.maxBytes != config.streamConfig.maxBytes {
                existing.maxBytes = config.streamConfig.maxBytes
                _ = try await jetStream.updateStream(existing)
            }
            return try await jetStream.keyValue(config.bucket)
        }
    }

    static func read(_ kv: KeyValue, _ key: String) async throws -> NodeRegistryEntry? {
        guard let entry = try await kv.get(key) else { return nil }
        let record = try? JSONDecoder().decode(NodeRecord.self, from: Data(entry.value.readableBytesView))
        return NodeRegistryEntry(record: record, revision: entry.revision)
    }

    private static func encode(_ record: NodeRecord) throws -> ByteBuffer {
        var record = record
        record.written = Date().timeIntervalSince1970
        return ByteBuffer(bytes: try JSONEncoder().encode(record))
    }

    /// Runs a compare-and-set write; nil when it lost.
    private static func attempt(_ body: () async throws -> UInt64) async throws -> UInt64? {
        do {
            return try await body()
        } catch let error as KeyValueError where error.code == .keyExists || error.code == .wrongLastRevision {
            return nil
        }
    }

    /// Whether a batond of this pid namespace may run with `pid`: the pid exists and, when its
    /// command name can be read, it is a batond (otherwise the pid was reused after a crash).
    @Sendable static func processAlive(_ pid: Int32) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8) else { return true }
        return comm.contains("batond")
    }
}
