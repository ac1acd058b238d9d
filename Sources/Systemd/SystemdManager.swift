import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A client of a systemd manager (`org.freedesktop.systemd1`) over D-Bus, through libsystemd's
/// sd-bus.
///
/// The connection is owned by one dedicated thread; every method here suspends without blocking
/// the Swift concurrency pool. On connect the client subscribes to the manager's signals and adds
/// the `JobRemoved` match, so job results cannot be missed by a later call. The connection is not
/// re-established: after ``SystemdError/connectionClosed(bus:call:)`` make a new manager.
///
/// ```swift
/// let systemd = try await SystemdManager.connect(to: .system, logger: logger)
/// defer { Task { await systemd.close() } }
/// try await systemd.startUnit("web.service")
/// ```
public final class SystemdManager: Sendable {
    /// The bus this manager talks over.
    public let bus: SystemdBusAddress
    /// How long a single D-Bus call may wait for its reply.
    public let callTimeout: Duration
    let connection: BusConnection

    private init(bus: SystemdBusAddress, callTimeout: Duration, connection: BusConnection) {
        self.bus = bus
        self.callTimeout = callTimeout
        self.connection = connection
    }

    deinit {
        connection.requestClose()
    }

    /// Connects to the manager on `bus`, subscribes to its signals and installs the `JobRemoved`
    /// match.
    ///
    /// - Throws: ``SystemdError/noBus(bus:errno:reason:)`` when the bus cannot be reached;
    ///   ``SystemdError/callFailed(bus:call:name:message:)`` (e.g. `ServiceUnknown`) when no
    ///   systemd answers on it.
    public static func connect(
        to bus: SystemdBusAddress,
        callTimeout: Duration = .seconds(25),
        logger: Logger
    ) async throws -> SystemdManager {
        let connection = try await BusConnection.open(bus, logger: logger)
        do {
            let rule = "type='signal',sender='\(SystemdObjects.service)',path='\(SystemdObjects.managerPath)',"
                + "interface='\(SystemdObjects.managerInterface)',member='JobRemoved'"
            try await connection.addMatchAndWait(rule, label: "JobRemoved") { [unowned connection] reader in
                connection.jobRemoved(reader)
            }
            // Without a subscriber the manager emits neither JobRemoved nor PropertiesChanged.
            try await connection.call(MethodCall(member: "Subscribe"), timeout: callTimeout) { _ in }
        } catch {
            await connection.close()
            throw error
        }
        return SystemdManager(bus: bus, callTimeout: callTimeout, connection: connection)
    }

    /// Closes the connection. Calls in flight fail with ``SystemdError/connectionClosed(bus:call:)``
    /// and ``unitStates(_:)`` streams finish.
    public func close() async {
        await connection.close()
    }

    // MARK: Jobs

    /// Starts `unit` (mode `replace`) and waits up to `timeout` for the job to end.
    ///
    /// - Returns: `done`, or `skipped`. A unit whose `Condition…=` does not hold ends `done`
    ///   without becoming active.
    /// - Throws: ``SystemdError/jobFailed(unit:operation:result:)`` for `failed`, `timeout`,
    ///   `canceled`, `dependency` (and any other result), ``SystemdError/jobTimeout(unit:operation:timeout:)``,
    ///   ``SystemdError/unknownUnit(unit:bus:)``.
    @discardableResult
    public func startUnit(_ unit: String, timeout: Duration = .seconds(90)) async throws -> JobResult {
        try await job("StartUnit", unit: unit, operation: "start", timeout: timeout)
    }

    /// Stops `unit` (mode `replace`) and waits up to `timeout` for the job to end. Same results
    /// and errors as ``startUnit(_:timeout:)``.
    @discardableResult
    public func stopUnit(_ unit: String, timeout: Duration = .seconds(90)) async throws -> JobResult {
        try await job("StopUnit", unit: unit, operation: "stop", timeout: timeout)
    }

    /// Restarts `unit` (mode `replace`; starts it if it is not running) and waits up to `timeout`
    /// for the job to end. Same results and errors as ``startUnit(_:timeout:)``.
    @discardableResult
    public func restartUnit(_ unit: String, timeout: Duration = .seconds(90)) async throws -> JobResult {
        try await job("RestartUnit", unit: unit, operation: "restart", timeout: timeout)
    }

    private func job(_ member: String, unit: String, operation: String, timeout: Duration) async throws -> JobResult {
        let call = MethodCall(member: member, arguments: [.string(unit), .string("replace")], label: "\(member)(\(unit))", unit: unit)
        let result = try await connection.runJob(call, unit: unit, operation: operation, callTimeout: callTimeout, jobTimeout: timeout)
        guard result.isSuccess else { throw SystemdError.jobFailed(unit: unit, operation: operation, result: result) }
        return result
    }

    // MARK: Signals and failure state

    /// Sends `signal` to `whom` of `unit` (KillUnit). Fencing uses the default: SIGKILL to every
    /// process in the unit's cgroup. Returns once systemd has sent the signal; the unit's state
    /// follows asynchronously (see ``unitStates(_:)``).
    public func killUnit(_ unit: String, whom: KillTarget = .all, signal: Int32 = SIGKILL) async throws {
        let call = MethodCall(
            member: "KillUnit", arguments: [.string(unit), .string(whom.rawValue), .int32(signal)],
            label: "KillUnit(\(unit), \(whom.rawValue), \(signal))", unit: unit)
        try await connection.call(call, timeout: callTimeout) { _ in }
    }

    /// Resets the `failed` state (and restart counters) of `unit` (ResetFailedUnit).
    public func resetFailedUnit(_ unit: String) async throws {
        let call = MethodCall(member: "ResetFailedUnit", arguments: [.string(unit)], label: "ResetFailedUnit(\(unit))", unit: unit)
        try await connection.call(call, timeout: callTimeout) { _ in }
    }

    // MARK: State

    /// The unit's current `LoadState`, `ActiveState` and `SubState`.
    ///
    /// - Throws: ``SystemdError/unknownUnit(unit:bus:)`` when the unit file does not exist
    ///   (`LoadState` `not-found`).
    public func unitState(_ unit: String) async throws -> UnitState {
        let state = try await connection.call(UnitStateReading.getAll(unit), timeout: callTimeout) {
            try UnitStateReading.parseGetAll($0)
        }
        if state.isNotFound { throw SystemdError.unknownUnit(unit: unit, bus: bus) }
        return state
    }

    /// Follows `unit`'s state: yields the current state, then each change systemd announces with
    /// `PropertiesChanged` on the unit's object path (no polling; consecutive duplicates are
    /// dropped). A unit that does not exist yields a state with `LoadState` `not-found`. The
    /// stream finishes when the connection closes; stop iterating to remove the match.
    public func unitStates(_ unit: String) -> AsyncStream<UnitState> {
        connection.unitStates(unit, callTimeout: callTimeout)
    }

    /// The main PID of a service unit, or nil when it has none (not running).
    public func mainPID(of unit: String) async throws -> pid_t? {
        let call = MethodCall(
            path: SystemdObjects.unitPath(unit), interface: SystemdObjects.propertiesInterface, member: "Get",
            arguments: [.string(SystemdObjects.serviceInterface), .string("MainPID")], label: "Get(\(unit), MainPID)", unit: unit)
        let pid = try await connection.call(call, timeout: callTimeout) { reader -> UInt32 in
            guard try reader.enter(BusType.variant, "u") else { throw MessageReader.Failure(reason: "expected a uint32 variant") }
            return try reader.uint32()
        }
        return pid == 0 ? nil : pid_t(pid)
    }

    // MARK: Manager

    /// Reloads the manager's configuration (daemon-reload). systemd answers once the reload is
    /// complete, so drop-ins written before are in effect when this returns.
    public func reload(timeout: Duration = .seconds(90)) async throws {
        try await connection.call(MethodCall(member: "Reload", label: "Reload (daemon-reload)"), timeout: timeout) { _ in }
    }

    /// The manager's unit search path (its `UnitPath` property), highest priority first.
    public func unitSearchPath() async throws -> [String] {
        let call = MethodCall(
            interface: SystemdObjects.propertiesInterface, member: "Get",
            arguments: [.string(SystemdObjects.managerInterface), .string("UnitPath")], label: "Get(UnitPath)")
        return try await connection.call(call, timeout: callTimeout) { reader in
            guard try reader.enter(BusType.variant, "as") else { throw MessageReader.Failure(reason: "expected an array variant") }
            return try reader.stringArray()
        }
    }

    /// The directory for runtime unit files and drop-ins of this manager: `/run/systemd/system`
    /// for the system manager, `$XDG_RUNTIME_DIR/systemd/user` for a user manager (found in the
    /// manager's `UnitPath`, next to its `transient` directory). Its contents vanish on reboot.
    public func runtimeUnitDirectory() async throws -> String {
        let searchPath = try await unitSearchPath()
        if let directory = RuntimeUnitDirectory.find(in: searchPath) { return directory }
        throw SystemdError.unexpectedReply(
            bus: bus, call: "Get(UnitPath)",
            reason: "no runtime unit directory (…/systemd/system or …/systemd/user next to …/systemd/transient) in \(searchPath)")
    }

    // MARK: Baton drop-ins

    /// Writes `dropIn` to `<runtime unit dir>/<unit>.d/50-baton.conf` (atomically) and, unless
    /// `reload` is false, reloads the manager so it takes effect. Returns the file's path.
    @discardableResult
    public func installDropIn(_ dropIn: BatonDropIn, reload: Bool = true) async throws -> String {
        let directory = try await runtimeUnitDirectory()
        let path = dropIn.path(inRuntimeDirectory: directory)
        let contents = dropIn.render()
        try await connection.perform("write \(path)") { _ in
            try FileWriting.createDirectories(dropIn.directory(inRuntimeDirectory: directory))
            try FileWriting.writeAtomically(contents, to: path, mode: 0o644)
        }
        if reload { try await self.reload() }
        return path
    }

    /// Removes `unit`'s Baton drop-in (and its `.d` directory when empty) and, unless `reload`
    /// is false, reloads the manager. Removing a drop-in that does not exist is not an error.
    public func removeDropIn(for unit: String, reload: Bool = true) async throws {
        let directory = try await runtimeUnitDirectory()
        let dropIn = BatonDropIn(unit: unit)
        let path = dropIn.path(inRuntimeDirectory: directory)
        let parent = dropIn.directory(inRuntimeDirectory: directory)
        let removed = try await connection.perform("remove \(path)") { _ -> Bool in
            guard unlink(path) == 0 else {
                if errno == ENOENT { return false }
                throw SystemdError.fileSystem(path: path, operation: "remove", errno: errno)
            }
            _ = rmdir(parent)  // fails harmlessly when other drop-ins remain
            return true
        }
        if removed, reload { try await self.reload() }
    }
}

/// Finding the runtime unit directory in a manager's unit search path.
public enum RuntimeUnitDirectory {
    /// The runtime directory is the `system` or `user` sibling of the `transient` directory,
    /// both under the manager's runtime root (`/run/systemd` or `$XDG_RUNTIME_DIR/systemd`).
    public static func find(in searchPath: [String]) -> String? {
        for entry in searchPath where entry.hasSuffix("/systemd/transient") {
            let root = String(entry.dropLast("transient".count))
            for scope in ["system", "user"] where searchPath.contains(root + scope) {
                return root + scope
            }
        }
        return nil
    }
}
