import BatonCore
import FenceKeeper
import Logging

/// An app backend made of a child process (run through the fence keeper), its restart policy
/// and its health check: what the app supervisor drives for `backend: {process: ...}`.
public actor ProcessAppBackend: AppBackend, AppBackendNotices {
    private let process: ProcessBackend
    private let health: HealthCheckConfig?
    private let prober: HealthProber?
    private let logger: Logger
    /// Every decision: whether and under which token the backend should run, the deadline last
    /// given to the keeper (a keeper that died is re-armed with it before a restart), restarts.
    private var run: BackendRunState
    private var supervision: Task<Void, Never>?
    private var monitor: Task<Void, Never>?
    private nonisolated let failureStream: AsyncStream<AppBackendFailure>
    private let failureContinuation: AsyncStream<AppBackendFailure>.Continuation
    private nonisolated let noticeStream: AsyncStream<AppBackendNotice>
    private let noticeContinuation: AsyncStream<AppBackendNotice>.Continuation

    /// Creates the backend of `app` on `node`, running `config` (which replaces the plan's
    /// process section: tests run other commands under an app's config).
    public init(app: AppConfig, node: String, process config: ProcessBackendConfig, keeperPath: String? = nil, logger: Logger) {
        var plan = AppPlan(app: app, node: node)
        plan.backend = .process(config)
        self.init(plan: plan, keeperPath: keeperPath, logger: logger)
    }

    /// Creates the backend of a plan whose ``AppPlan/backend`` is a process (a plan with another
    /// backend runs nothing: it is a programming error, trapped).
    public init(plan: AppPlan, keeperPath: String? = nil, logger: Logger) {
        guard case .process(let config) = plan.backend else {
            preconditionFailure("ProcessAppBackend(plan:) for app \(plan.app), whose backend is \(plan.backend)")
        }
        self.process = ProcessBackend(
            configuration: .init(app: plan.app, node: plan.node, process: config, keeperPath: keeperPath, claims: plan.keeperClaims),
            logger: logger)
        self.health = plan.health
        self.prober = plan.health.map {
            HealthProber(probe: $0.probe, timeout: $0.timeout, metrics: HealthProbeMetrics(app: plan.app, node: plan.node, probe: $0.probe))
        }
        self.run = BackendRunState(policy: plan.restart)
        var logger = logger
        logger[metadataKey: "app"] = "\(plan.app)"
        self.logger = logger
        (failureStream, failureContinuation) = AsyncStream.makeStream(of: AppBackendFailure.self, bufferingPolicy: .bufferingNewest(16))
        (noticeStream, noticeContinuation) = AsyncStream.makeStream(of: AppBackendNotice.self, bufferingPolicy: .bufferingNewest(16))
    }

    public nonisolated func failures() -> AsyncStream<AppBackendFailure> { failureStream }

    public nonisolated func notices() -> AsyncStream<AppBackendNotice> { noticeStream }

    public func armFence(token: UInt64, deadline: MonotonicInstant) async {
        await perform(run.armRequested(token: token, deadline: deadline))
    }

    public func disarmFence() async {
        await perform(run.disarmRequested())
    }

    public func start(token: UInt64) async throws {
        run.startRequested(token: token)
        try await process.start(token: token)
        superviseExits()
    }

    /// Restarts the backend when it exits on its own, until the restart budget is spent.
    private func superviseExits() {
        guard supervision == nil else { return }
        let exits = process.exits
        supervision = Task { [weak self] in
            for await exit in exits {
                guard let self else { return }
                await self.handle(exit)
            }
        }
    }

    /// Whatever ended the backend while it should run (it exited, the keeper died and took it
    /// along, a stray kill) goes through the restart policy (``BackendRunState``), and a spent
    /// budget is a failure that steps the app down: an active app never rests with no backend.
    /// Exits are handled one at a time, the backoff included.
    private func handle(_ exit: ProcessBackend.Exit) async {
        let ending: BackendRunState.Ending =
            switch exit.cause {
            case .stopped: .stopped
            case .exited: .exited(exit.status?.description)
            case .killed, .keeperLost: .other
            }
        await perform(run.backendEnded(token: exit.token, ending: ending, cause: "\(exit.cause)", at: MonotonicClock.now()), exit: exit)
    }

    /// Executes the run's effects in order, feeding results back.
    private func perform(_ effects: [BackendRunState.Effect], exit: ProcessBackend.Exit? = nil) async {
        for effect in effects {
            switch effect {
            case .arm(let arming):
                do {
                    try await process.arm(token: arming.token, deadline: arming.deadline)
                } catch {
                    logger.error("cannot arm the fence keeper", metadata: ["error": "\(error)"])
                }
            case .disarm:
                await process.disarm()
            case .reportDown(let text):
                noticeContinuation.yield(.backendDown(text))
            case .reportRestarted(let text):
                noticeContinuation.yield(.backendRestarted(text))
            case .giveUp(let reason):
                logger.error("backend keeps failing", metadata: ["reason": "\(reason)", "exit": "\(exit.map { "\($0)" } ?? "?")"])
                failureContinuation.yield(.exhausted(reason))
            case .fail(let reason):
                failureContinuation.yield(.exhausted(reason))
            case .waitToRestart(let token, let pause):
                logger.warning("backend ended while active; restarting", metadata: ["exit": "\(exit.map { "\($0)" } ?? "?")", "after": "\(pause)"])
                try? await Task.sleep(for: pause)
                let keeperRunning = await process.keeperPID != nil
                await perform(run.restartDue(token: token, keeperRunning: keeperRunning))
            case .rearmForRestart(let arming):
                // The keeper died with the backend: a new one starts under the same deadline (it
                // refuses the start if that deadline has passed).
                do {
                    try await process.arm(token: arming.token, deadline: arming.deadline)
                } catch {
                    await perform(run.restartFailed(token: arming.token, reason: "\(error)"))
                    continue
                }
                // A stop or fence may have run while the keeper was armed (the actor takes other
                // calls at every await): the run decides whether the restart still happens.
                await perform(run.rearmedForRestart(token: arming.token))
            case .restart(let token):
                do {
                    try await process.start(token: token)
                } catch {
                    await perform(run.restartFailed(token: token, reason: "\(error)"))
                    continue
                }
                await perform(run.restarted(token: token, pid: await process.pid))
            case .stopStray:
                break  // a watched unit's effect: a process's run never returns it
            }
        }
    }

    public func waitUntilHealthy(token: UInt64) async throws {
        guard let health, let prober else { return }
        try await awaitFirstHealthyProbe(health, prober: prober, stopped: "stopped before the backend was healthy") { await self.run.shouldRun(token: token) }
        startMonitor(health: health, prober: prober, token: token)
    }

    private func startMonitor(health: HealthCheckConfig, prober: HealthProber, token: UInt64) {
        monitor?.cancel()
        monitor = monitorHealth(
            health, prober: prober, isCurrent: { [weak self] in await self?.run.shouldRun(token: token) ?? false }, failures: failureContinuation)
    }

    /// The process backend's stop returns once the process group is gone: past the stop
    /// timeout it is killed, and a keeper that does not confirm the kill is killed with it.
    @discardableResult
    public func stop() async -> StopOutcome {
        run.stopRequested()
        monitor?.cancel()
        monitor = nil
        await process.stop()
        return .confirmed
    }

    /// The running backend's pid. For tests.
    var backendPID: Int32? { get async { await process.pid } }
    /// The fence keeper's process. For tests.
    var keeperProcessID: Int32? { get async { await process.keeperProcessID } }

    public func dispose() async {
        run.stopRequested()
        monitor?.cancel()
        supervision?.cancel()
        failureContinuation.finish()
        noticeContinuation.finish()
        await process.shutdown()
    }

    @discardableResult
    public func fence() async -> StopOutcome {
        run.stopRequested()
        monitor?.cancel()
        monitor = nil
        await process.fence()
        return .confirmed
    }
}

/// The backend never became healthy.
public struct HealthCheckFailed: Error, CustomStringConvertible {
    public var reason: String
    public var description: String { "health check failed: \(reason)" }
}
