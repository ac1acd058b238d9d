#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Which D-Bus connection a ``SystemdManager`` talks over.
public enum SystemdBusAddress: Sendable, Hashable, CustomStringConvertible {
    /// The system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else `/run/dbus/system_bus_socket`): the system
    /// manager, PID 1. What batond uses in production.
    case system
    /// The session bus of the calling user (`DBUS_SESSION_BUS_ADDRESS`, else
    /// `$XDG_RUNTIME_DIR/bus`): that user's `systemd --user`.
    case user
    /// A bus broker at an explicit D-Bus address such as `unix:path=/run/user/0/bus`. The
    /// connection registers with the broker (Hello), as for ``system`` and ``user``.
    case address(String)

    public var description: String {
        switch self {
        case .system: return "the system bus"
        case .user: return "the user bus"
        case .address(let address): return "the bus at \(address)"
        }
    }
}

/// Every failure of the Systemd module. Each case names what failed and where, so that its
/// ``description`` can be shown to an operator as is.
public enum SystemdError: Error, Sendable, Hashable, CustomStringConvertible {
    /// systemd does not know `unit` (D-Bus `NoSuchUnit`, or a `LoadState` of `not-found`).
    case unknownUnit(unit: String, bus: SystemdBusAddress)
    /// The caller may not do `call` (D-Bus `AccessDenied` / interactive authorization, or EPERM).
    case permissionDenied(bus: SystemdBusAddress, call: String, message: String)
    /// The bus could not be opened or connected; `errno` and `reason` say why.
    case noBus(bus: SystemdBusAddress, errno: Int32, reason: String)
    /// The job systemd queued for `operation` on `unit` ended with `result` (not `done`/`skipped`).
    case jobFailed(unit: String, operation: String, result: JobResult)
    /// systemd did not report the end of the job for `operation` on `unit` within `timeout`. The
    /// job may still run.
    case jobTimeout(unit: String, operation: String, timeout: Duration)
    /// No reply to `call` within `timeout`.
    case callTimeout(bus: SystemdBusAddress, call: String, timeout: Duration)
    /// `call` failed with the D-Bus error `name`.
    case callFailed(bus: SystemdBusAddress, call: String, name: String, message: String)
    /// A reply or signal did not have the shape the systemd D-Bus API documents.
    case unexpectedReply(bus: SystemdBusAddress, call: String, reason: String)
    /// The connection was closed (by ``SystemdManager/close()`` or by the peer) before or while
    /// `call` ran.
    case connectionClosed(bus: SystemdBusAddress, call: String)
    /// A file operation on a drop-in or epoch file failed.
    case fileSystem(path: String, operation: String, errno: Int32)
    /// A notification could not be sent to the service manager's `NOTIFY_SOCKET`.
    case notifyFailed(socket: String, errno: Int32)

    public var description: String {
        switch self {
        case .unknownUnit(let unit, let bus):
            return "unit \(unit) is not known to the systemd manager on \(bus) (no unit file found)"
        case .permissionDenied(let bus, let call, let message):
            return "permission denied for \(call) on \(bus): \(message) "
                + "(batond needs root, or a polkit rule allowing it to manage this unit)"
        case .noBus(let bus, let errno, let reason):
            return "cannot connect to \(bus): \(reason) (errno \(errno))"
        case .jobFailed(let unit, let operation, let result):
            return "\(operation) of \(unit) failed: job result '\(result)'\(result.explanation.map { " (\($0))" } ?? "")"
        case .jobTimeout(let unit, let operation, let timeout):
            return "\(operation) of \(unit) did not finish within \(timeout); the job may still be running"
        case .callTimeout(let bus, let call, let timeout):
            return "\(call) on \(bus) got no reply within \(timeout)"
        case .callFailed(let bus, let call, let name, let message):
            return "\(call) on \(bus) failed: \(name): \(message)"
        case .unexpectedReply(let bus, let call, let reason):
            return "unexpected reply to \(call) on \(bus): \(reason)"
        case .connectionClosed(let bus, let call):
            return "the connection to \(bus) is closed; \(call) was not completed"
        case .fileSystem(let path, let operation, let errno):
            return "\(operation) \(path) failed: \(errnoText(errno)) (errno \(errno))"
        case .notifyFailed(let socket, let errno):
            return "cannot notify the service manager at NOTIFY_SOCKET=\(socket): \(errnoText(errno)) (errno \(errno))"
        }
    }
}

func errnoText(_ code: Int32) -> String {
    String(cString: strerror(code))
}
