/// A batond instance's entry in the cluster's node registry (the value of its node id's key).
///
/// Every batond writes one at start, before it touches any app, and rewrites it every heartbeat
/// interval; a second batond with the same `node.id` finds it and refuses to start. `hostname`,
/// `bootID` and `pidNamespace` let a restart on the same host recognise the entry of its own
/// crashed predecessor (its `pid` is gone) and take it over at once.
public struct NodeRecord: Codable, Sendable, Hashable {
    /// The node id (`node.id`).
    public var node: String
    /// The instance id: unique per batond process (a NUID).
    public var instance: String
    public var hostname: String
    public var pid: Int32
    /// When the instance started, RFC 3339 (UTC).
    public var started: String
    /// The batond version.
    public var version: String
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`): a pid is only meaningful
    /// within one boot.
    public var bootID: String?
    /// The pid namespace (`/proc/self/ns/pid`): a pid is only meaningful within one namespace.
    public var pidNamespace: String?
    /// When this entry was written, on the node's wall clock (seconds since 1970): compared
    /// with the time the server stored it, it shows the node's clock offset (`batonctl doctor`).
    public var written: Double?
    /// The node's `node.labels`, for placement on the other nodes (nil from an older batond).
    public var labels: [String: String]?
    /// The node's `node.capacity`, for balancing on the other nodes (nil: 1).
    public var capacity: Int?

    enum CodingKeys: String, CodingKey {
        case node, instance, hostname, pid, started, version
        case bootID = "boot_id"
        case pidNamespace = "pid_ns"
        case written, labels, capacity
    }

    /// Creates a record.
    public init(
        node: String, instance: String, hostname: String, pid: Int32, started: String, version: String, bootID: String? = nil,
        pidNamespace: String? = nil, labels: [String: String]? = nil
    ) {
        self.node = node
        self.instance = instance
        self.hostname = hostname
        self.pid = pid
        self.started = started
        self.version = version
        self.bootID = bootID
        self.pidNamespace = pidNamespace
        self.labels = labels
    }

    /// Whether `other` ran on this same host, boot and pid namespace, so that its pid can be
    /// checked here.
    public func sharesProcessSpace(with other: NodeRecord) -> Bool {
        guard hostname == other.hostname, let bootID, let pidNamespace else { return false }
        return bootID == other.bootID && pidNamespace == other.pidNamespace
    }

    /// "instance X on host H (pid P, started T, batond V)".
    public var summary: String {
        "instance \(instance) on host \(hostname) (pid \(pid), started \(started), batond \(version))"
    }
}

/// What the registry key of a node id holds, as read.
public struct NodeRegistryEntry: Sendable, Hashable {
    /// The record; nil when the value is not a record Baton wrote.
    public var record: NodeRecord?
    /// The entry's revision.
    public var revision: UInt64

    /// Creates an entry.
    public init(record: NodeRecord?, revision: UInt64) {
        self.record = record
        self.revision = revision
    }
}

/// Decides, without I/O, how a starting batond claims its node id in the registry.
///
/// The adapter reads the key and feeds what it saw to ``observe(_:processAlive:)``, which
/// answers:
/// - ``Step/create``: the key is free (never written, deleted by a graceful exit, or expired).
/// - ``Step/replace(revision:)``: the entry is stale — its instance ran on this host and its
///   process is gone (a crash, then a restart), or it did not heartbeat within
///   ``heartbeatWait`` — so overwrite it with a compare-and-set on its revision.
/// - ``Step/recheck(after:)``: another instance's entry: read the key again after the wait.
///   If it was rewritten meanwhile, that instance is alive.
/// - ``Step/refuse(_:)``: another live instance uses this node id.
///
/// The decision needs no server-side expiry notice (NATS 2.9 expires keys silently, 2.11+ may
/// leave a marker) and no clock agreement with the server: liveness is a new revision seen
/// within a wait measured on this host. When a write of ours loses its compare-and-set, the
/// adapter reads the key and observes again.
public struct NodeClaim: Sendable {
    /// What to do next.
    public enum Step: Sendable, Hashable {
        case create
        case replace(revision: UInt64)
        case recheck(after: Duration)
        case refuse(NodeRecord)
    }

    /// This instance's record.
    public let me: NodeRecord
    /// How long to wait for another instance's next heartbeat: more than one heartbeat interval.
    public let heartbeatWait: Duration
    /// The revision of another instance's entry seen before the current wait.
    public private(set) var waitingOn: UInt64?

    /// Creates a claim for `me`.
    public init(me: NodeRecord, heartbeatWait: Duration) {
        self.me = me
        self.heartbeatWait = heartbeatWait
    }

    /// Feeds what the key holds (nil: nothing live — absent, deleted or expired).
    /// `processAlive` answers whether a pid of this host's pid namespace is still running; it is
    /// asked only for an entry written on this same host, boot and namespace.
    public mutating func observe(_ entry: NodeRegistryEntry?, processAlive: (Int32) -> Bool) -> Step {
        guard let entry else {
            waitingOn = nil
            return .create
        }
        if let record = entry.record, record.instance == me.instance {
            // Our own write, whose answer we missed.
            waitingOn = nil
            return .replace(revision: entry.revision)
        }
        if let waitingOn {
            self.waitingOn = nil
            if entry.revision == waitingOn {
                return .replace(revision: entry.revision)  // no heartbeat within the wait: stale
            }
            if let record = entry.record { return .refuse(record) }
            // Rewritten by something that is not a batond: wait for that one too.
        }
        if let record = entry.record, me.sharesProcessSpace(with: record), record.pid != me.pid, !processAlive(record.pid) {
            return .replace(revision: entry.revision)  // a crashed predecessor on this host
        }
        waitingOn = entry.revision
        return .recheck(after: heartbeatWait)
    }
}

/// What the periodic heartbeat of a registered instance learns when its compare-and-set fails,
/// and what it does about it.
public enum NodeHeartbeatConflict: Sendable, Hashable {
    /// The latest entry is our own earlier write (its answer was lost): go on from its revision.
    case ownWrite(revision: UInt64)
    /// The key is gone (expired during a long disconnect, or deleted): create it again.
    case recreate
    /// Another instance registered under this node id: a second batond runs with it.
    case duplicate(NodeRecord?)

    /// Classifies the entry read after a failed heartbeat write of `me`.
    public static func classify(_ entry: NodeRegistryEntry?, me: NodeRecord) -> NodeHeartbeatConflict {
        guard let entry else { return .recreate }
        if let record = entry.record, record.instance == me.instance { return .ownWrite(revision: entry.revision) }
        return .duplicate(entry.record)
    }
}

extension NodeRecord {
    /// The node registry bucket of a cluster. Two underscores: app names cannot contain one, so
    /// it never collides with an app's lease bucket `baton_<cluster>_<app>` (an app may be named
    /// `nodes`).
    public static func registryBucket(cluster: String) -> String { "baton_\(cluster)__nodes" }
}
