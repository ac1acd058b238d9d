import FenceKeeper
import Foundation
import Logging
import NIOCore
import NIOPosix

/// The one connection to an app's `baton-fence-keeper`, for both backends: it launches the
/// keeper on demand (one launch at a time; a second launch that raced the first is ended
/// again), numbers each keeper it runs, answers what is the keeper's own business (`READY`
/// and its pid, `PONG` for ``roundTrip()``) and hands every other report to the backend that
/// launched it, in order, followed by the keeper's end. Once a keeper ended, the next
/// ``launch(onEvent:)`` starts a new one.
///
/// The backend keeps the ``Handle`` it got from ``launch(onEvent:)`` to write commands without
/// a suspension point (a START and the record of the start in flight must happen in one step);
/// events name the handle's ``Handle/id``, so a report of an earlier keeper is never taken for
/// one of the current keeper.
actor FenceKeeperClient {
    /// A running keeper: its number and its pipes.
    struct Handle: Sendable {
        /// The keeper's number: 1 for the first keeper this client launched, then 2, ...
        let id: Int
        /// The keeper's pipes and process.
        let connection: KeeperConnection
    }

    /// What the backend hears from a keeper it launched.
    enum Event: Sendable {
        /// A report other than `READY` and `PONG`.
        case report(KeeperReport, keeper: Int)
        /// The keeper's report pipe ended: it is exiting (it is reaped after this event was
        /// handled). Pending ``roundTrip()``s answered false before.
        case ended(keeper: Int)
    }

    /// Where events go: called one at a time, in order, from the keeper's reader.
    typealias EventHandler = @Sendable (Event) async -> Void

    private let launchPlan: @Sendable () throws(FenceKeeperError) -> KeeperLaunch
    private let maxLineLength: Int
    private let logger: Logger
    private let outputLogger: Logger
    private let group: any EventLoopGroup
    private let threadPool: NIOThreadPool
    private var current: Handle?
    private var launching: Task<KeeperConnection, any Error>?
    private var lastID = 0
    private var reportedPID: Int32?
    private var pingWaiters: [UInt64: CheckedContinuation<Bool, Never>] = [:]
    private var nextPing: UInt64 = 1
    private var endWaiters: [CheckedContinuation<Void, Never>] = []

    /// A client that launches what `launch` says (evaluated at each launch, so a keeper
    /// installed later is found); the backend's output goes to `outputLogger` in lines of at
    /// most `maxLineLength` bytes.
    init(
        launch: @escaping @Sendable () throws(FenceKeeperError) -> KeeperLaunch, maxLineLength: Int = 4096, logger: Logger,
        outputLogger: Logger, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, threadPool: NIOThreadPool = .singleton
    ) {
        self.launchPlan = launch
        self.maxLineLength = maxLineLength
        self.logger = logger
        self.outputLogger = outputLogger
        self.group = eventLoopGroup
        self.threadPool = threadPool
    }

    deinit {
        // Nobody can fence through this client any more: end the keeper, which releases its
        // claims and exits (its reader reaps it).
        current?.connection.closeCommands()
    }

    /// The running keeper, if any.
    var handle: Handle? { current }

    /// The keeper's pid, once it reported `READY` (nil again once it ended).
    var keeperPID: Int32? { reportedPID }

    /// The running keeper, launched first when none runs; its events go to `onEvent` (the
    /// handler given when it was launched).
    ///
    /// - Throws: ``FenceKeeperError`` naming the executable and the reason when it cannot be
    ///   started.
    func launch(onEvent: @escaping EventHandler) async throws(FenceKeeperError) -> Handle {
        if let current { return current }
        if let launching {
            do {
                _ = try await launching.value
            } catch {
                throw Self.keeperError(error)
            }
            if let current { return current }
        }
        let launch = try launchPlan()
        let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        let task = Task { [logger, outputLogger, group, threadPool, maxLineLength] in
            try await KeeperConnection.spawn(
                launch: launch, environment: environment, logger: logger, outputLogger: outputLogger, maxLineLength: maxLineLength,
                group: group, threadPool: threadPool)
        }
        launching = task
        defer { launching = nil }
        let spawned: KeeperConnection
        do {
            spawned = try await task.value
        } catch {
            throw Self.keeperError(error)
        }
        if let current {
            // Raced with another launch: keep the first.
            spawned.closeCommands()
            Task { _ = await spawned.reap() }
            return current
        }
        lastID += 1
        let handle = Handle(id: lastID, connection: spawned)
        current = handle
        Task { [weak self] in
            for await report in spawned.reports {
                guard let self else { break }
                await self.receive(report, keeper: handle.id, onEvent: onEvent)
            }
            if let self {
                await self.ended(keeper: handle.id, onEvent: onEvent)
            } else {
                _ = await spawned.reap()
            }
        }
        logger.debug("fence keeper started", metadata: ["pid": "\(spawned.pid)"])
        return handle
    }

    /// Writes `command` to the running keeper; nothing when none runs.
    func send(_ command: KeeperCommand) {
        current?.connection.send(command)
    }

    /// Waits until the keeper handled every line sent so far; false when none runs or it ends
    /// first.
    func roundTrip() async -> Bool {
        guard let current else { return false }
        let number = nextPing
        nextPing += 1
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            pingWaiters[number] = continuation
            current.connection.send(.ping(number))
        }
    }

    /// Ends the keeper (closing its command pipe, as a batond exit would: it releases its
    /// claims) and returns once it was reaped.
    func shutdown() async {
        guard let ending = current else { return }
        ending.connection.closeCommands()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            if current?.id == ending.id {
                endWaiters.append(continuation)
            } else {
                continuation.resume()
            }
        }
    }

    private func receive(_ report: KeeperReport, keeper id: Int, onEvent: EventHandler) async {
        guard current?.id == id else { return }
        switch report {
        case .ready(let version, let pid):
            reportedPID = pid
            if version != KeeperProtocol.version {
                logger.error("the fence keeper speaks another protocol version", metadata: ["version": "\(version)"])
            }
        case .pong(let number):
            pingWaiters.removeValue(forKey: number)?.resume(returning: true)
        default:
            await onEvent(.report(report, keeper: id))
        }
    }

    private func ended(keeper id: Int, onEvent: EventHandler) async {
        guard let ending = current, ending.id == id else { return }
        current = nil
        reportedPID = nil
        ending.connection.markExiting()
        for waiter in pingWaiters.values { waiter.resume(returning: false) }
        pingWaiters.removeAll()
        await onEvent(.ended(keeper: id))
        let status = await ending.connection.reap()
        logger.debug("fence keeper exited", metadata: ["status": "\(status.map { "\($0)" } ?? "unknown")"])
        let waiters = endWaiters
        endWaiters.removeAll()
        for waiter in waiters { waiter.resume() }
    }

    private static func keeperError(_ error: any Error) -> FenceKeeperError {
        (error as? FenceKeeperError) ?? FenceKeeperError(.keeperSpawnFailed, "cannot start the fence keeper: \(error)")
    }
}
