/// A node as placement sees it: its labels and weight from the node registry, and whether it
/// is drained.
public struct PlacementNode: Sendable, Hashable {
    /// The node id.
    public var id: String
    /// `node.labels`.
    public var labels: [String: String]
    /// `node.capacity` (at least 1).
    public var capacity: Int
    /// Why the node is drained, when it is: it takes no app and hands its apps over.
    public var drained: String?

    /// Creates a node.
    public init(id: String, labels: [String: String] = [:], capacity: Int = 1, drained: String? = nil) {
        self.id = id
        self.labels = labels
        self.capacity = max(1, capacity)
        self.drained = drained
    }
}

/// What one node knows of the cluster when it decides placement: the live nodes and which
/// node holds each app's lease.
public struct PlacementView: Sendable, Hashable {
    /// The live nodes by id (this node included).
    public var nodes: [String: PlacementNode] { didSet { loads = Self.loads(nodes: nodes, holders: holders) } }
    /// The node holding each app's lease, for the apps whose lease is held.
    public var holders: [String: String] { didSet { loads = Self.loads(nodes: nodes, holders: holders) } }
    /// Apps whose lease state this node does not know yet (its watch has not reported).
    public var unknown: Set<String>
    /// Apps a node is acquiring (an acquire in flight), and which node: this node's own. They
    /// count where a constraint forbids (a pool's one instance per node, `away_from_app`), so a
    /// second one is not taken meanwhile; never where one requires (`with_app`) or in loads.
    public var acquiring: [String: String]
    /// How many apps each live node holds (zero for a live node that holds none). Kept with
    /// ``nodes`` and ``holders``: every app's gate reads it in every placement round.
    public private(set) var loads: [String: Int]

    /// Creates a view.
    public init(nodes: [PlacementNode], holders: [String: String] = [:], unknown: Set<String> = [], acquiring: [String: String] = [:]) {
        let nodes = Dictionary(nodes.map { ($0.id, $0) }, uniquingKeysWith: { _, last in last })
        self.nodes = nodes
        self.holders = holders
        self.unknown = unknown
        self.acquiring = acquiring
        self.loads = Self.loads(nodes: nodes, holders: holders)
    }

    private static func loads(nodes: [String: PlacementNode], holders: [String: String]) -> [String: Int] {
        var loads = Dictionary(nodes.keys.map { ($0, 0) }, uniquingKeysWith: { first, _ in first })
        for holder in holders.values where loads[holder] != nil { loads[holder, default: 0] += 1 }
        return loads
    }

    /// Whether `app` runs, or is being taken, on `node`.
    func occupies(_ app: String, _ node: String) -> Bool {
        holders[app] == node || acquiring[app] == node
    }

    /// A node's load per unit of capacity.
    func ratio(_ node: String, loads: [String: Int]) -> Double {
        Double(loads[node] ?? 0) / Double(nodes[node]?.capacity ?? 1)
    }
}

/// Whether a node may take an app's lease, and why not.
public enum Eligibility: Sendable, Hashable, CustomStringConvertible {
    case eligible
    /// The node must not take the lease; the reason names the constraint and the node's value.
    case ineligible(String)

    /// Whether the node may take the lease.
    public var isEligible: Bool { self == .eligible }

    public var description: String {
        switch self {
        case .eligible: "eligible"
        case .ineligible(let why): "not eligible: \(why)"
        }
    }
}

/// What the placement of an app lets its lifecycle do on this node: whether it may take the
/// lease at all, and how much longer than its priority says it waits for a free one.
public struct PlacementGate: Sendable, Hashable {
    /// Whether the node may take the lease.
    public var eligible: Bool
    /// The extra wait before taking a free (or expired) lease: other nodes get a head start.
    public var holdback: Duration

    /// Creates a gate.
    public init(eligible: Bool, holdback: Duration = .zero) {
        self.eligible = eligible
        self.holdback = holdback
    }

    /// No constraint and no extra wait.
    public static let open = PlacementGate(eligible: true)
}

/// The placement decisions, without I/O: which nodes may run an app (its hard constraints and
/// drains), and how long a node holds back from a free lease so that the preferred, the least
/// loaded and the best matching nodes take it first.
public enum PlacementPolicy {
    /// Whether `node` may run `app`, given where the other apps are active (`view.holders`).
    public static func eligibility(of app: AppConfig, on node: PlacementNode, view: PlacementView) -> Eligibility {
        if let drained = node.drained { return .ineligible("node \(node.id) is drained (\(drained))") }
        let placement = app.placement
        for (label, wanted) in placement.require.sorted(by: { $0.key < $1.key }) where node.labels[label] != wanted {
            let has = node.labels[label].map { "this node: \(label)=\($0)" } ?? "this node has no \(label) label"
            return .ineligible("requires \(label)=\(wanted) (\(has))")
        }
        for (label, unwanted) in placement.avoid.sorted(by: { $0.key < $1.key }) where node.labels[label] == unwanted {
            return .ineligible("avoids \(label)=\(unwanted) (this node has it)")
        }
        if let other = placement.withApp {
            if view.unknown.contains(other) { return .ineligible("with_app \(other): its lease state is not known yet") }
            switch view.holders[other] {
            case node.id: break
            case let holder?: return .ineligible("with_app \(other): \(other) is active on \(holder)")
            case nil: return .ineligible("with_app \(other): \(other) is not active anywhere")
            }
        }
        if let pool = app.pool, pool.siblings.isEmpty, pool.instance != node.id {
            // instances: all: each node runs its own instance and no other.
            return .ineligible("the instance of pool \(pool.pool) for node \(pool.instance)")
        }
        if let pool = app.pool {
            // One instance of a pool per node. A node that took two at once keeps the earlier
            // and gives up the later one.
            let holdsThis = view.occupies(app.name, node.id)
            for sibling in pool.siblings where sibling != app.name {
                if view.unknown.contains(sibling), !holdsThis {
                    return .ineligible("instance \(sibling) of pool \(pool.pool): its lease state is not known yet")
                }
                if view.occupies(sibling, node.id), !holdsThis || pool.earlierSiblings.contains(sibling) {
                    return .ineligible("instance \(sibling) of pool \(pool.pool) runs on this node (one instance per node)")
                }
            }
        }
        if let other = placement.awayFromApp {
            if view.unknown.contains(other) { return .ineligible("away_from_app \(other): its lease state is not known yet") }
            if view.holders[other] == node.id { return .ineligible("away_from_app \(other): \(other) is active on this node") }
            if view.acquiring[other] == node.id { return .ineligible("away_from_app \(other): this node is taking \(other)") }
        }
        return .eligible
    }

    /// The live nodes other than `node` that may run `app`.
    public static func eligibleNodes(for app: AppConfig, view: PlacementView, except node: String? = nil) -> [PlacementNode] {
        view.nodes.values.filter { $0.id != node && eligibility(of: app, on: $0, view: view).isEligible }.sorted { $0.id < $1.id }
    }

    /// The gate of `app` on node `me`: closed when `me` is not eligible; otherwise a head start
    /// for the others, at most one `renew` in all, that lets a free lease go first to
    /// - the app's `prefer_node` when it is live and eligible (half a renew),
    /// - a node with all `prefer` labels when one is live and eligible (a quarter),
    /// - the less loaded nodes when `balance` is on: a quarter of a renew spread by the node's
    ///   rank among the eligible nodes, by apps held per unit of capacity.
    public static func gate(of app: AppConfig, me: String, view: PlacementView, renew: Duration, balance: Bool) -> PlacementGate {
        guard let node = view.nodes[me] else { return PlacementGate(eligible: false) }
        guard eligibility(of: app, on: node, view: view).isEligible else { return PlacementGate(eligible: false) }
        let others = eligibleNodes(for: app, view: view, except: me)
        var fraction = 0.0
        if let preferred = app.preferNode, preferred != me, others.contains(where: { $0.id == preferred }) {
            fraction += 0.5
        }
        let prefer = app.placement.prefer
        if !prefer.isEmpty, !matches(node, prefer), others.contains(where: { matches($0, prefer) }) {
            fraction += 0.25
        }
        if balance, !others.isEmpty {
            let loads = view.loads
            let mine = view.ratio(me, loads: loads)
            let lighter = others.filter { view.ratio($0.id, loads: loads) < mine }.count
            fraction += 0.25 * Double(lighter) / Double(others.count)
        }
        return PlacementGate(eligible: true, holdback: renew * fraction)
    }

    /// Whether `node` has every label of `labels` with its value.
    static func matches(_ node: PlacementNode, _ labels: [String: String]) -> Bool {
        labels.allSatisfy { node.labels[$0.key] == $0.value }
    }
}
