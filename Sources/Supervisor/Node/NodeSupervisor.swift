import Backends
import BatonCore
import BatonEvents
import Control
import Foundation
import Logging
import NATS

/// Runs every app of a node's config: one ``AppSupervisor`` each, started, stopped and replaced
/// as the config changes, and answers the control service.
public actor NodeSupervisor: NodeController {
    /// What runs one app on this node: its backend, and its VIPs and replica when it has them.
    public struct AppParts: Sendable {
        public var backend: any AppBackend
        public var addresses: (any AppAddresses)?
        public var replica: (any AppReplica)?

        /// Creates the parts of an app.
        public init(backend: any AppBackend, addresses: (any AppAddresses)? = nil, replica: (any AppReplica)? = nil) {
            self.backend = backend
            self.addresses = addresses
            self.replica = replica
        }
    }

    /// Creates the parts of an app from its plan (and its config, for what the plan does not
    /// cover: the replica's configuration); throws with a clear reason when one cannot be set up.
    public typealias AppPartsFactory = @Sendable (AppPlan, AppConfig) async throws -> AppParts

    struct RunningApp {
        var config: AppConfig
        var supervisor: AppSupervisor
        var parts: AppParts
        var task: Task<Void, Never>
        var watcher: Task<Void, Never>
    }

    public nonisolated let instance: String
    var config: BatonConfig
    private let client: NATSClient
    private let makeParts: AppPartsFactory
    private let systemdUnit: String?
    /// Where the apps' runtime files go (``AppPlan/SystemdPlan/epochFile``).
    private let runtimeDirectory: String
    let logger: Logger
    /// Where the node's events go (the cluster's event history), nil without one.
    let events: EventPublisher?
    /// The connection the flight recorder reads the history on (the old node's step-down).
    private let eventsClient: NATSClient
    var apps: [String: RunningApp] = [:]
    var lastEvents: [String: String] = [:]
    var backendRunning: [String: Bool] = [:]
    /// Each app's config section digests, computed once per config (the status is built every
    /// second for systemd's `STATUS=`, and hashing every app's sections each time adds up).
    private var configDigestCache: [String: (config: AppConfig, digests: [String: String])] = [:]
    /// Another batond that took this node id over in the node registry (see
    /// ``duplicateInstanceDetected(_:)``).
    private var duplicate: LeaseHolder?
    /// The other nodes (labels, capacity, liveness) for placement; nil: this node alone.
    public nonisolated let clusterView: ClusterView?
    /// Balancing, failback and constraint handovers of this node's apps.
    var rebalancer: Rebalancer
    /// What placement says per app, for the status (see ``AppStatus/placement``).
    var placementNotes: [String: String] = [:]
    /// The last placement round's gates, reused while nothing they depend on changed.
    var lastPlacementDecisions: PlacementDecisions?
    /// Bumped by every reload, so placement decisions made under an older config are not reused.
    var configGeneration = 0
    /// The placement loop (see ``runPlacement()``).
    var placementTask: Task<Void, Never>?

    /// Creates a node supervisor; ``start()`` runs the apps. `systemdUnit` is the unit batond
    /// runs in (nil when not under systemd), for the status; `runtimeDirectory` is where the
    /// apps' plans put their runtime files (see ``AppPlan/init(app:node:runtimeDirectory:)``).
    /// `events` records every app's transitions, and config reloads, in the cluster's event
    /// history; the history is read on `eventsClient` (default: `client`).
    public init(
        config: BatonConfig, client: NATSClient, instance: String, systemdUnit: String? = nil, runtimeDirectory: String = "/run/baton",
        events: EventPublisher? = nil, eventsClient: NATSClient? = nil, clusterView: ClusterView? = nil, logger: Logger,
        makeParts: @escaping AppPartsFactory
    ) {
        self.clusterView = clusterView
        // After a handover, two renew intervals for every node's view (lease watches, the 500 ms
        // placement loop) to show where the app went before the next balancing move; the
        // hysteresis itself does not depend on it (see Rebalancer).
        let ttl = config.apps.map(\.lease.ttl).max() ?? .seconds(3)
        let renew = config.apps.map(\.lease.renew).max() ?? .seconds(1)
        self.rebalancer = Rebalancer(me: config.node.id, settle: renew * 2, moveTimeout: ttl * 4)
        self.events = events
        self.eventsClient = eventsClient ?? client
        self.config = config
        self.client = client
        self.instance = instance
        self.systemdUnit = systemdUnit
        self.runtimeDirectory = runtimeDirectory
        self.logger = logger
        self.makeParts = makeParts
    }

    /// The config in force.
    public var currentConfig: BatonConfig { config }

    /// See ``NodeController/recordCommand(_:app:to:requester:)``: an event of kind `command` in
    /// the cluster's event history.
    public func recordCommand(_ command: ControlCommand, app: String, to target: String?, requester: String) async {
        events?.publish(
            BatonEvent(
                time: Date().timeIntervalSince1970, cluster: config.cluster, node: config.node.id, app: app, kind: .command,
                detail: "\(command.rawValue)\(target.map { " to \($0)" } ?? "") requested by \(requester)"))
    }

    /// Starts every app of the config. An app whose lease bucket or backend cannot be set up is
    /// logged and skipped; the others run.
    public func start() async {
        // Placement needs the other nodes first: an app must not take a lease its constraints forbid.
        await clusterView?.waitUntilReady(limit: .seconds(3))
        for app in config.apps { await startApp(app) }
        startPlacement()
    }

    /// Applies a new config: starts added apps, stops removed ones, restarts changed ones (each
    /// stepped down gracefully first), leaves the rest alone. Node, NATS, cluster and HTTP
    /// changes need a restart of batond; they are reported and not applied.
    @discardableResult
    public func reload(_ newConfig: BatonConfig) async -> ConfigChanges {
        let changes = changedApps(from: config, to: newConfig)
        if !changes.restartRequired.isEmpty {
            logger.warning("config changes that need a batond restart were not applied", metadata: ["sections": "\(changes.restartRequired)"])
        }
        for name in changes.removed + changes.changed { await stopApp(name) }
        var applied = newConfig
        applied.cluster = config.cluster
        applied.node = config.node
        applied.nats = config.nats
        applied.http = config.http
        applied.events = config.events
        config = applied
        configGeneration += 1
        for name in changes.changed + changes.added {
            if let app = newConfig.app(named: name) { await startApp(app) }
        }
        events?.publish(
            BatonEvent(
                time: Date().timeIntervalSince1970, cluster: config.cluster, node: config.node.id, app: nil, kind: .configReloaded,
                detail: "added \(changes.added), removed \(changes.removed), changed \(changes.changed)"
                    + (changes.restartRequired.isEmpty ? "" : "; not applied until a restart: \(changes.restartRequired)")))
        logger.info(
            "config reloaded",
            metadata: ["added": "\(changes.added)", "removed": "\(changes.removed)", "changed": "\(changes.changed)", "unchanged": "\(changes.unchanged.count)"])
        return changes
    }

    /// Another live batond runs with this node id (the node registry's heartbeat lost its
    /// compare-and-set to it): every app, and every app started later, refuses to take a lease.
    /// Apps already active keep their lease until it is lost or stepped down. `other` is nil when
    /// the registry entry is not a record Baton wrote.
    public func duplicateInstanceDetected(_ other: NodeRecord?) async {
        let holder = LeaseHolder(node: other?.node ?? config.node.id, instance: other?.instance ?? "?")
        duplicate = holder
        for running in apps.values { await running.supervisor.send(.duplicateInstanceReported(holder)) }
    }

    /// Steps every app down gracefully and stops them.
    public func shutdown() async {
        placementTask?.cancel()
        placementTask = nil
        for name in Array(apps.keys) { await stopApp(name) }
    }

    private func startApp(_ app: AppConfig) async {
        do {
            let store = try await openStore(app)
            let plan = AppPlan(app: app, node: config.node.id, runtimeDirectory: runtimeDirectory)
            let parts = try await makeParts(plan, app)
            let configuration = plan.lifecycle(
                instance: instance, hasReplica: parts.replica != nil, hasAddresses: parts.addresses != nil, wallClockOffset: MonotonicClock.wallClockOffset())
            var appLogger = logger
            appLogger[metadataKey: "node"] = "\(config.node.id)"
            let gate = await placementGate(for: app)
            var hooks: HookRunner?
            if !app.hooks.isEmpty {
                var hookLogger = appLogger
                hookLogger[metadataKey: "app"] = "\(app.name)"
                let environment: [String: String] = if case .process(let process) = plan.backend { process.environment } else { [:] }
                hooks = HookRunner(hooks: app.hooks, app: app.name, node: config.node.id, environment: environment, logger: hookLogger)
            }
            let supervisor = AppSupervisor(
                app: app.name, configuration: configuration, paused: app.paused, placement: gate, store: store, backend: parts.backend,
                addresses: parts.addresses, replica: parts.replica, hooks: hooks, client: client, logger: appLogger)
            let notifications = await supervisor.notifications()
            let backendNotices = (parts.backend as? any AppBackendNotices)?.notices()
            let recorder = events.map {
                AppEventRecorder(
                    recorder: FlightRecorder(cluster: config.cluster, app: app.name, me: LeaseHolder(node: config.node.id, instance: instance)),
                    publisher: $0, reader: EventReader(jetStream: JetStream(client: eventsClient), cluster: config.cluster), replica: parts.replica,
                    vips: app.vips.map { "\($0.cidr) on \($0.interface)" }, logger: appLogger)
            }
            if let recorder { await supervisor.observeLease { observation, instant in recorder.observe(observation, at: instant) } }
            let watcher = Task { [weak self] in
                await withTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await notification in notifications {
                            await self?.record(app.name, notification)
                            await recorder?.record(notification)
                        }
                    }
                    if let backendNotices {
                        group.addTask {
                            for await notice in backendNotices {
                                await self?.record(app.name, notice)
                                await recorder?.record(notice)
                            }
                        }
                    }
                }
            }
            if let duplicate { await supervisor.send(.duplicateInstanceReported(duplicate)) }
            let task = Task { await supervisor.run() }
            apps[app.name] = RunningApp(config: app, supervisor: supervisor, parts: parts, task: task, watcher: watcher)
            lastEvents[app.name] = "started (passive)"
        } catch {
            logger.error("cannot run app", metadata: ["app": "\(app.name)", "error": "\(error)"])
            lastEvents[app.name] = "cannot run: \(error)"
        }
    }

    /// Opens the app's lease bucket, retrying for a while (JetStream may still be starting).
    private func openStore(_ app: AppConfig) async throws -> LeaseStore {
        // Tokens never go backwards: the highest one this node has seen for the app survives
        // restarts in its state directory, and the bucket is moved past it when it fell behind.
        let floorPath = TokenFloor.path(stateDirectory: config.node.stateDirectory, app: app.name)
        let floor: TokenFloor
        do {
            floor = try await TokenFloor.load(path: floorPath)
        } catch {
            throw TokenFloorError("cannot load the token floor of app \(app.name) from \(floorPath): \(error)")
        }
        var attempt = 0
        while true {
            do {
                // Lease writes wait at most one renew interval: a renew stuck longer is retried
                // rather than blocking the next one (fencing does not depend on it either way).
                let leaseJetStream = JetStream(client: client, timeout: max(app.lease.renew, .milliseconds(100)))
                return try await LeaseStore.open(
                    jetStream: leaseJetStream, cluster: config.cluster, app: app.name, ttl: app.lease.ttl, replicas: config.nats.replicas, floor: floor, logger: logger)
            } catch {
                attempt += 1
                if attempt >= 10 || Task.isCancelled { throw error }
                logger.warning("cannot open the lease bucket yet; retrying", metadata: ["app": "\(app.name)", "error": "\(error)"])
                try await Task.sleep(for: .milliseconds(200 * attempt))
            }
        }
    }

    private func stopApp(_ name: String) async {
        guard let running = apps.removeValue(forKey: name) else { return }
        running.task.cancel()
        await running.task.value
        running.watcher.cancel()
        await running.parts.backend.dispose()
        await running.parts.addresses?.dispose()
        await running.parts.replica?.dispose()
        backendRunning[name] = false
    }

    private func record(_ app: String, _ notice: AppBackendNotice) {
        if case .backendRestarted = notice { AppMetrics.backendRestarted(app: app, node: config.node.id) }
        lastEvents[app] = notice.description
        switch notice {
        case .backendDown: backendRunning[app] = false
        case .backendRestarted: backendRunning[app] = true
        case .strayStopped, .cannotStop: break
        }
    }

    private func record(_ app: String, _ notification: AppLifecycle.Notification) {
        switch notification {
        case .acquired(let token): lastEvents[app] = "acquired the lease (epoch \(token))"
        case .becameActive(let token):
            lastEvents[app] = "active (epoch \(token))"
            backendRunning[app] = true
        case .demoting(let reason): lastEvents[app] = "stepping down: \(reason)"
        case .released(let token):
            lastEvents[app] = "released the lease (epoch \(token))"
            backendRunning[app] = false
        case .releaseUnconfirmed(let token, let reason):
            lastEvents[app] = "gave the lease up (epoch \(token)); it frees at its expiry: \(reason)"
            backendRunning[app] = false
        case .demotionStepFailed(let step, let reason): lastEvents[app] = "stepping down: \(step.rawValue) failed: \(reason)"
        case .flushRetrying(let token, let attempt, let reason, let giveUpIn):
            lastEvents[app] =
                "stepping down (epoch \(token)): final WAL flush attempt \(attempt) failed: \(reason); lease kept, backend stopped, retrying for up to \(AppLifecycle.readable(giveUpIn))"
        case .flushAbandoned(let token, let attempts, let reason):
            lastEvents[app] = "stepping down (epoch \(token)): final WAL flush gave up after \(attempts) attempt(s): \(reason); the database is set aside"
        case .fenced(let token, let reason):
            lastEvents[app] = "fenced (epoch \(token)): \(reason)"
            backendRunning[app] = false
        case .fenceUnconfirmed(let token, let reason):
            lastEvents[app] = "fenced (epoch \(token)) but could not confirm the backend gone and the VIPs removed: \(reason); the lease runs out, the fence keeper kills at its deadline"
            backendRunning[app] = false
        case .duplicateInstance(let other): lastEvents[app] = Self.duplicateEvent(other)
        case .hooksRan(_, let epoch, let summary, let succeeded):
            // A success shows in last_hook only; a failure is the app's last event too.
            if !succeeded { lastEvents[app] = "hook failed (epoch \(epoch)): \(summary)" }
        case .observed(let event): lastEvents[app] = event
        case .ignored, .staleResult: break
        }
    }

    /// The status line of an app while another batond runs with this node id.
    static func duplicateEvent(_ other: LeaseHolder) -> String {
        "refusing to take the lease: another batond runs as node \(other.node) (instance \(other.instance)); node.id must be unique per host"
    }

    // MARK: - Liveness

    /// The apps whose clock loop is more than `maxAge` past a deadline it should have woken for
    /// (see ``AppSupervisor/clockOverdue(now:)``): a hung app actor. Answering at all shows that
    /// this actor is not hung either. What batond checks before each systemd watchdog ping.
    public func stalledApps(maxAge: Duration) -> [String] {
        let now = MonotonicClock.now()
        return apps.values.compactMap { running in
            running.supervisor.clockOverdue(now: now) > maxAge ? running.supervisor.app : nil
        }.sorted()
    }

    // MARK: - NodeController

    public func status() async -> NodeStatus {
        var statuses: [AppStatus] = []
        for app in config.apps {
            guard let running = apps[app.name] else {
                statuses.append(AppStatus(name: app.name, role: .stopped, paused: app.paused, priority: app.priority, leader: nil, token: nil, backendRunning: false, lastEvent: lastEvents[app.name]))
                continue
            }
            let supervisor = running.supervisor
            let phase = await supervisor.phase
            let held = await supervisor.heldLease
            let observed = await supervisor.observedLease
            let leader = held != nil ? config.node.id : observed?.holder.node
            var status = AppStatus(
                name: app.name, role: AppStatus.Role(phase), paused: await supervisor.isPaused, priority: app.priority, leader: leader,
                token: held?.token ?? observed?.token, backendRunning: backendRunning[app.name] ?? false,
                lastEvent: duplicate.map(Self.duplicateEvent) ?? lastEvents[app.name])
            status.lastHook = await supervisor.lastHookResult
            status.pausedUntil = PauseEnd.wallClock(await supervisor.pausedUntil, now: MonotonicClock.now(), wallNow: Date())
            status.vips = app.vips.isEmpty ? nil : app.vips.map { "\($0.cidr) on \($0.interface)" }
            status.replication = await running.parts.replica?.status()
            status.configDigests = configDigests(of: app)
            status.placement = placementNotes[app.name]
            statuses.append(status)
        }
        var node = NodeStatus(
            node: config.node.id, instance: instance, cluster: config.cluster, version: BatonVersion.current, natsConnected: client.isConnected,
            apps: statuses, systemdUnit: systemdUnit)
        node.drained = await placementSelf().drained
        return node
    }

    private func configDigests(of app: AppConfig) -> [String: String] {
        if let cached = configDigestCache[app.name], cached.config == app { return cached.digests }
        let digests = ConfigDigest.sections(of: app)
        configDigestCache[app.name] = (app, digests)
        return digests
    }

    public func stepdown(app: String) async -> ControlReply {
        guard let running = apps[app] else { return ControlReply(ok: false, message: "node \(config.node.id) has no app \(app)") }
        guard await running.supervisor.phase == .active else {
            return ControlReply(ok: false, message: "\(app) is not active on \(config.node.id)")
        }
        await running.supervisor.send(.stepdownRequested)
        return ControlReply(ok: true, message: "\(app) is stepping down on \(config.node.id)")
    }

    public func switchover(app: String, to target: String) async -> ControlReply {
        guard let running = apps[app] else { return ControlReply(ok: false, message: "node \(config.node.id) has no app \(app)") }
        guard target != config.node.id else { return ControlReply(ok: false, message: "\(app) is already on \(target)") }
        guard await running.supervisor.phase == .active else {
            return ControlReply(ok: false, message: "\(app) is not active on \(config.node.id)")
        }
        await running.supervisor.send(.switchoverRequested(to: target))
        return ControlReply(ok: true, message: "\(app) is handing over from \(config.node.id) to \(target)")
    }

    public func pause(app: String) async -> ControlReply {
        guard let running = apps[app] else { return ControlReply(ok: false, message: "node \(config.node.id) has no app \(app)") }
        await running.supervisor.send(.pauseRequested)
        lastEvents[app] = "paused"
        return ControlReply(ok: true, message: "\(app) paused on \(config.node.id)")
    }

    public func pause(app: String, for duration: Duration) async -> ControlReply {
        guard let running = apps[app] else { return ControlReply(ok: false, message: "node \(config.node.id) has no app \(app)") }
        await running.supervisor.send(.pauseRequestedFor(duration))
        let until = PauseEnd.wallClock(await running.supervisor.pausedUntil, now: MonotonicClock.now(), wallNow: Date())
        lastEvents[app] = "paused for \(duration.configString)"
        return ControlReply(
            ok: true, message: "\(app) paused on \(config.node.id) for \(duration.configString) (until \(until ?? "?"))", pausedUntil: until)
    }

    public func resume(app: String) async -> ControlReply {
        guard let running = apps[app] else { return ControlReply(ok: false, message: "node \(config.node.id) has no app \(app)") }
        await running.supervisor.send(.resumeRequested)
        lastEvents[app] = "resumed"
        return ControlReply(ok: true, message: "\(app) resumed on \(config.node.id)")
    }

    public func snapshot(app: String) async -> ControlReply {
        guard let running = apps[app] else { return ControlReply(ok: false, message: "node \(config.node.id) has no app \(app)") }
        guard let replica = running.parts.replica else {
            return ControlReply(ok: false, message: "\(app) has no sqlite section: there is no database to snapshot")
        }
        guard await running.supervisor.phase == .active else {
            return ControlReply(ok: false, message: "\(app) is not active on \(config.node.id): snapshots are taken by the active node")
        }
        do {
            let snapshot = try await replica.snapshotNow()
            return ControlReply(
                ok: true, message: "snapshot \(snapshot.id) of \(app) taken on \(config.node.id): txid \(snapshot.txid), \(snapshot.bytes) bytes",
                snapshot: snapshot)
        } catch {
            return ControlReply(ok: false, message: "snapshot of \(app) on \(config.node.id) failed: \(error)")
        }
    }
}
