import BatonCore
import Testing

private let header = """
    cluster: demo
    node: {id: node-1, labels: {zone: a}, capacity: 2}
    nats: {servers: ["nats://127.0.0.1:4222"]}
    apps:

    """

private func errors(_ yaml: String) -> [String] { configErrorLines(yaml) }

private func app(_ name: String, placement: AppPlacement = AppPlacement(), preferNode: String? = nil, failback: Failback = .manual, sticky: Bool = false)
    -> AppConfig
{
    AppConfig(
        name: name, lease: LeaseTiming.defaults(ttl: .seconds(3)), backend: .process(ProcessBackendConfig(command: ["/bin/true"])),
        placement: placement, preferNode: preferNode, failback: failback, sticky: sticky)
}

private let a = PlacementNode(id: "node-a", labels: ["zone": "a"])
private let b = PlacementNode(id: "node-b", labels: ["zone": "b", "disk": "ssd"])
private let c = PlacementNode(id: "node-c", labels: ["zone": "c", "disk": "ssd"])

@Suite("Placement config")
struct PlacementConfigTests {
    @Test("placement keys read into the model; defaults when absent")
    func reads() throws {
        let config = try BatonConfig.parse(
            yaml: header + """
                  - name: db
                    lease: {ttl: 3s}
                    backend: {process: {command: [/bin/true]}}
                  - name: web
                    lease: {ttl: 3s}
                    backend: {process: {command: [/bin/true]}}
                    placement: {require: {zone: a}, prefer: {disk: ssd}, avoid: {rack: "12"}, with_app: db}
                    prefer_node: node-2
                    failback: auto
                    sticky: true
                placement: {balance: false, max_moves: 3}
                """, file: "test.yaml")
        #expect(config.node.capacity == 2)
        #expect(config.placement == ClusterPlacementConfig(balance: false, maxMoves: 3))
        let db = try #require(config.app(named: "db"))
        #expect(db.placement.isEmpty && db.preferNode == nil && db.failback == .manual && !db.sticky)
        let web = try #require(config.app(named: "web"))
        #expect(web.placement == AppPlacement(require: ["zone": "a"], prefer: ["disk": "ssd"], avoid: ["rack": "12"], withApp: "db"))
        #expect(web.preferNode == "node-2" && web.failback == .auto && web.sticky)
    }

    @Test("every placement mistake is reported with its line and column")
    func mistakes() {
        let found = errors(
            header + """
                  - name: db
                    lease: {ttl: 3s}
                    backend: {process: {command: [/bin/true]}}
                    placement: {with_app: web, colocate: x}
                  - name: web
                    lease: {ttl: 3s}
                    backend: {process: {command: [/bin/true]}}
                    placement: {with_app: db, away_from_app: dbb}
                  - name: api
                    lease: {ttl: 3s}
                    backend: {process: {command: [/bin/true]}}
                    placement: {require: {zone: a}, avoid: {zone: a}, with_app: cache, away_from_app: cache}
                    failback: auto
                  - name: cron
                    lease: {ttl: 3s}
                    backend: {process: {command: [/bin/true]}}
                    placement: {away_from_app: cron}
                    prefer_node: node-2
                    failback: sometimes
                """)
        #expect(
            found == [
                #"test.yaml:8:32: apps[0].placement.colocate: unknown key "colocate"; expected one of require, prefer, avoid, with_app, away_from_app"#,
                #"test.yaml:16:44: apps[2].placement.avoid: avoids zone=a, which require (at line 16, column 26) asks for: no node can run this app"#,
                #"test.yaml:16:87: apps[2].placement.away_from_app: "cache" is both with_app and away_from_app: no node can run this app"#,
                #"test.yaml:17:5: apps[2].failback: failback is given without prefer_node: it says whether the app goes back to its prefer_node"#,
                #"test.yaml:23:15: apps[3].failback: expected auto or manual, got "sometimes""#,
            ])
        // Cross-app references are checked once every app reads.
        let references = errors(
            header + """
                  - name: db
                    lease: {ttl: 3s}
                    backend: {process: {command: [/bin/true]}}
                    placement: {with_app: web}
                  - name: web
                    lease: {ttl: 3s}
                    backend: {process: {command: [/bin/true]}}
                    placement: {with_app: db, away_from_app: dbb}
                  - name: cron
                    lease: {ttl: 3s}
                    backend: {process: {command: [/bin/true]}}
                    placement: {away_from_app: cron}
                """)
        #expect(
            references == [
                #"test.yaml:8:27: apps[0].placement.with_app: with_app loops: db -> web -> db; each would wait for the other to be active first"#,
                #"test.yaml:12:27: apps[1].placement.with_app: with_app loops: web -> db -> web; each would wait for the other to be active first"#,
                #"test.yaml:12:46: apps[1].placement.away_from_app: no app named "dbb" in this file; did you mean "db"?"#,
                #"test.yaml:16:32: apps[2].placement.away_from_app: app "cron" names itself"#,
            ])
    }

    @Test("a reload applies placement changes without restarting the app")
    func reloadKeepsApp() {
        let old = BatonConfig(cluster: "demo", node: NodeConfig(id: "node-1"), nats: NATSConfig(servers: ["nats://127.0.0.1:4222"]), apps: [app("web")])
        var new = old
        new.apps = [app("web", placement: AppPlacement(require: ["zone": "b"]), preferNode: "node-2", failback: .auto, sticky: true)]
        new.placement.balance = false
        let changes = changedApps(from: old, to: new)
        #expect(changes.changed.isEmpty && changes.unchanged == ["web"] && changes.restartRequired.isEmpty)
    }
}

@Suite("Placement policy")
struct PlacementPolicyTests {
    @Test("hard constraints: require, avoid, with_app, away_from_app and drains, each with its reason")
    func eligibility() {
        let view = PlacementView(nodes: [a, b, c], holders: ["db": "node-b", "batch": "node-c"])
        func check(_ placement: AppPlacement, _ node: PlacementNode, in view: PlacementView = view) -> String {
            PlacementPolicy.eligibility(of: app("web", placement: placement), on: node, view: view).description
        }
        #expect(check(AppPlacement(require: ["zone": "b"]), a) == "not eligible: requires zone=b (this node: zone=a)")
        #expect(check(AppPlacement(require: ["disk": "ssd"]), a) == "not eligible: requires disk=ssd (this node has no disk label)")
        #expect(check(AppPlacement(require: ["zone": "b", "disk": "ssd"]), b) == "eligible")
        #expect(check(AppPlacement(avoid: ["disk": "ssd"]), c) == "not eligible: avoids disk=ssd (this node has it)")
        #expect(check(AppPlacement(avoid: ["disk": "ssd"]), a) == "eligible")
        #expect(check(AppPlacement(withApp: "db"), a) == "not eligible: with_app db: db is active on node-b")
        #expect(check(AppPlacement(withApp: "db"), b) == "eligible")
        #expect(check(AppPlacement(withApp: "cache"), b) == "not eligible: with_app cache: cache is not active anywhere")
        #expect(check(AppPlacement(awayFromApp: "batch"), c) == "not eligible: away_from_app batch: batch is active on this node")
        #expect(check(AppPlacement(awayFromApp: "batch"), b) == "eligible")
        // An acquire in flight forbids (away_from_app) but never permits (with_app).
        let taking = PlacementView(nodes: [a, b, c], acquiring: ["db": "node-b"])
        #expect(check(AppPlacement(awayFromApp: "db"), b, in: taking) == "not eligible: away_from_app db: this node is taking db")
        #expect(check(AppPlacement(withApp: "db"), b, in: taking) == "not eligible: with_app db: db is not active anywhere")
        let unknown = PlacementView(nodes: [a], unknown: ["db"])
        #expect(check(AppPlacement(awayFromApp: "db"), a, in: unknown) == "not eligible: away_from_app db: its lease state is not known yet")
        let drained = PlacementNode(id: "node-a", labels: ["zone": "a"], drained: "until 12:00")
        #expect(check(AppPlacement(), drained) == "not eligible: node node-a is drained (until 12:00)")
    }

    @Test("the head start: preferred node, prefer labels, then the least loaded; at most one renew in all")
    func gates() {
        let renew = Duration.seconds(1)
        let view = PlacementView(nodes: [a, b, c], holders: ["x": "node-a", "y": "node-a", "z": "node-b"])
        // Balance only: node-c (0 apps) first, node-b (1) a little later, node-a (2) last.
        let plain = app("web")
        #expect(PlacementPolicy.gate(of: plain, me: "node-c", view: view, renew: renew, balance: true) == PlacementGate(eligible: true))
        #expect(PlacementPolicy.gate(of: plain, me: "node-b", view: view, renew: renew, balance: true).holdback == .milliseconds(125))
        #expect(PlacementPolicy.gate(of: plain, me: "node-a", view: view, renew: renew, balance: true).holdback == .milliseconds(250))
        #expect(PlacementPolicy.gate(of: plain, me: "node-a", view: view, renew: renew, balance: false) == .open)
        // prefer_node and prefer labels stack on top; the preferred, matching node waits least.
        let picky = app("web", placement: AppPlacement(prefer: ["disk": "ssd"]), preferNode: "node-b")
        #expect(PlacementPolicy.gate(of: picky, me: "node-b", view: view, renew: renew, balance: true).holdback == .milliseconds(125))
        #expect(PlacementPolicy.gate(of: picky, me: "node-c", view: view, renew: renew, balance: true).holdback == .milliseconds(500))
        #expect(PlacementPolicy.gate(of: picky, me: "node-a", view: view, renew: renew, balance: true).holdback == .seconds(1))
        // A preferred node that is not live gives nobody a head start.
        let gone = app("web", preferNode: "node-z")
        #expect(PlacementPolicy.gate(of: gone, me: "node-c", view: view, renew: renew, balance: false) == .open)
        // Ineligible: closed.
        let zoned = app("web", placement: AppPlacement(require: ["zone": "b"]))
        #expect(PlacementPolicy.gate(of: zoned, me: "node-a", view: view, renew: renew, balance: true) == PlacementGate(eligible: false))
        // Not in the view at all (not registered yet): closed.
        #expect(!PlacementPolicy.gate(of: plain, me: "node-q", view: view, renew: renew, balance: true).eligible)
    }

    @Test("an ineligible node never takes the lease; a holdback delays the take of a free lease")
    func lifecycleGate() {
        let timing = LeaseTiming(ttl: .seconds(3), renew: .seconds(1), fenceBudget: .milliseconds(500), skew: .milliseconds(250))
        let configuration = AppLifecycle.Configuration(
            node: "node-a", instance: "i-1", timing: timing, hasHealthCheck: false, stepTimeout: .seconds(5), stopTimeout: .seconds(12))
        var now = MonotonicInstant(nanoseconds: 1_000_000_000)
        var machine = AppLifecycle(configuration: configuration, placement: PlacementGate(eligible: false))
        _ = machine.handle(.natsConnected, now: now)
        #expect(machine.handle(.leaseObserved(.free(handoffTo: nil)), now: now).isEmpty)
        #expect(machine.handle(.tick, now: now + .seconds(30)).isEmpty)
        #expect(machine.nextDeadline() == nil)
        // The lease is released again (a new free time); eligible now, with a head start for
        // the others: the take waits for it, counted from when the lease became free.
        now = now + .seconds(30)
        #expect(machine.handle(.leaseObserved(.held(LeaseHolder(node: "node-b", instance: "j"), revision: 3, token: 3, ttl: .seconds(3))), now: now).isEmpty)
        #expect(machine.handle(.leaseObserved(.released(LeaseHolder(node: "node-b", instance: "j"), token: 3, handoffTo: nil)), now: now).isEmpty)
        #expect(machine.handle(.placementChanged(PlacementGate(eligible: true, holdback: .milliseconds(400))), now: now).isEmpty)
        #expect(machine.nextDeadline() == now + .milliseconds(400))
        #expect(machine.handle(.tick, now: now + .milliseconds(399)).isEmpty)
        #expect(machine.handle(.tick, now: now + .milliseconds(400)).count == 1)
        #expect(machine.phase == .acquiring)
    }
}

@Suite("Rebalancer")
struct RebalancerTests {
    static let t0 = MonotonicInstant(nanoseconds: 0)

    @Test("an app this node may no longer run goes to the least loaded eligible node, or stays with the reason")
    func ineligibleMoves() {
        var rebalancer = Rebalancer(me: "node-a", settle: .seconds(3), moveTimeout: .seconds(12))
        let apps = [app("web", placement: AppPlacement(require: ["disk": "ssd"])), app("db", placement: AppPlacement(require: ["zone": "a"]))]
        let view = PlacementView(nodes: [a, b, c], holders: ["web": "node-a", "db": "node-a", "other": "node-b"])
        let plan = rebalancer.plan(apps: apps, view: view, movable: ["web", "db"], balance: false, maxMoves: 1, now: Self.t0)
        #expect(plan.moves == [Rebalancer.Move(app: "web", to: "node-c", reason: .ineligible("requires disk=ssd (this node has no disk label)"))])
        #expect(plan.kept.isEmpty)
        // No other eligible node: kept, and said so.
        var alone = Rebalancer(me: "node-a", settle: .seconds(3), moveTimeout: .seconds(12))
        let onlyA = PlacementView(nodes: [a], holders: ["web": "node-a"])
        let kept = alone.plan(apps: apps, view: onlyA, movable: ["web"], balance: true, maxMoves: 1, now: Self.t0)
        #expect(kept.moves.isEmpty)
        #expect(kept.kept["web"] == "not eligible: requires disk=ssd (this node has no disk label); no eligible node to hand it over to: keeping it")
        // Not movable (paused, in a transition): kept too.
        let paused = alone.plan(apps: apps, view: PlacementView(nodes: [a, c], holders: ["web": "node-a"]), movable: [], balance: true, maxMoves: 1, now: Self.t0)
        #expect(paused.moves.isEmpty && paused.kept["web"]?.contains("cannot move while paused") == true)
    }

    @Test("failback: auto goes back to the preferred node; manual stays")
    func failback() {
        var rebalancer = Rebalancer(me: "node-b", settle: .seconds(3), moveTimeout: .seconds(12))
        let apps = [app("web", preferNode: "node-a", failback: .auto), app("db", preferNode: "node-a", failback: .manual)]
        let view = PlacementView(nodes: [a, b], holders: ["web": "node-b", "db": "node-b"])
        let plan = rebalancer.plan(apps: apps, view: view, movable: ["web", "db"], balance: false, maxMoves: 1, now: Self.t0)
        #expect(plan.moves == [Rebalancer.Move(app: "web", to: "node-a", reason: .failback)])
    }

    @Test("balancing: only from a most loaded node, to a node that stays lighter; sticky, grouped and preferred apps stay")
    func balancing() {
        let apps = (1...6).map { app("app-\($0)") } + [app("pinned", sticky: true)]
        var holders = Dictionary(uniqueKeysWithValues: apps.map { ($0.name, "node-a") })
        holders["app-6"] = "node-b"
        let view = PlacementView(nodes: [a, b, c], holders: holders)
        var rebalancer = Rebalancer(me: "node-a", settle: .seconds(3), moveTimeout: .seconds(12))
        let movable = Set(apps.map(\.name))
        let plan = rebalancer.plan(apps: apps, view: view, movable: movable, balance: true, maxMoves: 2, now: Self.t0)
        #expect(plan.moves.map(\.to) == ["node-c", "node-b"])
        #expect(!plan.moves.contains { $0.app == "pinned" })
        // Until both moves are done, and the settle time passed, nothing more moves.
        #expect(rebalancer.plan(apps: apps, view: view, movable: movable, balance: true, maxMoves: 2, now: Self.t0 + .seconds(1)).moves.isEmpty)
        var after = view
        for move in plan.moves { after.holders[move.app] = move.to }
        #expect(rebalancer.plan(apps: apps, view: after, movable: movable, balance: true, maxMoves: 2, now: Self.t0 + .seconds(2)).moves.isEmpty)
        #expect(!rebalancer.plan(apps: apps, view: after, movable: movable, balance: true, maxMoves: 2, now: Self.t0 + .seconds(5)).moves.isEmpty)
        // A node that is not among the most loaded does not move anything.
        var other = Rebalancer(me: "node-b", settle: .seconds(3), moveTimeout: .seconds(12))
        #expect(other.plan(apps: apps, view: view, movable: movable, balance: true, maxMoves: 2, now: Self.t0).moves.isEmpty)
        // One apart is balanced: no move (the target would end up heavier than this node).
        var near = Rebalancer(me: "node-a", settle: .zero, moveTimeout: .seconds(12))
        let close = PlacementView(nodes: [a, b], holders: ["app-1": "node-a", "app-2": "node-a", "app-3": "node-b"])
        #expect(near.plan(apps: apps, view: close, movable: movable, balance: true, maxMoves: 1, now: Self.t0).moves.isEmpty)
    }

    @Test("capacity weighs the share: a node of capacity 2 ends with twice the apps")
    func capacity() {
        let big = PlacementNode(id: "node-b", capacity: 2)
        let apps = (1...9).map { app("app-\($0)") }
        var view = PlacementView(nodes: [PlacementNode(id: "node-a"), big], holders: Dictionary(uniqueKeysWithValues: apps.map { ($0.name, "node-a") }))
        let final = settle(apps: apps, view: &view, seed: 1)
        #expect(final == ["node-a": 3, "node-b": 6])
    }

    @Test("random clusters settle balanced (within one app per unit of capacity of the weighted share) and never move an app back")
    func randomSettles() {
        for seed in UInt64(1)...40 {
            var rng = SplitMix(seed: seed)
            let nodeCount = Int(rng.next() % 4) + 2
            let nodes = (0..<nodeCount).map { PlacementNode(id: "node-\($0)", capacity: Int(rng.next() % 2) + 1) }
            let apps = (0..<Int(rng.next() % 20 + 4)).map { app("app-\($0)") }
            var holders: [String: String] = [:]
            for app in apps { holders[app.name] = nodes[Int(rng.next() % UInt64(min(2, nodeCount)))].id }
            var view = PlacementView(nodes: nodes, holders: holders)
            let loads = settle(apps: apps, view: &view, seed: seed)
            let total = Double(apps.count)
            let capacity = Double(nodes.map(\.capacity).reduce(0, +))
            for node in nodes {
                let share = total * Double(node.capacity) / capacity
                #expect(abs(Double(loads[node.id] ?? 0) - share) <= Double(node.capacity) + 0.001, "seed \(seed): \(loads), capacities \(nodes.map(\.capacity))")
            }
        }
    }

    /// Runs every node's rebalancer in turn, moves taking effect at once, until nothing moves;
    /// fails on an app that comes back to a node it left (ping-pong). Returns the loads.
    private func settle(apps: [AppConfig], view: inout PlacementView, seed: UInt64) -> [String: Int] {
        var rebalancers = Dictionary(uniqueKeysWithValues: view.nodes.keys.map { ($0, Rebalancer(me: $0, settle: .zero, moveTimeout: .seconds(1))) })
        var left: Set<[String]> = []
        var now = Self.t0
        for _ in 0..<500 {
            var moved = false
            for node in view.nodes.keys.sorted() {
                let plan = rebalancers[node]!.plan(apps: apps, view: view, movable: Set(apps.map(\.name)), balance: true, maxMoves: 1, now: now)
                for move in plan.moves {
                    #expect(!left.contains([move.app, move.to]), "seed \(seed): \(move.app) went back to \(move.to)")
                    left.insert([move.app, node])
                    view.holders[move.app] = move.to
                    moved = true
                }
            }
            now = now + .milliseconds(10)
            if !moved, rebalancers.values.allSatisfy({ $0.moving.isEmpty }) { break }
        }
        return view.loads
    }
}

/// A small deterministic generator (the seed is printed by failing expectations).
private struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E485
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite("Drain record")
struct DrainRecordTests {
    @Test("a drain is in force until its end time, or for good without one, and says so")
    func expiry() throws {
        let timed = DrainRecord(node: "node-1", since: 1000, until: 8200, by: "alice@ops")
        #expect(timed.isActive(at: 1000) && timed.isActive(at: 8199.9))
        #expect(!timed.isActive(at: 8200))
        #expect(timed.summary { "t\(Int($0))" } == "drained by alice@ops since t1000 until t8200")
        let open = DrainRecord(node: "node-1", since: 1000, by: "alice@ops")
        #expect(open.isActive(at: 1e12))
        #expect(open.summary { "t\(Int($0))" } == "drained by alice@ops since t1000 until batonctl undrain")
        #expect(DrainRecord.bucket(cluster: "demo") == "baton_demo__drains")
    }

    @Test("a drained node hands every app over, constraints or not, and balancing never sends it one")
    func drainedNodeEmpties() {
        let drainedA = PlacementNode(id: "node-a", drained: "drained by alice@ops")
        let apps = [app("web"), app("db", sticky: true), app("cache")]
        let view = PlacementView(nodes: [drainedA, b, c], holders: ["web": "node-a", "db": "node-a", "cache": "node-b"])
        var rebalancer = Rebalancer(me: "node-a", settle: .zero, moveTimeout: .seconds(10))
        let plan = rebalancer.plan(apps: apps, view: view, movable: ["web", "db"], balance: true, maxMoves: 1, now: MonotonicInstant(nanoseconds: 0))
        #expect(Set(plan.moves.map(\.app)) == ["web", "db"])
        #expect(!plan.moves.contains { $0.to == "node-a" })
        #expect(plan.moves.first { $0.app == "web" }?.to == "node-c")  // node-b already holds cache
        // node-b, the most loaded live node, never balances towards the drained node.
        var fromB = Rebalancer(me: "node-b", settle: .zero, moveTimeout: .seconds(10))
        let heavyB = PlacementView(nodes: [drainedA, b], holders: ["web": "node-b", "db": "node-b", "cache": "node-b"])
        #expect(fromB.plan(apps: apps, view: heavyB, movable: ["web", "db", "cache"], balance: true, maxMoves: 1, now: MonotonicInstant(nanoseconds: 0)).moves.isEmpty)
        #expect(!PlacementPolicy.gate(of: app("web"), me: "node-a", view: view, renew: .seconds(1), balance: true).eligible)
    }
}

@Suite("Pools: instances of an app on several nodes")
struct PoolTests {
    @Test("instances: N becomes N single-active apps with BATON_INSTANCE; all becomes this node's own instance")
    func expands() throws {
        let config = try BatonConfig.parse(
            yaml: header + """
                  - name: worker
                    instances: 3
                    lease: {ttl: 3s}
                    backend: {process: {command: [/bin/true], env: {QUEUE: jobs}}}
                  - name: agent
                    instances: all
                    lease: {ttl: 3s}
                    backend: {systemd: {unit: agent@.service}}
                  - name: db
                    lease: {ttl: 3s}
                    backend: {process: {command: [/bin/true]}}
                """, file: "test.yaml")
        #expect(config.apps.map(\.name) == ["worker-1", "worker-2", "worker-3", "agent-node-1", "db"])
        let second = try #require(config.app(named: "worker-2"))
        #expect(second.pool == PoolMember(pool: "worker", instance: "2", siblings: ["worker-1", "worker-2", "worker-3"]))
        #expect(second.pool?.earlierSiblings == ["worker-1"])
        guard case .process(let process) = second.backend else { Issue.record("not a process backend"); return }
        #expect(process.environment == ["QUEUE": "jobs", "BATON_INSTANCE": "2"])
        let agent = try #require(config.app(named: "agent-node-1"))
        #expect(agent.pool == PoolMember(pool: "agent", instance: "node-1", siblings: []))
        #expect(agent.backend == .systemd(SystemdBackendConfig(unit: "agent@node-1.service")))
        #expect(config.app(named: "db")?.pool == nil)
    }

    @Test("what a pool cannot have is refused at its instances key, all at once")
    func mistakes() {
        #expect(errors(header + """
              - name: web
                instances: 2
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                vip: {address: 192.0.2.10/24, interface: eth0}
                sqlite: {path: /var/lib/web/app.db}
              - name: unit
                instances: 2
                lease: {ttl: 3s}
                backend: {systemd: {unit: worker.service}}
              - name: pool
                instances: 2
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
              - name: pool-2
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                placement: {away_from_app: pool}
            """) == [
                "test.yaml:6:16: apps[0].instances: an app with instances: 2 cannot have this: a vip follows the one active node; a sqlite database has one writer",
                "test.yaml:12:16: apps[1].instances: an app with instances: 2 cannot have this: each instance runs its own unit: use a template unit like \"worker@.service\" (instance i runs as name@i.service)",
                "test.yaml:16:16: apps[2].instances: instance 2 would be the app \"pool-2\", which is also defined at line 19; rename one of them",
                "test.yaml:22:32: apps[3].placement.away_from_app: \"pool\" is a pool (instances: 2); away_from_app names an app that runs on one node",
            ])
        #expect(errors(header + """
              - name: many
                instances: 1001
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
              - name: some
                instances: few
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
            """) == [
                "test.yaml:6:16: apps[0].instances: must be between 1 and 1000, got 1001",
                "test.yaml:10:16: apps[1].instances: expected a number of instances from 1 to 1000, or all, got \"few\"",
            ])
    }

    @Test("a node runs one instance of a pool; holding two, it keeps the earlier")
    func oneInstancePerNode() throws {
        let config = try BatonConfig.parse(
            yaml: header + """
                  - name: worker
                    instances: 3
                    lease: {ttl: 3s}
                    backend: {process: {command: [/bin/true]}}
                """, file: "test.yaml")
        let (first, second, third) = (config.apps[0], config.apps[1], config.apps[2])
        let nodes = [a, b, c]
        // node-a runs worker-1: it may not take worker-2 or worker-3; the others may.
        var view = PlacementView(nodes: nodes, holders: ["worker-1": "node-a"])
        #expect(PlacementPolicy.eligibility(of: second, on: a, view: view) == .ineligible("instance worker-1 of pool worker runs on this node (one instance per node)"))
        #expect(PlacementPolicy.eligibility(of: third, on: a, view: view).isEligible == false)
        #expect(PlacementPolicy.eligibility(of: second, on: b, view: view).isEligible)
        #expect(PlacementPolicy.eligibility(of: first, on: a, view: view).isEligible)
        #expect(PlacementPolicy.eligibleNodes(for: second, view: view).map(\.id) == ["node-b", "node-c"])
        // While node-a's acquire of worker-1 is out, worker-2 may not be taken there either;
        // worker-1's own gate stays open.
        view = PlacementView(nodes: nodes, acquiring: ["worker-1": "node-a"])
        #expect(!PlacementPolicy.eligibility(of: second, on: a, view: view).isEligible)
        #expect(PlacementPolicy.eligibility(of: first, on: a, view: view).isEligible)
        #expect(PlacementPolicy.eligibility(of: second, on: b, view: view).isEligible)
        #expect(view.loads["node-a"] == 0)
        // It took worker-1 and worker-2 at once: worker-2 must go, worker-1 stays.
        view = PlacementView(nodes: nodes, holders: ["worker-1": "node-a", "worker-2": "node-a"])
        #expect(PlacementPolicy.eligibility(of: first, on: a, view: view).isEligible)
        #expect(!PlacementPolicy.eligibility(of: second, on: a, view: view).isEligible)
        // instances: all: a node's own instance may run only there.
        let agent = AppConfig(
            name: "agent-node-b", lease: LeaseTiming.defaults(ttl: .seconds(3)), backend: .process(ProcessBackendConfig(command: ["/bin/true"])),
            instances: .everyNode, pool: PoolMember(pool: "agent", instance: "node-b", siblings: []))
        #expect(PlacementPolicy.eligibility(of: agent, on: b, view: view).isEligible)
        #expect(PlacementPolicy.eligibility(of: agent, on: a, view: view) == .ineligible("the instance of pool agent for node node-b"))
        #expect(PlacementPolicy.eligibleNodes(for: agent, view: view).map(\.id) == ["node-b"])
        // A sibling's lease state not known yet: no instance is taken meanwhile.
        view = PlacementView(nodes: nodes, holders: [:], unknown: ["worker-3"])
        #expect(!PlacementPolicy.eligibility(of: first, on: a, view: view).isEligible)
    }
}
