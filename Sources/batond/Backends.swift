import BatonCore
import Logging
import Supervisor

/// Errors setting up an app's backend.
struct BackendSetupError: Error, CustomStringConvertible {
    var description: String
}

/// Creates the backend, VIPs and replica of an app of this node's config.
func makeParts(_ app: AppConfig, config: BatonConfig, logger: Logger) async throws -> NodeSupervisor.AppParts {
    let backend: any AppBackend
    switch app.backend {
    case .process(let process):
        backend = ProcessAppBackend(app: app, node: config.node.id, process: process, logger: logger)
    case .systemd(let systemd):
        throw BackendSetupError(description: "app \(app.name): systemd backends (unit \(systemd.unit)) are not supported by this build yet; use a process backend")
    }
    let addresses: (any AppAddresses)? = app.vips.isEmpty ? nil : try VIPClaims(app: app.name, vips: app.vips, logger: logger)
    if app.sqlite != nil {
        throw BackendSetupError(description: "app \(app.name): sqlite replication is not supported by this build yet")
    }
    return NodeSupervisor.AppParts(backend: backend, addresses: addresses)
}
