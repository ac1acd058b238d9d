import BatonCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization

/// What batond's HTTP server asks of the running node. batond wires it to its node supervisor,
/// its NATS control client and its metrics registry; the HTTP module depends on nothing else.
public protocol BatonHTTPNode: Sendable {
    /// This node's own status, nil when the node does not answer in time.
    func localStatus() async -> NodeStatus?
    /// Every node's status (the answers to the cluster's status request, sorted by node), the
    /// same list `batonctl status --json` prints.
    func clusterStatuses() async throws -> [NodeStatus]
    /// Whether batond's loops tick.
    func liveness() async -> Liveness
    /// Sends `command` about `app` to `node`'s control service (the code path `batonctl` uses)
    /// and returns its answer. `caller` is who asked over HTTP (the client's IP address), which
    /// the node logs and records in the event history with the command.
    /// `pauseFor` (pause only, from `?for=30m`) gives the pause an end.
    func send(_ command: ControlCommand, app: String, to target: String?, pauseFor: Duration?, node: String, caller: String) async throws -> ControlReply
    /// The Prometheus text exposition of the node's metrics.
    func metricsText() async -> String
    /// The newest `count` events of the cluster's event history (`BATON_<cluster>_EVENTS`),
    /// oldest first: what the live page shows when it opens.
    func eventHistory(count: Int) async throws -> [BatonEvent]
    /// The events stored in the cluster's history from now on, as they arrive (every node's);
    /// the stream ends when the reading task is cancelled.
    func followEvents() async throws -> AsyncThrowingStream<BatonEvent, any Error>
}

/// A server setting that cannot be used.
public struct BatonHTTPSetupError: Error, Sendable, CustomStringConvertible {
    /// What is wrong, naming the file or setting.
    public var description: String
}

/// batond's HTTP server: `GET /` (the live page), `/events` (server-sent events of the cluster's
/// status), `/healthz`, `/status`, `/metrics`, `/apps/APP/{active,passive,replica}` and
/// `POST /apps/APP/{switchover,stepdown,pause,resume}` (bearer token).
public struct BatonHTTPServer: Sendable {
    /// The control commands the HTTP API takes (the snapshot command stays with `batonctl`).
    public static let commands: [ControlCommand] = [.switchover, .stepdown, .pause, .resume]
    /// How often `/events` asks the cluster for its status.
    public static let eventInterval: Duration = .seconds(1)

    let config: HTTPConfig
    let node: any BatonHTTPNode
    let token: String?
    let logger: Logger

    /// Prepares a server for `config`: reads the control token file now, so a missing or empty
    /// file stops batond at start with its name (a changed token applies at the next start).
    ///
    /// - Throws: ``BatonHTTPSetupError`` naming the file that cannot be read or is empty.
    public init(config: HTTPConfig, node: any BatonHTTPNode, logger: Logger) throws {
        self.config = config
        self.node = node
        self.logger = logger
        if let path = config.controlTokenFile {
            let text: String
            do {
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw BatonHTTPSetupError(description: "http.control_token_file: cannot read \(path): \(error.localizedDescription)")
            }
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty else { throw BatonHTTPSetupError(description: "http.control_token_file: \(path) is empty; put the bearer token in it") }
            guard !trimmed.contains(where: { $0.isWhitespace }) else {
                throw BatonHTTPSetupError(description: "http.control_token_file: \(path) holds whitespace inside the token; put one token on one line")
            }
            self.token = trimmed
        } else {
            self.token = nil
        }
    }

    /// The hummingbird application serving the API, a `Service` to run in batond's service
    /// group. `onRunning` is called with the bound port once the server listens.
    ///
    /// - Throws: ``BatonHTTPSetupError`` when the TLS certificate or key cannot be loaded.
    public func application(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) throws -> some Service {
        let router = Router(context: BatonRequestContext.self)
        addRoutes(to: router)
        let server: HTTPServerBuilder
        if let tls = config.tls {
            let configuration: TLSConfiguration
            do {
                let chain = try NIOSSLCertificate.fromPEMFile(tls.certificatePath).map { NIOSSLCertificateSource.certificate($0) }
                let key = try NIOSSLPrivateKey(file: tls.keyPath, format: .pem)
                configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
            } catch {
                throw BatonHTTPSetupError(description: "http.tls: cannot load \(tls.certificatePath) / \(tls.keyPath): \(error)")
            }
            server = try .tls(.http1(), tlsConfiguration: configuration)
        } else {
            server = .http1()
        }
        return Application(
            router: router,
            server: server,
            configuration: ApplicationConfiguration(address: .hostname(config.host, port: config.port), serverName: "batond"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
    }

    func addRoutes(to router: Router<BatonRequestContext>) {
        let node = self.node
        let token = self.token
        let logger = self.logger
        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-cache"], body: .init(byteBuffer: ByteBuffer(string: WebPage.html)))
        }
        router.get("/healthz") { _, _ in
            let liveness = await node.liveness()
            return Self.text(liveness.ok ? .ok : .serviceUnavailable, liveness.message)
        }
        router.get("/status") { _, _ in
            do {
                return Self.json(.ok, try await node.clusterStatuses())
            } catch {
                return Self.text(.serviceUnavailable, "cannot ask the cluster for its status: \(error)")
            }
        }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: await node.metricsText())))
        }
        router.get("/events") { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                body: ResponseBody { writer in
                    try await Self.streamStatuses(node: node, into: &writer)
                    try await writer.finish(nil)
                })
        }
        for check in AppCheck.allCases {
            router.get("/apps/:app/\(check.rawValue)") { request, context in
                let app = context.parameters.get("app") ?? ""
                var maxLag: UInt64?
                var maxLagSeconds: Double?
                if check == .replica {
                    switch AppCheck.maxLag(request.uri.queryParameters.get("max_lag")) {
                    case .success(let value): maxLag = value
                    case .failure(let problem): return Self.text(.badRequest, problem.message)
                    }
                    switch AppCheck.maxLagSeconds(request.uri.queryParameters.get("max_lag_seconds")) {
                    case .success(let value): maxLagSeconds = value
                    case .failure(let problem): return Self.text(.badRequest, problem.message)
                    }
                }
                guard let status = await node.localStatus() else {
                    return Self.text(.serviceUnavailable, "batond's node supervisor did not answer in time")
                }
                guard let outcome = check.evaluate(app: app, in: status, maxLag: maxLag, maxLagSeconds: maxLagSeconds) else {
                    return Self.text(.notFound, "node \(status.node) has no app \"\(app)\"")
                }
                return Self.json(outcome.ok ? .ok : .serviceUnavailable, outcome)
            }
        }
        for command in Self.commands {
            router.post("/apps/:app/\(command.rawValue)") { request, context in
                let app = context.parameters.get("app") ?? ""
                switch ControlAuthorization.decide(authorization: request.headers[.authorization], expected: token) {
                case .allowed: break
                case .missingToken:
                    return Self.text(.unauthorized, "\(command.rawValue) needs \"Authorization: Bearer TOKEN\" with the token of http.control_token_file", extra: [.wwwAuthenticate: "Bearer"])
                case .wrongToken:
                    logger.warning("HTTP control request with a wrong token refused", metadata: ["command": "\(command.rawValue)", "app": "\(app)"])
                    return Self.text(.forbidden, "the bearer token does not match http.control_token_file")
                case .disabled:
                    return Self.text(.forbidden, "control over HTTP is off on this node: no http.control_token_file is configured")
                }
                let target = request.uri.queryParameters.get("to").map { String($0) }
                var pauseFor: Duration?
                if let text = request.uri.queryParameters.get("for").map({ String($0) }) {
                    guard command == .pause else { return Self.text(.badRequest, "?for= only applies to pause") }
                    guard let duration = try? Duration(parsing: text), duration > .zero else {
                        return Self.text(.badRequest, "?for=\(text) is not a positive duration (write 30m, 2h, 90s)")
                    }
                    pauseFor = duration
                }
                let pauseEnd = pauseFor
                let statuses: [NodeStatus]
                do {
                    statuses = try await node.clusterStatuses()
                } catch {
                    return Self.text(.serviceUnavailable, "cannot ask the cluster for its status: \(error)")
                }
                switch CommandPlan.make(command, app: app, to: target, statuses: statuses) {
                case .refuse(let status, let message):
                    return Self.text(HTTPResponse.Status(code: status), message)
                case .send(let nodes):
                    let caller = context.remoteAddress.map { $0.ipAddress ?? "\($0)" } ?? "(address unknown)"
                    logger.notice(
                        "HTTP control command",
                        metadata: ["command": "\(command.rawValue)", "app": "\(app)", "to": "\(target ?? "")", "nodes": "\(nodes)", "requester": "\(caller)"])
                    let answers = await withTaskGroup(of: CommandAnswer.self) { group in
                        for name in nodes {
                            group.addTask {
                                do {
                                    let reply = try await node.send(
                                        command, app: app, to: command == .switchover ? target : nil, pauseFor: pauseEnd, node: name, caller: caller)
                                    if reply.ok, pauseEnd != nil, reply.pausedUntil == nil {
                                        // A batond that predates expiring pauses ignored "for".
                                        return CommandAnswer(
                                            node: name, ok: false,
                                            message: "its batond paused \(app) without an end (it predates pause ?for=); resume it later")
                                    }
                                    return CommandAnswer(node: name, ok: reply.ok, message: reply.message, pausedUntil: reply.pausedUntil)
                                } catch {
                                    return CommandAnswer(node: name, ok: false, message: "\(error)", failed: true)
                                }
                            }
                        }
                        var answers: [CommandAnswer] = []
                        for await answer in group { answers.append(answer) }
                        return answers.sorted { $0.node < $1.node }
                    }
                    let status: HTTPResponse.Status
                    if answers.contains(where: { $0.failed == true }) {
                        status = .badGateway
                    } else if answers.allSatisfy(\.ok) {
                        // stepdown and switchover are under way when accepted; pause and resume are done.
                        status = (command == .pause || command == .resume) ? .ok : .accepted
                    } else {
                        status = .conflict
                    }
                    return Self.json(status, CommandResult(command: command.rawValue, app: app, to: target, answers: answers))
                }
            }
        }
    }

    /// Writes the cluster's status as a server-sent event (`event: status`) whenever it changes,
    /// and a comment every 15 seconds otherwise, until the client goes away or batond stops.
    /// How many events of the history `/events` sends first.
    public static let historyCount = 50

    static func streamStatuses(node: any BatonHTTPNode, into writer: inout any ResponseBodyWriter) async throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var last: Data?
        var quiet = Duration.zero
        try await writer.write(ByteBuffer(string: "retry: 2000\n\n"))
        // The event history: followed from before the recent events are read, so none falls
        // between the two (the page drops the duplicates); sent with the status checks.
        let live = LiveEvents()
        let follower = Task {
            do {
                for try await event in try await node.followEvents() { live.append(event) }
            } catch {
                live.fail("\(error)")
            }
        }
        defer { follower.cancel() }
        let history: Data
        do {
            history = try encoder.encode(try await node.eventHistory(count: historyCount))
        } catch {
            history = try encoder.encode(["error": "cannot read the event history: \(error)"])
        }
        try await writer.write(ByteBuffer(string: "event: history\ndata: " + String(decoding: history, as: UTF8.self) + "\n\n"))
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            let (events, failure) = live.take()
            for event in events {
                try await writer.write(ByteBuffer(string: "event: baton\ndata: " + String(decoding: try encoder.encode(event), as: UTF8.self) + "\n\n"))
            }
            if let failure {
                try await writer.write(ByteBuffer(string: "event: history\ndata: " + String(decoding: try encoder.encode(["error": "the event history stopped: \(failure)"]), as: UTF8.self) + "\n\n"))
            }
            let data: Data
            do {
                data = try encoder.encode(try await node.clusterStatuses())
            } catch {
                data = try encoder.encode(["error": "cannot ask the cluster for its status: \(error)"])
            }
            if data != last {
                try await writer.write(ByteBuffer(string: "event: status\ndata: " + String(decoding: data, as: UTF8.self) + "\n\n"))
                last = data
                quiet = .zero
            } else if quiet >= .seconds(15) {
                try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                quiet = .zero
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: eventInterval) }
            quiet += eventInterval
        }
    }

    static func text(_ status: HTTPResponse.Status, _ message: String, extra: HTTPFields = [:]) -> Response {
        var headers: HTTPFields = [.contentType: "text/plain; charset=utf-8"]
        headers.append(contentsOf: extra)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: message + "\n")))
    }

    static func json(_ status: HTTPResponse.Status, _ value: some Encodable) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else { return text(.internalServerError, "cannot encode the answer") }
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// One node's answer to a control command sent over HTTP.
struct CommandAnswer: Codable, Sendable {
    var node: String
    var ok: Bool
    var message: String
    /// True when the node did not answer (or answered with an error), not a refusal.
    var failed: Bool?
    /// When the node's pause ends (a pause with `?for=`).
    var pausedUntil: String?

    enum CodingKeys: String, CodingKey {
        case node, ok, message, failed
        case pausedUntil = "paused_until"
    }
}

/// The body of a control command's response.
struct CommandResult: Codable, Sendable {
    var command: String
    var app: String
    var to: String?
    var answers: [CommandAnswer]
}

/// The request context of batond's HTTP server: Hummingbird's core context plus the client's
/// address, which a control command's "who asked" names.
public struct BatonRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The address the request came from.
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}

/// Events that arrived for one `/events` stream and were not sent yet (the follower adds, the
/// stream's loop takes), and whether following failed.
final class LiveEvents: Sendable {
    private let state = Mutex<(events: [BatonEvent], failure: String?)>(([], nil))

    func append(_ event: BatonEvent) {
        state.withLock { state in
            state.events.append(event)
            // A reader that stalled keeps the newest.
            if state.events.count > BatonHTTPServer.historyCount { state.events.removeFirst(state.events.count - BatonHTTPServer.historyCount) }
        }
    }

    func fail(_ reason: String) { state.withLock { $0.failure = reason } }

    /// The events to send and a failure not reported yet; empties both.
    func take() -> ([BatonEvent], String?) {
        state.withLock { state in
            defer { state = ([], nil) }
            return (state.events, state.failure)
        }
    }
}
