// baton-fence-keeper: the parent of one app's backend, fed fence deadlines by batond.
//
// batond starts one keeper per app with a pipe on stdin (commands) and one on stdout (reports);
// fds 3 and 4, when open, become the backend's stdout and stderr. The keeper runs a single
// thread around ppoll(): its timing does not depend on batond, which may be frozen. It kills
// the backend's process group (and every other descendant: it is their child subreaper) when
// the last armed deadline passes, or at once when batond goes away: end of input, or its
// parent dying (PR_SET_PDEATHSIG). See FenceKeeper.KeeperProtocol for the lines.

import CBatonProcess
import FenceKeeper

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

let usage = """
    usage: baton-fence-keeper [--parent PID] [--app NAME] [--release-address ADDRESS/PREFIX@INTERFACE]...
                              [--release-unit BUS@UNIT]... [--release-file PATH]...

    Started by batond, one per app; reads commands on stdin and writes reports on stdout
    (see the FenceKeeper module for the protocol). --parent is batond's pid (default: the
    parent at start); --app only names the app in diagnostics. When the armed deadline passes
    or batond goes away, the keeper kills the backend's processes and also removes each
    --release-address (a VIP), removes each --release-file (a unit's epoch file, so that it
    cannot start again) and kills (SIGKILL to its cgroup) and stops each --release-unit (BUS:
    system, user or a D-Bus address such as unix:path=/run/user/0/bus).
    """

struct Options {
    var parent: pid_t?
    var app = "?"
    var claims = FenceKeeperClaims()
}

@MainActor func parseOptions() -> Options {
    var options = Options()
    var arguments = CommandLine.arguments.dropFirst()
    while let argument = arguments.popFirst() {
        switch argument {
        case "--parent":
            guard let value = arguments.popFirst(), let pid = pid_t(value), pid > 0 else { fail("--parent needs a pid") }
            options.parent = pid
        case "--app":
            guard let value = arguments.popFirst() else { fail("--app needs a name") }
            options.app = value
        case "--release-address":
            guard let value = arguments.popFirst(), let address = FenceKeeperClaims.parseAddress(value) else {
                fail("--release-address needs ADDRESS/PREFIX@INTERFACE")
            }
            options.claims.addresses.append(address)
        case "--release-file":
            guard let value = arguments.popFirst(), value.hasPrefix("/") else { fail("--release-file needs an absolute path") }
            options.claims.files.append(value)
        case "--release-unit":
            guard let value = arguments.popFirst(), let unit = FenceKeeperClaims.parseUnit(value) else {
                fail("--release-unit needs BUS@UNIT (BUS: system, user or a D-Bus address)")
            }
            options.claims.units.append(unit)
        case "--help", "-h":
            print(usage)
            exit(0)
        case "--version":
            print("baton-fence-keeper protocol \(KeeperProtocol.version)")
            exit(0)
        default:
            fail("unknown argument '\(argument)'")
        }
    }
    return options
}

@MainActor func fail(_ message: String) -> Never {
    diagnose(message)
    writeToStandardError(usage + "\n")
    exit(2)
}

/// Names the keeper (and its app) in diagnostics; the keeper is single-threaded: everything
/// runs on the main thread.
var diagnosticLabel = "baton-fence-keeper"

@MainActor func diagnose(_ message: String) {
    writeToStandardError("\(diagnosticLabel): \(message)\n")
}

func writeToStandardError(_ text: String) {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let written = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        if written < 0 && errno == EINTR { continue }
        if written <= 0 { return }
        bytes = bytes.dropFirst(written)
    }
}

func errnoText(_ code: Int32) -> String {
    String(cString: strerror(code))
}

/// The keeper's I/O around ``FenceKeeperState``, on the main thread.
@MainActor final class KeeperRuntime {
    private var state = FenceKeeperState()
    private let expectedParent: pid_t
    private let signalDescriptor: Int32
    private let backendStdout: Int32
    private let backendStderr: Int32
    private var inputOpen = true
    private var inputBuffer: [UInt8] = []
    private var discardingLongLine = false
    private var output: [UInt8] = []
    private var outputClosed = false
    private var droppedReports = 0
    private var groupEmpty = false
    private var shouldExit = false
    private static let maxQueuedOutput = 1 << 20
    private static let sweepInterval: Int64 = 20_000_000

    init(expectedParent: pid_t, signalDescriptor: Int32, backendStdout: Int32, backendStderr: Int32) {
        self.expectedParent = expectedParent
        self.signalDescriptor = signalDescriptor
        self.backendStdout = backendStdout
        self.backendStderr = backendStderr
    }

    func run() -> Never {
        enqueue(.ready(version: KeeperProtocol.version, pid: getpid()))
        if getppid() != expectedParent {
            apply(.batondGone("parent process \(expectedParent) exited before the keeper started"))
        }
        while true {
            apply(.tick)
            if shouldExit { finish() }
            var timeout: Int64 = -1
            let now = cbp_monotonic_ns()
            if let wake = state.nextWakeup() { timeout = max(0, wake - now) }
            if state.isSweeping { timeout = timeout < 0 ? Self.sweepInterval : min(timeout, Self.sweepInterval) }

            var descriptors = [pollfd(fd: signalDescriptor, events: Int16(POLLIN), revents: 0)]
            if inputOpen { descriptors.append(pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0)) }
            if !output.isEmpty && !outputClosed { descriptors.append(pollfd(fd: STDOUT_FILENO, events: Int16(POLLOUT), revents: 0)) }
            let ready = descriptors.withUnsafeMutableBufferPointer { buffer in
                cbp_poll_ns(buffer.baseAddress, nfds_t(buffer.count), timeout)
            }
            if ready < 0 && errno != EINTR {
                diagnose("ppoll failed: \(errnoText(errno))")
            }
            apply(.tick)
            drainSignals()
            reap()
            if inputOpen { readInput() }
            if state.isSweeping, let pid = state.backend?.pid {
                sweep(pid)
                reap()
            }
            flushOutput()
            if shouldExit { finish() }
        }
    }

    // MARK: - State machine

    private func apply(_ input: FenceKeeperState.Input) {
        let effects = state.handle(input, now: cbp_monotonic_ns())
        for effect in effects {
            switch effect {
            case .spawn(let spec):
                groupEmpty = false
                switch spawnBackend(spec) {
                case .success(let pid): apply(.spawned(pid: pid))
                case .failure(let failure): apply(.spawnFailed(failure.message))
                }
            case .signalGroup(let signal, let pid):
                if kill(-pid, signalNumber(signal)) != 0 && errno != ESRCH {
                    diagnose("kill(-\(pid), SIG\(signal.rawValue)) failed: \(errnoText(errno))")
                }
            case .killAll(let pid):
                sweep(pid)
            case .releaseClaims(let reason):
                claimReleaser.release(reason: reason)
            case .report(let report):
                enqueue(report)
            case .exit:
                shouldExit = true
            }
        }
    }

    private func signalNumber(_ signal: KeeperSignal) -> Int32 {
        switch signal {
        case .term: SIGTERM
        case .int: SIGINT
        case .hup: SIGHUP
        case .quit: SIGQUIT
        case .usr1: SIGUSR1
        case .usr2: SIGUSR2
        }
    }

    // MARK: - Killing and reaping

    /// SIGKILLs the backend's process group (until it is empty: after that the id may be reused
    /// by someone else) and every child of the keeper (orphans of the backend are reparented to
    /// the keeper, its child subreaper; their pids cannot be reused before the keeper reaps them).
    private func sweep(_ groupLeader: pid_t) {
        if !groupEmpty, kill(-groupLeader, SIGKILL) != 0, errno == ESRCH {
            groupEmpty = true
        }
        for child in childrenOfKeeper() {
            kill(child, SIGKILL)
        }
    }

    private func childrenOfKeeper() -> [pid_t] {
        let me = getpid()
        if let text = readSmallFile("/proc/self/task/\(me)/children") {
            return text.split(separator: " ").compactMap { pid_t($0.trimmingSpaces) }
        }
        // Without CONFIG_PROC_CHILDREN: scan /proc for processes whose parent is the keeper.
        var result: [pid_t] = []
        guard let directory = opendir("/proc") else { return result }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let pid = pid_t(name), let stat = readSmallFile("/proc/\(pid)/stat"),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 2, pid_t(fields[1]) == me { result.append(pid) }
        }
        return result
    }

    private func reap() {
        while true {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, WNOHANG)
            if pid > 0 {
                if let backend = state.backend, backend.pid == pid, backend.status == nil {
                    let exit: ExitStatus =
                        cbp_wifsignaled(status) != 0 ? .signaled(cbp_wtermsig(status)) : .exited(cbp_wexitstatus(status))
                    apply(.leaderExited(exit))
                }
                continue
            }
            if pid < 0 && errno == EINTR { continue }
            if pid < 0 && errno == ECHILD, state.backend?.status != nil {
                apply(.descendantsGone)
            }
            return
        }
    }

    private func drainSignals() {
        while true {
            let number = cbp_signalfd_read(signalDescriptor)
            if number <= 0 { return }
            if number == SIGCHLD { continue }  // reap() runs after every wake
            // The parent-death signal is SIGTERM; SIGINT/SIGHUP/SIGTERM from anyone else are
            // ignored while batond lives: only batond decides about its backend.
            if getppid() != expectedParent {
                apply(.batondGone("parent process \(expectedParent) exited"))
            }
        }
    }

    // MARK: - Commands

    private func readInput() {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while inputOpen {
            let count = chunk.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
            if count > 0 {
                inputBuffer.append(contentsOf: chunk[0..<count])
                processLines()
            } else if count == 0 {
                inputOpen = false
                apply(.batondGone("end of input: batond closed the pipe or exited"))
            } else if errno == EINTR {
                continue
            } else if errno == EAGAIN || errno == EWOULDBLOCK {
                return
            } else {
                inputOpen = false
                apply(.batondGone("reading the pipe failed: \(errnoText(errno))"))
            }
        }
    }

    private func processLines() {
        var start = 0
        while let newline = inputBuffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
            let line = inputBuffer[start..<newline]
            start = newline + 1
            if discardingLongLine {
                discardingLongLine = false
                continue
            }
            handleLine(line)
        }
        inputBuffer.removeFirst(start)
        if inputBuffer.count > KeeperProtocol.maxCommandLineBytes {
            inputBuffer.removeAll()
            if !discardingLongLine {
                discardingLongLine = true
                enqueue(.error("line longer than \(KeeperProtocol.maxCommandLineBytes) bytes: ignored"))
            }
        }
    }

    private func handleLine(_ bytes: ArraySlice<UInt8>) {
        guard let line = String(validating: bytes, as: UTF8.self) else {
            enqueue(.error("line is not UTF-8: ignored"))
            return
        }
        do {
            apply(.command(try KeeperCommand.parse(line)))
        } catch {
            enqueue(.error(error.description))
        }
    }

    // MARK: - Reports

    private func enqueue(_ report: KeeperReport) {
        guard !outputClosed else { return }
        let line = report.line
        if output.count + line.utf8.count + 1 > Self.maxQueuedOutput {
            // batond is not reading (frozen): never block, drop instead.
            droppedReports += 1
            return
        }
        output.append(contentsOf: line.utf8)
        output.append(UInt8(ascii: "\n"))
        flushOutput()
    }

    private func flushOutput() {
        while !output.isEmpty && !outputClosed {
            let written = output.withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
            if written > 0 {
                output.removeFirst(written)
            } else if written < 0 && errno == EINTR {
                continue
            } else if written < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                return
            } else {
                outputClosed = true
                output.removeAll()
            }
        }
    }

    private func finish() -> Never {
        // Give batond a moment to take the last reports; never wait long.
        let giveUpAt = cbp_monotonic_ns() + 200_000_000
        while !output.isEmpty && !outputClosed {
            let remaining = giveUpAt - cbp_monotonic_ns()
            if remaining <= 0 { break }
            var descriptor = pollfd(fd: STDOUT_FILENO, events: Int16(POLLOUT), revents: 0)
            _ = cbp_poll_ns(&descriptor, 1, remaining)
            flushOutput()
        }
        if droppedReports > 0 { diagnose("dropped \(droppedReports) reports batond did not read") }
        exit(0)
    }

    // MARK: - Spawning

    struct SpawnFailure: Error {
        var message: String
    }

    private func spawnBackend(_ spec: StartSpec) -> Result<pid_t, SpawnFailure> {
        var environment = spec.environment
        let program = spec.arguments[0]
        let path: String
        switch resolveProgram(program, environment: environment) {
        case .success(let resolved): path = resolved
        case .failure(let failure): return .failure(failure)
        }
        let identity: Identity?
        switch resolveIdentity(user: spec.user, group: spec.group) {
        case .success(let resolved): identity = resolved
        case .failure(let failure): return .failure(failure)
        }
        if let identity, let account = identity.account {
            for (name, value) in [("HOME", account.home), ("USER", account.name), ("LOGNAME", account.name)]
            where !environment.contains(where: { $0.hasPrefix(name + "=") }) {
                environment.append("\(name)=\(value)")
            }
        }

        let argv = CStringArray(spec.arguments)
        let envp = CStringArray(environment)
        defer {
            argv.free()
            envp.free()
        }
        let groups = identity?.groups ?? []
        var pid: pid_t = 0
        var stage: Int32 = 0
        var code: Int32 = 0
        let result: Int32 = path.withCString { cPath in
            withOptionalCString(spec.workingDirectory) { cDirectory in
                groups.withUnsafeBufferPointer { groupBuffer in
                    var request = cbp_spawn_request()
                    request.path = cPath
                    request.argv = UnsafePointer(argv.pointer)
                    request.envp = UnsafePointer(envp.pointer)
                    request.cwd = cDirectory
                    request.change_ids = identity == nil ? 0 : 1
                    request.change_uid = identity?.uid == nil ? 0 : 1
                    request.uid = identity?.uid ?? 0
                    request.gid = identity?.gid ?? 0
                    request.groups = groupBuffer.baseAddress
                    request.group_count = groupBuffer.count
                    request.stdout_fd = backendStdout
                    request.stderr_fd = backendStderr
                    return cbp_spawn_backend(&request, &pid, &stage, &code)
                }
            }
        }
        if result == 0 { return .success(pid) }
        return .failure(SpawnFailure(message: spawnMessage(stage: stage, code: code, spec: spec, path: path, identity: identity)))
    }

    private func spawnMessage(stage: Int32, code: Int32, spec: StartSpec, path: String, identity: Identity?) -> String {
        let reason = errnoText(code)
        let who = identity?.label ?? "?"
        switch UInt32(stage) {
        case CBP_STAGE_EXEC.rawValue:
            switch code {
            case ENOENT: return "command \(path) not found"
            case EACCES: return "command \(path): permission denied (not an executable file, or a directory on its path is not searchable)"
            case ENOEXEC: return "command \(path): not an executable format (a script without a #! line?)"
            default: return "command \(path): \(reason)"
            }
        case CBP_STAGE_CHDIR.rawValue: return "working directory \(spec.workingDirectory ?? "?"): \(reason)"
        case CBP_STAGE_SETUID.rawValue, CBP_STAGE_SETGID.rawValue, CBP_STAGE_GROUPS.rawValue:
            return "cannot switch to \(who): \(reason) (running as another user needs batond to run as root)"
        case CBP_STAGE_SESSION.rawValue: return "cannot start a new session: \(reason)"
        case CBP_STAGE_DEATH_SIGNAL.rawValue: return "cannot tie the backend to the keeper: \(reason)"
        case CBP_STAGE_STDIO.rawValue: return "cannot set up stdin/stdout/stderr: \(reason)"
        case CBP_STAGE_FORK.rawValue: return "fork failed: \(reason)"
        default: return "spawning failed: \(reason)"
        }
    }

    private func resolveProgram(_ program: String, environment: [String]) -> Result<String, SpawnFailure> {
        if program.contains("/") { return .success(program) }
        let searchPath =
            environment.last(where: { $0.hasPrefix("PATH=") }).map { String($0.dropFirst(5)) }
            ?? getenv("PATH").map { String(cString: $0) }
            ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        var notExecutable: String?
        for directory in searchPath.split(separator: ":", omittingEmptySubsequences: false) {
            let candidate = directory.isEmpty ? program : "\(directory)/\(program)"
            var info = stat()
            guard stat(candidate, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
            if access(candidate, X_OK) == 0 { return .success(candidate) }
            notExecutable = notExecutable ?? candidate
        }
        if let notExecutable {
            return .failure(SpawnFailure(message: "command \(program): permission denied (\(notExecutable) is not executable)"))
        }
        return .failure(SpawnFailure(message: "command \(program) not found in PATH (\(searchPath))"))
    }

    struct Account {
        var name: String
        var home: String
    }

    struct Identity {
        var uid: uid_t?
        var gid: gid_t
        var groups: [gid_t]
        var account: Account?
        var label: String
    }

    private func resolveIdentity(user: String?, group: String?) -> Result<Identity?, SpawnFailure> {
        var groupID: gid_t?
        if let group {
            if let number = gid_t(group) {
                groupID = number
            } else if let entry = getgrnam(group) {
                groupID = entry.pointee.gr_gid
            } else {
                return .failure(SpawnFailure(message: "group \(group) not found"))
            }
        }
        guard let user else {
            guard let groupID else { return .success(nil) }
            return .success(Identity(uid: nil, gid: groupID, groups: [groupID], account: nil, label: "group \(group ?? "")"))
        }
        let entry: UnsafeMutablePointer<passwd>?
        if let number = uid_t(user) {
            entry = getpwuid(number)
            if entry == nil {
                guard let groupID else { return .failure(SpawnFailure(message: "user \(user) has no passwd entry: set a group explicitly")) }
                return .success(Identity(uid: number, gid: groupID, groups: [groupID], account: nil, label: "uid \(number)"))
            }
        } else {
            entry = getpwnam(user)
        }
        guard let record = entry?.pointee else { return .failure(SpawnFailure(message: "user \(user) not found")) }
        let name = String(cString: record.pw_name)
        let gid = groupID ?? record.pw_gid
        var count: Int32 = 32
        var groups = [gid_t](repeating: 0, count: Int(count))
        while true {
            let found = name.withCString { cbp_group_list($0, gid, &groups, &count) }
            if found >= 0 {
                groups = Array(groups.prefix(Int(found)))
                break
            }
            groups = [gid_t](repeating: 0, count: Int(count) + 16)
            count = Int32(groups.count)
        }
        return .success(
            Identity(
                uid: record.pw_uid, gid: gid, groups: groups,
                account: Account(name: name, home: String(cString: record.pw_dir)),
                label: "user \(name) (uid \(record.pw_uid))"))
    }
}


func withOptionalCString<R>(_ string: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let string else { return body(nil) }
    return string.withCString { body($0) }
}

func readSmallFile(_ path: String) -> String? {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return nil }
    defer { close(descriptor) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if count > 0 {
            bytes.append(contentsOf: chunk[0..<count])
        } else if count < 0 && errno == EINTR {
            continue
        } else {
            break
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

extension Substring {
    var trimmingSpaces: Substring {
        var result = self
        while let last = result.last, last == " " || last == "\n" { result.removeLast() }
        while let first = result.first, first == " " || first == "\n" { result.removeFirst() }
        return result
    }
}

// MARK: - Start

let options = parseOptions()
let claimReleaser = ClaimReleaser(claims: options.claims, app: options.app)
diagnosticLabel = "baton-fence-keeper[\(options.app)]"
let expectedParent = options.parent ?? getppid()

// Die with batond: the death signal is caught (not SIGKILL) so the backend is killed first.
if cbp_set_parent_death_signal(SIGTERM) != 0 { diagnose("PR_SET_PDEATHSIG failed: \(errnoText(errno))") }
// Orphans of the backend become the keeper's children, so it can kill and reap them.
if cbp_set_child_subreaper() != 0 { diagnose("PR_SET_CHILD_SUBREAPER failed: \(errnoText(errno))") }

// Only 0, 1, 2 and the backend's output (3, 4) are kept.
cbp_close_from(5)
func usableOutput(_ descriptor: Int32) -> Int32 {
    guard fcntl(descriptor, F_GETFD) >= 0 else { return STDERR_FILENO }
    _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
    return descriptor
}
let backendStdout = usableOutput(3)
let backendStderr = usableOutput(4)

var keeperSignals = sigset_t()
cbp_keeper_signal_set(&keeperSignals)
if cbp_block_signals(&keeperSignals) != 0 { diagnose("cannot block signals") }
cbp_ignore_sigpipe()
let signalDescriptor = cbp_signalfd(&keeperSignals)
guard signalDescriptor >= 0 else {
    diagnose("signalfd failed: \(errnoText(errno))")
    exit(1)
}
for descriptor in [STDIN_FILENO, STDOUT_FILENO] {
    let flags = fcntl(descriptor, F_GETFL)
    if flags >= 0 { _ = fcntl(descriptor, F_SETFL, flags | O_NONBLOCK) }
}

KeeperRuntime(
    expectedParent: expectedParent, signalDescriptor: signalDescriptor, backendStdout: backendStdout,
    backendStderr: backendStderr
).run()
