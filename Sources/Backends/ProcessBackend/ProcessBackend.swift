import BatonCore
import FenceKeeper
import Foundation
import Logging
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Runs one app's backend as a child process, through a fence keeper.
///
/// The backend is not batond's child: it is the child of a small `baton-fence-keeper` process
/// (one per app, started on the first ``arm(token:deadline:)``) that batond feeds over a pipe.
/// The keeper kills the backend's whole process group with SIGKILL when the last armed deadline
/// passes, or at once when batond disappears, even if batond is frozen; so a backend never
/// outlives batond's claim on the lease. The backend runs in its own session, with `BATON_APP`,
/// `BATON_NODE` and `BATON_EPOCH` (the fencing token) in its environment; its stdout and stderr
/// go to the logger, line by line, tagged with `stream`.
///
/// Every method may be called in any order and more than once.
public actor ProcessBackend {
    /// What to run and where the keeper is.
    public struct Configuration: Sendable, Hashable {
        /// The app's name (`BATON_APP`, and log metadata).
        public var app: String
        /// This node's id (`BATON_NODE`).
        public var node: String
        /// The command, environment, directory, user, group and stop timeout.
        public var process: ProcessBackendConfig
        /// The keeper executable; when nil, `BATON_FENCE_KEEPER` from the environment, else
        /// `baton-fence-keeper` next to the running executable.
        public var keeperPath: String?
        /// Whether the backend inherits batond's environment (minus `BATON_*`) under the
        /// configured variables. Default true.
        public var inheritEnvironment: Bool
        /// Longest logged output line, in bytes; longer lines are logged in pieces.
        public var maxLogLineLength: Int
        /// What the keeper removes besides the process group when the deadline passes or
        /// batond goes away (the app's VIPs).
        public var claims: FenceKeeperClaims

        /// Creates a configuration.
        public init(
            app: String, node: String, process: ProcessBackendConfig, keeperPath: String? = nil, inheritEnvironment: Bool = true,
            maxLogLineLength: Int = 4096, claims: FenceKeeperClaims = FenceKeeperClaims()
        ) {
            self.app = app
            self.node = node
            self.process = process
            self.keeperPath = keeperPath
            self.inheritEnvironment = inheritEnvironment
            self.maxLogLineLength = maxLogLineLength
            self.claims = claims
        }
    }

    /// Why a backend ended.
    public enum ExitCause: Sendable, Hashable, CustomStringConvertible {
        /// It exited on its own (or something outside Baton killed it).
        case exited
        /// It ended after ``stop(timeout:)`` asked it to.
        case stopped
        /// The keeper killed it: a ``fence()`` or a stop past its timeout (`.requested`), the
        /// armed deadline passing, or batond going away.
        case killed(KillCause)
        /// The keeper itself died; the backend died with it.
        case keeperLost(String)

        public var description: String {
            switch self {
            case .exited: "exited on its own"
            case .stopped: "stopped"
            case .killed(let cause): "killed: \(cause)"
            case .keeperLost(let reason): "lost with its fence keeper: \(reason)"
            }
        }
    }

    /// One backend run that ended.
    public struct Exit: Sendable, Hashable, CustomStringConvertible {
        /// The main process (and process group) id.
        public var pid: Int32
        /// The fencing token it ran under.
        public var token: UInt64
        /// How the main process ended; nil when unknown (the keeper died).
        public var status: ExitStatus?
        /// Why.
        public var cause: ExitCause

        public var description: String {
            "backend pid \(pid) (epoch \(token)) \(status.map { "\($0)" } ?? "ended"), \(cause)"
        }
    }

    /// Every backend run that ended, in order, whatever the cause. The restart policy applies to
    /// ``ExitCause/exited``; the others were asked for (or are fencing).
    public nonisolated let exits: AsyncStream<Exit>
    private let exitsContinuation: AsyncStream<Exit>.Continuation

    /// What runs, and where the keeper is.
    public nonisolated let configuration: Configuration
    private let logger: Logger
    /// Launches the keeper and tells this backend what it reports.
    private let client: FenceKeeperClient
    /// How long the keeper has to confirm a kill before it is killed itself.
    private let keeperKillGrace: Duration

    /// The keeper this backend commands (from the client), until its end was reported.
    private var keeper: FenceKeeperClient.Handle?
    /// The highest keeper number whose end was reported: a handle at or below it is dead.
    private var lastEndedKeeper = 0
    private var armed: (token: UInt64, deadline: MonotonicInstant)?
    /// Every start request gets the next run number; an escalation or a late report names the
    /// run it belongs to, so it can never act on a later run under the same keeper.
    private var nextRun: UInt64 = 1
    private var running: (pid: Int32, token: UInt64, run: UInt64)?
    private var startInFlight: (token: UInt64, run: UInt64, continuation: CheckedContinuation<Int32, any Error>)?
    /// Escalation timers of the current run; cancelled when it ends.
    private var escalationTimers: [Task<Void, Never>] = []
    private var lastKill: KillCause?
    private var stopRequested = false
    private var goneWaiters: [CheckedContinuation<Void, Never>] = []

    /// Creates a backend; nothing runs until ``arm(token:deadline:)`` and ``start(token:)``.
    public init(
        configuration: Configuration, logger: Logger, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        threadPool: NIOThreadPool = .singleton
    ) {
        self.init(configuration: configuration, logger: logger, eventLoopGroup: eventLoopGroup, threadPool: threadPool, keeperLaunch: nil)
    }

    init(
        configuration: Configuration, logger: Logger, eventLoopGroup: any EventLoopGroup, threadPool: NIOThreadPool,
        keeperLaunch: KeeperLaunch?, keeperKillGrace: Duration = .seconds(2)
    ) {
        self.keeperKillGrace = keeperKillGrace
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "app"] = "\(configuration.app)"
        self.logger = logger
        var outputLogger = logger
        outputLogger[metadataKey: "source"] = "backend"
        self.client = FenceKeeperClient(
            launch: { () throws(FenceKeeperError) -> KeeperLaunch in
                if let keeperLaunch { return keeperLaunch }
                return try KeeperLaunch.keeper(app: configuration.app, keeperPath: configuration.keeperPath, claims: configuration.claims)
            }, maxLineLength: configuration.maxLogLineLength, logger: logger, outputLogger: outputLogger, eventLoopGroup: eventLoopGroup,
            threadPool: threadPool)
        (exits, exitsContinuation) = AsyncStream.makeStream(of: Exit.self, bufferingPolicy: .bufferingNewest(64))
    }

    deinit {
        // The client ends the keeper when it goes (the keeper kills whatever still runs).
        exitsContinuation.finish()
    }

    /// The running backend's main process (and process group) id.
    public var pid: Int32? { running?.pid }
    /// The keeper's pid, once it reported in.
    public var keeperPID: Int32? { get async { await client.keeperPID } }
    /// Whether a backend runs (or is being started).
    public var isRunning: Bool { running != nil || startInFlight != nil }

    // MARK: - Fencing

    /// Tells the keeper to kill the backend at `deadline` (on `CLOCK_MONOTONIC`, see
    /// ``MonotonicClock``) unless re-armed before. Starts the keeper if needed; throws only when
    /// it cannot be started. Does not wait for the keeper to read the line.
    public func arm(token: UInt64, deadline: MonotonicInstant) async throws {
        let connection = try await ensureKeeper()
        armed = (token, deadline)
        connection.send(.arm(token: token, deadline: deadline.nanoseconds))
    }

    /// Lifts the deadline (the backend is stopped, nothing to fence).
    public func disarm() {
        armed = nil
        keeper?.connection.send(.disarm)
    }

    // MARK: - Running

    /// Starts the backend under `token` (its `BATON_EPOCH`). Returns once it runs; throws a
    /// ``ProcessBackendError`` with the reason when it cannot start ("command /usr/bin/nope not
    /// found", "user nobody2 not found", "permission denied", not armed, ...). Does nothing when
    /// it already runs under the same token.
    public func start(token: UInt64) async throws {
        if let running {
            if running.token == token { return }
            throw ProcessBackendError(.busy, "a backend (pid \(running.pid)) still runs under epoch \(running.token)")
        }
        guard startInFlight == nil else { throw ProcessBackendError(.busy, "a start is already in progress") }
        guard armed != nil, let connection = keeper?.connection else {
            throw ProcessBackendError(.notArmed, "the fence keeper is not armed: a backend starts only under a fence deadline")
        }
        let spec = StartSpec(
            token: token, arguments: configuration.process.command, environment: environment(token: token),
            workingDirectory: configuration.process.workingDirectory, user: configuration.process.user,
            group: configuration.process.group)
        let run = nextRun
        nextRun += 1
        let pid = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int32, any Error>) in
            startInFlight = (token, run, continuation)
            connection.send(.start(spec))
        }
        logger.info("backend started", metadata: ["pid": "\(pid)", "epoch": "\(token)"])
    }

    /// Stops the backend gracefully: SIGTERM to its process group, SIGKILL to everything after
    /// `timeout` (default: the configured stop timeout). Returns once the group is gone.
    public func stop(timeout: Duration? = nil) async {
        guard isRunning, let connection = keeper?.connection else { return }
        let timeout = timeout ?? configuration.process.stopTimeout
        stopRequested = true
        connection.send(.signal(.term))
        let run = currentRun
        let escalation = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            guard !Task.isCancelled else { return }
            await self?.escalate(run: run, reason: "it did not stop within \(timeout) of SIGTERM")
        }
        await waitUntilGone()
        escalation.cancel()
    }

    /// Kills the backend now: SIGKILL to its process group and every process it left. Returns
    /// once they are gone.
    public func fence() async {
        guard isRunning, keeper != nil else { return }
        escalate(run: currentRun, reason: nil)
        await waitUntilGone()
    }

    /// Fences the backend if it runs, then ends the keeper (closing its pipe, as a batond exit
    /// would) and reaps it. A later ``arm(token:deadline:)`` starts a new keeper.
    public func shutdown() async {
        await fence()
        await client.shutdown()
    }

    // MARK: - Internals

    /// The run that is running or being started.
    private var currentRun: UInt64? { running?.run ?? startInFlight?.run }


    /// Sends KILL for `run` (logging `reason` when it is not a plain fence); if that run is
    /// still there after ``keeperKillGrace``, kills the keeper itself. Does nothing when `run`
    /// already ended: a kill meant for an earlier run never touches a later one.
    private func escalate(run: UInt64?, reason: String?) {
        guard let run, currentRun == run, let current = keeper else { return }
        if let reason {
            logger.warning("killing the backend", metadata: ["reason": "\(reason)"])
        }
        current.connection.send(.kill)
        let keeperID = current.id
        let grace = keeperKillGrace
        escalationTimers.append(Task { [weak self] in
            try? await Task.sleep(for: grace)
            guard !Task.isCancelled else { return }
            await self?.keeperUnresponsive(keeperID: keeperID, run: run)
        })
    }

    private func keeperUnresponsive(keeperID: Int, run: UInt64) {
        guard currentRun == run, let current = keeper, current.id == keeperID else { return }
        logger.critical(
            "the fence keeper did not kill the backend within \(keeperKillGrace.configString); killing the keeper (the backend dies with it)",
            metadata: ["pid": "\(running?.pid ?? 0)"])
        current.connection.killProcess()
    }

    /// The current run ended: its escalation timers have nothing left to do.
    private func runEnded() {
        for timer in escalationTimers { timer.cancel() }
        escalationTimers.removeAll()
    }

    /// Escalation timers still pending. For tests.
    var pendingEscalations: Int { escalationTimers.count }

    private func waitUntilGone() async {
        guard isRunning else { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            if isRunning {
                goneWaiters.append(continuation)
            } else {
                continuation.resume()
            }
        }
    }

    private func resumeGoneWaitersIfIdle() {
        guard !isRunning else { return }
        let waiters = goneWaiters
        goneWaiters.removeAll()
        for waiter in waiters { waiter.resume() }
    }

    /// Writes a raw line to the keeper, well-formed or not. For tests.
    func sendRawLine(_ line: String) {
        keeper?.connection.send(line: line)
    }

    /// The spawned keeper process (a wrapper around the keeper in some tests). For tests.
    var keeperProcessID: pid_t? { keeper?.connection.pid }

    /// Closes the command pipe as a vanishing batond would, without fencing first. For tests.
    func closeKeeperCommands() {
        keeper?.connection.closeCommands()
    }

    /// Waits until the keeper handled every line sent so far; false when it is gone. For tests.
    func roundTrip() async -> Bool {
        await client.roundTrip()
    }

    private func environment(token: UInt64) -> [String] {
        var variables: [String: String] = [:]
        if configuration.inheritEnvironment {
            for (name, value) in ProcessInfo.processInfo.environment where !name.hasPrefix("BATON_") {
                variables[name] = value
            }
            if configuration.process.user != nil {
                // The keeper fills these in for the user the backend runs as.
                for name in ["HOME", "USER", "LOGNAME"] { variables[name] = nil }
            }
        }
        for (name, value) in configuration.process.environment { variables[name] = value }
        variables["BATON_APP"] = configuration.app
        variables["BATON_NODE"] = configuration.node
        variables["BATON_EPOCH"] = "\(token)"
        return variables.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
    }

    private func ensureKeeper() async throws -> KeeperConnection {
        if let keeper { return keeper.connection }
        let handle: FenceKeeperClient.Handle
        do {
            handle = try await client.launch { [weak self] event in await self?.keeperEvent(event) }
        } catch {
            throw ProcessBackendError(error)
        }
        // The keeper may have ended while this call waited (its end is then already handled).
        if handle.id > lastEndedKeeper { keeper = handle }
        return handle.connection
    }

    private func keeperEvent(_ event: FenceKeeperClient.Event) async {
        switch event {
        case .report(let report, let id): receive(report, keeperID: id)
        case .ended(let id): keeperEnded(keeperID: id)
        }
    }

    private func receive(_ report: KeeperReport, keeperID: Int) {
        guard keeper?.id == keeperID else { return }
        switch report {
        case .ready, .pong:
            break  // the client's business
        case .started(let pid):
            guard let start = startInFlight else {
                logger.error("the fence keeper reported a start nobody asked for", metadata: ["pid": "\(pid)"])
                return
            }
            startInFlight = nil
            running = (pid, start.token, start.run)
            lastKill = nil
            stopRequested = false
            start.continuation.resume(returning: pid)
        case .startFailed(let message):
            guard let start = startInFlight else { return }
            startInFlight = nil
            runEnded()
            start.continuation.resume(throwing: ProcessBackendError(.startFailed, message))
            resumeGoneWaitersIfIdle()
        case .killed(let pid, let cause):
            lastKill = cause
            switch cause {
            case .deadline:
                logger.error("the fence keeper killed the backend: its deadline passed", metadata: ["pid": "\(pid)", "cause": "\(cause)"])
            case .requested:
                logger.notice("backend killed", metadata: ["pid": "\(pid)"])
            case .batondGone:
                logger.error("the fence keeper killed the backend", metadata: ["pid": "\(pid)", "cause": "\(cause)"])
            }
        case .expired(let token, let deadline, let now):
            logger.notice(
                "fence deadline passed with no backend running",
                metadata: ["epoch": "\(token)", "late": "\((now - deadline) / 1_000_000)ms"])
            if armed?.deadline.nanoseconds == deadline { armed = nil }
        case .exited(let pid, let status):
            guard let current = running, current.pid == pid else {
                logger.debug("exit of an unknown backend", metadata: ["pid": "\(pid)"])
                return
            }
            let cause: ExitCause = lastKill.map { .killed($0) } ?? (stopRequested ? .stopped : .exited)
            running = nil
            lastKill = nil
            stopRequested = false
            runEnded()
            let exit = Exit(pid: pid, token: current.token, status: status, cause: cause)
            if cause == .exited {
                logger.warning("backend exited", metadata: ["pid": "\(pid)", "status": "\(status)"])
            } else {
                logger.info("backend gone", metadata: ["pid": "\(pid)", "status": "\(status)", "cause": "\(cause)"])
            }
            exitsContinuation.yield(exit)
            resumeGoneWaitersIfIdle()
        case .error(let message):
            logger.error("the fence keeper rejected a line", metadata: ["error": "\(message)"])
            if let start = startInFlight {
                startInFlight = nil
                runEnded()
                start.continuation.resume(throwing: ProcessBackendError(.startFailed, "the fence keeper rejected the start: \(message)"))
                resumeGoneWaitersIfIdle()
            }
        }
    }

    /// The keeper's reports ended: it is exiting (the client reaps it after this).
    private func keeperEnded(keeperID: Int) {
        lastEndedKeeper = max(lastEndedKeeper, keeperID)
        guard keeper?.id == keeperID else { return }
        keeper = nil
        armed = nil
        if let start = startInFlight {
            startInFlight = nil
            start.continuation.resume(throwing: ProcessBackendError(.keeperExited, "the fence keeper exited before the backend started"))
        }
        if let current = running {
            running = nil
            let exit = Exit(pid: current.pid, token: current.token, status: nil, cause: .keeperLost("the fence keeper exited"))
            logger.error("the fence keeper exited while the backend ran", metadata: ["pid": "\(current.pid)"])
            exitsContinuation.yield(exit)
        }
        lastKill = nil
        stopRequested = false
        runEnded()
        resumeGoneWaitersIfIdle()
    }
}
