import Foundation
import Logging
import NIOCore
import Synchronization

/// Handles one request to a micro service endpoint. Throw ``MicroServiceError`` to answer with
/// an error; any other error is answered with code 500 and the error's text.
public typealias MicroRequestHandler = @Sendable (MicroRequest) async throws -> MicroResponse

/// The discovery requests every micro service instance answers.
public enum MicroDiscoveryVerb: String, Sendable, Hashable, CaseIterable {
    /// `$SRV.PING…`: identity, for discovery and round-trip times.
    case ping = "PING"
    /// `$SRV.INFO…`: identity, description and endpoints.
    case info = "INFO"
    /// `$SRV.STATS…`: per-endpoint counters.
    case stats = "STATS"
}

/// A NATS micro service instance (ADR-32): request handlers on NATS subjects, discoverable and
/// observable with `nats micro ls|info|stats` and ``MicroServiceDiscovery``.
///
/// ```swift
/// let service = try await MicroService.start(
///     client: client, config: MicroServiceConfig(name: "baton", version: "1.0.0"))
/// try await service.addEndpoint(name: "status", subject: "baton.demo.node-1.status") { request in
///     MicroResponse(string: "ok")
/// }
/// // ...
/// await service.stop()
/// ```
///
/// The instance answers `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`, each on the bare verb, on
/// `.<name>` and on `.<name>.<id>`. Each endpoint is a subscription (a queue subscription in
/// group `q` unless configured otherwise); every request runs its handler in a child task, up to
/// ``MicroServiceConfig/maxConcurrentRequestsPerEndpoint`` at once per endpoint. The connection
/// never waits for a handler: requests beyond the limit wait in the subscription's buffer.
///
/// The service runs until ``stop()`` or until the client is closed.
public final class MicroService: Sendable {
    /// The subject prefix of the discovery requests: `$SRV`.
    public static let controlPrefix = "$SRV"

    /// The configuration the instance was started with.
    public let config: MicroServiceConfig
    /// This instance's unique id (a NUID), used in `$SRV.<verb>.<name>.<id>`.
    public let id: String
    /// The client the service subscribes and replies with.
    public let client: NATSClient
    let logger: Logger

    private struct EndpointRecord {
        var info: MicroEndpointInfo
        var numRequests = 0
        var numErrors = 0
        var lastError = ""
        var processingTime = Duration.zero

        var stats: MicroEndpointStats {
            MicroEndpointStats(
                name: info.name,
                subject: info.subject,
                queueGroup: info.queueGroup,
                numRequests: numRequests,
                numErrors: numErrors,
                lastError: lastError,
                processingTime: processingTime,
                averageProcessingTime: numRequests == 0 ? .zero : processingTime / numRequests
            )
        }

        mutating func reset() {
            numRequests = 0
            numErrors = 0
            lastError = ""
            processingTime = .zero
        }
    }

    private struct State {
        var started: Date
        var endpoints: [EndpointRecord] = []
        var subscriptions: [NATSSubscription] = []
        var workers: [Task<Void, Never>] = []
        var stopRequested = false
        var controlEnded = false
    }

    private let state: Mutex<State>

    private init(client: NATSClient, config: MicroServiceConfig, logger: Logger) {
        self.client = client
        self.config = config
        self.id = NUID.next()
        var logger = logger
        logger[metadataKey: "micro_service"] = "\(config.name)"
        logger[metadataKey: "micro_service_id"] = "\(id)"
        self.logger = logger
        self.state = Mutex(State(started: Date()))
    }

    /// Validates `config`, subscribes to the discovery subjects and returns the running
    /// instance. Add endpoints with ``addEndpoint(name:subject:queueGroup:metadata:handler:)``.
    ///
    /// Throws ``MicroValidationError`` for an invalid configuration, and the client's error when
    /// it cannot subscribe (for example because it was closed).
    public static func start(
        client: NATSClient,
        config: MicroServiceConfig,
        logger: Logger = Logger(label: "nats.micro", factory: { _ in SwiftLogNoOpLogHandler() })
    ) async throws -> MicroService {
        try config.validate()
        let service = MicroService(client: client, config: config, logger: logger)
        var subscriptions: [(MicroDiscoveryVerb, NATSSubscription)] = []
        do {
            for verb in MicroDiscoveryVerb.allCases {
                for subject in [
                    controlSubject(verb),
                    controlSubject(verb, name: config.name),
                    controlSubject(verb, name: config.name, id: service.id),
                ] {
                    subscriptions.append((verb, try await client.subscribe(to: subject)))
                }
            }
        } catch {
            for (_, subscription) in subscriptions { try? await subscription.unsubscribe() }
            throw error
        }
        let discoverySubscriptions = subscriptions
        let worker = Task { await service.answerDiscoveryRequests(discoverySubscriptions) }
        service.state.withLock { state in
            state.started = Date()
            state.subscriptions.append(contentsOf: discoverySubscriptions.map(\.1))
            state.workers.append(worker)
        }
        await service.flushSubscriptions()
        service.logger.debug("micro service started", metadata: ["version": "\(config.version)"])
        return service
    }

    /// The subject of a discovery request: `$SRV.<VERB>`, `$SRV.<VERB>.<name>` or
    /// `$SRV.<VERB>.<name>.<id>` (an `id` without a `name` is ignored).
    public static func controlSubject(_ verb: MicroDiscoveryVerb, name: String? = nil, id: String? = nil) -> String {
        guard let name else { return "\(controlPrefix).\(verb.rawValue)" }
        guard let id else { return "\(controlPrefix).\(verb.rawValue).\(name)" }
        return "\(controlPrefix).\(verb.rawValue).\(name).\(id)"
    }

    // MARK: - Endpoints

    /// Adds an endpoint and starts serving it.
    ///
    /// - Parameters:
    ///   - name: the endpoint name, reported by `INFO` and `STATS` (letters, digits, `-`, `_`).
    ///     Several endpoints may share a name.
    ///   - subject: the subject to listen on (wildcards allowed); `name` when nil.
    ///   - queueGroup: overrides the service's queue group for this endpoint.
    ///   - metadata: free-form metadata reported by `INFO`.
    ///   - handler: called for each request, concurrently.
    /// - Returns: the endpoint as `INFO` reports it, with its subject and queue group resolved.
    /// - Throws: ``MicroValidationError`` for an invalid name, subject or queue group; the client's
    ///   error when it cannot subscribe; ``NATSError/Code/connectionClosed`` after ``stop()``.
    @discardableResult
    public func addEndpoint(
        name: String,
        subject: String? = nil,
        queueGroup: MicroQueueGroup? = nil,
        metadata: [String: String] = [:],
        handler: @escaping MicroRequestHandler
    ) async throws -> MicroEndpointInfo {
        try await registerEndpoint(
            name: name, subject: subject ?? name, queueGroup: queueGroup ?? config.queueGroup, metadata: metadata,
            handler: handler)
    }

    /// A group of endpoints whose subjects start with `prefix` (for example
    /// `baton.demo.node-1`), optionally with its own default queue group.
    ///
    /// Throws ``MicroValidationError`` when `prefix` is not a valid subject or contains `>`.
    public func group(_ prefix: String, queueGroup: MicroQueueGroup? = nil) throws(MicroValidationError) -> MicroEndpointGroup {
        try MicroValidation.checkGroupPrefix(prefix)
        if let queueGroup { try MicroValidation.checkQueueGroup(queueGroup) }
        return MicroEndpointGroup(service: self, prefix: prefix, queueGroup: queueGroup ?? config.queueGroup)
    }

    func registerEndpoint(
        name: String,
        subject: String,
        queueGroup: MicroQueueGroup,
        metadata: [String: String],
        handler: @escaping MicroRequestHandler
    ) async throws -> MicroEndpointInfo {
        try MicroValidation.checkName(name, field: .endpointName)
        try MicroValidation.checkEndpointSubject(subject)
        try MicroValidation.checkQueueGroup(queueGroup)
        if state.withLock({ $0.stopRequested }) {
            throw NATSError(.connectionClosed, "cannot add endpoint \"\(name)\": the micro service was stopped")
        }
        let info = MicroEndpointInfo(name: name, subject: subject, queueGroup: queueGroup.name ?? "", metadata: metadata)
        let subscription = try await client.subscribe(to: subject, queue: queueGroup.name)
        let limit = config.maxConcurrentRequestsPerEndpoint
        let added: Bool = state.withLock { state in
            guard !state.stopRequested else { return false }
            let index = state.endpoints.count
            state.endpoints.append(EndpointRecord(info: info))
            state.subscriptions.append(subscription)
            state.workers.append(Task {
                await self.serve(subscription, endpointIndex: index, name: name, limit: limit, handler: handler)
            })
            return true
        }
        guard added else {
            try? await subscription.unsubscribe()
            throw NATSError(.connectionClosed, "cannot add endpoint \"\(name)\": the micro service was stopped")
        }
        await flushSubscriptions()
        logger.debug("micro endpoint added", metadata: ["endpoint": "\(name)", "subject": "\(subject)", "queue_group": "\(queueGroup)"])
        return info
    }

    // MARK: - Reports

    /// What this instance answers to `$SRV.PING`.
    public func ping() -> MicroPingResponse {
        MicroPingResponse(name: config.name, id: id, version: config.version, metadata: config.metadata)
    }

    /// What this instance answers to `$SRV.INFO`.
    public func info() -> MicroInfoResponse {
        MicroInfoResponse(
            name: config.name, id: id, version: config.version, metadata: config.metadata,
            description: config.description, endpoints: state.withLock { $0.endpoints.map(\.info) })
    }

    /// What this instance answers to `$SRV.STATS`.
    public func stats() -> MicroStatsResponse {
        let (started, endpoints) = state.withLock { ($0.started, $0.endpoints.map(\.stats)) }
        return MicroStatsResponse(
            name: config.name, id: id, version: config.version, metadata: config.metadata, started: started,
            endpoints: endpoints)
    }

    /// Zeroes every endpoint's counters and sets `started` to now.
    public func reset() {
        state.withLock { state in
            state.started = Date()
            for index in state.endpoints.indices { state.endpoints[index].reset() }
        }
    }

    // MARK: - Stopping

    /// Whether the service still answers: false after ``stop()`` or once the client was closed.
    public var isRunning: Bool {
        state.withLock { !$0.stopRequested && !$0.controlEnded }
    }

    /// Unsubscribes every endpoint and discovery subject, then waits until requests already
    /// received have been handled and answered. Idempotent.
    ///
    /// Called from one of this service's own handlers (or a task it started), it only
    /// unsubscribes: waiting for the handlers would mean waiting for itself.
    public func stop() async {
        let (subscriptions, workers) = state.withLock { state in
            state.stopRequested = true
            defer { state.subscriptions.removeAll() }
            return (state.subscriptions, state.workers)
        }
        for subscription in subscriptions {
            try? await subscription.unsubscribe()
        }
        if HandlerContext.service != ObjectIdentifier(self) {
            for worker in workers {
                await worker.value
            }
        }
        if !subscriptions.isEmpty {
            logger.debug("micro service stopped")
        }
    }

    // MARK: - Serving

    private func flushSubscriptions() async {
        // Once the server has the SUBs, requests from other connections reach us. While
        // disconnected the subscriptions go out on reconnect; nothing to wait for.
        guard client.isConnected else { return }
        do {
            try await client.flush(timeout: .seconds(2))
        } catch {
            logger.debug("flush after subscribing failed", metadata: ["error": "\(error)"])
        }
    }

    private func answerDiscoveryRequests(_ subscriptions: [(MicroDiscoveryVerb, NATSSubscription)]) async {
        await withDiscardingTaskGroup { group in
            for (verb, subscription) in subscriptions {
                group.addTask {
                    for await message in subscription {
                        await self.answerDiscoveryRequest(message, verb: verb)
                    }
                }
            }
        }
        state.withLock { $0.controlEnded = true }
    }

    private func answerDiscoveryRequest(_ message: NATSMessage, verb: MicroDiscoveryVerb) async {
        guard let replyTo = message.replyTo else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        do {
            let body: Data
            switch verb {
            case .ping: body = try encoder.encode(ping())
            case .info: body = try encoder.encode(info())
            case .stats: body = try encoder.encode(stats())
            }
            try await client.publish(replyTo, payload: ByteBuffer(bytes: body))
        } catch {
            logger.warning("could not answer discovery request", metadata: ["verb": "\(verb.rawValue)", "error": "\(error)"])
        }
    }

    private func serve(
        _ subscription: NATSSubscription,
        endpointIndex: Int,
        name: String,
        limit: Int,
        handler: @escaping MicroRequestHandler
    ) async {
        await withTaskGroup(of: Void.self) { group in
            var running = 0
            for await message in subscription {
                if running >= limit {
                    await group.next()
                    running -= 1
                }
                group.addTask {
                    await self.handle(message, endpointIndex: endpointIndex, name: name, handler: handler)
                }
                running += 1
            }
            await group.waitForAll()
        }
    }

    private func handle(_ message: NATSMessage, endpointIndex: Int, name: String, handler: MicroRequestHandler) async {
        let request = MicroRequest(
            endpoint: name, subject: message.subject, replyTo: message.replyTo, headers: message.headers,
            payload: message.payload)
        let clock = ContinuousClock()
        let began = clock.now
        var response: MicroResponse
        var failure: String?
        do {
            response = try await HandlerContext.$service.withValue(ObjectIdentifier(self)) {
                try await handler(request)
            }
        } catch let error as MicroServiceError {
            response = MicroResponse(payload: error.payload, headers: error.headers)
            failure = "\(error.code):\(error.description)"
        } catch {
            let serviceError = MicroServiceError(code: 500, description: String(describing: error))
            response = MicroResponse(headers: serviceError.headers)
            failure = "500:\(serviceError.description)"
        }
        let elapsed = clock.now - began
        state.withLock { state in
            state.endpoints[endpointIndex].numRequests += 1
            state.endpoints[endpointIndex].processingTime += elapsed
            if let failure {
                state.endpoints[endpointIndex].numErrors += 1
                state.endpoints[endpointIndex].lastError = failure
            }
        }
        if let failure {
            logger.debug("micro endpoint answered with an error", metadata: ["endpoint": "\(name)", "error": "\(failure)"])
        }
        guard let replyTo = message.replyTo else { return }
        do {
            try await client.publish(replyTo, payload: response.payload, headers: response.headers)
        } catch {
            let problem = "could not send the reply: \(error)"
            state.withLock { state in
                state.endpoints[endpointIndex].numErrors += 1
                state.endpoints[endpointIndex].lastError = "500:\(problem)"
            }
            logger.warning("micro endpoint reply failed", metadata: ["endpoint": "\(name)", "error": "\(error)"])
            // A reply the server would refuse (bad header, too large) still gets an answer.
            if let error = error as? NATSError, error.code == .invalidHeader || error.code == .maxPayloadExceeded {
                let fallback = MicroServiceError(code: 500, description: problem)
                try? await client.publish(replyTo, headers: fallback.headers)
            }
        }
    }
}

/// Marks the tasks running a service's handlers, so that ``MicroService/stop()`` called from a
/// handler does not wait for that handler to finish.
private enum HandlerContext {
    @TaskLocal static var service: ObjectIdentifier?
}

/// Endpoints sharing a subject prefix and a default queue group. Create one with
/// ``MicroService/group(_:queueGroup:)``.
public struct MicroEndpointGroup: Sendable {
    /// The service the endpoints are added to.
    public let service: MicroService
    /// The subject prefix of every endpoint in the group.
    public let prefix: String
    /// The queue group of the group's endpoints, unless an endpoint overrides it.
    public let queueGroup: MicroQueueGroup

    init(service: MicroService, prefix: String, queueGroup: MicroQueueGroup) {
        self.service = service
        self.prefix = prefix
        self.queueGroup = queueGroup
    }

    /// Adds an endpoint listening on `<prefix>.<subject ?? name>`. See
    /// ``MicroService/addEndpoint(name:subject:queueGroup:metadata:handler:)``.
    @discardableResult
    public func addEndpoint(
        name: String,
        subject: String? = nil,
        queueGroup: MicroQueueGroup? = nil,
        metadata: [String: String] = [:],
        handler: @escaping MicroRequestHandler
    ) async throws -> MicroEndpointInfo {
        try await service.registerEndpoint(
            name: name, subject: "\(prefix).\(subject ?? name)", queueGroup: queueGroup ?? self.queueGroup,
            metadata: metadata, handler: handler)
    }

    /// A nested group with the prefix `<prefix>.<name>`.
    public func group(_ name: String, queueGroup: MicroQueueGroup? = nil) throws(MicroValidationError) -> MicroEndpointGroup {
        let nested = "\(prefix).\(name)"
        try MicroValidation.checkGroupPrefix(nested)
        if let queueGroup { try MicroValidation.checkQueueGroup(queueGroup) }
        return MicroEndpointGroup(service: service, prefix: nested, queueGroup: queueGroup ?? self.queueGroup)
    }
}
