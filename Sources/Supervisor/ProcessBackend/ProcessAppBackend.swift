import BatonCore
import FenceKeeper
import Logging

/// An app backend made of a child process (run through the fence keeper), its restart policy
/// and its health check: what the app supervisor drives for `backend: {process: ...}`.
public actor ProcessAppBackend: AppBackend {
    private let process: ProcessBackend
    private let health: HealthCheckConfig?
    private let prober: HealthProber?
    private let logger: Logger
    private var restarts: RestartTracker
    private var shouldRun = false
    private var token: UInt64 = 0
    private var supervision: Task<Void, Never>?
    private var monitor: Task<Void, Never>?
    private nonisolated let failureStream: AsyncStream<AppBackendFailure>
    private let failureContinuation: AsyncStream<AppBackendFailure>.Continuation

    /// Creates the backend of `app` on `node`.
    public init(app: AppConfig, node: String, process config: ProcessBackendConfig, keeperPath: String? = nil, logger: Logger) {
        self.process = ProcessBackend(
            configuration: .init(app: app.name, node: node, process: config, keeperPath: keeperPath, claims: FenceKeeperClaims(app: app)),
            logger: logger)
        self.health = app.health
        self.prober = app.health.map { HealthProber(probe: $0.probe, timeout: $0.timeout) }
        self.restarts = RestartTracker(policy: config.restart)
        var logger = logger
        logger[metadataKey: "app"] = "\(app.name)"
        self.logger = logger
        (failureStream, failureContinuation) = AsyncStream.makeStream(of: AppBackendFailure.self, bufferingPolicy: .bufferingNewest(16))
    }

    public nonisolated func failures() -> AsyncStream<AppBackendFailure> { failureStream }

    public func armFence(token: UInt64, deadline: MonotonicInstant) async {
        do {
            try await process.arm(token: token, deadline: deadline)
        } catch {
            logger.error("cannot arm the fence keeper", metadata: ["error": "\(error)"])
        }
    }

    public func disarmFence() async {
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

    private func handle(_ exit: ProcessBackend.Exit) async {
        guard shouldRun, exit.token == token else { return }
        guard case .exited = exit.cause else { return }
        switch restarts.backendExited(exit.status, at: MonotonicClock.now()) {
        case .restart(let pause):
            logger.warning("backend exited; restarting", metadata: ["exit": "\(exit)", "after": "\(pause)"])
            try? await Task.sleep(for: pause)
            guard shouldRun, exit.token == token else { return }
            do {
                try await process.start(token: token)
            } catch {
                failureContinuation.yield(.exhausted("restart failed: \(error)"))
            }
        case .giveUp(let reason):
            logger.error("backend keeps failing", metadata: ["reason": "\(reason)"])
            failureContinuation.yield(.exhausted(reason))
        }
    }

    public func waitUntilHealthy(token: UInt64) async throws {
        guard let health, let prober else { return }
        var lastFailure = "no probe yet"
        while shouldRun, self.token == token, !Task.isCancelled {
            if let failure = await prober.check() {
                lastFailure = failure
                try await Task.sleep(for: health.interval)
            } else {
                startMonitor(health: health, prober: prober, token: token)
                return
            }
        }
        throw HealthCheckFailed(reason: "stopped before the backend was healthy (last probe: \(lastFailure))")
    }

    private func startMonitor(health: HealthCheckConfig, prober: HealthProber, token: UInt64) {
        monitor?.cancel()
        monitor = monitorHealth(
            health, prober: prober, isCurrent: { [weak self] in await self?.isRunning(token: token) ?? false }, failures: failureContinuation)
    }

    private func isRunning(token: UInt64) -> Bool { shouldRun && self.token == token }

    public func stop() async {
        shouldRun = false
        monitor?.cancel()
        monitor = nil
        await process.stop()
    }

    public func dispose() async {
        shouldRun = false
        monitor?.cancel()
        supervision?.cancel()
        failureContinuation.finish()
        await process.shutdown()
    }

    public func fence() async {
        shouldRun = false
        monitor?.cancel()
        monitor = nil
        await process.fence()
    }
}

/// The backend never became healthy.
public struct HealthCheckFailed: Error, CustomStringConvertible {
    public var reason: String
    public var description: String { "health check failed: \(reason)" }
}

extension FenceKeeperClaims {
    /// The claims of `app` a fence keeper releases: its VIPs, and its unit for a systemd backend.
    public init(app: AppConfig) {
        var units: [Unit] = []
        if case .systemd(let systemd) = app.backend { units.append(Unit(name: systemd.unit, bus: systemd.bus.rawValue)) }
        self.init(addresses: app.vips.map { Address(cidr: $0.cidr, interface: $0.interface) }, units: units)
    }
}
