import Backends
import BatonCore
import Foundation
import Logging
import Timestamps

/// Placement on this node: every half second, the apps' gates (may this node take the lease,
/// and with what head start for the others) from ``PlacementPolicy``, and the handovers of this
/// node's apps from the ``Rebalancer``. Decisions are the pure types'; this only gathers what
/// they need (the node registry's live nodes, the apps' lease holders) and carries the moves
/// out by the ordinary graceful switchover.
extension NodeSupervisor {
    /// How often placement is evaluated.
    static let placementInterval: Duration = .milliseconds(500)

    /// Starts the placement loop (once).
    func startPlacement() {
        guard placementTask == nil else { return }
        placementTask = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: NodeSupervisor.placementInterval)
                if Task.isCancelled { return }
                await self?.placementRound()
            }
        }
    }

    /// This node as placement sees it, drained or not.
    func placementSelf() async -> PlacementNode {
        let drain = await clusterView?.drains()[config.node.id]
        return PlacementNode(id: config.node.id, labels: config.node.labels, capacity: config.node.capacity, drained: drain.map(Self.drainText))
    }

    /// `drained by alice@ops since 2026-12-05T10:00:00Z until 2026-12-05T12:00:00Z`.
    static func drainText(_ record: DrainRecord) -> String {
        return record.summary { RFC3339.format(secondsSince1970: $0) }
    }

    /// The live nodes (this one always) and the holders of the running apps' leases.
    func placementView() async -> PlacementView {
        await placementView(states: placementStates())
    }

    /// Every running app's placement state.
    func placementStates() -> [String: AppSupervisor.PlacementState] {
        apps.mapValues { $0.supervisor.placementState }
    }

    /// The live nodes and the lease holders of the apps whose `states` were read.
    func placementView(states: [String: AppSupervisor.PlacementState]) async -> PlacementView {
        var nodes = [await placementSelf()]
        if let clusterView {
            let drains = await clusterView.drains()
            for (id, record) in await clusterView.liveNodes() where id != config.node.id {
                nodes.append(
                    PlacementNode(id: id, labels: record.labels ?? [:], capacity: record.capacity ?? 1, drained: drains[id].map(Self.drainText)))
            }
        }
        var holders: [String: String] = [:]
        var unknown: Set<String> = []
        var acquiring: [String: String] = [:]
        for (name, running) in apps {
            // A node's own instance of an `instances: all` pool is on every node alike, and the
            // other nodes do not know it: it counts for no node's load.
            if let pool = running.config.pool, pool.siblings.isEmpty { continue }
            guard let state = states[name] else {
                unknown.insert(name)
                continue
            }
            if state.phase == .acquiring { acquiring[name] = config.node.id }
            if let holder = state.holder {
                holders[name] = holder
            } else if !state.leaseStateKnown {
                unknown.insert(name)
            }
        }
        // Apps of the config that do not run here (could not be set up): their state is unknown.
        for app in config.apps where apps[app.name] == nil { unknown.insert(app.name) }
        return PlacementView(nodes: nodes, holders: holders, unknown: unknown, acquiring: acquiring)
    }

    /// The gate of `app` on this node now.
    func placementGate(for app: AppConfig) async -> PlacementGate {
        let view = await placementView()
        return PlacementPolicy.gate(of: app, me: config.node.id, view: view, renew: app.lease.renew, balance: config.placement.balance)
    }

    /// One round: update every app's gate and status note, then start the planned handovers.
    func placementRound() async {
        let states = placementStates()
        let view = await placementView(states: states)
        var me = view.nodes[config.node.id]
        if me == nil { me = await placementSelf() }
        guard let me else { return }
        // Gates and eligibility depend only on the view, this node and the config: an idle
        // cluster's rounds reuse the last ones instead of evaluating every app again. They are
        // computed for every app of the config, so an app that starts later finds its gate.
        let decided: PlacementDecisions
        if let last = lastPlacementDecisions, last.view == view, last.me == me, last.generation == configGeneration {
            decided = last
        } else {
            var gates: [String: PlacementGate] = [:]
            var ineligible: [String: String] = [:]
            for app in config.apps {
                gates[app.name] = PlacementPolicy.gate(of: app, me: me.id, view: view, renew: app.lease.renew, balance: config.placement.balance)
                let eligibility = PlacementPolicy.eligibility(of: app, on: me, view: view)
                if !eligibility.isEligible { ineligible[app.name] = eligibility.description }
            }
            decided = PlacementDecisions(view: view, me: me, generation: configGeneration, gates: gates, ineligible: ineligible)
            lastPlacementDecisions = decided
        }
        var movable: Set<String> = []
        var notes = decided.ineligible.filter { apps[$0.key] != nil }
        for app in config.apps {
            guard let running = apps[app.name], let state = states[app.name] else { continue }
            // The app compares again: its state was read at the start of the round.
            if let gate = decided.gates[app.name], state.gate != gate { await running.supervisor.updatePlacement(gate) }
            if state.phase == .active, !state.paused, backendRunning[app.name] == true {
                movable.insert(app.name)
            }
        }
        let plan = rebalancer.plan(
            apps: config.apps, view: view, movable: movable, balance: config.placement.balance, maxMoves: config.placement.maxMoves,
            now: MonotonicClock.now())
        for (app, note) in plan.kept { notes[app] = note }
        for move in plan.moves {
            guard let running = apps[move.app] else { continue }
            let note = "handing over to \(move.to): \(move.reason)"
            notes[move.app] = note
            logger.notice("placement: handing an app over", metadata: ["app": "\(move.app)", "to": "\(move.to)", "reason": "\(move.reason)"])
            events?.publish(
                BatonEvent(
                    time: Date().timeIntervalSince1970, cluster: config.cluster, node: config.node.id, app: move.app, kind: .command,
                    detail: "placement: switchover to \(move.to) (\(move.reason))"))
            await running.supervisor.send(.switchoverRequested(to: move.to))
        }
        // A handover note stays until the app has left.
        for (app, note) in placementNotes where notes[app] == nil && note.hasPrefix("handing over") && rebalancer.moving[app] != nil {
            notes[app] = note
        }
        placementNotes = notes
    }
}

/// The gates and eligibility notes of one placement round, and what they were computed from.
struct PlacementDecisions: Sendable {
    var view: PlacementView
    var me: PlacementNode
    /// ``NodeSupervisor``'s config generation (bumped by every reload).
    var generation: Int
    var gates: [String: PlacementGate]
    var ineligible: [String: String]
}
