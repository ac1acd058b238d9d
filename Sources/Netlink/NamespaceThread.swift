import CBatonNetlink

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One dedicated thread that runs every blocking netlink and packet call of a manager or an
/// announcer, so none of them blocks the Swift cooperative pool. The thread enters the network
/// namespace first; every socket it then opens belongs to that namespace.
///
/// Jobs run one at a time in submission order. ``stop()`` lets the queued jobs finish, then the
/// thread releases its ``NamespaceThreadContext`` (closing the sockets) and exits.
final class NamespaceThread: @unchecked Sendable {
    // Guarded by `mutex`; `condition` signals a new job or the stop request.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var jobs: [@Sendable (NamespaceThreadContext) -> Void] = []
    private var stopping = false

    init(namespace: NetworkNamespace, name: String) {
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)

        let start = ThreadStart { [self] in self.main(namespace: namespace, name: name) }
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { argument in
            let start = Unmanaged<ThreadStart>.fromOpaque(argument!).takeRetainedValue()
            start.body()
            return nil
        }, Unmanaged.passRetained(start).toOpaque())
        precondition(result == 0, "pthread_create failed: \(NetlinkError.errnoText(result))")
        pthread_detach(thread)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Runs `body` on the thread and returns its result. Throws ``NetlinkError`` of kind
    /// ``NetlinkError/Kind/shutDown`` after ``stop()``.
    func run<Result: Sendable>(
        _ operation: NetlinkError.Operation,
        _ body: @escaping @Sendable (NamespaceThreadContext) throws(NetlinkError) -> Result
    ) async throws(NetlinkError) -> Result {
        let outcome: Swift.Result<Result, NetlinkError> = await withCheckedContinuation { continuation in
            let accepted = submit { context in
                do throws(NetlinkError) {
                    continuation.resume(returning: .success(try body(context)))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
            if !accepted {
                continuation.resume(
                    returning: .failure(NetlinkError(.shutDown, operation: operation, reason: "shut down")))
            }
        }
        return try outcome.get()
    }

    /// Finishes the queued jobs, then ends the thread. Later ``run(_:_:)`` calls fail.
    func stop() {
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    private func submit(_ job: @escaping @Sendable (NamespaceThreadContext) -> Void) -> Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        if stopping { return false }
        jobs.append(job)
        pthread_cond_signal(condition)
        return true
    }

    private func main(namespace: NetworkNamespace, name: String) {
        cbn_set_thread_name(name)
        let context = NamespaceThreadContext(namespace: namespace)
        while true {
            pthread_mutex_lock(mutex)
            while jobs.isEmpty && !stopping {
                pthread_cond_wait(condition, mutex)
            }
            if jobs.isEmpty {
                pthread_mutex_unlock(mutex)
                break
            }
            let batch = jobs
            jobs.removeAll()
            pthread_mutex_unlock(mutex)
            for job in batch { job(context) }
        }
        context.close()
    }
}

private final class ThreadStart {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// What a ``NamespaceThread`` keeps between jobs. Only ever touched on that thread.
final class NamespaceThreadContext {
    /// Why the namespace could not be entered; every job fails with it.
    let namespaceError: NetlinkError?
    private var routeSocket: RouteSocket?
    /// The AF_PACKET socket of ``packetSocket(interface:address:)``, or -1.
    var packetDescriptor: Int32 = -1

    init(namespace: NetworkNamespace) {
        guard let path = namespace.path else {
            namespaceError = nil
            return
        }
        var stage: Int32 = 0
        if cbn_enter_network_namespace(path, &stage) == 0 {
            namespaceError = nil
            return
        }
        let code = errno
        let call = stage == 1 ? "cannot open \(path)" : "setns(\(path), CLONE_NEWNET) failed"
        var error = NetlinkError.kernel(
            code, operation: .enterNamespace, interface: nil, address: nil, reason: call)
        if error.kind == .permissionDenied { error.reason = "\(call): permission denied" }
        if stage == 1 && code == ENOENT { error.kind = .namespaceUnavailable }
        if error.kind == .kernel { error.kind = .namespaceUnavailable }
        namespaceError = error
    }

    /// The rtnetlink socket of this thread, opened on first use.
    func route(for operation: NetlinkError.Operation, interface: String?, address: String?)
        throws(NetlinkError) -> RouteSocket
    {
        if let namespaceError { throw namespaceError }
        if let routeSocket { return routeSocket }
        let socket = try RouteSocket.open(operation: operation, interface: interface, address: address)
        routeSocket = socket
        return socket
    }

    /// Fails with the namespace error, if any.
    func checkNamespace() throws(NetlinkError) {
        if let namespaceError { throw namespaceError }
    }

    func close() {
        routeSocket?.close()
        routeSocket = nil
        if packetDescriptor >= 0 { Glibc.close(packetDescriptor) }
        packetDescriptor = -1
    }
}
