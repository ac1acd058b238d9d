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
    private var restarts: RestartTracker
    private var shouldRun = false
    private var token: UInt64 = 0
    /// The last deadline given to the keeper: a keeper that died is re-armed with it before the
    /// backend restarts under a new one.
    private var lastArmed: (token: UInt64, deadline: MonotonicInstant)?
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
        self.prober = plan.health.map { HealthProber(probe: $0.probe, timeout: $0.timeout) }
        self.restarts = RestartTracker(policy: plan.restart)
        var logger = logger
        logger[metadataKey: "app"] = "\(plan.app)"
        self.logger = logger
        (failureStream, failureContinuation) = AsyncStream.makeStream(of: AppBackendFailure.self, bufferingPolicy: .bufferingNewest(16))
        (noticeStream, noticeContinuation) = AsyncStream.makeStream(of: AppBackendNotice.self, bufferingPolicy: .bufferingNewest(16))
    }

    public nonisolated func failures() -> AsyncStream<AppBackendFailure> { failureStream }

    public nonisolated func notices() -> AsyncStream<AppBackendNotice> { noticeStream }

    public func armFence(token: UInt64, deadline: MonotonicInstant) async {
        lastArmed = (token, deadline)
        do {
            try await process.arm(token: token, deadline: deadline)
        } catch {
            logger.error("cannot arm the fence keeper", metadata: ["error": "\(error)"])
        }
    }

    public func disarmFence() async {
        lastArmed = nil
        await process.disarm()
    }

    public func start(token: UInt64) async throws {
        self.token = token
        shouldRun = true
        restarts.reset()
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
    /// along, a stray kill) goes through the restart policy, and a spent budget is a failure
    /// that steps the app down: an active app never rests with no backend.
    private func handle(_ exit: ProcessBackend.Exit) async {
        guard shouldRun, exit.token == token else { return }
        if case .stopped = exit.cause { return }
        let status: ExitStatus? = if case .exited = exit.cause { exit.status } else { nil }
        switch restarts.backendExited(status, at: MonotonicClock.now()) {
        case .restart(let pause):
            logger.warning("backend ended while active; restarting", metadata: ["exit": "\(exit)", "after": "\(pause)"])
            noticeContinuation.yield(.backendDown("backend \(exit.cause) (epoch \(exit.token)); restarting in \(pause)"))
            try? await Task.sleep(for: pause)
            guard shouldRun, exit.token == token else { return }
            do {
                if await process.keeperPID == nil, let armed = lastArmed, armed.token == token {
                    // The keeper died with the backend: a new one starts under the same deadline
                    // (it refuses the start if that deadline has passed).
                    try await process.arm(token: armed.token, deadline: armed.deadline)
                }
                // A stop or fence may have run while this task waited above (the actor takes
                // other calls at every await): it found nothing running and reported the backend
                // gone, so nothing may start now. A keeper armed here for nothing is disarmed
                // unless the lifecycle armed it again meanwhile.
                guard shouldRun, exit.token == token else {
                    if lastArmed == nil { await process.disarm() }
                    return
                }
                try await process.start(token: token)
                let pid = await process.pid
                noticeContinuation.yield(.backendRestarted("backend restarted (epoch \(token), pid \(pid.map { "\($0)" } ?? "?"))"))
            } catch {
                failureContinuation.yield(.exhausted("restart failed: \(error)"))
            }
        case .giveUp(let reason):
            logger.error("backend keeps failing", metadata: ["reason": "\(reason)", "exit": "\(exit)"])
            noticeContinuation.yield(.backendDown("backend \(exit.cause) (epoch \(exit.token)); not restarted: \(reason)"))
            failureContinuation.yield(.exhausted(reason))
        }
    }

    public func waitUntilHealthy(token: UInt64) async throws {
        guard let health, let prober else { return }
        try await awaitFirstHealthyProbe(health, prober: prober, stopped: "stopped before the backend was healthy") { await self.isRunning(token: token) }
        startMonitor(health: health, prober: prober, token: token)
    }

    private func startMonitor(health: HealthCheckConfig, prober: HealthProber, token: UInt64) {
        monitor?.cancel()
        monitor = monitorHealth(
            health, prober: prober, isCurrent: { [weak self] in await self?.isRunning(token: token) ?? false }, failures: failureContinuation)
    }

    private func isRunning(token: UInt64) -> Bool { shouldRun && self.token == token }

    /// The process backend's stop returns once the process group is gone: past the stop
    /// timeout it is killed, and a keeper that does not confirm the kill is killed with it.
    @discardableResult
    public func stop() async -> StopOutcome {
        shouldRun = false
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
        shouldRun = false
        monitor?.cancel()
        supervision?.cancel()
        failureContinuation.finish()
        noticeContinuation.finish()
        await process.shutdown()
    }

    @discardableResult
    public func fence() async -> StopOutcome {
        shouldRun = false
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
