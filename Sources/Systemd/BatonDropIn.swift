#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The runtime drop-in batond writes for a unit it manages:
/// `<runtime unit dir>/<unit>.d/50-baton.conf`.
///
/// ```ini
/// [Unit]
/// BindsTo=batond.service
/// After=batond.service
/// ConditionPathExists=/run/baton/web/epoch
///
/// [Service]
/// EnvironmentFile=/run/baton/web/epoch
/// ```
///
/// Why `BindsTo=` + `After=`: with them the unit cannot be active while batond's unit is not.
/// A stop of batond.service, a crash (batond's main process dies, the unit goes `failed`), or a
/// daemon-reload that finds the unit active without batond all stop the managed unit; `PartOf=`
/// only propagates explicit stop/restart jobs, so a crashed batond would leave its units running.
/// `After=` orders the managed unit's start after batond is up and its stop before batond stops.
///
/// Two side effects of `BindsTo=` that the epoch file neutralises: starting the managed unit by
/// hand also starts batond.service, and *restarting* batond.service restarts the managed unit
/// (systemd propagates restart jobs to units bound to it, seen with systemd 252). With
/// ``epochFile`` set, `ConditionPathExists=` lets the unit start only while batond has written
/// the token (it writes the file when it holds the lease and removes it before stopping the
/// unit), so such starts end `done` without starting anything. `EnvironmentFile=` reads the
/// token at each start, so a new token needs no daemon-reload.
public struct BatonDropIn: Sendable, Hashable {
    /// The drop-in's file name.
    public static let fileName = "50-baton.conf"

    /// The managed unit, e.g. `web.service`.
    public var unit: String
    /// The unit batond runs in (from ``SystemdUnitLookup``); nil writes no binding (batond not
    /// run by systemd, which the caller should report).
    public var boundTo: String?
    /// A fixed fencing token, written as `Environment=BATON_EPOCH=<epoch>` (needs a
    /// daemon-reload per change; prefer ``epochFile``).
    public var epoch: UInt64?
    /// A file holding `BATON_EPOCH=<token>` (see ``EpochFile``): the unit reads it with
    /// `EnvironmentFile=` and starts only while it exists (`ConditionPathExists=`).
    public var epochFile: String?

    public init(unit: String, boundTo: String? = nil, epoch: UInt64? = nil, epochFile: String? = nil) {
        self.unit = unit
        self.boundTo = boundTo
        self.epoch = epoch
        self.epochFile = epochFile
    }

    /// `<runtimeDirectory>/<unit>.d`.
    public func directory(inRuntimeDirectory runtimeDirectory: String) -> String {
        "\(runtimeDirectory)/\(unit).d"
    }

    /// `<runtimeDirectory>/<unit>.d/50-baton.conf`.
    public func path(inRuntimeDirectory runtimeDirectory: String) -> String {
        "\(directory(inRuntimeDirectory: runtimeDirectory))/\(Self.fileName)"
    }

    /// The file's contents.
    public func render() -> String {
        var unitSection: [String] = []
        if let boundTo {
            unitSection.append("BindsTo=\(escaped(boundTo))")
            unitSection.append("After=\(escaped(boundTo))")
        }
        var serviceSection: [String] = []
        if let epochFile {
            unitSection.append("ConditionPathExists=\(escaped(epochFile))")
            serviceSection.append("EnvironmentFile=\(escaped(epochFile))")
        }
        if let epoch {
            serviceSection.append("Environment=BATON_EPOCH=\(epoch)")
        }
        var text = "# Written by batond; removed when batond stops managing \(unit).\n"
        if !unitSection.isEmpty { text += "\n[Unit]\n" + unitSection.map { $0 + "\n" }.joined() }
        if !serviceSection.isEmpty { text += "\n[Service]\n" + serviceSection.map { $0 + "\n" }.joined() }
        return text
    }

    /// `%` starts a specifier in unit files.
    private func escaped(_ value: String) -> String {
        value.replacingOccurrences(of: "%", with: "%%")
    }
}

/// The file that hands the fencing token to a managed unit: one line `BATON_EPOCH=<token>`,
/// read by the unit's `EnvironmentFile=` (see ``BatonDropIn/epochFile``).
///
/// Writes are atomic (temporary file + rename) and small; the file belongs on a tmpfs such as
/// /run, so these calls do not wait on a disk.
public enum EpochFile {
    /// `/run/baton/<app>/epoch`.
    public static func defaultPath(app: String) -> String { "/run/baton/\(app)/epoch" }

    /// `BATON_EPOCH=<epoch>\n`.
    public static func contents(epoch: UInt64) -> String { "BATON_EPOCH=\(epoch)\n" }

    /// Writes `epoch` to `path`, creating its directory.
    public static func write(epoch: UInt64, to path: String) throws(SystemdError) {
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
            try FileWriting.createDirectories(String(path[..<slash]))
        }
        try FileWriting.writeAtomically(contents(epoch: epoch), to: path, mode: 0o644)
    }

    /// Removes the file; a missing file is not an error.
    public static func remove(at path: String) throws(SystemdError) {
        if unlink(path) != 0, errno != ENOENT {
            throw .fileSystem(path: path, operation: "remove", errno: errno)
        }
    }
}

enum FileWriting {
    static func createDirectories(_ path: String) throws(SystemdError) {
        var prefix = ""
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            prefix += "/" + component
            if mkdir(prefix, 0o755) != 0, errno != EEXIST {
                throw .fileSystem(path: prefix, operation: "create directory", errno: errno)
            }
        }
    }

    static func writeAtomically(_ contents: String, to path: String, mode: mode_t) throws(SystemdError) {
        let temporary = "\(path).tmp-\(getpid())"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard descriptor >= 0 else { throw .fileSystem(path: temporary, operation: "create", errno: errno) }
        var bytes = Array(contents.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeMutableBytes { Glibc.write(descriptor, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0 {
                if errno == EINTR { continue }
                let code = errno
                close(descriptor)
                unlink(temporary)
                throw .fileSystem(path: temporary, operation: "write", errno: code)
            }
            offset += written
        }
        if fsync(descriptor) != 0 {
            let code = errno
            close(descriptor)
            unlink(temporary)
            throw .fileSystem(path: temporary, operation: "fsync", errno: code)
        }
        close(descriptor)
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw .fileSystem(path: path, operation: "rename \(temporary) to", errno: code)
        }
        bytes.removeAll()
    }
}
