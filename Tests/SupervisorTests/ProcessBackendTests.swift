import BatonCore
import FenceKeeper
import Foundation
import Logging
import NIOPosix
import Testing

@testable import Backends
@testable import Control
@testable import Supervisor

#if canImport(Glibc)
import Glibc
#endif

/// Real processes through the real keeper. Each test shuts its backend (and keeper) down at the
/// end, whatever happened; every wait is bounded.
@Suite("Process backend", .serialized, .timeLimit(.minutes(1)))
struct ProcessBackendTests {
    let logs = Recorder<LogLine>()

    func makeBackend(
        _ command: [String], environment: [String: String] = [:], workingDirectory: String? = nil, user: String? = nil,
        group: String? = nil, keeperPath: String? = nil, maxLogLineLength: Int = 4096, keeperLaunch: KeeperLaunch? = nil,
        keeperKillGrace: Duration = .seconds(2)
    ) -> ProcessBackend {
        let process = ProcessBackendConfig(
            command: command, environment: environment, workingDirectory: workingDirectory, user: user, group: group,
            stopTimeout: .seconds(5))
        return ProcessBackend(
            configuration: .init(app: "web", node: "node-1", process: process, keeperPath: keeperPath, maxLogLineLength: maxLogLineLength),
            logger: recordingLogger(logs), eventLoopGroup: MultiThreadedEventLoopGroup.singleton, threadPool: .singleton,
            keeperLaunch: keeperLaunch, keeperKillGrace: keeperKillGrace)
    }

    /// Runs `body` and always shuts the backend down afterwards.
    func withBackend(_ backend: ProcessBackend, _ body: (ProcessBackend) async throws -> Void) async throws {
        do {
            try await body(backend)
        } catch {
            await backend.shutdown()
            throw error
        }
        await backend.shutdown()
    }

    func armFor(_ backend: ProcessBackend, token: UInt64, _ duration: Duration = .seconds(60)) async throws -> MonotonicInstant {
        let deadline = MonotonicClock.now() + duration
        try await backend.arm(token: token, deadline: deadline)
        return deadline
    }

    /// The pid a backend printed as `<name>=<pid>`.
    func printedPID(_ name: String) async throws -> pid_t {
        let line = try #require(await logs.first { $0.message.hasPrefix("\(name)=") }, "the backend never printed \(name)=")
        return try #require(pid_t(line.message.dropFirst(name.count + 1)))
    }

    /// A backend that forks a grandchild, prints its pid, ignores SIGTERM and waits.
    static let backendWithGrandchild = ["/bin/sh", "-c", "sleep 1000 & echo \"grandchild=$!\"; trap '' TERM; wait; wait"]

    // MARK: - Start and stop

    @Test("start, output with BATON_* in the environment, graceful stop")
    func startAndStop() async throws {
        let backend = makeBackend(
            ["/bin/sh", "-c", "echo \"epoch=$BATON_EPOCH app=$BATON_APP node=$BATON_NODE custom=$CUSTOM\"; echo oops >&2; exec sleep 1000"],
            environment: ["CUSTOM": "yes", "BATON_EPOCH": "overridden-by-baton"])
        let exits = recordExits(of: backend)
        try await withBackend(backend) { backend in
            _ = try await armFor(backend, token: 42)
            try await backend.start(token: 42)
            let pid = try #require(await backend.pid)
            let line = try #require(await logs.first { $0.message.hasPrefix("epoch=") })
            #expect(line.message == "epoch=42 app=web node=node-1 custom=yes")
            #expect(line.metadata["stream"] == "stdout")
            #expect(line.metadata["app"] == "web")
            let errorLine = try #require(await logs.first { $0.message == "oops" })
            #expect(errorLine.metadata["stream"] == "stderr")
            #expect(!processIsGone(pid))

            // A second start under the same token is a no-op.
            try await backend.start(token: 42)
            #expect(await backend.pid == pid)

            await backend.stop(timeout: .seconds(5))
            #expect(processIsGone(pid))
            #expect(await backend.pid == nil)
            let exit = try #require(await exits.first { _ in true })
            #expect(exit.pid == pid)
            #expect(exit.token == 42)
            #expect(exit.status == .signaled(SIGTERM))
            #expect(exit.cause == .stopped)
        }
    }

    @Test("a backend that ignores SIGTERM is killed when the stop timeout runs out")
    func stopTimeout() async throws {
        let backend = makeBackend(["/bin/sh", "-c", "trap '' TERM; echo ready; exec sleep 1000"])
        let exits = recordExits(of: backend)
        try await withBackend(backend) { backend in
            _ = try await armFor(backend, token: 1)
            try await backend.start(token: 1)
            let pid = try #require(await backend.pid)
            _ = try #require(await logs.first { $0.message == "ready" })
            let started = ContinuousClock.now
            await backend.stop(timeout: .milliseconds(500))
            let elapsed = ContinuousClock.now - started
            print("[measure] stop with SIGTERM ignored, timeout 500ms: returned after \(elapsed)")
            #expect(elapsed >= .milliseconds(500))
            // Generous: other suites may load the machine (the bound only shows the stop did not
            // wait for the configured 5 s).
            #expect(elapsed < .seconds(3))
            #expect(processIsGone(pid))
            let exit = try #require(await exits.first { _ in true })
            #expect(exit.status == .signaled(SIGKILL))
            #expect(exit.cause == .killed(.requested))
        }
    }

    @Test("fence kills the backend and its grandchild at once")
    func fence() async throws {
        let backend = makeBackend(Self.backendWithGrandchild)
        let exits = recordExits(of: backend)
        try await withBackend(backend) { backend in
            _ = try await armFor(backend, token: 5)
            try await backend.start(token: 5)
            let pid = try #require(await backend.pid)
            let grandchild = try await printedPID("grandchild")
            let started = ContinuousClock.now
            await backend.fence()
            print("[measure] fence returned after \(ContinuousClock.now - started)")
            #expect(processIsGone(pid))
            #expect(processIsGone(grandchild))
            #expect(try #require(await exits.first { _ in true }).cause == .killed(.requested))
        }
    }

    /// Issue 18: the escalation of a fence (kill the keeper if it does not confirm the kill in
    /// time) outlived the fenced run and killed the keeper, and with it the backend a newer
    /// epoch had started under the same keeper. The grace is short here so that the test waits
    /// well past it.
    @Test("a fence's escalation never acts on a backend started after it")
    func staleEscalation() async throws {
        let grace = Duration.milliseconds(300)
        let backend = makeBackend(["/bin/sh", "-c", "exec sleep 1000"], keeperKillGrace: grace)
        let exits = recordExits(of: backend)
        try await withBackend(backend) { backend in
            _ = try await armFor(backend, token: 934)
            try await backend.start(token: 934)
            let fencedPID = try #require(await backend.pid)
            let keeper = try #require(await backend.keeperProcessID)
            await backend.fence()
            #expect(processIsGone(fencedPID))
            #expect(await backend.pendingEscalations == 0, "the fenced run's escalation outlived it")

            // A newer epoch starts under the same keeper at once.
            _ = try await armFor(backend, token: 1048)
            try await backend.start(token: 1048)
            let newPID = try #require(await backend.pid)
            #expect(try #require(await backend.keeperProcessID) == keeper)

            // Nothing to await: the failure was an event that must not happen. Wait three graces.
            try await Task.sleep(for: grace * 3)
            #expect(!processIsGone(newPID), "the new backend was killed")
            #expect(!processIsGone(keeper), "the keeper was killed")
            #expect(await backend.pid == newPID)
            #expect(exits.values.filter { $0.token == 1048 }.isEmpty)
            #expect(logs.values.allSatisfy { !$0.message.contains("did not kill the backend") })
        }
    }

    @Test("a keeper that does not confirm a kill within the grace is killed, and the backend with it")
    func unresponsiveKeeperEscalation() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let grace = Duration.milliseconds(300)
        let backend = try relayedBackend(["/bin/sh", "-c", "exec sleep 1000"], directory: directory, keeperKillGrace: grace)
        let exits = recordExits(of: backend)
        try await withBackend(backend) { backend in
            _ = try await armFor(backend, token: 7)
            try await backend.start(token: 7)
            let pid = try #require(await backend.pid)
            // Freeze the relay: the kill never reaches the keeper.
            let relay = try #require(await backend.keeperProcessID)
            kill(relay, SIGSTOP)
            defer { kill(relay, SIGCONT) }
            await backend.fence()
            _ = try #require(await exits.first(within: .seconds(5)) { $0.pid == pid })
            #expect(processIsGone(pid))
            #expect(await logs.first(within: .seconds(1)) { $0.message.contains("did not kill the backend within 300ms") } != nil)
        }
    }

    @Test("when the main process exits, what it left behind is killed and the exit is reported")
    func exitKillsLeftovers() async throws {
        let backend = makeBackend(["/bin/sh", "-c", "sleep 1000 & echo \"grandchild=$!\"; exit 3"])
        let exits = recordExits(of: backend)
        try await withBackend(backend) { backend in
            _ = try await armFor(backend, token: 2)
            try await backend.start(token: 2)
            let grandchild = try await printedPID("grandchild")
            let exit = try #require(await exits.first { _ in true })
            #expect(exit.status == .exited(3))
            #expect(exit.cause == .exited)
            #expect(processIsGone(grandchild))
            #expect(await backend.pid == nil)
            // It can run again.
            try await backend.start(token: 2)
            _ = try #require(await exits.first { $0.pid != exit.pid })
        }
    }

    @Test("long output lines are logged in bounded pieces")
    func boundedLines() async throws {
        let backend = makeBackend(
            ["/bin/sh", "-c", "head -c 250 /dev/zero | tr '\\0' x; echo; echo short; exec sleep 1000"], maxLogLineLength: 100)
        try await withBackend(backend) { backend in
            _ = try await armFor(backend, token: 1)
            try await backend.start(token: 1)
            _ = try #require(await logs.first { $0.message == "short" })
            let pieces = logs.values.filter { $0.metadata["stream"] == "stdout" && $0.message.hasPrefix("x") }.map(\.message.count)
            #expect(pieces == [100, 100, 50])
        }
    }

    @Test("user and group switch, with HOME/USER/LOGNAME of the user")
    func runAsUser() async throws {
        let backend = makeBackend(["/bin/sh", "-c", "echo \"ids=$(id -u):$(id -g) user=$USER home=$HOME\""], user: "nobody", group: "nogroup")
        let exits = recordExits(of: backend)
        try await withBackend(backend) { backend in
            _ = try await armFor(backend, token: 1)
            try await backend.start(token: 1)
            let line = try #require(await logs.first { $0.message.hasPrefix("ids=") })
            #expect(line.message == "ids=65534:65534 user=nobody home=/nonexistent")
            #expect(try #require(await exits.first { _ in true }).status == .exited(0))
        }
    }

    // MARK: - Fencing without batond

    @Test("the keeper kills the process group when the armed deadline passes and batond stays silent")
    func deadlinePasses() async throws {
        let backend = makeBackend(Self.backendWithGrandchild)
        let exits = recordExits(of: backend)
        try await withBackend(backend) { backend in
            let deadline = try await armFor(backend, token: 9, .milliseconds(800))
            try await backend.start(token: 9)
            let pid = try #require(await backend.pid)
            let grandchild = try await printedPID("grandchild")
            #expect(!processIsGone(pid))
            // batond "freezes": no re-arm.
            let exit = try #require(await exits.first(within: .seconds(5)) { _ in true })
            let received = MonotonicClock.now()
            guard case .killed(.deadline(let token, let armedDeadline, let killedAt)) = exit.cause else {
                Issue.record("unexpected exit cause \(exit.cause)")
                return
            }
            #expect(token == 9)
            #expect(armedDeadline == deadline.nanoseconds)
            let late = killedAt - deadline.nanoseconds
            print("[measure] deadline kill: keeper killed \(milliseconds(late)) ms after the deadline; batond heard of the exit \(milliseconds(received.nanoseconds - deadline.nanoseconds)) ms after it")
            #expect(late >= 0)
            #expect(late < 200_000_000)
            #expect(received >= deadline)
            #expect(exit.status == .signaled(SIGKILL))
            #expect(processIsGone(pid))
            #expect(processIsGone(grandchild))
        }
    }

    /// Runs the keeper behind a shell that is both its parent and the relay of its commands
    /// (through a FIFO), so a test can freeze or kill "batond" without touching the test process.
    /// With `pipeHolder`, a stray process keeps the FIFO's write end open (as a leaked descriptor
    /// would), so the keeper sees no end of input when the shell dies: only its parent-death
    /// signal tells it; the holder's pid is written to that file.
    func relayedBackend(
        _ command: [String], directory: String, pipeHolder: String? = nil, keeperKillGrace: Duration = .seconds(2)
    ) throws -> ProcessBackend {
        let keeper = try keeperPath()
        let script = """
            mkfifo "$1" || exit 1
            "$0" --parent $$ --app relay < "$1" &
            exec 6> "$1"
            rm -f "$1"
            if [ -n "$2" ]; then sleep 1000 < /dev/null > /dev/null 2>&1 3>&- 4>&- & echo $! > "$2"; fi
            while IFS= read -r line; do printf '%s\\n' "$line" >&6; done
            exec 6>&-
            wait
            """
        return makeBackend(
            command,
            keeperLaunch: KeeperLaunch(
                executable: "/bin/sh", arguments: ["/bin/sh", "-c", script, keeper, directory + "/keeper.fifo", pipeHolder ?? ""]),
            keeperKillGrace: keeperKillGrace)
    }

    @Test("a frozen batond (SIGSTOP of the process feeding the keeper) cannot keep the backend past its deadline")
    func frozenFeeder() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let backend = try relayedBackend(Self.backendWithGrandchild, directory: directory)
        let exits = recordExits(of: backend)
        var relay: pid_t?
        defer { if let relay { kill(relay, SIGCONT) } }
        try await withBackend(backend) { backend in
            let deadline = try await armFor(backend, token: 11, .milliseconds(1500))
            try await backend.start(token: 11)
            relay = await backend.keeperProcessID
            let pid = try #require(await backend.pid)
            let grandchild = try await printedPID("grandchild")
            #expect(await backend.roundTrip())

            #expect(kill(try #require(relay), SIGSTOP) == 0)
            // The re-arm batond would send is stuck in the frozen relay.
            try await backend.arm(token: 11, deadline: MonotonicClock.now() + .seconds(60))
            #expect(!processIsGone(pid))

            let exit = try #require(await exits.first(within: .seconds(5)) { _ in true })
            guard case .killed(.deadline(_, let armedDeadline, let killedAt)) = exit.cause else {
                Issue.record("unexpected exit cause \(exit.cause)")
                return
            }
            #expect(armedDeadline == deadline.nanoseconds)
            let late = killedAt - deadline.nanoseconds
            print("[measure] deadline kill with the feeder stopped: \(milliseconds(late)) ms after the deadline")
            #expect(late >= 0)
            #expect(late < 200_000_000)
            #expect(processIsGone(pid))
            #expect(processIsGone(grandchild))
            kill(try #require(relay), SIGCONT)
        }
    }

    @Test(
        "batond killed with SIGKILL: the backend and its grandchild die at once",
        arguments: [false, true])
    func parentKilled(pipeLeaked: Bool) async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let holderFile = directory + "/holder.pid"
        let backend = try relayedBackend(Self.backendWithGrandchild, directory: directory, pipeHolder: pipeLeaked ? holderFile : nil)
        let exits = recordExits(of: backend)
        var holder: pid_t?
        defer { if let holder { kill(holder, SIGKILL) } }
        try await withBackend(backend) { backend in
            _ = try await armFor(backend, token: 12)
            try await backend.start(token: 12)
            if pipeLeaked {
                holder = pid_t(try String(contentsOfFile: holderFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))
                #expect(holder != nil)
            }
            let batond = try #require(await backend.keeperProcessID)
            let pid = try #require(await backend.pid)
            let grandchild = try await printedPID("grandchild")
            let keeper = try #require(await backend.keeperPID)

            let killedAt = MonotonicClock.now()
            #expect(kill(batond, SIGKILL) == 0)
            let exit = try #require(await exits.first(within: .seconds(5)) { _ in true })
            let latency = MonotonicClock.now().nanoseconds - killedAt.nanoseconds
            print("[measure] batond SIGKILL (pipe leaked: \(pipeLeaked)) -> backend group gone and reported: \(milliseconds(latency)) ms (\(exit.cause))")
            guard case .killed(.batondGone(let reason)) = exit.cause else {
                Issue.record("unexpected exit cause \(exit.cause)")
                return
            }
            if pipeLeaked {
                // No end of input: the parent-death signal did it.
                #expect(reason == "parent process \(batond) exited")
            }
            #expect(latency < 1_000_000_000)
            #expect(processIsGone(pid))
            #expect(processIsGone(grandchild))
            // The keeper exits too (left as a zombie: its parent is gone and PID 1 here does not reap).
            let keeperGone = await waitUntilGone(keeper)
            #expect(keeperGone)
        }
    }

    @Test("batond closing the pipe (end of input) kills the backend and its grandchild")
    func endOfInput() async throws {
        let backend = makeBackend(Self.backendWithGrandchild)
        let exits = recordExits(of: backend)
        try await withBackend(backend) { backend in
            _ = try await armFor(backend, token: 13)
            try await backend.start(token: 13)
            let pid = try #require(await backend.pid)
            let grandchild = try await printedPID("grandchild")
            let keeper = try #require(await backend.keeperProcessID)
            await backend.closeKeeperCommands()
            let exit = try #require(await exits.first(within: .seconds(5)) { _ in true })
            guard case .killed(.batondGone(let reason)) = exit.cause else {
                Issue.record("unexpected exit cause \(exit.cause)")
                return
            }
            #expect(reason.hasPrefix("end of input"))
            #expect(processIsGone(pid))
            #expect(processIsGone(grandchild))
            await backend.shutdown()
            #expect(processIsGone(keeper))
        }
    }

    @Test("dropping the backend object ends its keeper, which kills the backend")
    func droppedBackend() async throws {
        var pids: [pid_t] = []
        do {
            let backend = makeBackend(Self.backendWithGrandchild)
            _ = try await armFor(backend, token: 14)
            try await backend.start(token: 14)
            pids.append(try #require(await backend.pid))
            pids.append(try await printedPID("grandchild"))
            pids.append(try #require(await backend.keeperProcessID))
        }
        // Nothing is left to await once the object is gone: poll, bounded.
        for pid in pids {
            let gone = await waitUntilGone(pid)
            #expect(gone, "pid \(pid) survived")
        }
    }

    /// Polls /proc for a process that has no event to await (a zombie keeper's state), bounded.
    func waitUntilGone(_ pid: pid_t) async -> Bool {
        for _ in 0..<100 {
            if processIsGone(pid) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return processIsGone(pid)
    }

    // MARK: - Errors

    func expectStartFailure(
        _ backend: ProcessBackend, code: ProcessBackendError.Code = .startFailed, _ check: (String) -> Bool,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        try await withBackend(backend) { backend in
            _ = try await armFor(backend, token: 1)
            do {
                try await backend.start(token: 1)
                Issue.record("the start succeeded", sourceLocation: sourceLocation)
            } catch let error as ProcessBackendError {
                #expect(error.code == code, sourceLocation: sourceLocation)
                #expect(check(error.message), "message: \(error.message)", sourceLocation: sourceLocation)
            }
            #expect(await backend.isRunning == false, sourceLocation: sourceLocation)
        }
    }

    @Test("a missing command is reported by name")
    func missingCommand() async throws {
        try await expectStartFailure(makeBackend(["/usr/bin/nope"])) { $0 == "command /usr/bin/nope not found" }
        try await expectStartFailure(makeBackend(["baton-no-such-command"])) {
            $0.hasPrefix("command baton-no-such-command not found in PATH (")
        }
    }

    @Test("a command that is not executable is reported as permission denied")
    func notExecutable() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/app"
        try "#!/bin/sh\necho hi\n".write(toFile: path, atomically: true, encoding: .utf8)
        try await expectStartFailure(makeBackend([path])) {
            $0 == "command \(path): permission denied (not an executable file, or a directory on its path is not searchable)"
        }
        try await expectStartFailure(makeBackend(["app"], environment: ["PATH": directory])) {
            $0 == "command app: permission denied (\(path) is not executable)"
        }
    }

    @Test("an unknown user or group, or a missing working directory, is reported")
    func badIdentityOrDirectory() async throws {
        try await expectStartFailure(makeBackend(["/bin/true"], user: "baton-no-such-user")) { $0 == "user baton-no-such-user not found" }
        try await expectStartFailure(makeBackend(["/bin/true"], group: "baton-no-such-group")) { $0 == "group baton-no-such-group not found" }
        try await expectStartFailure(makeBackend(["/bin/true"], user: "4242")) {
            $0 == "user 4242 has no passwd entry: set a group explicitly"
        }
        try await expectStartFailure(makeBackend(["/bin/true"], workingDirectory: "/baton-no-such-directory")) {
            $0 == "working directory /baton-no-such-directory: No such file or directory"
        }
    }

    @Test("a start without an armed keeper is refused")
    func notArmed() async throws {
        let backend = makeBackend(["/bin/true"])
        await #expect(throws: ProcessBackendError(.notArmed, "the fence keeper is not armed: a backend starts only under a fence deadline")) {
            try await backend.start(token: 1)
        }
        try await withBackend(backend) { backend in
            // Armed with a deadline already over: the keeper refuses.
            try await backend.arm(token: 1, deadline: MonotonicClock.now() - .seconds(1))
            await #expect(throws: ProcessBackendError.self) { try await backend.start(token: 1) }
        }
    }

    @Test("the real keeper rejects malformed lines with a clear message and keeps working")
    func malformedLines() async throws {
        let backend = makeBackend(["/bin/sh", "-c", "echo up; exec sleep 1000"])
        try await withBackend(backend) { backend in
            _ = try await armFor(backend, token: 3)
            for line in ["FOO bar", "ARM 1", "ARM 1 -5", "START token=1 arg=a%zz", "SIGNAL KILL", "", String(repeating: "A", count: 2_000_000)] {
                await backend.sendRawLine(line)
            }
            #expect(await backend.roundTrip())
            let rejected = logs.values.filter { $0.message == "the fence keeper rejected a line" }.compactMap { $0.metadata["error"] }
            #expect(
                rejected == [
                    "malformed keeper line \"FOO bar\": unknown command 'FOO' (expected ARM, DISARM, START, SIGNAL, KILL or PING)",
                    "malformed keeper line \"ARM 1\": expected ARM <token> <deadline-ns>",
                    "malformed keeper line \"ARM 1 -5\": deadline '-5' is not a decimal number",
                    "malformed keeper line \"START token=1 arg=a%zz\": START field arg: a % must be followed by two hex digits",
                    "malformed keeper line \"SIGNAL KILL\": unknown signal 'KILL' (expected one of TERM, INT, HUP, QUIT, USR1, USR2; use KILL to kill)",
                    "malformed keeper line \"\": empty line",
                    "line longer than 1048576 bytes: ignored",
                ])
            // The arming survived the garbage: the backend still starts.
            try await backend.start(token: 3)
            _ = try #require(await logs.first { $0.message == "up" })
        }
    }

    @Test("a missing keeper executable is a clear error")
    func missingKeeper() async throws {
        let backend = makeBackend(["/bin/true"], keeperPath: "/baton-no-such-dir/baton-fence-keeper")
        await #expect(
            throws: ProcessBackendError(
                .keeperNotFound,
                "fence keeper not found: /baton-no-such-dir/baton-fence-keeper (configured) does not exist; install baton-fence-keeper next to batond or in ../libexec/baton from it, or set BATON_FENCE_KEEPER"
            )
        ) {
            try await backend.arm(token: 1, deadline: MonotonicClock.now() + .seconds(10))
        }
        #expect(try keeperPath().hasSuffix("/baton-fence-keeper"))
        // The systemd backend's claims-only keeper reports the same failure with the keeper's own
        // error type (not a process backend's).
        let claims = FenceKeeperClient(
            launch: { () throws(FenceKeeperError) -> KeeperLaunch in
                try KeeperLaunch.keeper(app: "web", keeperPath: "/baton-no-such-dir/baton-fence-keeper", claims: FenceKeeperClaims())
            }, logger: Logger(label: "test"), outputLogger: Logger(label: "test"))
        await #expect(
            throws: FenceKeeperError(
                .keeperNotFound,
                "fence keeper not found: /baton-no-such-dir/baton-fence-keeper (configured) does not exist; install baton-fence-keeper next to batond or in ../libexec/baton from it, or set BATON_FENCE_KEEPER"
            )
        ) {
            try await claims.armClaims(token: 1, deadline: MonotonicClock.now() + .seconds(10), logger: Logger(label: "test"))
        }
        #expect(await claims.keeperPID == nil)
    }
}
