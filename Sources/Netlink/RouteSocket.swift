import CBatonNetlink
import CMnl

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A `NETLINK_ROUTE` socket opened with libmnl. Blocking: used only on a ``NamespaceThread``.
final class RouteSocket {
    /// How long a request waits for the kernel's reply before it gives up.
    static let replyTimeoutMilliseconds: Int32 = 5000
    /// Attempts of a dump that the kernel reports as interrupted by a concurrent change.
    static let dumpAttempts = 3

    private var handle: OpaquePointer?
    let portID: UInt32
    private var sequence: UInt32
    private var buffer: [UInt8]

    private init(handle: OpaquePointer, portID: UInt32, firstSequence: UInt32) {
        self.handle = handle
        self.portID = portID
        self.sequence = firstSequence
        // Large enough for any one message the kernel sends in a dump (MNL_SOCKET_DUMP_SIZE).
        self.buffer = [UInt8](repeating: 0, count: 32768)
    }

    static func open(operation: NetlinkError.Operation, interface: String?, address: String?) throws(NetlinkError) -> RouteSocket {
        func failure(_ reason: String) -> NetlinkError {
            NetlinkError.kernel(errno, operation: operation, interface: interface, address: address, reason: reason)
        }
        guard let handle = mnl_socket_open2(NETLINK_ROUTE, Int32(SOCK_CLOEXEC.rawValue)) else {
            throw failure("cannot open a netlink socket")
        }
        guard mnl_socket_bind(handle, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let error = failure("cannot bind the netlink socket")
            mnl_socket_close(handle)
            throw error
        }
        guard cbn_set_receive_timeout(mnl_socket_get_fd(handle), replyTimeoutMilliseconds) == 0 else {
            let error = failure("cannot set the netlink socket's receive timeout")
            mnl_socket_close(handle)
            throw error
        }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return RouteSocket(handle: handle, portID: mnl_socket_get_portid(handle), firstSequence: UInt32(truncatingIfNeeded: now.tv_sec))
    }

    func nextSequence() -> UInt32 {
        sequence &+= 1
        return sequence
    }

    /// Sends `message` (built with `sequence`) and returns the data messages of the reply,
    /// reading until the ack or `NLMSG_DONE`.
    ///
    /// - Throws: the kernel's errno mapped by `describe`, or ``NetlinkError/Kind/malformedReply``.
    ///   An interrupted dump is reported as `nil` so the caller can start it again.
    func exchange(
        _ message: [UInt8], sequence: UInt32, error describe: (Int32) -> NetlinkError
    ) throws(NetlinkError) -> [RouteMessages.Message]? {
        guard let handle else { throw describe(EBADF) }
        let sent = message.withUnsafeBytes { mnl_socket_sendto(handle, $0.baseAddress, $0.count) }
        guard sent == message.count else { throw describe(sent < 0 ? errno : EIO) }
        var messages: [RouteMessages.Message] = []
        while true {
            let received = buffer.withUnsafeMutableBytes { mnl_socket_recvfrom(handle, $0.baseAddress, $0.count) }
            if received < 0 {
                let code = errno
                if code == EINTR { continue }
                if code == EAGAIN || code == EWOULDBLOCK {
                    var error = describe(code)
                    error.kind = .kernel
                    error.errno = nil
                    error.reason = "no reply from the kernel within \(Self.replyTimeoutMilliseconds) ms"
                    throw error
                }
                throw describe(code)
            }
            switch RouteMessages.parse(Array(buffer[..<received]), sequence: sequence, portID: portID) {
            case .messages(let chunk, let finished):
                messages += chunk
                if finished { return messages }
            case .kernelError(let code):
                throw describe(code)
            case .interrupted:
                drain(sequence: sequence)
                return nil
            case .malformed(let reason):
                var error = describe(EBADMSG)
                error.kind = .malformedReply
                error.errno = nil
                error.reason = "malformed netlink reply: \(reason)"
                throw error
            }
        }
    }

    /// Reads and drops the rest of an interrupted dump (up to its `NLMSG_DONE`), so the next
    /// request starts clean.
    private func drain(sequence: UInt32) {
        guard let handle else { return }
        while true {
            let received = buffer.withUnsafeMutableBytes { mnl_socket_recvfrom(handle, $0.baseAddress, $0.count) }
            guard received > 0 else { return }
            if RouteMessages.containsEnd(Array(buffer[..<received])) { return }
        }
    }

    func close() {
        if let handle { mnl_socket_close(handle) }
        handle = nil
    }

    deinit { close() }
}
