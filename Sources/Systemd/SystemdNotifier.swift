import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Tells the service manager about this service's state (the `sd_notify` protocol): one datagram
/// of newline-separated `KEY=value` assignments to the unix socket named by `NOTIFY_SOCKET` (a
/// path, or `@name` for the abstract namespace).
///
/// Every method is a no-op when `NOTIFY_SOCKET` was not set (not started by systemd, or not
/// `Type=notify`). The datagram goes out with `MSG_DONTWAIT`: a manager that does not read its
/// socket cannot stall the caller.
public struct SystemdNotifier: Sendable {
    /// `NOTIFY_SOCKET`, or nil when unset or empty.
    public let socket: String?
    /// The manager's watchdog timeout for this process (see
    /// ``watchdogTimeout(environment:pid:)``); nil when the watchdog is off.
    public let watchdogTimeout: Duration?

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from `environment`.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment, pid: pid_t = getpid()) {
        let socket = environment["NOTIFY_SOCKET"] ?? ""
        self.socket = socket.isEmpty ? nil : socket
        self.watchdogTimeout = Self.watchdogTimeout(environment: environment, pid: pid)
    }

    /// Whether notifications go anywhere.
    public var isEnabled: Bool { socket != nil }

    /// How often to send ``watchdog()``: half the timeout, as systemd recommends.
    public var watchdogPingInterval: Duration? { watchdogTimeout.map { $0 / 2 } }

    /// `READY=1` (with `STATUS=` when given): startup is finished.
    public func ready(status: String? = nil) throws(SystemdError) {
        try send(["READY=1"] + (status.map { ["STATUS=\($0)"] } ?? []))
    }

    /// `STATUS=<text>`: shown by `systemctl status`.
    public func status(_ text: String) throws(SystemdError) {
        try send(["STATUS=\(text)"])
    }

    /// `RELOADING=1` and `MONOTONIC_USEC=<now>` (the latter is required by `Type=notify-reload`
    /// and harmless for `Type=notify`); `monotonicMicroseconds` defaults to CLOCK_MONOTONIC now.
    /// Send ``ready(status:)`` when the reload is done.
    public func reloading(monotonicMicroseconds: UInt64? = nil) throws(SystemdError) {
        let now = monotonicMicroseconds ?? Systemd.monotonicMicroseconds()
        try send(["RELOADING=1", "MONOTONIC_USEC=\(now)"])
    }

    /// `STOPPING=1`: shutdown has begun.
    public func stopping() throws(SystemdError) {
        try send(["STOPPING=1"])
    }

    /// `WATCHDOG=1`: keep-alive ping for `WatchdogSec=`.
    public func watchdog() throws(SystemdError) {
        try send(["WATCHDOG=1"])
    }

    /// Sends `assignments` (each `KEY=value`, no newline inside) as one datagram.
    public func send(_ assignments: [String]) throws(SystemdError) {
        guard let socket else { return }
        let payload = Array(assignments.joined(separator: "\n").utf8)
        let result = Self.sendDatagram(payload, to: socket)
        if result != 0 { throw .notifyFailed(socket: socket, errno: result) }
    }

    /// `sd_watchdog_enabled` semantics: `WATCHDOG_USEC` must be a positive integer, and when
    /// `WATCHDOG_PID` is set it must be `pid` (the watchdog is meant for another process
    /// otherwise). Returns the timeout, or nil when the watchdog is off.
    public static func watchdogTimeout(environment: [String: String], pid: pid_t) -> Duration? {
        guard let text = environment["WATCHDOG_USEC"], let usec = UInt64(text), usec > 0 else { return nil }
        if let pidText = environment["WATCHDOG_PID"] {
            guard let watchdogPID = pid_t(pidText), watchdogPID == pid else { return nil }
        }
        return .microseconds(usec)
    }

    /// The socket address for `NOTIFY_SOCKET`: a path, or `@name` in the abstract namespace.
    /// Returns 0 or an errno.
    private static func sendDatagram(_ payload: [UInt8], to socketName: String) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var pathBytes = Array(socketName.utf8)
        let abstract = pathBytes.first == UInt8(ascii: "@")
        guard abstract || pathBytes.first == UInt8(ascii: "/") else { return EAFNOSUPPORT }
        if abstract { pathBytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        // A path needs room for its terminating NUL; an abstract name is counted by length.
        guard pathBytes.count + (abstract ? 0 : 1) <= capacity else { return ENAMETOOLONG }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: pathBytes)
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + pathBytes.count + (abstract ? 0 : 1))

        #if canImport(Glibc)
        let descriptor = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #else
        let descriptor = Musl.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)
        #endif
        guard descriptor >= 0 else { return errno }
        defer { close(descriptor) }
        let sent = payload.withUnsafeBytes { bytes in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(descriptor, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT), $0, length)
                }
            }
        }
        return sent < 0 ? errno : 0
    }
}
