/// A drained node: it takes no app and hands its apps over by switchover (`batonctl drain`).
///
/// Stored in the cluster's drain bucket (``bucket(cluster:)``, one key per node id, no TTL), so
/// that a drain survives batond restarts; `batonctl undrain` deletes the key. A drain with an
/// ``until`` time ends by itself then: every node compares it with its own wall clock.
public struct DrainRecord: Codable, Sendable, Hashable {
    /// The drained node.
    public var node: String
    /// When the drain was asked for, seconds since 1970 (UTC).
    public var since: Double
    /// When the drain ends by itself, seconds since 1970 (UTC); nil: until `batonctl undrain`.
    public var until: Double?
    /// Who asked (`user@host`, as batonctl tells the nodes).
    public var by: String

    /// Creates a record.
    public init(node: String, since: Double, until: Double? = nil, by: String) {
        self.node = node
        self.since = since
        self.until = until
        self.by = by
    }

    /// Whether the drain is in force at wall-clock time `now` (seconds since 1970).
    public func isActive(at now: Double) -> Bool {
        until.map { now < $0 } ?? true
    }

    /// `drained by alice@ops since T until U` with the times as `format` writes them.
    public func summary(format: (Double) -> String) -> String {
        "drained by \(by) since \(format(since))" + (until.map { " until \(format($0))" } ?? " until batonctl undrain")
    }

    /// The drain bucket of a cluster (two underscores, like the node registry: never an app's
    /// lease bucket).
    public static func bucket(cluster: String) -> String { "baton_\(cluster)__drains" }
}
