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

    /// `explicitPath` when given, else `$BATON_FENCE_KEEPER`, else `baton-fence-keeper` in the
    /// directory of the running executable. Throws ``FenceKeeperError/Code/keeperNotFound``
    /// with what was looked at when it is missing or not executable.
    public static func locate(explicitPath: String? = nil) throws -> String {
        let path: String
        let origin: String
        if let explicitPath {
            path = explicitPath
            origin = "configured"
        } else if let fromEnvironment = ProcessInfo.processInfo.environment[environmentVariable], !fromEnvironment.isEmpty {
            path = fromEnvironment
            origin = "named by \(environmentVariable)"
        } else {
            let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
            let directory = (executable as NSString).deletingLastPathComponent
            path = (directory as NSString).appendingPathComponent(executableName)
            origin = "looked up next to \(executable)"
        }
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw FenceKeeperError(
                .keeperNotFound,
                "fence keeper not found: \(path) (\(origin)) does not exist; install \(executableName) next to batond or set \(environmentVariable)"
            )
        }
        guard (info.st_mode & S_IFMT) == S_IFREG, access(path, X_OK) == 0 else {
            throw FenceKeeperError(.keeperNotFound, "fence keeper \(path) (\(origin)) is not an executable file")
        }
        return path
    }
}
