import Backends
import BatonCore
import Control
import Logging
import NATS
import Synchronization

/// Runs one app on this node: feeds the lease watch, NATS connection events, backend failures,
/// operator commands and the clock into an ``AppLifecycle``, and executes the actions it
/// returns. All decisions are the lifecycle's; this actor only does I/O and reports results
/// back as events, so a result that arrives late (after a state change) is judged by the
/// lifecycle, not here.
public actor AppSupervisor {
    public nonisolated let app: String
    private var lifecycle: AppLifecycle
    private let store: LeaseStore
    private let backend: any AppBackend
    private let addresses: (any AppAddresses)?
    private let replica: (any AppReplica)?
    private let client: NATSClient
    private let logger: Logger
    /// The clock's current sleep; cancelled after an event that moved the next deadline before
    /// ``clockWakesAt`` (or after every event while the clock runs to a limit), so deadlines are
    /// recomputed. An event that only moves deadlines later (a passive node seeing a renew) lets
    /// the clock sleep on: it recomputes when it wakes, without a task and a timer per event.
    /// The clock sleeps until the lifecycle's next deadline (at most ``clockIdleLimit`` when
    /// there is none, ``heldLeaseRefresh`` while the lease is held), not a fixed period: a
    /// passive app costs no wake-ups between its deadlines.
    private var clockSleep: Task<Void, Never>?
    /// When the current ``clockSleep`` ends; nil when the clock must wake after any event.
    private var clockWakesAt: MonotonicInstant?
    /// The renew request in flight and when it was sent (taken when the action is executed, so
    /// never later than the request leaves: the lease counts from it). The clock sleeps to
    /// the next renew's due time while the answer is out: the answer sets exactly that deadline, and a
    /// sleep to the fence deadline would be cut short by it (two timers per renew, not one).
    private var renewInFlight: (stamp: Stamp, sentAt: MonotonicInstant)?
    /// Keeper updates run one after another, so an older deadline never overwrites a newer one,
    /// and the backend starts only after the keeper is armed.
    private var fenceKeeperUpdates: Task<Void, Never>?
    /// The last move of the VIPs and the replica into passive mode. A promotion step waits for
    /// it: a passive transition that ran late (at start, the first one races the first
    /// acquire) would otherwise remove a VIP just claimed or abort a promotion.
    private var passiveTransition: Task<Void, Never>?
    private var notificationsContinuation: AsyncStream<AppLifecycle.Notification>.Continuation?
    /// The tasks running actions (lease writes, promotion and demotion steps; not fences), by
    /// number; each removes itself when done. Those still running when ``run()`` ends are
    /// cancelled.
    private var actionTasks: [UInt64: Task<Void, Never>] = [:]
    private var nextActionID: UInt64 = 0
    private var leaseObserver: (@Sendable (LeaseObservation, MonotonicInstant) -> Void)?
    /// When the clock loop is due to run next (monotonic nanoseconds): the end of its current
    /// sleep, or the instant it woke while it runs. See ``clockOverdue(now:)``.
    private nonisolated let clockDueNanoseconds: Atomic<Int64>
    /// ``placementState``, updated after every event.
    private nonisolated let placementMirror: Mutex<PlacementState>
    /// The longest sleep of the clock when the lifecycle has no deadline (a passive node that
    /// may not acquire: disconnected, paused, ineligible). Events that bring a deadline wake it
    /// earlier; the limit only bounds how long a cancelled sleep's timer lingers.
    static let clockIdleLimit: Duration = .seconds(60)
    /// The longest sleep of the clock while this node holds the lease: the lease gauges
    /// (`baton_lease_age_seconds`, time to fence) are refreshed when it ticks, and must stay
    /// current when renews stall (a passive app, most of a node's, has no such gauge to keep).
    static let heldLeaseRefresh: Duration = .seconds(1)
    /// The app's metrics (swift-metrics; batond exports them) and the transitions they count.
    private let metrics: AppMetrics
    private var tally = TransitionTally()
    /// The app's hooks; nil when it has none.
    private let hooks: HookRunner?
    private var hookSchedule = HookSchedule()
    /// The last hooks run (or running): the next ones wait for it, so hooks run one at a time.
    private var hookQueue: Task<Void, Never>?
    /// The summary of the last hooks that ran (`after_active hooks: 1 of 1 ran, ok`).
    public private(set) var lastHookResult: String?
    private var holder: LeaseHolder { LeaseHolder(node: lifecycle.configuration.node, instance: lifecycle.configuration.instance) }

    /// Creates a supervisor. Nothing happens until ``run()``.
    /// `configuration.hasAddresses` and `hasReplica` must match whether `addresses` and
    /// `replica` are given.
    public init(
        app: String, configuration: AppLifecycle.Configuration, paused: Bool = false, placement: PlacementGate = .open, store: LeaseStore,
        backend: any AppBackend, addresses: (any AppAddresses)? = nil, replica: (any AppReplica)? = nil, hooks: HookRunner? = nil,
        client: NATSClient, logger: Logger
    ) {
        precondition((hooks?.hooks[.beforeActive].isEmpty ?? true) == (configuration.beforeActiveTimeout == nil))
        self.hooks = hooks
        precondition(configuration.hasAddresses == (addresses != nil) && configuration.hasReplica == (replica != nil))
        self.app = app
        let lifecycle = AppLifecycle(configuration: configuration, paused: paused, placement: placement)
        self.lifecycle = lifecycle
        self.store = store
        self.backend = backend
        self.addresses = addresses
        self.replica = replica
        self.client = client
        var logger = logger
        logger[metadataKey: "app"] = "\(app)"
        self.logger = logger
        self.clockDueNanoseconds = Atomic(MonotonicClock.now().nanoseconds)
        self.placementMirror = Mutex(Self.placementState(of: lifecycle))
        self.metrics = AppMetrics(app: app, node: configuration.node)
    }

    /// How long past its due time the clock loop is at `now` (zero when it is sleeping towards a
    /// later deadline or ran on time): the loop wakes at every deadline of the lifecycle and then
    /// needs this actor, so a large value means the actor is hung. Readable from any thread.
    public nonisolated func clockOverdue(now: MonotonicInstant) -> Duration {
        let due = MonotonicInstant(nanoseconds: clockDueNanoseconds.load(ordering: .relaxed))
        return now > due ? now - due : .zero
    }

    /// The current phase.
    public var phase: AppLifecycle.Phase { lifecycle.phase }
    /// The held lease, if any.
    public var heldLease: AppLifecycle.HeldLease? { lifecycle.held }
    /// What this node last saw of another holder.
    public var observedLease: AppLifecycle.ObservedLease? { lifecycle.observed }
    /// Whether the app is paused.
    public var isPaused: Bool { lifecycle.paused }
    /// Whether the lease watch reported the lease's state at least once.
    public var leaseStateKnown: Bool { lifecycle.leaseStateKnown }
    /// What the app's placement lets this node do.
    public var placementGate: PlacementGate { lifecycle.placement }
    /// When the app's pause ends by itself (nil: not paused, or paused until resumed).
    public var pausedUntil: MonotonicInstant? { lifecycle.paused ? lifecycle.pausedUntil : nil }

    /// What placement reads of an app, taken in one call (placement runs every half second
    /// for every app: one actor hop each, not one per field).
    public struct PlacementState: Sendable, Hashable {
        /// The node holding the lease as this node knows it: this node while it holds it, the
        /// holder last seen otherwise; nil when free or not known.
        public var holder: String?
        /// Whether the lease watch reported the lease's state at least once.
        public var leaseStateKnown: Bool
        public var phase: AppLifecycle.Phase
        public var paused: Bool
        /// What the app's placement lets this node do now.
        public var gate: PlacementGate
    }

    /// The app as placement sees it, as of the last event handled; read without waiting for the
    /// actor (placement reads every app's every half second).
    public nonisolated var placementState: PlacementState { placementMirror.withLock { $0 } }

    private static func placementState(of lifecycle: AppLifecycle) -> PlacementState {
        PlacementState(
            holder: lifecycle.held != nil ? lifecycle.configuration.node : lifecycle.observed?.holder.node,
            leaseStateKnown: lifecycle.leaseStateKnown,
            phase: lifecycle.phase, paused: lifecycle.paused, gate: lifecycle.placement)
    }

    /// Notifications (acquired, active, fenced, released, ...) as they happen.
    public func notifications() -> AsyncStream<AppLifecycle.Notification> {
        let (stream, continuation) = AsyncStream.makeStream(of: AppLifecycle.Notification.self, bufferingPolicy: .bufferingNewest(256))
        notificationsContinuation = continuation
        return stream
    }

    /// Calls `observer` with every lease observation the watch delivers and the instant it was
    /// received (for the event history's flight recorder), on this actor, before the lifecycle
    /// sees it. Synchronous on purpose: a renew seen every second per app must not cost a task
    /// wake-up of its own.
    public func observeLease(_ observer: @escaping @Sendable (LeaseObservation, MonotonicInstant) -> Void) {
        leaseObserver = observer
    }

    /// Feeds an operator command or another event.
    public func send(_ event: AppLifecycle.Event) {
        apply(event)
    }

    /// Gives the app a new placement gate, unless it has that one already.
    public func updatePlacement(_ gate: PlacementGate) {
        if lifecycle.placement != gate { apply(.placementChanged(gate)) }
    }

    /// Runs until the task is cancelled. On cancellation the app is stepped down gracefully
    /// first (backend stopped, lease released), bounded by the stop timeout plus the lease ttl;
    /// then the action tasks still in flight (a health wait, a lease write; never a fence) are
    /// cancelled.
    public func run() async {
        let connectionEvents = client.events()
        // Passive until the lease says otherwise: VIPs a crashed batond left behind go away.
        execute(.followActive)
        if client.isConnected { apply(.natsConnected) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [weak self] in
                for await event in connectionEvents {
                    switch event {
                    case .connected, .reconnected: await self?.send(.natsConnected)
                    case .disconnected, .closed: await self?.send(.natsDisconnected)
                    default: break
                    }
                }
            }
            group.addTask { [weak self] in await self?.followLease() }
            group.addTask { [weak self, backend] in
                for await failure in backend.failures() {
                    switch failure {
                    case .exhausted(let reason): await self?.send(.backendFailed(reason))
                    case .unhealthy(let reason): await self?.send(.healthFailed(reason))
                    }
                }
            }
            if let addresses {
                group.addTask { [weak self] in
                    for await reason in addresses.failures() { await self?.send(.backendFailed("virtual IP: \(reason)")) }
                }
                group.addTask { [weak self] in
                    for await event in addresses.events() { await self?.report(.observed(event)) }
                }
            }
            if let replica {
                group.addTask { [weak self] in
                    for await reason in replica.failures() { await self?.send(.backendFailed("replication: \(reason)")) }
                }
            }
            await runClock(until: nil)
            if lifecycle.phase != .stopped {
                apply(.shutdownRequested)
                // The final flush may retry for up to flushTimeout (the lease is renewed meanwhile).
                let configuration = lifecycle.configuration
                let limit = MonotonicClock.now() + configuration.stopTimeout + configuration.flushTimeout + configuration.stepTimeout + configuration.timing.ttl
                await Task { await self.runClock(until: limit) }.value
            }
            group.cancelAll()
        }
        // Whatever action is still in flight (a health wait, a lease write) belongs to a run that
        // is over: its result would change nothing.
        for task in actionTasks.values { task.cancel() }
        actionTasks.removeAll()
        // The hooks of the step-down (after_passive, on_fence) finish, bounded by their timeouts.
        await hookQueue?.value
    }

    /// Runs the hooks of `point` after those already queued; returns how it went. Recorded in
    /// ``lastHookResult``; a failure is reported (log, event history, status).
    private func runHooks(_ point: HookPoint, epoch: UInt64, stopAtFirstFailure: Bool = false) async -> HookOutcome? {
        guard let run = enqueueHooks(point, epoch: epoch, stopAtFirstFailure: stopAtFirstFailure) else { return nil }
        let outcome = await run.value
        recordHooks(outcome, epoch: epoch)
        return outcome
    }

    /// Queues the hooks of `point` behind those already queued (synchronously, so the order of
    /// the calls is the order of the runs); nil when `point` has no hooks.
    private func enqueueHooks(_ point: HookPoint, epoch: UInt64, stopAtFirstFailure: Bool = false) -> Task<HookOutcome, Never>? {
        guard let hooks, !hooks.hooks[point].isEmpty else { return nil }
        let previous = hookQueue
        let run = Task<HookOutcome, Never> {
            await previous?.value
            return await hooks.run(point, epoch: epoch, stopAtFirstFailure: stopAtFirstFailure)
        }
        hookQueue = Task { _ = await run.value }
        return run
    }

    private func recordHooks(_ outcome: HookOutcome, epoch: UInt64) {
        lastHookResult = outcome.summary
        report(.hooksRan(point: outcome.point, epoch: epoch, summary: outcome.summary, succeeded: outcome.succeeded))
    }

    /// How many action tasks (not fences) are in flight: lease writes, promotion and demotion
    /// steps. Zero once ``run()`` returned.
    public var actionsInFlight: Int { actionTasks.count }

    /// Ticks the lifecycle at its deadlines. Without a limit it runs until the task is
    /// cancelled; with one, until the app has stopped (or let its lease go) or the limit passes.
    private func runClock(until limit: MonotonicInstant?) async {
        while !Task.isCancelled {
            if let limit {
                if lifecycle.phase == .stopped || (lifecycle.held == nil && lifecycle.phase == .passive) { return }
                if MonotonicClock.now() >= limit { return }
            }
            let now = MonotonicClock.now()
            var next = lifecycle.nextDeadline() ?? now + Self.clockIdleLimit
            if let renew = renewInFlight, renew.stamp == lifecycle.awaiting.renew {
                let due = lifecycle.configuration.renewDue(after: renew.sentAt)
                // Past due with the answer still out: the answer sets the deadline and wakes the clock.
                if due > now { next = min(next, due) }
            }
            if let limit { next = min(next, limit) }
            let wait = min(next - now, lifecycle.held == nil ? Self.clockIdleLimit : Self.heldLeaseRefresh)
            clockDueNanoseconds.store((now + max(wait, .zero)).nanoseconds, ordering: .relaxed)
            if wait > .zero {
                let sleeper = Task<Void, Never> { try? await Task.sleep(for: wait) }
                clockSleep = sleeper
                clockWakesAt = limit == nil ? now + wait : nil
                await withTaskCancellationHandler { await sleeper.value } onCancel: { sleeper.cancel() }
                clockSleep = nil
                clockWakesAt = nil
            }
            if Task.isCancelled { return }
            clockDueNanoseconds.store(MonotonicClock.now().nanoseconds, ordering: .relaxed)
            apply(.tick)
            metrics.lease(lifecycle.held, timing: lifecycle.configuration.timing, now: MonotonicClock.now())
        }
    }

    private func followLease() async {
        var attempt = 0
        while !Task.isCancelled {
            do {
                let watch = try await store.watch()
                attempt = 0
                for try await event in watch {
                    if case .observed(let observation) = event {
                        leaseObserver?(observation, MonotonicClock.now())
                        send(.leaseObserved(observation))
                    }
                }
                await watch.stop()
            } catch {
                if Task.isCancelled { return }
                attempt += 1
                logger.warning("lease watch failed; retrying", metadata: ["error": "\(error)", "attempt": "\(attempt)"])
                try? await Task.sleep(for: .milliseconds(min(2000, 100 * attempt)))
            }
        }
    }

    // MARK: - Executing actions

    private func apply(_ event: AppLifecycle.Event) {
        let actions = lifecycle.handle(event, now: MonotonicClock.now())
        let placement = Self.placementState(of: lifecycle)
        placementMirror.withLock { if $0 != placement { $0 = placement } }
        for action in actions { execute(action) }
        guard let clockSleep else { return }
        // The clock wakes at clockWakesAt anyway; only an earlier deadline needs it now.
        // (Every event evaluates the deadlines already due itself.)
        if let wakesAt = clockWakesAt, lifecycle.nextDeadline().map({ $0 >= wakesAt }) ?? true { return }
        clockSleep.cancel()
    }

    /// Whether `stamp` is still the step the lifecycle waits for: a step call whose decision
    /// was superseded (a fence, a timeout) while it waited its turn is not made at all.
    private func isCurrentStep(_ stamp: Stamp) -> Bool { lifecycle.awaiting.step == stamp }

    /// Runs `action` and feeds its result back with the action's stamp. Every task below is
    /// isolated to this actor, so a staleness check and the component call that follows it are
    /// not interleaved with a newer decision.
    private func execute(_ action: AppLifecycle.Action) {
        let holder = holder
        switch action {
        case .acquireLease(let replacing, let stamp):
            let ttl = lifecycle.configuration.timing.ttl
            tally.acquiring(takeover: replacing != nil)
            let id = nextActionID
            nextActionID += 1
            actionTasks[id] = Task { [store, metrics] in
                defer { self.actionTasks[id] = nil }
                let sentAt = MonotonicClock.now()
                do {
                    let revision = try await store.acquire(as: holder, ttl: ttl, replacing: replacing)
                    metrics.step("lease", took: MonotonicClock.now() - sentAt)
                    self.apply(.acquireSucceeded(revision: revision, sentAt: sentAt, stamp))
                } catch {
                    self.apply(.acquireFailed((error as? LeaseWriteError)?.failure ?? .unavailable("\(error)"), stamp))
                }
            }
        case .renewLease(let revision, let stamp):
            let ttl = lifecycle.configuration.timing.ttl
            let id = nextActionID
            nextActionID += 1
            let sentAt = MonotonicClock.now()
            renewInFlight = (stamp, sentAt)
            actionTasks[id] = Task { [store, metrics] in
                defer { self.actionTasks[id] = nil }
                do {
                    let outcome = try await store.renew(as: holder, token: stamp.token, ttl: ttl, revision: revision)
                    metrics.renewed(after: MonotonicClock.now() - sentAt, failed: false)
                    switch outcome {
                    case .renewed(let newRevision): self.apply(.renewSucceeded(revision: newRevision, sentAt: sentAt, stamp))
                    case .recognized(let newRevision): self.apply(.renewRecognized(revision: newRevision, stamp))
                    }
                } catch {
                    metrics.renewed(after: MonotonicClock.now() - sentAt, failed: true)
                    self.apply(.renewFailed((error as? LeaseWriteError)?.failure ?? .unavailable("\(error)"), stamp))
                }
            }
        case .releaseLease(let revision, let handoffTo, let stamp):
            let ttl = lifecycle.configuration.timing.ttl
            let id = nextActionID
            nextActionID += 1
            actionTasks[id] = Task { [store, metrics] in
                defer { self.actionTasks[id] = nil }
                let started = MonotonicClock.now()
                defer { metrics.step("release_lease", took: MonotonicClock.now() - started) }
                do {
                    try await store.release(as: holder, token: stamp.token, ttl: ttl, revision: revision, handoffTo: handoffTo)
                    self.apply(.releaseFinished(nil, stamp))
                } catch {
                    self.apply(.releaseFinished((error as? LeaseWriteError)?.failure ?? .unavailable("\(error)"), stamp))
                }
            }
        case .armFenceKeeper(let token, let deadline):
            let previous = fenceKeeperUpdates
            fenceKeeperUpdates = Task { [backend] in
                await previous?.value
                await backend.armFence(token: token, deadline: deadline)
            }
        case .disarmFenceKeeper:
            let previous = fenceKeeperUpdates
            fenceKeeperUpdates = Task { [backend] in
                await previous?.value
                await backend.disarmFence()
            }
        case .runPromotionStep(let step, let stamp):
            let armed = fenceKeeperUpdates
            let passive = passiveTransition
            let token = stamp.token
            let id = nextActionID
            nextActionID += 1
            actionTasks[id] = Task { [backend, addresses, replica, metrics] in
                defer { self.actionTasks[id] = nil }
                await armed?.value
                await passive?.value
                guard self.isCurrentStep(stamp) else {
                    self.logger.debug("promotion step superseded before it ran", metadata: ["step": "\(step.rawValue)", "stamp": "\(stamp)"])
                    return
                }
                let started = MonotonicClock.now()
                do {
                    switch step {
                    case .promoteReplica: try await replica?.promote(token: token)
                    case .claimAddresses: try await addresses?.claim(token: token)
                    case .beforeActive:
                        if let outcome = await self.runHooks(.beforeActive, epoch: token, stopAtFirstFailure: true), !outcome.succeeded {
                            throw HookFailure(summary: outcome.summary)
                        }
                    case .startBackend: try await backend.start(token: token)
                    case .awaitHealthy: try await backend.waitUntilHealthy(token: token)
                    }
                    metrics.step(Self.metricName(step), took: MonotonicClock.now() - started)
                    if step == .claimAddresses, addresses != nil { metrics.vips(1) }
                    if step == .awaitHealthy { metrics.health(healthy: true) }
                    self.apply(.promotionStepSucceeded(step, stamp))
                } catch {
                    if step == .awaitHealthy { metrics.health(healthy: false) }
                    self.apply(.promotionStepFailed(step, "\(error)", stamp))
                }
            }
        case .stopBackend(let stamp):
            let id = nextActionID
            nextActionID += 1
            actionTasks[id] = Task { [backend, metrics] in
                defer { self.actionTasks[id] = nil }
                guard self.isCurrentStep(stamp) else { return }
                if self.hookSchedule.runsBeforePassive(epoch: stamp.token) {
                    // Failures are reported; the step-down goes on. A fence meanwhile does not wait.
                    _ = await self.runHooks(.beforePassive, epoch: stamp.token)
                    guard self.isCurrentStep(stamp) else { return }
                }
                let started = MonotonicClock.now()
                let outcome = await backend.stop()
                metrics.step("stop_backend", took: MonotonicClock.now() - started)
                self.apply(.backendStopped(outcome, stamp))
            }
        case .flushReplica(let stamp):
            let id = nextActionID
            nextActionID += 1
            actionTasks[id] = Task { [replica, metrics] in
                defer { self.actionTasks[id] = nil }
                guard self.isCurrentStep(stamp) else { return }
                let started = MonotonicClock.now()
                defer { metrics.step("flush_replica", took: MonotonicClock.now() - started) }
                do {
                    try await replica?.flush(token: stamp.token)
                    self.apply(.demotionStepFinished(.flushReplica, failure: nil, stamp))
                } catch {
                    self.apply(.demotionStepFinished(.flushReplica, failure: "\(error)", stamp))
                }
            }
        case .setAsideDatabase(let reason, let stamp):
            let id = nextActionID
            nextActionID += 1
            actionTasks[id] = Task { [replica] in
                defer { self.actionTasks[id] = nil }
                guard self.isCurrentStep(stamp) else { return }
                do {
                    _ = try await replica?.setAside(token: stamp.token, reason: reason)
                    self.apply(.demotionStepFinished(.setAsideDatabase, failure: nil, stamp))
                } catch {
                    self.apply(.demotionStepFinished(.setAsideDatabase, failure: "\(error)", stamp))
                }
            }
        case .releaseAddresses(let stamp):
            let id = nextActionID
            nextActionID += 1
            actionTasks[id] = Task { [addresses, metrics] in
                defer { self.actionTasks[id] = nil }
                guard self.isCurrentStep(stamp) else { return }
                let started = MonotonicClock.now()
                do {
                    try await addresses?.release()
                    metrics.step("release_addresses", took: MonotonicClock.now() - started)
                    metrics.vips(0)
                    self.apply(.demotionStepFinished(.releaseAddresses, failure: nil, stamp))
                } catch {
                    // The lifecycle fences: the VIPs go the hard way, or the lease is not released.
                    self.apply(.demotionStepFinished(.releaseAddresses, failure: "\(error)", stamp))
                }
            }
        case .fence(let stamp):
            // Not gated on being current: fencing is never superseded by anything but another
            // fence, and runs at once, beside whatever step is in flight. Never cancelled when
            // run() ends: a fence runs to its end.
            Task { [backend, addresses, replica, metrics] in
                async let backendFenced = backend.fence()
                async let addressesFenced = addresses?.fence()
                async let replicaFenced: Void? = replica?.fence()
                let (backendOutcome, addressesOutcome, _) = await (backendFenced, addressesFenced, replicaFenced)
                var problems: [String] = []
                if case .unconfirmed(let why) = backendOutcome { problems.append("backend: \(why)") }
                if case .unconfirmed(let why)? = addressesOutcome { problems.append("virtual IPs: \(why)") } else { metrics.vips(0) }
                self.apply(.fenceCompleted(problems.isEmpty ? .confirmed : .unconfirmed(problems.joined(separator: "; ")), stamp))
            }
        case .followActive:
            let previous = passiveTransition
            passiveTransition = Task { [addresses, replica] in
                await previous?.value
                await addresses?.enterPassive()
                await replica?.follow()
            }
        case .notify(let notification):
            report(notification)
        }
    }

    private func report(_ notification: AppLifecycle.Notification) {
        if hooks != nil, let (point, epoch) = hookSchedule.observe(notification), let run = enqueueHooks(point, epoch: epoch) {
            // after_active, after_passive, on_fence: after the transition, never holding it up.
            Task { self.recordHooks(await run.value, epoch: epoch) }
        }
        log(notification)
        if case .demoting(.healthFailed) = notification { metrics.health(healthy: false) }
        metrics.record(tally.observe(notification))
        notificationsContinuation?.yield(notification)
    }

    /// A promotion step's `step` label in ``BatonMetricName/stepDuration``.
    private static func metricName(_ step: PromotionStep) -> String {
        switch step {
        case .promoteReplica: "promote_replica"
        case .claimAddresses: "claim_addresses"
        case .beforeActive: "before_active_hooks"
        case .startBackend: "start_backend"
        case .awaitHealthy: "await_healthy"
        }
    }

    private func log(_ notification: AppLifecycle.Notification) {
        switch notification {
        case .acquired(let token): logger.info("acquired the lease", metadata: ["epoch": "\(token)"])
        case .becameActive(let token): logger.notice("active", metadata: ["epoch": "\(token)"])
        case .demoting(let reason): logger.notice("stepping down", metadata: ["reason": "\(reason)"])
        case .released(let token): logger.info("released the lease", metadata: ["epoch": "\(token)"])
        case .releaseUnconfirmed(let token, let reason):
            logger.warning("lease release did not go through; it frees at its expiry", metadata: ["epoch": "\(token)", "reason": "\(reason)"])
        case .demotionStepFailed(let step, let reason):
            logger.error("demotion step failed; going on", metadata: ["step": "\(step.rawValue)", "reason": "\(reason)"])
        case .flushRetrying(let token, let attempt, let reason, let giveUpIn):
            logger.warning(
                "final WAL flush failed; keeping the lease (renewing) with the backend stopped and trying again",
                metadata: ["epoch": "\(token)", "attempt": "\(attempt)", "reason": "\(reason)", "gives-up-in": "\(AppLifecycle.readable(giveUpIn))"])
        case .flushAbandoned(let token, let attempts, let reason):
            logger.critical(
                "final WAL flush gave up: transactions committed under this epoch may not have been shipped; the database is set aside, then the lease is released",
                metadata: ["epoch": "\(token)", "attempts": "\(attempts)", "reason": "\(reason)"])
        case .fenced(let token, let reason): logger.error("fenced", metadata: ["epoch": "\(token)", "reason": "\(reason)"])
        case .fenceUnconfirmed(let token, let reason):
            logger.critical(
                "fencing could not confirm the backend gone and the virtual IPs removed; the lease is not released: it runs out while the fence keeper kills at its deadline",
                metadata: ["epoch": "\(token)", "reason": "\(reason)"])
        case .staleResult(let what): logger.info("\(what)")
        case .hooksRan(let point, let epoch, let summary, let succeeded):
            if succeeded {
                logger.info("hooks ran", metadata: ["hook": "\(point.rawValue)", "epoch": "\(epoch)", "summary": "\(summary)"])
            } else {
                logger.error("hook failed", metadata: ["hook": "\(point.rawValue)", "epoch": "\(epoch)", "summary": "\(summary)"])
            }
        case .duplicateInstance(let holder):
            logger.critical("another batond runs with this node id; this one will never take the lease", metadata: ["other": "\(holder)"])
        case .observed(let event): logger.warning("\(event)")
        case .ignored(let reason): logger.debug("ignored", metadata: ["reason": "\(reason)"])
        }
    }
}

/// A before_active hook failed or timed out: the promotion is aborted (rolled back, cooldown).
struct HookFailure: Error, CustomStringConvertible {
    var summary: String
    var description: String { summary }
}
