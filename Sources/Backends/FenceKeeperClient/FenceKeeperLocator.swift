import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Finds the `baton-fence-keeper` executable.
public enum FenceKeeperLocator {
    /// The executable's file name.
    public static let executableName = "baton-fence-keeper"
    /// The environment variable that names it.
    public static let environmentVariable = "BATON_FENCE_KEEPER"

    /// Where a packaged install keeps the keeper, relative to the directory of `batond`
    /// (`/usr/bin/batond` → `/usr/libexec/baton/baton-fence-keeper`).
    public static let libexecRelativePath = "../libexec/baton"

    /// `explicitPath` when given, else `$BATON_FENCE_KEEPER`, else `baton-fence-keeper` in the
    /// directory of the running executable, else in `../libexec/baton/` from there (the Debian
    /// package's layout). Throws ``FenceKeeperError/Code/keeperNotFound`` with what was looked
    /// at when it is missing or not executable. `runningExecutable` stands for the running
    /// executable's path (tests; `$BATON_FENCE_KEEPER` is then not consulted).
    public static func locate(explicitPath: String? = nil, runningExecutable: String? = nil) throws -> String {
        let path: String
        let origin: String
        if let explicitPath {
            path = explicitPath
            origin = "configured"
        } else if runningExecutable == nil, let fromEnvironment = ProcessInfo.processInfo.environment[environmentVariable], !fromEnvironment.isEmpty {
            path = fromEnvironment
            origin = "named by \(environmentVariable)"
        } else {
            let executable =
                runningExecutable ?? (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
            let directory = (executable as NSString).deletingLastPathComponent
            let besides = (directory as NSString).appendingPathComponent(executableName)
            let libexec = ((directory as NSString).appendingPathComponent(libexecRelativePath) as NSString)
                .appendingPathComponent(executableName)
            if access(besides, F_OK) != 0, access(libexec, F_OK) == 0 {
                path = URL(fileURLWithPath: libexec).standardized.path
                origin = "looked up in \(libexecRelativePath) from \(executable)"
            } else {
                path = besides
                origin = "looked up next to \(executable), then in \(libexecRelativePath) from there"
            }
        }
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw FenceKeeperError(
                .keeperNotFound,
                "fence keeper not found: \(path) (\(origin)) does not exist; install \(executableName) next to batond or in \(libexecRelativePath) from it, or set \(environmentVariable)"
            )
        }
        guard (info.st_mode & S_IFMT) == S_IFREG, access(path, X_OK) == 0 else {
            throw FenceKeeperError(.keeperNotFound, "fence keeper \(path) (\(origin)) is not an executable file")
        }
        return path
    }
}
