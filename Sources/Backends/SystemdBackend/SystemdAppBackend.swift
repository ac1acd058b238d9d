import BatonCore
import FenceKeeper
import Logging
import Systemd

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An app backend made of an existing systemd unit: what the app supervisor drives for
/// `backend: {systemd: {unit: ...}}`.
///
/// - **Setup** (``connect(configuration:logger:)``): removes a stale epoch file, checks that the
///   manager knows the unit, and installs the runtime drop-in (``BatonDropIn``): `BindsTo=` +
///   `After=` batond's own unit (when batond runs in one), `ConditionPathExists=` +
///   `EnvironmentFile=` the epoch file. Without the epoch file the unit cannot start, whoever
///   asks; with it, the unit sees `BATON_EPOCH`.
/// - **Start**: writes the epoch file, resets a `failed` state, StartUnit, waits for the job,
///   and checks that the unit is really active.
/// - **Stop**: removes the epoch file, then StopUnit. **Fence**: removes the epoch file, then
///   KillUnit (SIGKILL to the whole cgroup) within the fence budget, then StopUnit. Epoch file
///   writes and removals run off the actor in the order they were asked for
///   (``EpochFileQueue``): a removal asked for after a start's write always wins.
/// - **Fence keeper**: a `baton-fence-keeper` without a process (over ``FenceKeeperClient``,
///   the same client as the process backend's, minus `START`) holds the armed deadline; when
///   it passes, or batond goes away, the keeper removes the epoch file,
///   kills and stops the unit, and removes the app's VIPs.
/// - **While active**, the unit going `failed` or `inactive` behind Baton's back is restarted
///   through the restart policy; once the budget is spent the backend reports
///   ``AppBackendFailure/exhausted(_:)`` and the node steps down.
/// - **While passive**, a unit found running (started by hand with the epoch file faked, or
///   left over) is stopped again, logged as a warning and reported as
///   ``AppBackendNotice/strayStopped(_:)``; a unit that cannot be stopped is reported as
///   ``AppBackendNotice/cannotStop(_:)``.
///
/// State changes come from systemd's `PropertiesChanged` signals (no polling); every decision
/// re-reads the unit's state first, since a signal may be stale by the time it is handled.
/// The decisions (what should run under which token, the armed deadline, the restart budget,
/// which operations are in flight, what a unit found down or up means) are the pure
/// ``BackendRunState``; this actor executes its effects and feeds the results back.
public actor SystemdAppBackend: AppBackend, AppBackendNotices {
    /// What to manage and how.
    public struct Configuration: Sendable, Hashable {
        /// What the drop-in binds the unit to.
        public enum Binding: Sendable, Hashable {
            /// The service unit batond runs in, asked from the unit's manager (GetUnitByPID);
            /// no binding (with a warning) when batond is not in a service of that manager.
            case batondUnit
            /// This unit.
            case unit(String)
            /// No binding.
            case none
        }

        /// The app's name (log metadata, keeper diagnostics).
        public var app: String
        /// This node's id (the `node` label of the health probe metrics; empty when not set).
        public var node: String = ""
        /// The unit, e.g. `web.service`.
        public var unit: String
        /// The bus of the unit's manager.
        public var bus: SystemdBusAddress
        /// Restarts after the unit fails or stops behind Baton's back while active.
        public var restart: RestartPolicy
        /// The app's health check, if any.
        public var health: HealthCheckConfig?
        /// How long KillUnit may take when fencing (the lease's fence budget).
        public var fenceBudget: Duration
        /// The epoch file (`BATON_EPOCH=<token>`); the unit starts only while it exists.
        public var epochFile: String
        /// What the drop-in binds the unit to.
        public var binding: Binding
        /// The fence keeper executable (see ``FenceKeeperLocator``).
        public var keeperPath: String?
        /// VIPs the fence keeper removes with the unit.
        public var addresses: [FenceKeeperClaims.Address]
        /// How long a start job may take.
        public var startTimeout: Duration
        /// How long a stop job may take before the unit is killed.
        public var stopTimeout: Duration
        /// How long a single D-Bus call may take.
        public var callTimeout: Duration

        /// Creates a configuration.
        public init(
            app: String, unit: String, bus: SystemdBusAddress, restart: RestartPolicy = RestartPolicy(), health: HealthCheckConfig? = nil,
            fenceBudget: Duration = .milliseconds(500), epochFile: String? = nil, binding: Binding = .batondUnit, keeperPath: String? = nil,
            addresses: [FenceKeeperClaims.Address] = [], startTimeout: Duration = AppPlan.SystemdPlan.defaultJobTimeout,
            stopTimeout: Duration = AppPlan.SystemdPlan.defaultJobTimeout, callTimeout: Duration = AppPlan.SystemdPlan.defaultCallTimeout
        ) {
            self.app = app
            self.unit = unit
            self.bus = bus
            self.restart = restart
            self.health = health
            self.fenceBudget = fenceBudget
            self.epochFile = epochFile ?? EpochFile.defaultPath(app: app)
            self.binding = binding
            self.keeperPath = keeperPath
            self.addresses = addresses
            self.startTimeout = startTimeout
            self.stopTimeout = stopTimeout
            self.callTimeout = callTimeout
        }

        /// The configuration of `app`'s `backend.systemd`. `bus` overrides the configured bus
        /// (tests); the epoch file goes to `<runtimeDirectory>/<app>/epoch`.
        public init(
            app: AppConfig, systemd: SystemdBackendConfig, bus: SystemdBusAddress? = nil, runtimeDirectory: String = "/run/baton",
            keeperPath: String? = nil
        ) {
            let plan = AppPlan(app: app, node: "", runtimeDirectory: runtimeDirectory)
            guard case .systemd(let unit) = plan.backend else { preconditionFailure("AppPlan of a systemd backend without a systemd plan") }
            self.init(plan: plan, systemd: unit, bus: bus, keeperPath: keeperPath)
        }

        /// The configuration of a plan's systemd backend (`systemd` is the plan's
        /// ``AppPlan/Backend/systemd(_:)``). `bus` overrides the planned bus (tests).
        public init(plan: AppPlan, systemd: AppPlan.SystemdPlan, bus: SystemdBusAddress? = nil, keeperPath: String? = nil) {
            let configured: SystemdBusAddress = systemd.bus == .user ? .user : .system
            self.init(
                app: plan.app, unit: systemd.unit, bus: bus ?? configured, restart: systemd.restart, health: plan.health,
                fenceBudget: plan.timing.fenceBudget, epochFile: systemd.epochFile, keeperPath: keeperPath,
                addresses: plan.keeperClaims.addresses, startTimeout: systemd.startTimeout, stopTimeout: systemd.stopTimeout,
                callTimeout: systemd.callTimeout)
            node = plan.node
        }

        /// What the fence keeper releases: the epoch file, the unit, the VIPs.
        var keeperClaims: FenceKeeperClaims {
            FenceKeeperClaims(addresses: addresses, units: [FenceKeeperClaims.Unit(name: unit, bus: bus.keeperArgument)], files: [epochFile])
        }
    }

    /// The configuration.
    public nonisolated let configuration: Configuration
    /// What the drop-in binds the unit to (nil: not bound).
    public nonisolated let boundTo: String?
    private let manager: SystemdManager
    /// The claims-only keeper: spawned on the first arm; when the deadline passes without a
    /// re-arm or disarm (batond frozen or hung), or when batond goes away, it removes the epoch
    /// file, kills and stops the unit and removes the VIPs.
    private let keeper: FenceKeeperClient
    private let prober: HealthProber?
    private let logger: Logger
    private var unit: String { configuration.unit }
    /// Every decision: whether and under which token the unit should run, the deadline the
    /// keeper holds (starts and restarts happen only before it, so a batond that thaws after the
    /// keeper released the unit does not restart it under a lease it may no longer hold), the
    /// restart budget, the operations in flight.
    private var run: BackendRunState
    /// Whether a start, restart or stray stop holds the turn; the others wait in order.
    private var turnTaken = false
    private var turnWaiters: [CheckedContinuation<Void, Never>] = []
    private var pendingStop: Task<Void, Never>?
    /// Epoch file writes and removals, off the actor, done in the order they were asked for.
    private let epochFiles = EpochFileQueue()
    private var following: Task<Void, Never>?
    private var monitor: Task<Void, Never>?
    private nonisolated let failureStream: AsyncStream<AppBackendFailure>
    private let failureContinuation: AsyncStream<AppBackendFailure>.Continuation
    private nonisolated let noticeStream: AsyncStream<AppBackendNotice>
    private let noticeContinuation: AsyncStream<AppBackendNotice>.Continuation

    private init(configuration: Configuration, manager: SystemdManager, boundTo: String?, logger: Logger) {
        self.configuration = configuration
        self.manager = manager
        self.boundTo = boundTo
        self.logger = logger
        var outputLogger = logger
        outputLogger[metadataKey: "source"] = "fence-keeper"
        self.keeper = FenceKeeperClient(
            launch: { () throws(FenceKeeperError) -> KeeperLaunch in
                try KeeperLaunch.keeper(app: configuration.app, keeperPath: configuration.keeperPath, claims: configuration.keeperClaims)
            }, logger: logger, outputLogger: outputLogger)
        self.prober = configuration.health.map {
            HealthProber(
                probe: $0.probe, timeout: $0.timeout, metrics: HealthProbeMetrics(app: configuration.app, node: configuration.node, probe: $0.probe))
        }
        self.run = BackendRunState(policy: configuration.restart)
        (failureStream, failureContinuation) = AsyncStream.makeStream(of: AppBackendFailure.self, bufferingPolicy: .bufferingNewest(16))
        (noticeStream, noticeContinuation) = AsyncStream.makeStream(of: AppBackendNotice.self, bufferingPolicy: .bufferingNewest(16))
    }

    /// Sets the backend up: removes a stale epoch file, connects to the unit's manager, checks
    /// that it knows the unit, installs the drop-in (daemon-reload), and starts following the
    /// unit's state (a unit found running is stopped: this node starts passive).
    ///
    /// - Throws: ``SystemdBackendError`` naming the unit and the reason (no bus, unknown unit,
    ///   permission denied, ...).
    public static func connect(configuration: Configuration, logger: Logger) async throws -> SystemdAppBackend {
        var logger = logger
        logger[metadataKey: "app"] = "\(configuration.app)"
        logger[metadataKey: "unit"] = "\(configuration.unit)"
        let unit = configuration.unit
        do {
            try await EpochFileQueue().remove(at: configuration.epochFile).value()
        } catch {
            throw SystemdBackendError("cannot remove the stale epoch file of unit \(unit): \(error)")
        }
        let manager: SystemdManager
        do {
            manager = try await SystemdManager.connect(to: configuration.bus, callTimeout: configuration.callTimeout, logger: logger)
        } catch {
            throw SystemdBackendError("cannot reach the systemd manager of unit \(unit) on \(configuration.bus): \(error)")
        }
        do {
            do {
                _ = try await manager.unitState(unit)
            } catch {
                throw SystemdBackendError("unit \(unit): \(error)")
            }
            let boundTo = try await resolveBinding(configuration, manager: manager, logger: logger)
            do {
                let path = try await manager.installDropIn(BatonDropIn(unit: unit, boundTo: boundTo, epochFile: configuration.epochFile))
                logger.info(
                    "systemd drop-in installed", metadata: ["path": "\(path)", "bound-to": "\(boundTo ?? "nothing")", "epoch-file": "\(configuration.epochFile)"])
            } catch {
                throw SystemdBackendError("cannot install the Baton drop-in for unit \(unit): \(error)")
            }
            let backend = SystemdAppBackend(configuration: configuration, manager: manager, boundTo: boundTo, logger: logger)
            await backend.startFollowing()
            return backend
        } catch {
            await manager.close()
            throw error
        }
    }

    private static func resolveBinding(_ configuration: Configuration, manager: SystemdManager, logger: Logger) async throws -> String? {
        switch configuration.binding {
        case .none:
            return nil
        case .unit(let unit):
            return unit
        case .batondUnit:
            let own: String?
            do {
                own = try await manager.unit(ofPID: getpid())
            } catch {
                logger.warning("cannot ask systemd which unit batond runs in", metadata: ["error": "\(error)"])
                own = nil
            }
            if let own, own.hasSuffix(".service") { return own }
            logger.warning(
                "batond does not run in a service unit of the systemd manager on \(configuration.bus) (found: \(own ?? "none")): \(configuration.unit) is not bound to batond. If batond dies, the fence keeper still kills and stops the unit, but systemd will not.")
            return nil
        }
    }

    public nonisolated func failures() -> AsyncStream<AppBackendFailure> { failureStream }

    public nonisolated func notices() -> AsyncStream<AppBackendNotice> { noticeStream }

    // MARK: - Fence keeper

    public func armFence(token: UInt64, deadline: MonotonicInstant) async {
        await perform(run.armRequested(token: token, deadline: deadline))
    }

    public func disarmFence() async {
        await perform(run.disarmRequested())
    }

    /// The keeper's pid once it runs. For tests.
    var keeperPID: Int32? {
        get async { await keeper.keeperPID }
    }

    /// Waits until the keeper has handled every command sent so far. For tests.
    func keeperRoundTrip() async -> Bool {
        await keeper.roundTrip()
    }

    // MARK: - Start and stop

    public func start(token: UInt64) async throws {
        guard !run.disposed else { throw SystemdBackendError("unit \(unit): the backend was disposed of") }
        run.startRequested(token: token)
        await takeTurn()
        defer {
            endTurn()
            recheckSoon()
        }
        await pendingStop?.value
        guard run.shouldRun(token: token) else { throw SystemdBackendError("unit \(unit): stopped before it started") }
        do {
            try await startChecked(token: token)
        } catch {
            // A refused or failed start must not be retried later by the reconciler (under a
            // token that may no longer be ours): the lifecycle decides what happens next.
            run.startFailed(token: token)
            throw error
        }
        logger.info("unit started", metadata: ["epoch": "\(token)"])
    }

    /// Writes the epoch file, clears a failed state, starts the unit and checks that it is
    /// active. Called during its turn.
    private func startChecked(token: UInt64) async throws {
        if let refusal = run.startRefusal(at: MonotonicClock.now()) {
            throw SystemdBackendError("unit \(unit) not started: \(refusal)")
        }
        do {
            try await epochFiles.write(epoch: token, to: configuration.epochFile).value()
        } catch {
            throw SystemdBackendError("cannot write the epoch file of unit \(unit): \(error)")
        }
        // A stop or fence that came while the file was written removed it again (its removal
        // was queued after the write): start nothing.
        guard run.shouldRun(token: token) else {
            throw SystemdBackendError("unit \(unit) not started: it was stopped while its epoch file was written")
        }
        // A unit that failed before (or was fenced) stays `failed`, and its start rate limit
        // counts on; neither is Baton's business any more.
        try? await manager.resetFailedUnit(unit)
        let result: JobResult
        do {
            result = try await manager.startUnit(unit, timeout: configuration.startTimeout)
        } catch {
            throw SystemdBackendError("cannot start unit \(unit): \(error)")
        }
        let state: UnitState
        do {
            state = try await manager.unitState(unit)
        } catch {
            throw SystemdBackendError("unit \(unit) started (job \(result)) but its state cannot be read: \(error)")
        }
        guard state.activeState == .active || state.activeState == .reloading else {
            throw SystemdBackendError(
                "unit \(unit) is not active after its start job ended '\(result)': it is \(state). A Condition…= of the unit may not hold (Baton's is ConditionPathExists=\(configuration.epochFile)), or it exited at once; see `journalctl -u \(unit)`"
            )
        }
    }

    /// Stops the unit; confirmed only when systemd reports it inactive or failed afterwards.
    @discardableResult
    public func stop() async -> StopOutcome {
        run.stopRequested()
        monitor?.cancel()
        monitor = nil
        // The removal is queued now, before any later write; the unit is stopped once it ran.
        // The whole stop is an operation in flight (signals meanwhile are not news).
        run.operationBegan()
        let removal = epochFiles.remove(at: configuration.epochFile)
        let task = Task {
            await self.finishRemoval(removal)
            await self.stopUnit(context: "stop")
        }
        pendingStop = task
        await task.value
        run.operationEnded()
        recheckSoon()
        return await confirmDown(context: "stop")
    }

    /// KillUnit and StopUnit; confirmed only when systemd reports the unit down afterwards.
    @discardableResult
    public func fence() async -> StopOutcome {
        run.stopRequested()
        monitor?.cancel()
        monitor = nil
        run.operationBegan()
        await finishRemoval(epochFiles.remove(at: configuration.epochFile))
        await killAndStop(context: "fence")
        run.operationEnded()
        recheckSoon()
        return await confirmDown(context: "fence")
    }

    /// Asks systemd for the unit's state: only inactive or failed is a confirmed stop.
    private func confirmDown(context: String) async -> StopOutcome {
        do {
            let state = try await manager.unitState(unit)
            return Self.isDown(state) ? .confirmed : .unconfirmed("unit \(unit) is \(state.activeState)/\(state.subState) after the \(context)")
        } catch {
            return .unconfirmed("the state of unit \(unit) after the \(context) is unknown: \(error)")
        }
    }

    public func dispose() async {
        guard run.disposeRequested() else { return }
        monitor?.cancel()
        following?.cancel()
        await finishRemoval(epochFiles.remove(at: configuration.epochFile))
        await keeper.shutdown()
        do {
            try await manager.removeDropIn(for: unit)
        } catch {
            logger.error("cannot remove the Baton drop-in", metadata: ["error": "\(error)"])
        }
        await manager.close()
        failureContinuation.finish()
        noticeContinuation.finish()
    }

    /// StopUnit; if it fails or times out, KillUnit and StopUnit again. Reports a unit that
    /// still runs after that.
    private func stopUnit(context: String) async {
        run.operationBegan()
        defer { run.operationEnded() }
        do {
            try await manager.stopUnit(unit, timeout: configuration.stopTimeout)
            logger.info("unit stopped", metadata: ["context": "\(context)"])
            return
        } catch {
            logger.error("cannot stop the unit; killing it", metadata: ["context": "\(context)", "error": "\(error)"])
        }
        await killAndStop(context: context)
    }

    private func killAndStop(context: String) async {
        let manager = self.manager
        let unit = self.unit
        let killed = await withTimeLimit(configuration.fenceBudget) { () -> (any Error)? in
            do {
                try await manager.killUnit(unit)
                return nil
            } catch {
                return error
            }
        }
        switch killed {
        case .none:
            logger.error("KillUnit did not answer within the fence budget", metadata: ["context": "\(context)", "budget": "\(configuration.fenceBudget)"])
        case .some(.none):
            logger.notice("unit killed (SIGKILL to its cgroup)", metadata: ["context": "\(context)"])
        case .some(.some(let error)):
            // Also what a unit that is not running answers.
            logger.debug("KillUnit failed", metadata: ["context": "\(context)", "error": "\(error)"])
        }
        do {
            try await manager.stopUnit(unit, timeout: min(configuration.stopTimeout, .seconds(10)))
        } catch {
            logger.error("cannot stop the unit after killing it", metadata: ["context": "\(context)", "error": "\(error)"])
        }
        if let state = try? await manager.unitState(unit), Self.isUp(state) || state.activeState == .deactivating {
            let text = "unit \(unit) could not be stopped (\(context)): it is \(state)"
            logger.critical("\(text)")
            noticeContinuation.yield(.cannotStop(text))
        }
    }

    /// Waits for a queued removal of the epoch file (see ``EpochFileQueue``); logs a failure.
    private func finishRemoval(_ removal: EpochFileQueue.Pending) async {
        do {
            try await removal.value()
        } catch {
            logger.error("cannot remove the epoch file", metadata: ["error": "\(error)"])
        }
    }

    // MARK: - Following the unit

    private func startFollowing() {
        let states = manager.unitStates(unit)
        following = Task { [weak self] in
            for await state in states {
                guard let self else { return }
                await self.observe(state)
            }
        }
    }

    private static func isDown(_ state: UnitState) -> Bool {
        state.activeState == .failed || state.activeState == .inactive
    }

    private static func isUp(_ state: UnitState) -> Bool {
        state.activeState == .active || state.activeState == .activating || state.activeState == .reloading
    }

    private static func activity(_ state: UnitState) -> BackendRunState.UnitActivity {
        isUp(state) ? .up : isDown(state) ? .down : .changing
    }

    private func observe(_ state: UnitState) async {
        if run.unitSignalled(Self.activity(state)) { await reconcile() }
    }

    /// After an operation: signals that arrived during it were ignored, so look again.
    private func recheckSoon() {
        Task { [weak self] in await self?.reconcile() }
    }

    /// Reads the unit's current state and lets the run decide about it.
    private func reconcile() async {
        guard run.idle, let state = try? await manager.unitState(unit) else { return }
        let cause = "unit \(unit) went \(state.activeState)/\(state.subState) behind Baton's back"
        await perform(run.unitRead(Self.activity(state), cause: cause, at: MonotonicClock.now()), state: state)
    }

    /// Executes the run's effects in order, feeding results back. `state` is the unit's state
    /// the effects were decided on, for the logs.
    private func perform(_ effects: [BackendRunState.Effect], state: UnitState? = nil) async {
        for effect in effects {
            switch effect {
            case .arm(let arming):
                do {
                    try await keeper.armClaims(token: arming.token, deadline: arming.deadline, logger: logger)
                } catch {
                    logger.error("cannot arm the fence keeper", metadata: ["error": "\(error)"])
                }
            case .disarm:
                await keeper.send(.disarm)
            case .reportDown(let text):
                noticeContinuation.yield(.backendDown(text))
            case .reportRestarted(let text):
                noticeContinuation.yield(.backendRestarted(text))
            case .giveUp(let reason), .fail(let reason):
                logger.error("unit keeps failing; giving up", metadata: ["reason": "\(reason)"])
                failureContinuation.yield(.exhausted(reason))
            case .waitToRestart(let token, let pause):
                // The handling of a down unit is an operation: signals during the backoff and
                // the restart are not news.
                run.operationBegan()
                logger.warning(
                    "unit is down while active; restarting it", metadata: ["state": "\(state.map { "\($0)" } ?? "?")", "after": "\(pause)"])
                try? await Task.sleep(for: pause)
                // A claims-only keeper that died is not re-armed here (it is on the next renew).
                await perform(run.restartDue(token: token, keeperRunning: true))
                run.operationEnded()
            case .rearmForRestart(let arming):
                // Not returned while the keeper is reported running (see `.waitToRestart`);
                // executed all the same: arm, then restart if still wanted.
                do {
                    try await keeper.armClaims(token: arming.token, deadline: arming.deadline, logger: logger)
                } catch {
                    await perform(run.unitRestartFailed(token: arming.token, reason: "\(error)", at: MonotonicClock.now()))
                    continue
                }
                await perform(run.rearmedForRestart(token: arming.token))
            case .restart(let token):
                await restartUnit(token: token)
            case .stopStray:
                await stopStray(state)
            }
        }
    }

    /// Starts the unit again under `token` in its turn, if it should still run then.
    private func restartUnit(token: UInt64) async {
        await takeTurn()
        guard run.shouldRun(token: token) else {
            endTurn()
            return
        }
        do {
            try await startChecked(token: token)
        } catch {
            endTurn()
            await perform(run.unitRestartFailed(token: token, reason: "\(error)", at: MonotonicClock.now()))
            return
        }
        endTurn()
        logger.notice("unit restarted", metadata: ["epoch": "\(token)"])
        await perform(run.unitRestarted(token: token, unit: unit))
        recheckSoon()
    }

    /// The unit runs while this node is passive: stop it again.
    private func stopStray(_ state: UnitState?) async {
        let found = state.map { "\($0.activeState)/\($0.subState)" } ?? "running"
        let text = "unit \(unit) was found \(found) while this node is passive (started outside Baton); stopped it again"
        logger.warning("unit runs while this node is passive (started outside Baton); stopping it", metadata: ["state": "\(state.map { "\($0)" } ?? "?")"])
        await takeTurn()
        defer { endTurn() }
        guard run.strayStopWanted else { return }
        await finishRemoval(epochFiles.remove(at: configuration.epochFile))
        await stopUnit(context: "stray start while passive")
        noticeContinuation.yield(.strayStopped(text))
    }

    // MARK: - Health

    public func waitUntilHealthy(token: UInt64) async throws {
        guard let health = configuration.health, let prober else { return }
        try await awaitFirstHealthyProbe(health, prober: prober, stopped: "unit \(unit) stopped before it was healthy") { await self.shouldRun(token: token) }
        startMonitor(health: health, prober: prober, token: token)
    }

    private func startMonitor(health: HealthCheckConfig, prober: HealthProber, token: UInt64) {
        monitor?.cancel()
        monitor = monitorHealth(
            health, prober: prober, isCurrent: { [weak self] in await self?.shouldRun(token: token) ?? false }, failures: failureContinuation)
    }

    private func shouldRun(token: UInt64) -> Bool { run.shouldRun(token: token) }

    // MARK: - Turns

    /// Start, restart and stray stops run one at a time, in order; each is an operation in
    /// flight from the moment it asks for its turn. Stop and fence do not wait for a turn:
    /// their StopUnit (mode `replace`) cancels a start job in flight, and the epoch file they
    /// remove first keeps any later start from starting anything.
    private func takeTurn() async {
        run.operationBegan()
        if !turnTaken {
            turnTaken = true
            return
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            turnWaiters.append(continuation)
        }
    }

    private func endTurn() {
        run.operationEnded()
        if turnWaiters.isEmpty {
            turnTaken = false
        } else {
            turnWaiters.removeFirst().resume()
        }
    }
}

/// A systemd backend could not be set up or could not start its unit; the message names the
/// unit and the reason.
public struct SystemdBackendError: Error, Sendable, Hashable, CustomStringConvertible {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}

extension SystemdBusAddress {
    /// How the fence keeper's `--release-unit BUS@UNIT` names this bus.
    var keeperArgument: String {
        switch self {
        case .system: "system"
        case .user: "user"
        case .address(let address): address
        }
    }
}
