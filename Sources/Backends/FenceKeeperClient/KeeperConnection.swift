import CBatonProcess
import FenceKeeper
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How to run the keeper: the executable and its whole argv (argv[0] included).
struct KeeperLaunch: Sendable, Hashable {
    var executable: String
    var arguments: [String]

    /// The keeper of `app` (found by ``FenceKeeperLocator``), watching this process and
    /// releasing `claims` at its deadline: the launch both backends use.
    ///
    /// - Throws: ``FenceKeeperError`` (`keeperNotFound`) when the executable is missing.
    static func keeper(app: String, keeperPath: String?, claims: FenceKeeperClaims) throws(FenceKeeperError) -> KeeperLaunch {
        let path: String
        do {
            path = try FenceKeeperLocator.locate(explicitPath: keeperPath)
        } catch let error as FenceKeeperError {
            throw error
        } catch {
            throw FenceKeeperError(.keeperNotFound, "cannot locate the fence keeper: \(error)")
        }
        return KeeperLaunch(executable: path, arguments: [path, "--parent", "\(getpid())", "--app", app] + claims.keeperArguments)
    }
}

/// One running fence keeper: its process, the command/report pipe pair (a NIO pipe channel) and
/// the two pipes that carry the backend's stdout and stderr into batond's log.
final class KeeperConnection: Sendable {
    /// The spawned process: the keeper (or, in tests, a wrapper around it).
    let pid: pid_t
    /// Reports, in order; finishes when the keeper closes its stdout (it exited).
    let reports: AsyncStream<KeeperReport>
    private let channel: any Channel
    private let threadPool: NIOThreadPool
    private let logger: Logger
    /// Set once the keeper is known to be exiting (its stdout hit end of file): from then on its
    /// pid may be reaped and reused, so it is never signalled again.
    private let exiting = NIOLockedValueBox(false)

    private init(pid: pid_t, reports: AsyncStream<KeeperReport>, channel: any Channel, threadPool: NIOThreadPool, logger: Logger) {
        self.pid = pid
        self.reports = reports
        self.channel = channel
        self.threadPool = threadPool
        self.logger = logger
    }

    /// Spawns the keeper (on the thread pool: posix_spawn blocks until the exec), then wires its
    /// pipes into NIO. `outputLogger` receives the backend's lines.
    static func spawn(
        launch: KeeperLaunch, environment: [String], logger: Logger, outputLogger: Logger, maxLineLength: Int,
        group: any EventLoopGroup, threadPool: NIOThreadPool
    ) async throws -> KeeperConnection {
        // [read, write] pairs, all close-on-exec; the keeper gets its ends through dup2.
        var pipes: [[Int32]] = []
        func closeAll(_ descriptors: [Int32]) {
            for descriptor in descriptors where descriptor >= 0 { close(descriptor) }
        }
        for _ in 0..<4 {
            var pair: [Int32] = [-1, -1]
            if cbp_pipe_cloexec(&pair) != 0 {
                let code = errno
                closeAll(pipes.flatMap { $0 })
                throw FenceKeeperError(.keeperSpawnFailed, "cannot create a pipe for the fence keeper: \(String(cString: strerror(code)))")
            }
            pipes.append(pair)
        }
        let commands = pipes[0], reports = pipes[1], stdoutPipe = pipes[2], stderrPipe = pipes[3]
        let keeperEnds = [commands[0], reports[1], stdoutPipe[1], stderrPipe[1]]
        let ourEnds = [commands[1], reports[0], stdoutPipe[0], stderrPipe[0]]

        let spawned: Result<pid_t, FenceKeeperError>
        do {
            spawned = try await threadPool.runIfActive {
                let argv = CStringArray(launch.arguments)
                let envp = CStringArray(environment)
                defer {
                    argv.free()
                    envp.free()
                }
                var pid: pid_t = 0
                let code = cbp_spawn_helper(
                    launch.executable, argv.pointer, envp.pointer, keeperEnds[0], keeperEnds[1], keeperEnds[2], keeperEnds[3], &pid)
                if code != 0 {
                    return .failure(
                        FenceKeeperError(
                            .keeperSpawnFailed, "cannot start the fence keeper \(launch.executable): \(String(cString: strerror(code)))"))
                }
                return .success(pid)
            }
        } catch {
            closeAll(keeperEnds + ourEnds)
            throw FenceKeeperError(.keeperSpawnFailed, "cannot start the fence keeper: \(error)")
        }
        closeAll(keeperEnds)
        let pid: pid_t
        switch spawned {
        case .success(let spawnedPID): pid = spawnedPID
        case .failure(let error):
            closeAll(ourEnds)
            throw error
        }

        let (reportStream, continuation) = AsyncStream.makeStream(of: KeeperReport.self)
        let channel: any Channel
        do {
            channel = try await NIOPipeBootstrap(group: group)
                .takingOwnershipOfDescriptors(input: reports[0], output: commands[1]) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(KeeperReportHandler(continuation: continuation, logger: logger))
                        return channel
                    }
                }
        } catch {
            closeAll(ourEnds)
            kill(pid, SIGKILL)
            _ = try? await threadPool.runIfActive { waitForExit(pid) }
            throw FenceKeeperError(.keeperSpawnFailed, "cannot attach to the fence keeper's pipes: \(error)")
        }
        for (descriptor, stream) in [(stdoutPipe[0], "stdout"), (stderrPipe[0], "stderr")] {
            do {
                try await NIOPipeBootstrap(group: group)
                    .takingOwnershipOfDescriptor(input: descriptor) { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(
                                BackendOutputHandler(logger: outputLogger, stream: stream, maxLineLength: maxLineLength))
                        }
                    }
            } catch {
                // The backend's output is lost, not its supervision.
                close(descriptor)
                logger.error("cannot read the backend's \(stream)", metadata: ["error": "\(error)"])
            }
        }
        return KeeperConnection(pid: pid, reports: reportStream, channel: channel, threadPool: threadPool, logger: logger)
    }

    /// Writes a command. Never waits for the keeper: a frozen keeper must not freeze batond.
    func send(_ command: KeeperCommand) {
        send(line: command.line)
    }

    /// Writes one line (a newline is added).
    func send(line: String) {
        let logger = self.logger
        channel.writeAndFlush(ByteBuffer(string: line + "\n")).whenFailure { error in
            logger.warning("cannot write to the fence keeper", metadata: ["line": "\(line.prefix(80))", "error": "\(error)"])
        }
    }

    /// Closes the command pipe: the keeper kills whatever runs and exits.
    func closeCommands() {
        channel.close(mode: .output, promise: nil)
    }

    /// Notes that the keeper's stdout ended: it is exiting.
    func markExiting() {
        exiting.withLockedValue { $0 = true }
    }

    /// SIGKILLs the keeper process unless it is already exiting (the last resort against a
    /// keeper that stopped answering; its backend dies through its parent-death signal).
    func killProcess() {
        exiting.withLockedValue { exiting in
            if !exiting { kill(pid, SIGKILL) }
        }
    }

    /// Waits for the keeper process to end and reaps it, without holding a thread: `waitpid`
    /// with `WNOHANG`, tried again after a pause that grows from 1 ms to 100 ms (a keeper whose
    /// pipe closed is normally gone at the first try). When the waiting task is cancelled, the
    /// rest of the wait is a blocking `waitpid` on the thread pool, so the keeper is still reaped.
    func reap() async -> ExitStatus? {
        markExiting()
        channel.close(promise: nil)
        let pid = self.pid
        var pause: Duration = .milliseconds(1)
        while true {
            switch pollExit(pid) {
            case .ended(let status): return status
            case .unknown: return nil
            case .running: break
            }
            do {
                try await Task.sleep(for: pause)
            } catch {
                return try? await threadPool.runIfActive { waitForExit(pid) }
            }
            pause = min(pause * 2, .milliseconds(100))
        }
    }
}

/// What a non-blocking `waitpid` found.
private enum ExitPoll {
    case running
    case ended(ExitStatus)
    /// It cannot be waited for (not a child of this process, already reaped).
    case unknown
}

/// `waitpid(pid, WNOHANG)`: never blocks.
private func pollExit(_ pid: pid_t) -> ExitPoll {
    var status: Int32 = 0
    while true {
        let result = waitpid(pid, &status, WNOHANG)
        if result == pid { return .ended(exitStatus(status)) }
        if result == 0 { return .running }
        if errno != EINTR { return .unknown }
    }
}

private func exitStatus(_ status: Int32) -> ExitStatus {
    cbp_wifsignaled(status) != 0 ? .signaled(cbp_wtermsig(status)) : .exited(cbp_wexitstatus(status))
}

/// waitpid(pid) until it ends, blocking; nil when it cannot be waited for. Only on the thread
/// pool (a spawn that failed half-way, a cancelled ``KeeperConnection/reap()``).
private func waitForExit(_ pid: pid_t) -> ExitStatus? {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        if errno != EINTR { return nil }
    }
    return exitStatus(status)
}


/// Turns the keeper's stdout into reports.
final class KeeperReportHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private var splitter = LineSplitter(maxLength: KeeperProtocol.maxReportLineBytes)
    private let continuation: AsyncStream<KeeperReport>.Continuation
    private let logger: Logger

    init(continuation: AsyncStream<KeeperReport>.Continuation, logger: Logger) {
        self.continuation = continuation
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        for line in splitter.append(buffer.readableBytesView) {
            do {
                continuation.yield(try KeeperReport.parse(line))
            } catch {
                logger.error("unreadable report from the fence keeper", metadata: ["error": "\(error)"])
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        continuation.finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("fence keeper pipe error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}

/// Logs the backend's output line by line, each line at most `maxLineLength` bytes.
final class BackendOutputHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private var splitter: LineSplitter
    private let logger: Logger
    private let stream: String

    init(logger: Logger, stream: String, maxLineLength: Int) {
        self.logger = logger
        self.stream = stream
        self.splitter = LineSplitter(maxLength: maxLineLength)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        for line in splitter.append(buffer.readableBytesView) { log(line) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let rest = splitter.finish() { log(rest) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func log(_ line: String) {
        logger.info("\(line)", metadata: ["stream": "\(stream)"])
    }
}
