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

/// A fence keeper that guards claims only: a systemd unit (with its epoch file) and VIPs, no
/// process of its own. The same `baton-fence-keeper` executable and pipe protocol as
/// ``ProcessBackend``, minus `START`: batond arms it with the lease deadline; when the deadline
/// passes without a re-arm or disarm (batond frozen or hung), or when batond goes away, the
/// keeper removes the epoch file, sends SIGKILL to the unit's cgroup (KillUnit), stops the unit
/// and removes the VIPs. The keeper is spawned on the first ``arm(token:deadline:)``.
actor ClaimKeeper {
    /// What the keeper releases, and where its executable is.
    struct Configuration: Sendable, Hashable {
        var app: String
        var keeperPath: String?
        var claims: FenceKeeperClaims
    }

    private let configuration: Configuration
    private let logger: Logger
    private let group: any EventLoopGroup
    private let threadPool: NIOThreadPool
    private var connection: KeeperConnection?
    private var connectionID = 0
    private var launching: Task<KeeperConnection, any Error>?
    private var reportedPID: Int32?
    private var pingWaiters: [UInt64: CheckedContinuation<Bool, Never>] = [:]
    private var nextPing: UInt64 = 1
    private var endWaiters: [CheckedContinuation<Void, Never>] = []

    init(
        configuration: Configuration, logger: Logger, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        threadPool: NIOThreadPool = .singleton
    ) {
        self.configuration = configuration
        self.logger = logger
        self.group = eventLoopGroup
        self.threadPool = threadPool
    }

    deinit {
        connection?.closeCommands()
    }

    /// The keeper's pid, once it reported in.
    var keeperPID: Int32? { reportedPID }

    /// Tells the keeper to release the claims at `deadline` unless re-armed before. Starts the
    /// keeper if needed; throws only when it cannot be started, a ``FenceKeeperError`` naming
    /// the executable and the reason.
    func arm(token: UInt64, deadline: MonotonicInstant) async throws {
        let connection = try await ensureKeeper()
        connection.send(.arm(token: token, deadline: deadline.nanoseconds))
    }

    /// Lifts the deadline.
    func disarm() {
        connection?.send(.disarm)
    }

    /// Waits until the keeper handled every line sent so far; false when none runs.
    func roundTrip() async -> Bool {
        guard let connection else { return false }
        let number = nextPing
        nextPing += 1
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            pingWaiters[number] = continuation
            connection.send(.ping(number))
        }
    }

    /// Ends the keeper (closing its pipe, as a batond exit would: it releases the claims, which
    /// are already released after a stop) and reaps it.
    func shutdown() async {
        guard let current = connection else { return }
        let id = connectionID
        current.closeCommands()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            if connection != nil, connectionID == id {
                endWaiters.append(continuation)
            } else {
                continuation.resume()
            }
        }
    }

    private func ensureKeeper() async throws -> KeeperConnection {
        if let connection { return connection }
        if let launching { return try await launching.value }
        let launch = try KeeperLaunch.keeper(app: configuration.app, keeperPath: configuration.keeperPath, claims: configuration.claims)
        let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        var outputLogger = logger
        outputLogger[metadataKey: "source"] = "fence-keeper"
        let task = Task { [logger, group, threadPool, outputLogger] in
            try await KeeperConnection.spawn(
                launch: launch, environment: environment, logger: logger, outputLogger: outputLogger, maxLineLength: 4096,
                group: group, threadPool: threadPool)
        }
        launching = task
        defer { launching = nil }
        let spawned = try await task.value
        if let connection {
            spawned.closeCommands()
            Task { _ = await spawned.reap() }
            return connection
        }
        connectionID += 1
        let id = connectionID
        connection = spawned
        Task { [weak self] in
            for await report in spawned.reports {
                await self?.receive(report, id: id)
            }
            if let self {
                await self.ended(id: id)
            } else {
                _ = await spawned.reap()
            }
        }
        logger.debug("fence keeper started", metadata: ["pid": "\(spawned.pid)"])
        return spawned
    }

    private func receive(_ report: KeeperReport, id: Int) {
        guard id == connectionID else { return }
        switch report {
        case .ready(let version, let pid):
            reportedPID = pid
            if version != KeeperProtocol.version {
                logger.error("the fence keeper speaks another protocol version", metadata: ["version": "\(version)"])
            }
        case .expired(let token, let deadline, let now):
            logger.error(
                "fence deadline passed: the fence keeper released the app's claims (unit killed and stopped, VIPs removed)",
                metadata: ["epoch": "\(token)", "late": "\((now - deadline) / 1_000_000)ms"])
        case .pong(let number):
            pingWaiters.removeValue(forKey: number)?.resume(returning: true)
        case .error(let message):
            logger.error("the fence keeper reported an error", metadata: ["error": "\(message)"])
        case .started, .startFailed, .killed, .exited:
            logger.debug("unexpected report from a claims-only fence keeper", metadata: ["report": "\(report.line)"])
        }
    }

    private func ended(id: Int) async {
        guard id == connectionID, let ended = connection else { return }
        connection = nil
        reportedPID = nil
        ended.markExiting()
        for waiter in pingWaiters.values { waiter.resume(returning: false) }
        pingWaiters.removeAll()
        let status = await ended.reap()
        logger.debug("fence keeper exited", metadata: ["status": "\(status.map { "\($0)" } ?? "unknown")"])
        let waiters = endWaiters
        endWaiters.removeAll()
        for waiter in waiters { waiter.resume() }
    }
}
