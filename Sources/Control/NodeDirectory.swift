import BatonCore
import Foundation
import NATS
import NIOCore
import Timestamps

/// What the cluster's node directory keeps about a node after its registry entry is gone: its
/// last ``NodeRecord`` and, when it left gracefully, when.
///
/// The node registry (``NodeRecord/registryBucket(cluster:)``) only holds running instances:
/// an entry is deleted on a graceful exit and expires a few heartbeats after a crash. The
/// directory bucket `baton_<cluster>__seen` keeps one entry per node id for
/// ``NodeDirectory/retention`` after the node was last seen, so `batonctl nodes` can show a
/// node that stopped instead of silently dropping it. batond rewrites its entry at start,
/// every ``NodeDirectory/refreshEvery`` heartbeats and at a graceful exit; the server's time of
/// the latest write is when the node was last seen.
public struct NodeSighting: Codable, Sendable, Hashable {
    /// The instance's record (labels, version, start time, host).
    public var record: NodeRecord
    /// When the instance left gracefully (RFC 3339, UTC); nil while it runs, or after a crash.
    public var stopped: String?

    /// Creates a sighting.
    public init(record: NodeRecord, stopped: String? = nil) {
        self.record = record
        self.stopped = stopped
    }
}

/// One node as `batonctl nodes` shows it, merged from the node registry, the node directory
/// and the nodes' status answers by ``NodeOverview/merge(registry:directory:statuses:now:)``.
public struct NodeOverview: Codable, Sendable, Hashable {
    /// Whether the node runs and answers.
    public enum State: String, Codable, Sendable, Hashable {
        /// It answered the status request.
        case up
        /// It did not answer: its registry entry is live but its control service is silent,
        /// or its heartbeats stopped without a graceful exit (a crash, a freeze, a partition).
        case unresponsive
        /// It left gracefully (batond stopped) and did not come back.
        case stopped
    }

    /// What the registry or the directory says about a node, with the server's time of the
    /// write (seconds since 1970).
    public struct Seen: Sendable, Hashable {
        public var record: NodeRecord
        public var at: Double
        public var stopped: String?

        /// Creates a sighting as read.
        public init(record: NodeRecord, at: Double, stopped: String? = nil) {
            self.record = record
            self.at = at
            self.stopped = stopped
        }
    }

    public var node: String
    public var state: State
    /// Why the state is what it is, in words (`no heartbeat since ...`).
    public var detail: String?
    /// `node.labels` as the node last reported them (empty when its batond predates labels in
    /// the registry).
    public var labels: [String: String]
    /// The apps active on the node: those it reports active, or, when it does not answer,
    /// those another node reports it holding the lease of.
    public var activeApps: [String]
    public var version: String?
    public var hostname: String?
    /// When the running (or last) instance started, RFC 3339.
    public var started: String?
    /// Seconds since the instance started; nil when the node is not up.
    public var uptimeSeconds: Double?
    /// When the node was last seen alive (RFC 3339): its latest heartbeat or directory write.
    public var lastSeen: String?
    /// Whether the node is drained (`batonctl drain`): by whom, since and until when. Nil when
    /// not; filled in by ``DrainStore/activeDrains(jetStream:cluster:now:)`` readers.
    public var drained: String?

    enum CodingKeys: String, CodingKey {
        case node, state, detail, labels
        case activeApps = "active_apps"
        case version, hostname, started
        case uptimeSeconds = "uptime_seconds"
        case lastSeen = "last_seen"
    }

    /// Merges what was read into one overview per node id, sorted by node id. `now` is the
    /// wall-clock time of the reads (seconds since 1970). A node that answers is ``State/up``
    /// whatever else says; one with a live registry entry or a directory entry without a
    /// graceful exit that does not answer is ``State/unresponsive``; one whose directory entry
    /// records a graceful exit is ``State/stopped``.
    public static func merge(registry: [Seen], directory: [Seen], statuses: [NodeStatus], now: Double) -> [NodeOverview] {
        let live = Dictionary(registry.map { ($0.record.node, $0) }, uniquingKeysWith: { $0.at >= $1.at ? $0 : $1 })
        let known = Dictionary(directory.map { ($0.record.node, $0) }, uniquingKeysWith: { $0.at >= $1.at ? $0 : $1 })
        let answered = Dictionary(statuses.map { ($0.node, $0) }, uniquingKeysWith: { first, _ in first })
        var leaders: [String: Set<String>] = [:]
        for status in statuses {
            for app in status.apps {
                if let leader = app.leader { leaders[leader, default: []].insert(app.name) }
            }
        }
        let ids = Set(live.keys).union(known.keys).union(answered.keys)
        return ids.sorted().map { id in
            let seen = live[id] ?? known[id]
            let record = seen?.record
            var overview = NodeOverview(
                node: id, state: .unresponsive, labels: record?.labels ?? [:], activeApps: [], version: record?.version ?? answered[id]?.version,
                hostname: record?.hostname, started: record?.started, lastSeen: seen.map { rfc3339($0.at) })
            if let status = answered[id] {
                overview.state = .up
                overview.lastSeen = rfc3339(now)
                overview.version = status.version
                overview.activeApps = status.apps.filter { $0.role == .active }.map(\.name).sorted()
                if let started = record?.started, let since = parse(started), record?.instance == status.instance {
                    overview.uptimeSeconds = max(0, now - since)
                }
                if !status.natsConnected { overview.detail = "answers, but reports no NATS connection" }
                return overview
            }
            overview.activeApps = (leaders[id] ?? []).sorted()
            if live[id] != nil {
                overview.detail = "heartbeats, but its control service does not answer"
            } else if let entry = known[id], let stopped = entry.stopped {
                overview.state = .stopped
                overview.detail = "batond stopped at \(stopped)"
                overview.lastSeen = stopped
            } else if let entry = known[id] {
                overview.detail = "no heartbeat since about \(rfc3339(entry.at)) (crashed, frozen or cut off from NATS)"
            }
            return overview
        }
    }

    static func rfc3339(_ seconds: Double) -> String {
        RFC3339.format(secondsSince1970: seconds)
    }

    static func parse(_ text: String) -> Double? {
        RFC3339.parse(text)
    }
}

/// The node directory bucket (see ``NodeSighting``): written by batond's node registry, read by
/// `batonctl nodes` together with the registry.
public enum NodeDirectory {
    /// How long a node stays in the directory after it was last seen: a decommissioned node
    /// disappears from `batonctl nodes` after this.
    public static let retention: Duration = .seconds(7 * 24 * 3600)
    /// batond rewrites its directory entry every this many registry heartbeats (and at start
    /// and at a graceful exit), so a crashed node's last-seen time is right within that many
    /// heartbeat intervals.
    public static let refreshEvery = 10
    /// The bucket's `max_bytes`.
    static let maxBytes: Int64 = 16 << 20

    /// `baton_<cluster>__seen`: two underscores, like the registry, so it never collides with
    /// an app's lease bucket.
    public static func bucketName(cluster: String) -> String { "baton_\(cluster)__seen" }

    /// Opens (creating when missing) the directory bucket.
    public static func open(jetStream: JetStream, cluster: String, replicas: Int) async throws -> KeyValue {
        var config = KeyValueConfig(bucket: bucketName(cluster: cluster), history: 1, ttl: retention, replicas: replicas)
        config.description = "Baton node directory of cluster \(cluster): the last record of every node seen recently"
        config.maxBytes = maxBytes
        do {
            return try await jetStream.createKeyValue(config)
        } catch let error as KeyValueError where error.code == .bucketConfigConflict {
            return try await jetStream.keyValue(config.bucket)
        }
    }

    /// Writes `sighting` under its node id.
    public static func write(_ sighting: NodeSighting, to kv: KeyValue) async throws {
        _ = try await kv.put(sighting.record.node, value: ByteBuffer(bytes: try JSONEncoder().encode(sighting)))
    }

    /// Reads the registry's live entries and the directory's entries (either bucket may be
    /// missing: a cluster whose nodes predate it, or none ever started). Entries that are not
    /// records Baton wrote are skipped.
    public static func read(jetStream: JetStream, cluster: String) async throws -> (registry: [NodeOverview.Seen], directory: [NodeOverview.Seen]) {
        var registry: [NodeOverview.Seen] = []
        if let kv = try await bucket(jetStream, NodeRecord.registryBucket(cluster: cluster)) {
            for key in try await kv.keys() {
                guard let entry = try await kv.get(key), entry.operation == .put,
                    let record = try? JSONDecoder().decode(NodeRecord.self, from: Data(entry.value.readableBytesView))
                else { continue }
                registry.append(NodeOverview.Seen(record: record, at: entry.created.timeIntervalSince1970))
            }
        }
        var directory: [NodeOverview.Seen] = []
        if let kv = try await bucket(jetStream, bucketName(cluster: cluster)) {
            for key in try await kv.keys() {
                guard let entry = try await kv.get(key), entry.operation == .put,
                    let sighting = try? JSONDecoder().decode(NodeSighting.self, from: Data(entry.value.readableBytesView))
                else { continue }
                directory.append(NodeOverview.Seen(record: sighting.record, at: entry.created.timeIntervalSince1970, stopped: sighting.stopped))
            }
        }
        return (registry, directory)
    }

    private static func bucket(_ jetStream: JetStream, _ name: String) async throws -> KeyValue? {
        do {
            return try await jetStream.keyValue(name)
        } catch let error as KeyValueError where error.code == .bucketNotFound {
            return nil
        }
    }
}
