import CSystemd
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An sd-bus connection and everything that touches it, confined to one dedicated thread.
///
/// sd-bus is not thread-safe: the bus, its messages and its slots are used only on that thread,
/// which sleeps in poll(2) on the bus descriptor (events and timeout from sd-bus) and on an
/// eventfd that other threads write to after queueing work in `inbox`. Every stored property
/// below `inbox` is touched only on the bus thread; that confinement is what makes the
/// `@unchecked Sendable` sound. No blocking C call runs on the Swift concurrency pool: callers
/// suspend on continuations that the bus thread resumes.
final class BusConnection: @unchecked Sendable {
    typealias Work = @Sendable (BusConnection) -> Void

    let address: SystemdBusAddress
    let logger: Logger
    private let wakeDescriptor: Int32

    private struct Inbox {
        var work: [Work] = []
        var closeRequested = false
        var closed = false
        var closeWaiters: [CheckedContinuation<Void, Never>] = []
    }
    private let inbox = Mutex(Inbox())
    private let watcherIdentifiers = Atomic<UInt64>(0)

    // MARK: Bus thread only

    private var bus: OpaquePointer?
    private var nextIdentifier: UInt64 = 0
    private var pendingCalls: [UInt64: PendingCall] = [:]
    private var matches: [UInt64: Match] = [:]
    private var jobWaiters: [String: JobWaiter] = [:]
    /// JobRemoved signals nobody waited for yet, in case one arrives before the reply that
    /// names its job. Job paths are never reused by a running manager.
    private var unclaimedJobs: [String: JobResult] = [:]
    private var unclaimedJobOrder: [String] = []
    private var unitWatchers: [UInt64: UnitWatcher] = [:]

    private init(address: SystemdBusAddress, logger: Logger, wakeDescriptor: Int32) {
        self.address = address
        self.logger = logger
        self.wakeDescriptor = wakeDescriptor
    }

    /// Opens the bus on a new thread; throws ``SystemdError/noBus(bus:errno:reason:)`` if it
    /// cannot be opened.
    static func open(_ address: SystemdBusAddress, logger: Logger) async throws -> BusConnection {
        let descriptor = eventfd(0, Int32(EFD_CLOEXEC) | Int32(EFD_NONBLOCK))
        guard descriptor >= 0 else {
            throw SystemdError.noBus(bus: address, errno: errno, reason: "eventfd: \(errnoText(errno))")
        }
        let connection = BusConnection(address: address, logger: logger, wakeDescriptor: descriptor)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let thread = Thread { connection.run(opened: continuation) }
            thread.name = "baton.sd-bus"
            thread.start()
        }
        return connection
    }

    // MARK: Handing work to the bus thread

    /// Queues `work` for the bus thread. Returns false (and drops it) once the connection is
    /// closed or closing.
    @discardableResult
    func submit(_ work: @escaping Work) -> Bool {
        inbox.withLock { inbox in
            guard !inbox.closed, !inbox.closeRequested else { return false }
            inbox.work.append(work)
            wake()
            return true
        }
    }

    /// Closes the connection: pending calls fail with ``SystemdError/connectionClosed(bus:call:)``
    /// and unit state streams finish. Returns once the bus thread has exited.
    func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let alreadyClosed = inbox.withLock { inbox -> Bool in
                if inbox.closed { return true }
                inbox.closeRequested = true
                inbox.closeWaiters.append(continuation)
                wake()
                return false
            }
            if alreadyClosed { continuation.resume() }
        }
    }

    /// Asks the thread to stop without waiting (for deinit).
    func requestClose() {
        inbox.withLock { inbox in
            guard !inbox.closed else { return }
            inbox.closeRequested = true
            wake()
        }
    }

    /// Called with the inbox lock held, so that the descriptor cannot be closed meanwhile.
    private func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeDescriptor, &one, MemoryLayout<UInt64>.size)
    }

    /// Runs `body` on the bus thread and returns its result.
    func perform<T: Sendable>(_ label: String, _ body: @escaping @Sendable (BusConnection) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let accepted = submit { connection in
                continuation.resume(with: Result { try body(connection) })
            }
            if !accepted { continuation.resume(throwing: SystemdError.connectionClosed(bus: address, call: label)) }
        }
    }

    /// Sends `call` and parses its reply with `parse` on the bus thread.
    func call<T: Sendable>(
        _ call: MethodCall,
        timeout: Duration,
        parse: @escaping @Sendable (MessageReader) throws -> T
    ) async throws -> T {
        let address = self.address
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let accepted = submit { connection in
                connection.startCall(call, timeout: timeout) { result in
                    switch result {
                    case .failure(let error):
                        continuation.resume(throwing: error)
                    case .success(let reply):
                        do {
                            continuation.resume(returning: try parse(MessageReader(message: reply)))
                        } catch let failure as MessageReader.Failure {
                            continuation.resume(
                                throwing: SystemdError.unexpectedReply(bus: address, call: call.label, reason: failure.reason))
                        } catch {
                            continuation.resume(throwing: error)
                        }
                    }
                }
            }
            if !accepted { continuation.resume(throwing: SystemdError.connectionClosed(bus: address, call: call.label)) }
        }
    }

    /// Sends a job-creating call (StartUnit, StopUnit, ...) and waits for the job's JobRemoved
    /// signal. The JobRemoved match is installed when the manager connects, before any job call.
    func runJob(_ call: MethodCall, unit: String, operation: String, callTimeout: Duration, jobTimeout: Duration) async throws -> JobResult {
        let address = self.address
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<JobResult, any Error>) in
            let accepted = submit { connection in
                connection.startJob(call, unit: unit, operation: operation, callTimeout: callTimeout, jobTimeout: jobTimeout) {
                    continuation.resume(with: $0)
                }
            }
            if !accepted { continuation.resume(throwing: SystemdError.connectionClosed(bus: address, call: call.label)) }
        }
    }

    /// Adds a signal match and waits until the broker confirmed it.
    func addMatchAndWait(_ rule: String, label: String, onSignal: @escaping @Sendable (MessageReader) -> Void) async throws {
        let address = self.address
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let accepted = submit { connection in
                connection.addMatch(rule, label: label, onSignal: { onSignal(MessageReader(message: $0)) }) { error in
                    if let error { continuation.resume(throwing: error) } else { continuation.resume() }
                }
            }
            if !accepted { continuation.resume(throwing: SystemdError.connectionClosed(bus: address, call: label)) }
        }
    }

    /// Follows `unit`'s state: the current state first, then every change announced by
    /// PropertiesChanged on the unit's object path. Finishes when the connection closes.
    func unitStates(_ unit: String, callTimeout: Duration) -> AsyncStream<UnitState> {
        let (stream, continuation) = AsyncStream.makeStream(of: UnitState.self, bufferingPolicy: .unbounded)
        let identifier = watcherIdentifiers.add(1, ordering: .relaxed).newValue
        // Queued after the watch below, so the bus thread always sees watch before unwatch.
        continuation.onTermination = { [weak self] _ in
            self?.submit { $0.unwatchUnit(identifier) }
        }
        let accepted = submit { connection in
            connection.watchUnit(unit, identifier: identifier, continuation: continuation, callTimeout: callTimeout)
        }
        if !accepted { continuation.finish() }
        return stream
    }

    // MARK: The bus thread

    private func run(opened: CheckedContinuation<Void, any Error>) {
        let openResult = openBus()
        guard openResult >= 0 else {
            opened.resume(throwing: SystemdError.noBus(bus: address, errno: -openResult, reason: errnoText(-openResult)))
            finishThread()
            return
        }
        opened.resume()
        logger.debug("sd-bus connection open", metadata: ["bus": "\(address)"])

        while true {
            let (work, closeRequested) = inbox.withLock { inbox -> ([Work], Bool) in
                let work = inbox.work
                inbox.work.removeAll()
                return (work, inbox.closeRequested)
            }
            for item in work { item(self) }
            if closeRequested { break }

            var processed: Int32
            repeat { processed = sd_bus_process(bus, nil) } while processed > 0
            if processed < 0 {
                logger.warning(
                    "sd-bus connection lost", metadata: ["bus": "\(address)", "error": "\(errnoText(-processed))"])
                break
            }
            expireJobWaiters()
            waitForEvents()
        }
        shutDown()
        finishThread()
    }

    private func openBus() -> Int32 {
        var opened: OpaquePointer?
        var result: Int32
        switch address {
        case .system:
            result = sd_bus_open_system(&opened)
        case .user:
            result = sd_bus_open_user(&opened)
        case .address(let text):
            result = sd_bus_new(&opened)
            if result >= 0 { result = sd_bus_set_address(opened, text) }
            if result >= 0 { result = sd_bus_set_bus_client(opened, 1) }
            if result >= 0 { result = sd_bus_start(opened) }
        }
        if result < 0 {
            if let opened { sd_bus_unref(opened) }
            return result
        }
        bus = opened
        return 0
    }

    private func waitForEvents() {
        guard let bus else { return }
        var descriptors = [
            pollfd(fd: sd_bus_get_fd(bus), events: Int16(truncatingIfNeeded: sd_bus_get_events(bus)), revents: 0),
            pollfd(fd: wakeDescriptor, events: Int16(POLLIN), revents: 0),
        ]
        var deadline: UInt64 = .max
        var busDeadline: UInt64 = 0
        if sd_bus_get_timeout(bus, &busDeadline) >= 0 { deadline = busDeadline }
        for waiter in jobWaiters.values { deadline = min(deadline, waiter.deadline) }
        let timeout: Int32
        if deadline == .max {
            timeout = -1
        } else {
            let now = monotonicMicroseconds()
            timeout = deadline <= now ? 0 : Int32(min((deadline - now + 999) / 1000, UInt64(Int32.max)))
        }
        let result = poll(&descriptors, nfds_t(descriptors.count), timeout)
        if result > 0, descriptors[1].revents & Int16(POLLIN) != 0 {
            var count: UInt64 = 0
            _ = Glibc.read(wakeDescriptor, &count, MemoryLayout<UInt64>.size)
        }
    }

    private func shutDown() {
        for call in pendingCalls.values { call.completion(.failure(.connectionClosed(bus: address, call: call.label))) }
        pendingCalls.removeAll()
        for (_, waiter) in jobWaiters {
            waiter.completion(.failure(.connectionClosed(bus: address, call: "\(waiter.operation) of \(waiter.unit)")))
        }
        jobWaiters.removeAll()
        for watcher in unitWatchers.values { watcher.continuation.finish() }
        unitWatchers.removeAll()
        for match in matches.values { sd_bus_slot_unref(match.slot) }
        matches.removeAll()
        if let bus { sd_bus_flush_close_unref(bus) }
        bus = nil
    }

    private func finishThread() {
        let (waiters, leftover) = inbox.withLock { inbox -> ([CheckedContinuation<Void, Never>], [Work]) in
            inbox.closed = true
            let waiters = inbox.closeWaiters
            let work = inbox.work
            inbox.closeWaiters.removeAll()
            inbox.work.removeAll()
            return (waiters, work)
        }
        // Work queued after the loop's last look finds `bus` nil and fails as closed.
        for item in leftover { item(self) }
        Glibc.close(wakeDescriptor)
        for waiter in waiters { waiter.resume() }
        logger.debug("sd-bus connection closed", metadata: ["bus": "\(address)"])
    }

    // MARK: Calls (bus thread)

    fileprivate final class PendingCall {
        let identifier: UInt64
        let label: String
        let call: MethodCall
        let timeout: Duration
        let completion: (Result<OpaquePointer, SystemdError>) -> Void
        unowned let connection: BusConnection

        init(identifier: UInt64, call: MethodCall, timeout: Duration, connection: BusConnection,
             completion: @escaping (Result<OpaquePointer, SystemdError>) -> Void) {
            self.identifier = identifier
            self.label = call.label
            self.call = call
            self.timeout = timeout
            self.connection = connection
            self.completion = completion
        }
    }

    /// Sends `call`; `completion` runs on the bus thread with the reply, which is valid only
    /// during `completion`.
    private func startCall(_ call: MethodCall, timeout: Duration, completion: @escaping (Result<OpaquePointer, SystemdError>) -> Void) {
        guard let bus else {
            completion(.failure(.connectionClosed(bus: address, call: call.label)))
            return
        }
        let built = call.build(on: bus)
        guard let message = built.message else {
            completion(.failure(errnoError(-built.error, call: call)))
            return
        }
        defer { sd_bus_message_unref(message) }
        nextIdentifier += 1
        let pending = PendingCall(identifier: nextIdentifier, call: call, timeout: timeout, connection: self, completion: completion)
        // A floating slot (NULL): sd-bus frees it after the callback ran; `pendingCalls` keeps
        // `pending` alive until then, and fails whatever is left when the connection closes.
        let result = sd_bus_call_async(
            bus, nil, message, busReplyCallback, Unmanaged.passUnretained(pending).toOpaque(), microseconds(timeout))
        guard result >= 0 else {
            completion(.failure(errnoError(-result, call: call)))
            return
        }
        pendingCalls[pending.identifier] = pending
    }

    fileprivate func finishCall(_ pending: PendingCall, reply: OpaquePointer) {
        guard pendingCalls.removeValue(forKey: pending.identifier) != nil else { return }
        if sd_bus_message_is_method_error(reply, nil) != 0, let error = sd_bus_message_get_error(reply) {
            let name = error.pointee.name.map { String(cString: $0) } ?? "unknown"
            let message = error.pointee.message.map { String(cString: $0) } ?? ""
            pending.completion(.failure(busError(name: name, message: message, errno: sd_bus_error_get_errno(error), call: pending.call, timeout: pending.timeout)))
        } else {
            pending.completion(.success(reply))
        }
    }

    private func busError(name: String, message: String, errno: Int32, call: MethodCall, timeout: Duration) -> SystemdError {
        switch name {
        case "org.freedesktop.systemd1.NoSuchUnit":
            return .unknownUnit(unit: call.unit ?? message, bus: address)
        case "org.freedesktop.DBus.Error.AccessDenied", "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
            "org.freedesktop.DBus.Error.AuthFailed":
            return .permissionDenied(bus: address, call: call.label, message: message)
        case "org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Timeout":
            if let bus, sd_bus_is_open(bus) > 0 {
                return .callTimeout(bus: address, call: call.label, timeout: timeout)
            }
            return .connectionClosed(bus: address, call: call.label)
        default:
            if errno == EPERM || errno == EACCES {
                return .permissionDenied(bus: address, call: call.label, message: "\(name): \(message)")
            }
            return .callFailed(bus: address, call: call.label, name: name, message: message)
        }
    }

    private func errnoError(_ code: Int32, call: MethodCall) -> SystemdError {
        switch code {
        case EPERM, EACCES:
            return .permissionDenied(bus: address, call: call.label, message: errnoText(code))
        case ENOTCONN, ECONNRESET, EPIPE:
            return .connectionClosed(bus: address, call: call.label)
        default:
            return .callFailed(bus: address, call: call.label, name: "errno \(code)", message: errnoText(code))
        }
    }

    // MARK: Jobs (bus thread)

    private struct JobWaiter {
        var unit: String
        var operation: String
        var deadline: UInt64
        var timeout: Duration
        var completion: (Result<JobResult, SystemdError>) -> Void
    }

    private func startJob(
        _ call: MethodCall, unit: String, operation: String, callTimeout: Duration, jobTimeout: Duration,
        completion: @escaping (Result<JobResult, SystemdError>) -> Void
    ) {
        let startedAt = monotonicMicroseconds()
        startCall(call, timeout: callTimeout) { [self] result in
            switch result {
            case .failure(let error):
                completion(.failure(error))
            case .success(let reply):
                guard let job = try? MessageReader(message: reply).objectPath() else {
                    completion(.failure(.unexpectedReply(bus: address, call: call.label, reason: "no job object path")))
                    return
                }
                if let result = unclaimedJobs.removeValue(forKey: job) {
                    completion(.success(result))
                    return
                }
                jobWaiters[job] = JobWaiter(
                    unit: unit, operation: operation, deadline: startedAt + microseconds(jobTimeout), timeout: jobTimeout,
                    completion: completion)
            }
        }
    }

    /// JobRemoved(u id, o job, s unit, s result).
    func jobRemoved(_ reader: MessageReader) {
        guard (try? reader.uint32()) != nil, let job = try? reader.objectPath(), let unit = try? reader.string(),
            let result = try? reader.string()
        else {
            logger.warning("malformed JobRemoved signal", metadata: ["bus": "\(address)"])
            return
        }
        logger.trace("job removed", metadata: ["job": "\(job)", "unit": "\(unit)", "result": "\(result)"])
        if let waiter = jobWaiters.removeValue(forKey: job) {
            waiter.completion(.success(JobResult(rawValue: result)))
            return
        }
        unclaimedJobs[job] = JobResult(rawValue: result)
        unclaimedJobOrder.append(job)
        if unclaimedJobOrder.count > 64 {
            unclaimedJobs.removeValue(forKey: unclaimedJobOrder.removeFirst())
        }
    }

    private func expireJobWaiters() {
        guard !jobWaiters.isEmpty else { return }
        let now = monotonicMicroseconds()
        for (job, waiter) in jobWaiters where waiter.deadline <= now {
            jobWaiters.removeValue(forKey: job)
            waiter.completion(.failure(.jobTimeout(unit: waiter.unit, operation: waiter.operation, timeout: waiter.timeout)))
        }
    }

    // MARK: Signal matches (bus thread)

    fileprivate final class Match {
        let identifier: UInt64
        var slot: OpaquePointer?
        let label: String
        let onSignal: (OpaquePointer) -> Void
        var onInstalled: ((SystemdError?) -> Void)?
        unowned let connection: BusConnection

        init(identifier: UInt64, label: String, connection: BusConnection, onSignal: @escaping (OpaquePointer) -> Void,
             onInstalled: @escaping (SystemdError?) -> Void) {
            self.identifier = identifier
            self.label = label
            self.connection = connection
            self.onSignal = onSignal
            self.onInstalled = onInstalled
        }
    }

    /// Adds a match; `onInstalled` runs once the broker answered AddMatch. Returns its identifier
    /// for ``removeMatch(_:)``, or nil if it could not even be sent (`onInstalled` got the error).
    @discardableResult
    private func addMatch(_ rule: String, label: String, onSignal: @escaping (OpaquePointer) -> Void,
                          onInstalled: @escaping (SystemdError?) -> Void) -> UInt64? {
        let call = MethodCall(member: "AddMatch", label: "AddMatch(\(label))")
        guard let bus else {
            onInstalled(.connectionClosed(bus: address, call: call.label))
            return nil
        }
        nextIdentifier += 1
        let match = Match(identifier: nextIdentifier, label: label, connection: self, onSignal: onSignal, onInstalled: onInstalled)
        var slot: OpaquePointer?
        let result = sd_bus_add_match_async(
            bus, &slot, rule, busSignalCallback, busMatchInstalledCallback, Unmanaged.passUnretained(match).toOpaque())
        guard result >= 0, let slot else {
            onInstalled(errnoError(-result, call: call))
            return nil
        }
        match.slot = slot
        matches[match.identifier] = match
        return match.identifier
    }

    private func removeMatch(_ identifier: UInt64) {
        guard let match = matches.removeValue(forKey: identifier) else { return }
        sd_bus_slot_unref(match.slot)
    }

    fileprivate func matchInstalled(_ match: Match, reply: OpaquePointer) {
        guard let onInstalled = match.onInstalled else { return }
        match.onInstalled = nil
        if sd_bus_message_is_method_error(reply, nil) != 0, let error = sd_bus_message_get_error(reply) {
            let name = error.pointee.name.map { String(cString: $0) } ?? "unknown"
            let message = error.pointee.message.map { String(cString: $0) } ?? ""
            removeMatch(match.identifier)
            onInstalled(.callFailed(bus: address, call: "AddMatch(\(match.label))", name: name, message: message))
        } else {
            onInstalled(nil)
        }
    }

    // MARK: Unit state watchers (bus thread)

    private final class UnitWatcher {
        let unit: String
        let continuation: AsyncStream<UnitState>.Continuation
        var matchIdentifier: UInt64?
        /// nil until the initial read answered; PropertiesChanged signals that arrive before that
        /// answer are older than it (systemd sends both in order) and are dropped.
        var last: UnitState?

        init(unit: String, continuation: AsyncStream<UnitState>.Continuation) {
            self.unit = unit
            self.continuation = continuation
        }
    }

    private func watchUnit(
        _ unit: String, identifier: UInt64, continuation: AsyncStream<UnitState>.Continuation, callTimeout: Duration
    ) {
        let watcher = UnitWatcher(unit: unit, continuation: continuation)
        unitWatchers[identifier] = watcher
        let path = SystemdObjects.unitPath(unit)
        let rule = "type='signal',sender='\(SystemdObjects.service)',path='\(path)',"
            + "interface='\(SystemdObjects.propertiesInterface)',member='PropertiesChanged'"
        watcher.matchIdentifier = addMatch(
            rule, label: "PropertiesChanged of \(unit)",
            onSignal: { [self] message in unitPropertiesChanged(watcher, MessageReader(message: message)) },
            onInstalled: { [self] error in
                if let error {
                    logger.warning("cannot follow unit state", metadata: ["unit": "\(unit)", "error": "\(error)"])
                    unwatchUnit(identifier)
                    return
                }
                startCall(UnitStateReading.getAll(unit), timeout: callTimeout) { [self] result in
                    guard unitWatchers[identifier] != nil else { return }
                    switch result {
                    case .success(let reply):
                        do {
                            let state = try UnitStateReading.parseGetAll(MessageReader(message: reply))
                            watcher.last = state
                            watcher.continuation.yield(state)
                        } catch {
                            logger.warning("cannot read unit state", metadata: ["unit": "\(unit)", "error": "\(error)"])
                            unwatchUnit(identifier)
                        }
                    case .failure(let error):
                        logger.warning("cannot read unit state", metadata: ["unit": "\(unit)", "error": "\(error)"])
                        unwatchUnit(identifier)
                    }
                }
            })
    }

    private func unitPropertiesChanged(_ watcher: UnitWatcher, _ reader: MessageReader) {
        guard let last = watcher.last else { return }
        do {
            guard let changed = try UnitStateReading.parsePropertiesChanged(reader, merging: last) else { return }
            if changed != last {
                watcher.last = changed
                watcher.continuation.yield(changed)
            }
        } catch {
            logger.debug("malformed PropertiesChanged", metadata: ["unit": "\(watcher.unit)", "error": "\(error)"])
        }
    }

    private func unwatchUnit(_ identifier: UInt64) {
        guard let watcher = unitWatchers.removeValue(forKey: identifier) else { return }
        if let match = watcher.matchIdentifier { removeMatch(match) }
        watcher.continuation.finish()
    }
}

// MARK: - C callbacks

private let busReplyCallback: sd_bus_message_handler_t = { message, userdata, _ in
    guard let message, let userdata else { return 0 }
    let pending = Unmanaged<BusConnection.PendingCall>.fromOpaque(userdata).takeUnretainedValue()
    pending.connection.finishCall(pending, reply: message)
    return 0
}

private let busSignalCallback: sd_bus_message_handler_t = { message, userdata, _ in
    guard let message, let userdata else { return 0 }
    let match = Unmanaged<BusConnection.Match>.fromOpaque(userdata).takeUnretainedValue()
    match.onSignal(message)
    return 0
}

private let busMatchInstalledCallback: sd_bus_message_handler_t = { message, userdata, _ in
    guard let message, let userdata else { return 0 }
    let match = Unmanaged<BusConnection.Match>.fromOpaque(userdata).takeUnretainedValue()
    match.connection.matchInstalled(match, reply: message)
    return 0
}

// MARK: - Time

func monotonicMicroseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
}

func microseconds(_ duration: Duration) -> UInt64 {
    let (seconds, attoseconds) = duration.components
    guard seconds >= 0 else { return 0 }
    return UInt64(seconds) * 1_000_000 + UInt64(attoseconds / 1_000_000_000_000)
}
