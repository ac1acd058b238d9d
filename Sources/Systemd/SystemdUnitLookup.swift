import CSystemd

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Which systemd unit a process runs in, from its cgroup (libsystemd's sd-login).
///
/// These read /proc/PID/cgroup and trust its layout: in a container whose PID 1 is not systemd
/// they can name a unit no manager knows (`init.scope` was seen). Cross-check with the manager
/// batond talks to: ``SystemdManager/unit(ofPID:)`` asks it directly.
public enum SystemdUnitLookup {
    /// The system unit `pid` (default: this process) belongs to (`sd_pid_get_unit`), e.g.
    /// `batond.service`; nil when it is not in one.
    public static func systemUnit(of pid: pid_t = getpid()) -> String? {
        read { sd_pid_get_unit(pid, &$0) }
    }

    /// The unit of a user manager `pid` belongs to (`sd_pid_get_user_unit`); nil when none.
    public static func userUnit(of pid: pid_t = getpid()) -> String? {
        read { sd_pid_get_user_unit(pid, &$0) }
    }

    /// Whether this machine was booted with systemd as PID 1 (`sd_booted`: /run/systemd/system
    /// exists).
    public static var isBootedWithSystemd: Bool { sd_booted() > 0 }

    private static func read(_ body: (inout UnsafeMutablePointer<CChar>?) -> Int32) -> String? {
        var name: UnsafeMutablePointer<CChar>?
        guard body(&name) >= 0, let name else { return nil }
        defer { free(name) }
        return String(cString: name)
    }
}

extension SystemdManager {
    /// The unit this manager has `pid` in (GetUnitByPID, then the unit's `Id`); nil when the
    /// process is in none of its units. What batond should bind its apps to.
    public func unit(ofPID pid: pid_t) async throws -> String? {
        let byPID = MethodCall(member: "GetUnitByPID", arguments: [.uint32(UInt32(bitPattern: pid))], label: "GetUnitByPID(\(pid))")
        let path: String
        do {
            path = try await connection.call(byPID, timeout: callTimeout) { try $0.objectPath() }
        } catch SystemdError.callFailed(_, _, let name, _) where name == "org.freedesktop.systemd1.NoUnitForPID" {
            return nil
        }
        let id = MethodCall(
            path: path, interface: SystemdObjects.propertiesInterface, member: "Get",
            arguments: [.string(SystemdObjects.unitInterface), .string("Id")], label: "Get(\(path), Id)")
        return try await connection.call(id, timeout: callTimeout) { reader in
            guard let value = try reader.variantString() else { throw MessageReader.Failure(reason: "Id is not a string") }
            return value
        }
    }
}
