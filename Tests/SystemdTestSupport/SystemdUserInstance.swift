// Test fixture: a real `systemd --user` with its own dbus-daemon, in a private mount namespace.
//
//     try await withSystemdUserInstance { systemd in
//         try systemd.writeUnit("demo.service", "[Service]\nExecStart=/bin/sleep 1000\n")
//         let manager = try await systemd.connect(logger: logger)
//         try await manager.reload()
//         try await manager.startUnit("demo.service")
//         await manager.close()
//     }
//
// systemd refuses to run as a user manager unless /run/systemd/system exists, which must never
// be created on the host (tools would then believe systemd booted it). So the manager runs under
// `unshare --mount` with a tmpfs over /run/systemd; the test process itself is multithreaded and
// cannot unshare. Everything else lives in a temporary directory visible from both sides:
// XDG_RUNTIME_DIR (the bus socket, systemd's private socket, runtime units) and XDG_CONFIG_HOME
// (unit files, in `systemd/user`). The launcher also moves itself into a cgroup of its own, so
// that the manager's units (app.slice/...) do not collide with another instance's, and so that
// cleanup can find and kill every process that was started.
//
// Missing prerequisites (root, unshare, /lib/systemd/systemd, dbus-daemon) skip the test, or
// fail it when BATON_REQUIRE_INTEGRATION=1.

import Foundation
import Logging
import NATSTestSupport
import Systemd

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A running `systemd --user` for a test. Made by ``withSystemdUserInstance(startTimeout:_:)``,
/// which also tears it down.
public struct SystemdUserInstance: Sendable {
    /// The temporary directory holding everything below.
    public let directory: String
    /// `XDG_RUNTIME_DIR` of the manager: bus socket, `systemd/private`, runtime units.
    public let runtimeDirectory: String
    /// `XDG_CONFIG_HOME` of the manager.
    public let configDirectory: String
    /// Where unit files go: `$XDG_CONFIG_HOME/systemd/user`.
    public let unitDirectory: String
    /// The session bus the manager is on, as a D-Bus address (`unix:path=…/bus`).
    public let busAddress: String
    /// The manager's log (its stdout and stderr).
    public let logPath: String
    /// The cgroup directories the manager and its units live under (one per mounted hierarchy).
    public let cgroupDirectories: [String]
    /// PID of `systemd --user`.
    public let managerPID: pid_t

    /// Where to point a ``SystemdManager``.
    public var bus: SystemdBusAddress { .address(busAddress) }

    /// What `systemctl --user` (and `busctl --user`) need to reach this manager; merge into a
    /// child's environment.
    public var environment: [String: String] {
        [
            "XDG_RUNTIME_DIR": runtimeDirectory,
            "XDG_CONFIG_HOME": configDirectory,
            "DBUS_SESSION_BUS_ADDRESS": "unix:path=\(runtimeDirectory)/bus",
        ]
    }

    /// Writes a unit file into ``unitDirectory`` (call ``SystemdManager/reload(timeout:)`` after).
    public func writeUnit(_ name: String, _ contents: String) throws {
        try Data(contents.utf8).write(to: URL(fileURLWithPath: "\(unitDirectory)/\(name)"))
    }

    /// Connects a ``SystemdManager`` to this instance.
    public func connect(logger: Logger = Logger(label: "systemd-test", factory: { _ in SwiftLogNoOpLogHandler() })) async throws -> SystemdManager {
        try await SystemdManager.connect(to: bus, callTimeout: .seconds(10), logger: logger)
    }

    /// Runs `systemctl --user ARGUMENTS` against this instance (on a thread of its own, not the
    /// concurrency pool).
    public func systemctl(_ arguments: [String]) async throws -> SystemdCommandResult {
        try await runOnThread("/usr/bin/systemctl", ["--user"] + arguments, environment: environment)
    }

    /// The tail of the manager's log, for failure messages.
    public func logTail(lines: Int = 40) -> String {
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }
}

/// How a command ended and what it printed (stdout and stderr together).
public struct SystemdCommandResult: Sendable, CustomStringConvertible {
    public var status: Int32
    public var output: String
    public var description: String { "exit \(status): \(output)" }
}

/// Failures of the fixture itself.
public enum SystemdFixtureError: Error, CustomStringConvertible {
    case notReady(timeout: Duration, lastError: String, logTail: String)
    case exitedEarly(status: Int32, logTail: String)
    case setup(String)

    public var description: String {
        switch self {
        case .notReady(let timeout, let lastError, let logTail):
            return "systemd --user did not answer on its bus within \(timeout) (last error: \(lastError)); log tail:\n\(logTail)"
        case .exitedEarly(let status, let logTail):
            return "systemd --user exited with status \(status) before it was ready; log tail:\n\(logTail)"
        case .setup(let message):
            return "systemd fixture setup failed: \(message)"
        }
    }
}

/// The prerequisites, checked in order; the first missing one ends the test through
/// ``Integration/missingPrerequisite(_:fileID:filePath:line:column:)``.
public func requireSystemdUserPrerequisites(
    fileID: String = #fileID, filePath: String = #filePath, line: Int = #line, column: Int = #column
) throws {
    func missing(_ name: String, _ reason: String, _ remedy: String) throws -> Never {
        try Integration.missingPrerequisite(
            MissingPrerequisite(name: name, reason: reason, remedy: remedy),
            fileID: fileID, filePath: filePath, line: line, column: column)
    }
    if geteuid() != 0 {
        try missing("root", "the systemd --user fixture mounts a tmpfs in a private mount namespace", "run the tests as root")
    }
    let files: [(String, String, String)] = [
        ("/usr/bin/unshare", "unshare", "`apt-get install util-linux`"),
        ("/lib/systemd/systemd", "systemd", "`apt-get install systemd`"),
        ("/usr/bin/dbus-daemon", "dbus-daemon", "`apt-get install dbus` (or dbus-daemon)"),
        ("/usr/bin/systemctl", "systemctl", "`apt-get install systemd`"),
    ]
    for (path, name, remedy) in files where !FileManager.default.isExecutableFile(atPath: path) {
        try missing(name, "no executable at \(path)", remedy)
    }
}

/// Starts a `systemd --user` (see ``SystemdUserInstance``), runs `body`, and always stops the
/// manager and dbus-daemon, kills whatever is left in their cgroup and removes the temporary
/// directory.
public func withSystemdUserInstance<T: Sendable>(
    startTimeout: Duration = .seconds(30),
    fileID: String = #fileID, filePath: String = #filePath, line: Int = #line, column: Int = #column,
    _ body: (SystemdUserInstance) async throws -> T
) async throws -> T {
    try requireSystemdUserPrerequisites(fileID: fileID, filePath: filePath, line: line, column: column)
    let launch = try SystemdLaunch.start()
    do {
        let instance = try await launch.waitUntilReady(timeout: startTimeout)
        let result = try await body(instance)
        await launch.tearDown()
        return result
    } catch {
        await launch.tearDown()
        throw error
    }
}

// MARK: - Launch and teardown

private final class SystemdLaunch: @unchecked Sendable {
    let directory: String
    let runtimeDirectory: String
    let configDirectory: String
    let logPath: String
    let cgroupDirectories: [String]
    let process: Process
    let exited: ExitSignal

    private init(directory: String, cgroupDirectories: [String], process: Process, exited: ExitSignal) {
        self.directory = directory
        self.runtimeDirectory = "\(directory)/runtime"
        self.configDirectory = "\(directory)/config"
        self.logPath = "\(directory)/systemd.log"
        self.cgroupDirectories = cgroupDirectories
        self.process = process
        self.exited = exited
    }

    static let launcherScript = #"""
        set -e
        dir=$1; shift
        for cg in "$@"; do mkdir -p "$cg"; echo $$ > "$cg/cgroup.procs"; done
        if [ -d /run/systemd ]; then mount -t tmpfs tmpfs /run/systemd; else mount -t tmpfs tmpfs /run; fi
        mkdir -p /run/systemd/system
        export XDG_RUNTIME_DIR="$dir/runtime" XDG_CONFIG_HOME="$dir/config"
        export DBUS_SESSION_BUS_ADDRESS="unix:path=$XDG_RUNTIME_DIR/bus"
        /usr/bin/dbus-daemon --session --address="$DBUS_SESSION_BUS_ADDRESS" --nofork --nopidfile &
        echo $! > "$dir/dbus.pid"
        exec /lib/systemd/systemd --user
        """#

    static func start() throws -> SystemdLaunch {
        let directory = try makeTemporaryDirectory(prefix: "baton-systemd").path
        do {
            for sub in ["runtime", "config/systemd/user"] {
                try FileManager.default.createDirectory(atPath: "\(directory)/\(sub)", withIntermediateDirectories: true)
            }
            chmod("\(directory)/runtime", 0o700)
            let script = "\(directory)/launch.sh"
            try Data(launcherScript.utf8).write(to: URL(fileURLWithPath: script))
            let name = URL(fileURLWithPath: directory).lastPathComponent
            let cgroups = cgroupHierarchies().map { "\($0)/\(name)" }

            let log = FileManager.default.createFile(atPath: "\(directory)/systemd.log", contents: nil)
                ? FileHandle(forWritingAtPath: "\(directory)/systemd.log") : nil
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
            process.arguments = ["--mount", "--propagation", "private", "/bin/sh", script, directory] + cgroups
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = log ?? FileHandle.nullDevice
            process.standardError = log ?? FileHandle.nullDevice
            let exited = ExitSignal()
            process.terminationHandler = { exited.signal($0.terminationStatus) }
            try process.run()
            try? log?.close()
            return SystemdLaunch(directory: directory, cgroupDirectories: cgroups, process: process, exited: exited)
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    /// The writable cgroup hierarchies systemd tracks units in: `name=systemd` and `unified`
    /// on a hybrid host, the root on a pure cgroup2 host.
    static func cgroupHierarchies() -> [String] {
        let candidates = ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"]
        let hybrid = candidates.filter { FileManager.default.fileExists(atPath: "\($0)/cgroup.procs") }
        if !hybrid.isEmpty { return hybrid }
        if FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.controllers") { return ["/sys/fs/cgroup"] }
        return []
    }

    /// Polls (every 50 ms, bounded) until the manager answers on its bus.
    func waitUntilReady(timeout: Duration) async throws -> SystemdUserInstance {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        let busPath = "\(runtimeDirectory)/bus"
        var lastError = "bus socket \(busPath) not there yet"
        while clock.now < deadline {
            if hasExited {
                throw SystemdFixtureError.exitedEarly(status: exited.status ?? -1, logTail: tail())
            }
            if FileManager.default.fileExists(atPath: busPath) {
                do {
                    let manager = try await SystemdManager.connect(
                        to: .address("unix:path=\(busPath)"), callTimeout: .seconds(2),
                        logger: Logger(label: "systemd-fixture", factory: { _ in SwiftLogNoOpLogHandler() }))
                    _ = try await manager.unitSearchPath()
                    await manager.close()
                    return SystemdUserInstance(
                        directory: directory, runtimeDirectory: runtimeDirectory, configDirectory: configDirectory,
                        unitDirectory: "\(configDirectory)/systemd/user", busAddress: "unix:path=\(busPath)",
                        logPath: logPath, cgroupDirectories: cgroupDirectories, managerPID: process.processIdentifier)
                } catch {
                    lastError = "\(error)"
                }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw SystemdFixtureError.notReady(timeout: timeout, lastError: lastError, logTail: tail())
    }

    /// Whether the launcher (by then systemd) has exited. Read from /proc rather than from
    /// Process's termination handler, which was seen not to fire in the multithreaded test
    /// process (the zombie stayed unreaped): a zombie or a vanished pid counts as exited.
    var hasExited: Bool {
        if exited.status != nil { return true }
        guard let stat = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return true }
        let state = stat[close...].dropFirst().drop { $0 == " " }.first
        return state == "Z" || state == "X"
    }

    func tail() -> String {
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(40).joined(separator: "\n")
    }

    /// SIGTERM makes a user manager start exit.target: it stops its units and exits. After a
    /// bounded wait everything still in the cgroup (dbus-daemon, stragglers) gets SIGKILL.
    func tearDown() async {
        let pid = process.processIdentifier
        if !hasExited { kill(pid, SIGTERM) }
        await waitForExit(timeout: .seconds(15))
        if !hasExited {
            kill(pid, SIGKILL)
            await waitForExit(timeout: .seconds(5))
        }
        if let text = try? String(contentsOfFile: "\(directory)/dbus.pid", encoding: .utf8),
            let dbus = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), dbus > 0
        {
            kill(dbus, SIGKILL)
        }
        await killCgroups()
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func waitForExit(timeout: Duration) async {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while !hasExited, clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    private func killCgroups() async {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(5)
        for root in cgroupDirectories where FileManager.default.fileExists(atPath: root) {
            while clock.now < deadline {
                let pids = Self.pids(under: root)
                if pids.isEmpty { break }
                for pid in pids { kill(pid, SIGKILL) }
                try? await Task.sleep(for: .milliseconds(20))
            }
            // Children before parents.
            for directory in Self.directories(under: root).reversed() { rmdir(directory) }
        }
    }

    static func directories(under root: String) -> [String] {
        var result = [root]
        var index = 0
        while index < result.count {
            let directory = result[index]
            index += 1
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            for entry in entries.sorted() {
                var isDirectory: ObjCBool = false
                let path = "\(directory)/\(entry)"
                if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
                    result.append(path)
                }
            }
        }
        return result
    }

    static func pids(under root: String) -> [pid_t] {
        directories(under: root).flatMap { directory -> [pid_t] in
            let text = (try? String(contentsOfFile: "\(directory)/cgroup.procs", encoding: .utf8)) ?? ""
            return text.split(separator: "\n").compactMap { pid_t($0) }
        }
    }
}

/// The launcher's exit status, set from Process's termination handler.
private final class ExitSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Int32?

    var status: Int32? { lock.withLock { value } }
    func signal(_ status: Int32) { lock.withLock { value = status } }
}

/// Runs a short command on a thread of its own and returns its combined output.
public func runOnThread(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) async throws -> SystemdCommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    process.standardInput = FileHandle.nullDevice
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    return await withCheckedContinuation { continuation in
        Thread.detachNewThread {
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            continuation.resume(returning: SystemdCommandResult(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self)))
        }
    }
}
