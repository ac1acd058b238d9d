import BatonCore
import Logging
import NATS
import Supervisor

/// Errors setting up an app's backend.
struct BackendSetupError: Error, CustomStringConvertible {
    var description: String
}

/// Creates the backend, VIPs and replica of an app of this node's config.
func makeParts(_ app: AppConfig, config: BatonConfig, client: NATSClient, logger: Logger) async throws -> NodeSupervisor.AppParts {
    let backend: any AppBackend
    switch app.backend {
    case .process(let process):
        backend = ProcessAppBackend(app: app, node: config.node.id, process: process, logger: logger)
    case .systemd(let systemd):
        throw BackendSetupError(description: "app \(app.name): systemd backends (unit \(systemd.unit)) are not supported by this build yet; use a process backend")
    }
    let addresses: (any AppAddresses)? = app.vips.isEmpty ? nil : try VIPClaims(app: app.name, vips: app.vips, logger: logger)
    var replica: (any AppReplica)?
    if let sqlite = app.sqlite {
        do {
            replica = try SQLiteReplica(
                configuration: SQLiteReplica.configuration(app: app, sqlite: sqlite, config: config), jetStream: JetStream(client: client),
                logger: logger)
        } catch {
            throw BackendSetupError(description: "app \(app.name): sqlite: \(error)")
        }
    }
    return NodeSupervisor.AppParts(backend: backend, addresses: addresses, replica: replica)
}
