/// Decides, without I/O, which of this node's active apps to hand over, and to whom: apps this
/// node may no longer run (a constraint, a drain), apps going back to their `prefer_node`
/// (`failback: auto`), and, when balancing is on, apps of an overloaded node going to the least
/// loaded eligible node. Every move is carried out by the ordinary graceful switchover.
///
/// Hysteresis, so that two nodes never pass an app back and forth:
/// - a balancing move goes from `me` to `t` only when `me` is among the most loaded nodes and
///   `t` would still be lighter than `me` was after taking it: `(load(t) + 1) / capacity(t) <
///   load(me) / capacity(me)`. The reverse move then fails the same test;
/// - an app is never moved away from its `prefer_node`, nor balanced when it is `sticky`, has a
///   `with_app`, or another app is `with_app` it (those move as a group, by their constraints);
/// - after a move the node waits for it to finish and for ``settle`` before it plans the next
///   balancing move, and it moves at most `maxMoves` apps at a time.
public struct Rebalancer: Sendable {
    /// Why an app is handed over.
    public enum Reason: Sendable, Hashable, CustomStringConvertible {
        /// This node may not run it (the constraint that fails).
        case ineligible(String)
        /// Back to its `prefer_node` (`failback: auto`).
        case failback
        /// Balancing: this node's and the target's loads before the move.
        case balance(from: Int, to: Int)

        public var description: String {
            switch self {
            case .ineligible(let why): "this node is not eligible: \(why)"
            case .failback: "failback to its prefer_node"
            case .balance(let from, let to): "balancing (this node holds \(from) apps, the target \(to))"
            }
        }
    }

    /// One handover to carry out.
    public struct Move: Sendable, Hashable {
        public var app: String
        public var to: String
        public var reason: Reason

        /// Creates a move.
        public init(app: String, to: String, reason: Reason) {
            self.app = app
            self.to = to
            self.reason = reason
        }
    }

    /// What this node plans for its apps.
    public struct Plan: Sendable, Hashable {
        /// The handovers to start now.
        public var moves: [Move] = []
        /// Apps this node is not eligible for but keeps, and why (no eligible node to take them,
        /// or the app cannot move now: paused, in a transition).
        public var kept: [String: String] = [:]

        /// Creates a plan.
        public init(moves: [Move] = [], kept: [String: String] = [:]) {
            self.moves = moves
            self.kept = kept
        }
    }

    /// This node.
    public let me: String
    /// How long to wait after a move finished before the next balancing move.
    public let settle: Duration
    /// How long a move may take before it counts as finished anyway (the target did not take
    /// the app: then someone else did, or the lease came back).
    public let moveTimeout: Duration
    /// Apps handed over and not yet seen elsewhere, with when the handover started.
    public private(set) var moving: [String: MonotonicInstant] = [:]
    /// When the last move finished: balancing waits ``settle`` after it.
    public private(set) var quietUntil: MonotonicInstant?

    /// Creates a rebalancer for node `me`.
    public init(me: String, settle: Duration, moveTimeout: Duration) {
        self.me = me
        self.settle = settle
        self.moveTimeout = moveTimeout
    }

    /// Plans the moves at `now`. `apps` is the config's apps; `movable` names this node's apps
    /// that may be handed over now (active, healthy, not paused, in no transition);
    /// `balance` and `maxMoves` are the cluster's `placement:` switches. The moves returned are
    /// recorded as under way.
    public mutating func plan(apps: [AppConfig], view: PlacementView, movable: Set<String>, balance: Bool, maxMoves: Int, now: MonotonicInstant) -> Plan {
        // A move is done when the app is no longer held here (or took too long).
        for (app, started) in moving where view.holders[app] != me || now >= started + moveTimeout {
            moving[app] = nil
            quietUntil = max(quietUntil ?? now, now + settle)
        }
        var plan = Plan()
        guard let myNode = view.nodes[me] else { return plan }
        var loads = view.loads
        let mine = apps.filter { view.holders[$0.name] == me && moving[$0.name] == nil }

        // 1. Apps this node may no longer run: hand them to the least loaded eligible node.
        var ineligibleHere: Set<String> = []
        for app in mine {
            guard case .ineligible(let why) = PlacementPolicy.eligibility(of: app, on: myNode, view: view) else { continue }
            ineligibleHere.insert(app.name)
            guard movable.contains(app.name) else {
                plan.kept[app.name] = "not eligible: \(why); kept for now: the app cannot move while paused, unhealthy or in a transition"
                continue
            }
            let targets = PlacementPolicy.eligibleNodes(for: app, view: view, except: me)
            guard let target = lightest(targets, loads: loads, view: view) else {
                plan.kept[app.name] = "not eligible: \(why); no eligible node to hand it over to: keeping it"
                continue
            }
            plan.moves.append(Move(app: app.name, to: target.id, reason: .ineligible(why)))
            loads[target.id, default: 0] += 1
            loads[me, default: 0] -= 1
        }

        // 2. Failback to the preferred node.
        for app in mine where !ineligibleHere.contains(app.name) && movable.contains(app.name) {
            guard app.failback == .auto, let preferred = app.preferNode, preferred != me, let node = view.nodes[preferred],
                PlacementPolicy.eligibility(of: app, on: node, view: view).isEligible
            else { continue }
            plan.moves.append(Move(app: app.name, to: preferred, reason: .failback))
            loads[preferred, default: 0] += 1
            loads[me, default: 0] -= 1
        }

        // 3. Balancing: one or a few apps at a time, and only once earlier moves settled.
        let settled = moving.isEmpty && plan.moves.isEmpty && (quietUntil.map { now >= $0 } ?? true)
        if balance, settled, myNode.drained == nil {
            let live = view.nodes.values.filter { $0.drained == nil }
            let highest = live.map { view.ratio($0.id, loads: loads) }.max() ?? 0
            let grouped = Set(apps.compactMap(\.placement.withApp))
            let candidates = mine.filter {
                movable.contains($0.name) && !$0.sticky && $0.placement.withApp == nil && !grouped.contains($0.name) && $0.preferNode != me
            }.sorted { $0.name > $1.name }
            for app in candidates where plan.moves.count < maxMoves {
                let myRatio = view.ratio(me, loads: loads)
                guard myRatio >= highest || plan.moves.count > 0 else { break }
                let targets = PlacementPolicy.eligibleNodes(for: app, view: view, except: me).filter { node in
                    Double((loads[node.id] ?? 0) + 1) / Double(node.capacity) < myRatio
                }
                guard let target = lightest(targets, loads: loads, view: view) else { continue }
                plan.moves.append(Move(app: app.name, to: target.id, reason: .balance(from: loads[me] ?? 0, to: loads[target.id] ?? 0)))
                loads[target.id, default: 0] += 1
                loads[me, default: 0] -= 1
            }
        }
        for move in plan.moves { moving[move.app] = now }
        return plan
    }

    /// The node with the fewest apps per unit of capacity once it takes one more (ties: id).
    private func lightest(_ nodes: [PlacementNode], loads: [String: Int], view: PlacementView) -> PlacementNode? {
        nodes.min { a, b in
            let ra = Double((loads[a.id] ?? 0) + 1) / Double(a.capacity)
            let rb = Double((loads[b.id] ?? 0) + 1) / Double(b.capacity)
            return ra != rb ? ra < rb : a.id < b.id
        }
    }
}
