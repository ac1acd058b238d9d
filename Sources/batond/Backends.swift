import BatonCore
import Logging
import Supervisor

/// Errors setting up an app's backend.
struct BackendSetupError: Error, CustomStringConvertible {
    var description: String
}

/// Creates the backend for an app of this node's config.
func makeBackend(_ app: AppConfig, config: BatonConfig, logger: Logger) throws -> any AppBackend {
    switch app.backend {
    case .process(let process):
        return ProcessAppBackend(app: app, node: config.node.id, process: process, logger: logger)
    case .systemd(let systemd):
        throw BackendSetupError(description: "app \(app.name): systemd backends (unit \(systemd.unit)) are not supported by this build yet; use a process backend")
    }
}
