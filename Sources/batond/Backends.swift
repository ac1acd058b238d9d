import BatonCore
import Foundation
import Logging
import NATS
import Backends
import Control
import Supervisor

/// Errors setting up an app's backend.
struct BackendSetupError: Error, CustomStringConvertible {
    var description: String
}

/// Creates the backend, VIPs and replica of an app of this node's config from its plan. The
/// replica uses `replicationClient`, not the lease connection `client`.
func makeParts(
    _ plan: AppPlan, _ app: AppConfig, config: BatonConfig, client: NATSClient, replicationClient: NATSClient, logger: Logger
) async throws -> NodeSupervisor.AppParts {
    let backend: any AppBackend
    switch plan.backend {
    case .process:
        backend = ProcessAppBackend(plan: plan, logger: logger)
    case .systemd(let systemd):
        backend = try await SystemdAppBackend.connect(configuration: SystemdAppBackend.Configuration(plan: plan, systemd: systemd), logger: logger)
    }
    let addresses: (any AppAddresses)? = app.vips.isEmpty ? nil : try VIPClaims(app: app.name, vips: app.vips, logger: logger)
    var replica: (any AppReplica)?
    if let sqlite = app.sqlite {
        do {
            replica = try SQLiteReplica(
                configuration: SQLiteReplica.configuration(app: app, sqlite: sqlite, config: config), jetStream: JetStream(client: replicationClient),
                logger: logger)
        } catch {
            throw BackendSetupError(description: "app \(app.name): sqlite: \(error)")
        }
    }
    return NodeSupervisor.AppParts(backend: backend, addresses: addresses, replica: replica)
}

/// Where batond keeps runtime files (the epoch files of systemd units): the first entry of
/// `$RUNTIME_DIRECTORY` (set by systemd from `RuntimeDirectory=baton`: `/run/baton` for the
/// system manager, `$XDG_RUNTIME_DIR/baton` for a user manager), else `/run/baton`.
func batondRuntimeDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
    if let value = environment["RUNTIME_DIRECTORY"], let first = value.split(separator: ":").first, first.hasPrefix("/") {
        return String(first)
    }
    return "/run/baton"
}
