import BatonCore
import Foundation
import Logging
import NATS

/// A node's control endpoint on NATS: one micro service instance named `baton` per node, which
/// `batonctl` (or anything speaking NATS) uses to read the node's status and to send it commands.
///
/// Endpoints (see ``ControlSubjects``):
///
/// | endpoint     | subject                                   | queue group | request          | reply         |
/// |--------------|-------------------------------------------|-------------|------------------|---------------|
/// | `status`     | `baton.<cluster>.status`                  | none        | ignored          | ``NodeStatus`` |
/// | `stepdown`   | `baton.<cluster>.node.<node>.stepdown`    | `q`         | ``ControlRequest`` | ``ControlReply`` |
/// | `switchover` | `baton.<cluster>.node.<node>.switchover`  | `q`         | ``ControlRequest`` with `to` | ``ControlReply`` |
/// | `pause`      | `baton.<cluster>.node.<node>.pause`       | `q`         | ``ControlRequest`` | ``ControlReply`` |
/// | `resume`     | `baton.<cluster>.node.<node>.resume`      | `q`         | ``ControlRequest`` | ``ControlReply`` |
/// | `snapshot`   | `baton.<cluster>.node.<node>.snapshot`    | `q`         | ``ControlRequest`` | ``ControlReply`` with `snapshot` |
///
/// The status endpoint has no queue group, so one request is answered by every node of the
/// cluster. A command whose body is not a valid request is answered with micro service error
/// 400, one naming an app the node does not run with 404; both say what is wrong. What the
/// node does with a valid command is up to its ``NodeController``, whose ``ControlReply`` is
/// sent back as it is.
///
/// The service's metadata carries `cluster` and `node`, so `nats micro info baton` tells the
/// instances apart.
public final class ControlService: Sendable {
    /// The micro service name every node registers.
    public static let serviceName = "baton"

    /// The cluster the node belongs to.
    public let cluster: String
    /// The node id.
    public let node: String
    /// The subjects the service answers on.
    public let subjects: ControlSubjects
    /// The running micro service.
    public let service: MicroService
    private let controller: any NodeController
    private let logger: Logger

    private init(cluster: String, node: String, service: MicroService, controller: any NodeController, logger: Logger) {
        self.cluster = cluster
        self.node = node
        self.subjects = ControlSubjects(cluster: cluster)
        self.service = service
        self.controller = controller
        self.logger = logger
    }

    /// Registers the node's control service on `client` and starts answering.
    ///
    /// - Parameters:
    ///   - client: a connected (or connecting) client; the service answers until ``stop()`` or
    ///     until the client is closed.
    ///   - cluster: the cluster name, the second token of every subject.
    ///   - node: this node's id.
    ///   - controller: what the endpoints ask for status and to carry out commands.
    ///   - logger: where the service logs (requests at debug level, failures at warning).
    /// - Throws: ``ControlServiceError`` when `cluster` or `node` cannot be part of a subject;
    ///   ``MicroValidationError`` or the client's error when the service cannot be registered.
    public static func start(
        client: NATSClient,
        cluster: String,
        node: String,
        controller: any NodeController,
        logger: Logger
    ) async throws -> ControlService {
        guard ControlSubjects.isValidToken(cluster) else { throw ControlServiceError.invalidName(kind: "cluster", cluster) }
        guard ControlSubjects.isValidToken(node) else { throw ControlServiceError.invalidName(kind: "node", node) }
        var logger = logger
        logger[metadataKey: "node"] = "\(node)"
        let config = MicroServiceConfig(
            name: serviceName,
            version: BatonVersion.current,
            description: "Baton node control: status, stepdown, switchover, pause, resume, snapshot",
            metadata: ["cluster": cluster, "node": node]
        )
        let micro = try await MicroService.start(client: client, config: config, logger: logger)
        let control = ControlService(cluster: cluster, node: node, service: micro, controller: controller, logger: logger)
        do {
            try await micro.addEndpoint(name: "status", subject: control.subjects.status, queueGroup: .disabled) { _ in
                try MicroResponse(json: await controller.status())
            }
            for command in ControlCommand.allCases {
                try await micro.addEndpoint(name: command.rawValue, subject: control.subjects.command(command, node: node)) { request in
                    try await control.handle(command, request)
                }
            }
        } catch {
            await micro.stop()
            throw error
        }
        logger.debug("control service started", metadata: ["cluster": "\(cluster)", "status_subject": "\(control.subjects.status)"])
        return control
    }

    /// Stops answering and waits for requests already received to be answered. Idempotent.
    public func stop() async {
        await service.stop()
    }

    private func handle(_ command: ControlCommand, _ request: MicroRequest) async throws -> MicroResponse {
        let body: ControlRequest
        do {
            body = try JSONDecoder().decode(ControlRequest.self, from: Data(request.payload.readableBytesView))
        } catch {
            throw MicroServiceError(
                code: 400,
                description: "\(command.rawValue): the request must be JSON such as {\"app\": \"web\"\(command == .switchover ? ", \"to\": \"node-b\"" : "")}, got \(Self.excerpt(request.string))")
        }
        if body.app.isEmpty {
            throw MicroServiceError(code: 400, description: "\(command.rawValue): \"app\" is empty")
        }
        switch (command, body.to) {
        case (.switchover, nil), (.switchover, ""?):
            throw MicroServiceError(code: 400, description: "switchover: \"to\" is missing: name the node to hand \(body.app) to")
        case (.switchover, _):
            break
        case (_, nil):
            break
        case (_, .some):
            throw MicroServiceError(code: 400, description: "\(command.rawValue): \"to\" only applies to switchover")
        }
        if body.pauseFor != nil, command != .pause {
            throw MicroServiceError(code: 400, description: "\(command.rawValue): \"for\" only applies to pause")
        }
        let apps = await controller.status().apps.map(\.name)
        guard apps.contains(body.app) else {
            let known = apps.isEmpty ? "it runs no apps" : "it runs \(apps.sorted().joined(separator: ", "))"
            throw MicroServiceError(code: 404, description: "node \(node) has no app \"\(body.app)\" (\(known))")
        }
        // Every command changes something: say who asked (self-reported by the sender).
        let requester = body.requester?.description ?? "unnamed sender (no requester in the request)"
        logger.notice(
            "control command \(command.rawValue) \(body.app)\(body.to.map { " to \($0)" } ?? "") requested by \(requester)",
            metadata: ["command": "\(command.rawValue)", "app": "\(body.app)", "to": "\(body.to ?? "")", "requester": "\(requester)"])
        await controller.recordCommand(command, app: body.app, to: body.to, requester: requester)
        let reply: ControlReply
        switch command {
        case .stepdown: reply = await controller.stepdown(app: body.app)
        case .switchover: reply = await controller.switchover(app: body.app, to: body.to ?? "")
        case .pause:
            if let text = body.pauseFor {
                let duration: Duration
                do {
                    duration = try Duration(parsing: text)
                } catch {
                    throw MicroServiceError(code: 400, description: "pause \(body.app): \"for\": \(error)")
                }
                guard duration > .zero else {
                    throw MicroServiceError(code: 400, description: "pause \(body.app): \"for\" must be positive, not \(text)")
                }
                reply = await controller.pause(app: body.app, for: duration)
            } else {
                reply = await controller.pause(app: body.app)
            }
        case .resume: reply = await controller.resume(app: body.app)
        case .snapshot: reply = await controller.snapshot(app: body.app)
        }
        return try MicroResponse(json: reply)
    }

    /// At most 80 characters of a request body, quoted, for error messages.
    private static func excerpt(_ text: String) -> String {
        if text.isEmpty { return "an empty body" }
        let short = text.count > 80 ? text.prefix(80) + "…" : Substring(text)
        return "\"\(short)\""
    }
}

/// A control service that cannot be started.
public enum ControlServiceError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The cluster or node name cannot be a subject token.
    case invalidName(kind: String, String)

    /// What is wrong with the name.
    public var description: String {
        switch self {
        case .invalidName(let kind, let name):
            "invalid \(kind) name \"\(name)\": it must be a non-empty NATS subject token (no '.', '*', '>' or whitespace)"
        }
    }
}
