import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// CLOCK_MONOTONIC in nanoseconds: the clock the backends write into their heartbeats
/// (Python's `time.monotonic_ns`), so the injector's fault times and the evidence compare.
func monotonicNow() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
}

/// Writes a line to standard output at once (unbuffered, so CI logs show progress live).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// Every process the run started, so that any exit path (normal end, failure, Ctrl-C, the
/// run's time bound) can kill them all.
enum ProcessTable {
    private static let pids = NIOLockedValueBox<Set<pid_t>>([])

    static func insert(_ pid: pid_t) { pids.withLockedValue { _ = $0.insert(pid) } }
    static func remove(_ pid: pid_t) { pids.withLockedValue { _ = $0.remove(pid) } }

    /// SIGKILLs every process group the run started, and every process whose command line
    /// names the run's directory (backends and keepers started by batond). Async-signal-unsafe
    /// parts are fine here: it runs from a dispatch source or the main flow, not a handler.
    static func killAll(runDirectory: String?) {
        let all = pids.withLockedValue { $0 }
        for pid in all {
            kill(-pid, SIGCONT)
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
        }
        if let runDirectory {
            for pid in processes(mentioning: runDirectory) { kill(pid, SIGCONT); kill(pid, SIGKILL) }
        }
        for pid in all { var status: Int32 = 0; _ = waitpid(pid, &status, WNOHANG) }
    }

    /// Pids of processes whose command line or environment mentions `text`.
    static func processes(mentioning text: String) -> [pid_t] {
        let me = getpid()
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var found: [pid_t] = []
        for entry in entries {
            guard let pid = pid_t(entry), pid != me else { continue }
            for file in ["cmdline", "environ"] {
                guard let data = FileManager.default.contents(atPath: "/proc/\(entry)/\(file)") else { continue }
                if String(decoding: data, as: UTF8.self).contains(text) {
                    found.append(pid)
                    break
                }
            }
        }
        return found
    }
}

/// A child process started with `posix_spawn` in a process group of its own, its output in a
/// log file. Reaped by polling `waitpid(WNOHANG)` (a stopped child is not reported), never by
/// a blocking wait.
final class Child: @unchecked Sendable {
    let name: String
    let pid: pid_t
    private let status = NIOLockedValueBox<Int32?>(nil)

    init(name: String, executable: String, arguments: [String], environment: [String: String], logPath: String) throws {
        self.name = name
        var fileActions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fileActions)
        defer { posix_spawn_file_actions_destroy(&fileActions) }
        posix_spawn_file_actions_addopen(&fileActions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&fileActions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&fileActions, 1, 2)
        // The child gets descriptors 0-2 only. Without this it inherits this process's sockets
        // (the proxies' connections, the NATS client's), and a proxy's close of a connection
        // sends no FIN while a batond started later still holds a copy: the node behind it sees
        // a silent, stuck connection instead of a closed one.
        Self.closeInheritedDescriptors(&fileActions)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigdefault(&attributes, &defaults)

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &fileActions, &attributes, argv, envp)
        guard result == 0 else {
            throw ChaosError("cannot start \(name) (\(executable)): \(String(cString: strerror(result)))")
        }
        self.pid = pid
        ProcessTable.insert(pid)
    }

    /// glibc 2.34+ `posix_spawn_file_actions_addclosefrom_np`, looked up at run time (the Glibc
    /// module does not export it).
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static let addCloseFrom: AddCloseFrom? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: AddCloseFrom.self)
    }()

    private static func closeInheritedDescriptors(_ fileActions: inout posix_spawn_file_actions_t) {
        if let addCloseFrom, addCloseFrom(&fileActions, 3) == 0 { return }
        // Older C libraries: mark every descriptor above 2 close-on-exec.
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            if let fd = Int32(entry), fd > 2 {
                let flags = fcntl(fd, F_GETFD)
                if flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
            }
        }
    }

    /// Whether the process still runs (reaps it if it exited).
    var isRunning: Bool {
        status.withLockedValue { status in
            if status != nil { return false }
            var raw: Int32 = 0
            let result = waitpid(pid, &raw, WNOHANG)
            if result == pid || (result < 0 && errno == ECHILD) {
                status = raw
                ProcessTable.remove(pid)
                return false
            }
            return true
        }
    }

    func signal(_ signal: Int32) {
        if isRunning { kill(pid, signal) }
    }

    /// The exit status once the process exited normally (nil while it runs, or if a signal
    /// ended it).
    var exitCode: Int32? {
        guard !isRunning, let raw = status.withLockedValue({ $0 }), raw & 0x7F == 0 else { return nil }
        return (raw >> 8) & 0xFF
    }

    /// Waits up to `timeout` for the process to exit; true if it did.
    func waitForExit(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while isRunning {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    /// SIGKILL of the process and its group, then reaps it.
    func killHard() async {
        kill(-pid, SIGCONT)
        kill(pid, SIGKILL)
        kill(-pid, SIGKILL)
        _ = await waitForExit(timeout: .seconds(10))
    }
}

/// A failure of the chaos run itself (not a violation found by the checker).
struct ChaosError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
func reserveLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw ChaosError("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw ChaosError("bind: \(String(cString: strerror(errno)))") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether something accepts TCP connections on `host`:`port` (loopback by default).
func portAccepts(_ port: Int, host: String = "127.0.0.1") -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr(host)
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}
