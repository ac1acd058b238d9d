import ArgumentParser
import BatonCore
import BatonEvents
import BatonHTTP
import Foundation
import Logging
import NATS
import ServiceLifecycle
import Backends
import Control
import Supervisor
import Systemd
import UnixSignals
import Permissions

@main
struct Batond: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "batond",
        abstract: "Baton's node daemon: runs each configured app on exactly one node of the cluster.",
        discussion: """
            batond competes with the other nodes for each app's lease in NATS JetStream KV. The \
            winner promotes the app's SQLite replica, claims its virtual IPs and starts its backend \
            (a child process or a systemd unit); the others keep the backend stopped and the VIPs \
            absent, and apply the active node's WAL. SIGTERM (or SIGINT) steps every app down \
            gracefully and exits; SIGHUP re-reads the config and changes only the apps that \
            changed (a broken config is rejected and the running one stays). Under systemd \
            (units/batond.service, Type=notify) it reports READY, STATUS, RELOADING and STOPPING, \
            pings the watchdog only while its loops make progress, and logs to the journal.

            At start, before it talks to NATS, batond releases what a killed predecessor may \
            have left (every app's VIPs, units and epoch files; see --release-claims) — unless \
            another batond with this node id runs on this host. Then, before it runs any app, \
            it registers its node id in the cluster's node registry (NATS KV bucket \
            baton_<cluster>__nodes) and heartbeats there every second. \
            If another live batond already runs with the same node.id (on this host or another), \
            it refuses to start, names that instance (host, pid, start time) and exits with \
            status 3; the entry of a crashed instance is taken over (at once on the same host, \
            else after a few seconds without heartbeat). Before registering, it checks that its \
            NATS user has every permission of the node role (batonctl permissions --role node) \
            and, if one is missing, names the first and exits with status 4.

            With an http: section in the config it serves HTTP on http.listen: the live web \
            page (/), /healthz, /status (JSON, as batonctl status --json), /metrics \
            (Prometheus), load-balancer checks /apps/APP/active, /passive and \
            /replica?max_lag=N (200 or 503), and POST /apps/APP/switchover?to=NODE, /stepdown, \
            /pause[?for=30m] and /resume with "Authorization: Bearer TOKEN" (the token of \
            http.control_token_file; refused without one).
            """,
        version: BatonVersion.current)

    @Option(name: .long, help: "The config file.")
    var config: String = "/etc/baton/baton.yaml"

    @Option(name: .customLong("check-config"), help: ArgumentHelp("Check a config file, print every error, and exit (0 when valid).", valueName: "file"))
    var checkConfig: String?

    @Flag(
        name: .customLong("release-claims"),
        help: ArgumentHelp(
            "Without NATS: remove every app's virtual IPs, kill and stop its systemd unit and remove its epoch file; print one line per claim and exit (0 when everything is released). batond.service runs it as ExecStopPost=; run it only while batond is stopped."
        ))
    var releaseClaims = false

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func run() async throws {
        if let checkConfig {
            do {
                let parsed = try BatonConfig.load(path: checkConfig)
                print("\(checkConfig): OK (\(parsed.apps.count) app\(parsed.apps.count == 1 ? "" : "s"))")
                return
            } catch {
                for item in error.errors { printError(item.description) }
                throw ExitCode(1)
            }
        }

        if releaseClaims {
            try await runReleaseClaims()
            return
        }

        let level = logLevel
        // Under systemd with stderr going to the journal, log to the journal directly: one
        // entry per line with its fields (APP, NODE, EPOCH, UNIT, ...) and priority.
        let journal = JournalStream.standardErrorIsJournal()
        LoggingSystem.bootstrap { label in
            if journal {
                var handler = JournaldLogHandler(label: label, identifier: "batond")
                handler.logLevel = level
                return handler
            }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        BatondMetrics.bootstrap()
        var logger = Logger(label: "batond")
        let serviceManager = ServiceManagerLink(logger: logger)

        let loaded: BatonConfig
        do {
            loaded = try BatonConfig.load(path: config)
        } catch {
            for item in error.errors { printError(item.description) }
            throw ExitCode(1)
        }
        logger[metadataKey: "node"] = "\(loaded.node.id)"

        // Before anything talks to NATS: a batond killed together with its fence keepers (the
        // systemd watchdog, kill -9 of the whole group) may have left VIPs and running units
        // behind, and this node holds no lease now. A node that cannot reach NATS must not keep
        // them until it can.
        serviceManager.status("releasing what a previous batond left behind")
        await releaseLeftovers(loaded, logger: logger)

        let client = try NATSClient(options: try natsOptions(loaded), logger: logger)
        // Replication gets its own connection: a replication backlog never delays a lease renew, and its disconnects never reset the election's holdoff.
        let replicationClient = try NATSClient(options: try natsOptions(loaded, purpose: "replication"), logger: logger)
        let instance = NUID.next()
        let backendLogger = logger
        let ownUnit = await ServiceManagerLink.ownUnit(config: loaded, logger: logger)
        if ownUnit == nil {
            logger.notice("batond does not run under systemd: no READY/WATCHDOG notifications, systemd units of apps are not bound to batond")
        }
        // The event history: fire-and-forget from the apps into a bounded buffer, published by
        // its own task on the replication connection, so that no event ever shares the lease
        // connection's socket or waits in front of a renew.
        let events = EventPublisher(
            jetStream: JetStream(client: replicationClient), cluster: loaded.cluster,
            retention: EventStream.Retention(maxAge: loaded.events.maxAge, maxBytes: loaded.events.maxBytes), replicas: loaded.nats.replicas,
            logger: logger)
        // The other nodes' labels and capacity, from the node registry, for placement.
        let clusterView = ClusterView(jetStream: JetStream(client: client), cluster: loaded.cluster, replicas: loaded.nats.replicas, logger: logger)
        let node = NodeSupervisor(
            config: loaded, client: client, instance: instance, systemdUnit: ownUnit, runtimeDirectory: batondRuntimeDirectory(), events: events,
            eventsClient: replicationClient, clusterView: clusterView, logger: logger
        ) { plan, app in
            try await makeParts(plan, app, config: loaded, client: client, replicationClient: replicationClient, logger: backendLogger)
        }
        let service = BatondService(
            configPath: config, client: client, replicationClient: replicationClient, node: node, events: events, serviceManager: serviceManager,
            logger: logger)
        // A service group shuts its services down in reverse order, one after the other: batond's
        // own service comes last in the list so that SIGTERM steps the apps down at once (a
        // managed systemd unit stopped ahead of batond must not be restarted meanwhile), while
        // the HTTP server and the metrics go on answering until the apps are down.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(
                service: MetricsSampler(nodeID: loaded.node.id, connections: [("main", client), ("replication", replicationClient)]),
                successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore),
            .init(
                service: NodeMetricsSampler(node: node, nodeID: loaded.node.id, events: events, logger: logger),
                successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore),
        ]
        if let http = loaded.http {
            // A server that cannot listen (address in use, TLS files) stops batond with the
            // reason: the apps step down gracefully, like on SIGTERM.
            let server: BatonHTTPServer
            do {
                let httpNode = BatondHTTPNode(
                    node: node, client: client, eventsClient: replicationClient, cluster: loaded.cluster, nodeID: loaded.node.id)
                server = try BatonHTTPServer(config: http, node: httpNode, logger: logger)
                let application = try server.application { [logger] port in
                    logger.notice("HTTP server listening", metadata: ["address": "\(http.tls == nil ? "http" : "https")://\(HTTPConfig(host: http.host, port: port).listen)/"])
                }
                services.append(.init(service: application, failureTerminationBehavior: .gracefullyShutdownGroup))
            } catch {
                printError("batond: \(error)")
                throw ExitCode(1)
            }
        }
        services.append(.init(service: service))
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch is NodeRegistrationRefused {
            // Already logged with what to do. A distinct status, so that systemd does not restart
            // into the same refusal (RestartPreventExitStatus= in units/batond.service).
            throw ExitCode(Self.duplicateNodeExitCode)
        } catch is PermissionProbeDenied {
            // Already logged, naming the subject. Restarting cannot grant it.
            throw ExitCode(Self.missingPermissionExitCode)
        }
    }

    /// The exit status when another live batond runs with this node id.
    static let duplicateNodeExitCode: Int32 = 3

    /// The exit status when the NATS user lacks a permission of the node role.
    static let missingPermissionExitCode: Int32 = 4

    /// `--release-claims`: the release without the daemon, one line per claim on stdout.
    private func runReleaseClaims() async throws {
        let loaded: BatonConfig
        do {
            loaded = try BatonConfig.load(path: config)
        } catch {
            for item in error.errors { printError(item.description) }
            printError("batond --release-claims: cannot read \(config): nothing was released")
            throw ExitCode(2)
        }
        // The outcome lines say everything; the libraries' own logs only at debug or trace.
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level <= .debug ? level : max(level, .warning)
            return handler
        }
        let logger = Logger(label: "batond")
        await PredecessorKeepers.waitUntilGone(apps: Set(loaded.apps.map(\.name)), logger: logger)
        let outcomes = await NodeClaimRelease(config: loaded, runtimeDirectory: batondRuntimeDirectory(), logger: logger).run()
        for outcome in outcomes { print(outcome.description) }
        let failed = outcomes.filter { $0.result == .failed }
        guard failed.isEmpty else {
            printError("batond --release-claims: could not release \(failed.map { "\($0.app): \($0.subject)" }.joined(separator: "; "))")
            throw ExitCode(1)
        }
        print("batond --release-claims: every claim of \(loaded.node.id) is released (\(outcomes.count) checked)")
    }

    private func printError(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// NATS client options from the config's `nats:` section; `purpose` names a second connection
/// (in the server's connection list) next to the main one.
func natsOptions(_ config: BatonConfig, purpose: String? = nil) throws -> NATSClientOptions {
    var options = NATSClientOptions(servers: config.nats.servers)
    options.name = "batond \(config.node.id)" + (purpose.map { " \($0)" } ?? "")
    options.retryOnFailedInitialConnect = true
    options.requestTimeout = .seconds(2)
    // Replies come to the node role's own inboxes, which its NATS permissions allow
    // (`batonctl permissions --role node`).
    options.inboxPrefix = BatonPermissions.inboxPrefix(cluster: config.cluster, role: .node)
    switch config.nats.auth {
    case .none: break
    case .credentials(let path): options.authentication = .credentialsFile(path: path)
    case .userPassword(let user, let password): options.authentication = .userPassword(user: user, password: password)
    case .token(let token): options.authentication = .token(token)
    case .nkeySeedFile(let path):
        let seed = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        options.authentication = .nkeySeed(seed)
    }
    if let tls = config.nats.tls {
        options.tls = NATSTLSOptions(caFile: tls.caPath, certificateFile: tls.clientCertificate?.certificatePath, keyFile: tls.clientCertificate?.keyPath)
    }
    return options
}

/// batond's one long-lived service: connects to NATS, runs the node, the control service and
/// SIGHUP reloads, and steps everything down on graceful shutdown.
struct BatondService: Service {
    let configPath: String
    let client: NATSClient
    /// The connection of the apps' replication (shipper and applier), separate from `client`
    /// (leases, control service).
    let replicationClient: NATSClient
    let node: NodeSupervisor
    /// The node's events to the cluster's event history.
    let events: EventPublisher
    let serviceManager: ServiceManagerLink
    let logger: Logger

    func run() async throws {
        // Trap SIGHUP from the start: one that arrives while batond is still connecting or
        // setting its apps up is applied once they run (its default action would kill batond).
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        serviceManager.status("connecting to NATS")
        // Nothing can be decided without NATS: wait for it (retrying), unless asked to stop.
        let connected = await withGracefulShutdownHandler {
            do {
                try await client.connect()
                try await replicationClient.connect()
                return true
            } catch {
                logger.error("cannot connect to NATS", metadata: ["error": "\(error)"])
                return false
            }
        } onGracefulShutdown: {
            Task {
                await client.close()
                await replicationClient.close()
            }
        }
        guard connected else {
            serviceManager.stopping()
            return
        }
        // Before anything is written: every subject class the node role needs must be allowed,
        // else batond refuses to start and names the first one it cannot use.
        try await probePermissions()
        // Claim the node id before touching any app (no app starts, no VIP, unit or epoch file
        // is cleaned up): a second batond with this node id stops here.
        if let info = client.serverInfo,
            let warning = NATSServerAdvice.clusteredCompareAndSetWarning(
                serverVersion: info.version, clustered: info.cluster != nil, replicas: await node.currentConfig.nats.replicas)
        {
            logger.critical("\(warning)", metadata: ["server": "\(info.serverName ?? info.serverID)"])
        }
        guard let registry = try await registerNode() else {
            serviceManager.stopping()
            await client.close()
            return
        }
        let heartbeats = Task { [node] in
            await registry.runHeartbeats { other in await node.duplicateInstanceDetected(other) }
        }
        let eventDelivery = Task { [events] in await events.run() }
        let registryWatch = Task { [node] in await node.clusterView?.run() }
        let started = await node.currentConfig
        events.publish(
            BatonEvent(
                time: Date().timeIntervalSince1970, cluster: started.cluster, node: started.node.id, app: nil, kind: .nodeStarted,
                detail: "batond \(BatonVersion.current) started (instance \(node.instance), apps \(started.apps.map(\.name)))"))
        await node.start()
        let config = await node.currentConfig
        let control = try await ControlService.start(client: client, cluster: config.cluster, node: config.node.id, controller: node, logger: logger)
        logger.info("running", metadata: ["apps": "\(config.apps.map(\.name))"])
        // Ready once the apps are set up: a bound unit's start job waits for this (After=).
        serviceManager.ready(status: await node.status().summaryLine)
        // Watchdog pings and STATUS= go on through the graceful step-down below.
        let supervision = Task { [serviceManager, node] in await serviceManager.supervise(node) }
        await reloadOnSIGHUP(hangups)
        serviceManager.stopping()
        logger.info("stopping: stepping every app down")
        await control.stop()
        await node.shutdown()
        // The step-down events go out before the connection closes (bounded: NATS may be gone).
        events.finish()
        let delivered = await withTaskGroup(of: Bool.self) { group in
            group.addTask { await eventDelivery.value; return true }
            group.addTask { try? await Task.sleep(for: .seconds(2)); return false }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        if !delivered {
            eventDelivery.cancel()
            logger.warning("the last events did not reach the event history before batond stopped")
        }
        heartbeats.cancel()
        await heartbeats.value
        registryWatch.cancel()
        await registry.deregister()
        supervision.cancel()
        await client.close()
        await replicationClient.close()
        logger.info("stopped")
    }

    /// Probes every rule of the node role's NATS permissions for this cluster and its apps (see
    /// ``PermissionProbe``); throws ``PermissionProbeDenied`` (logged as critical) for the first
    /// the server refuses. Apps added by a later reload are not probed.
    private func probePermissions() async throws {
        let config = await node.currentConfig
        let permissions = try BatonPermissions(role: .node, cluster: config.cluster, apps: config.apps.map(\.name))
        serviceManager.status("checking NATS permissions")
        let probes = PermissionProbe.plan(permissions)
        let started = ContinuousClock.now
        if let denied = try await PermissionProber.firstDenied(probes, client: client, logger: logger) {
            logger.critical("\(denied.description); refusing to start (exit status \(Batond.missingPermissionExitCode))")
            serviceManager.status("refused to start: NATS denies \(denied.probe.operation.rawValue) on \(denied.probe.rule.subject)")
            serviceManager.stopping()
            await client.close()
            await replicationClient.close()
            throw denied
        }
        logger.debug("NATS permissions checked", metadata: ["probes": "\(probes.count)", "took": "\(ContinuousClock.now - started)"])
    }

    /// Registers this instance under its node id in the node registry, retrying while NATS or
    /// JetStream is unavailable; nil when asked to stop meanwhile. Throws
    /// ``NodeRegistrationRefused`` when another live batond runs with the node id.
    private func registerNode() async throws -> NodeRegistry? {
        let config = await node.currentConfig
        var local = NodeRecord.local(node: config.node.id, instance: node.instance, labels: config.node.labels)
        local.capacity = config.node.capacity
        let me = local
        serviceManager.status("registering node \(me.node)")
        var attempt = 0
        while !Task.isShuttingDownGracefully {
            do {
                return try await cancelWhenGracefulShutdown { [client, logger] in
                    // Writes wait at most one heartbeat interval: a stuck one is retried at the next
                    // heartbeat rather than delaying it.
                    try await NodeRegistry.register(
                        jetStream: JetStream(client: client, timeout: NodeRegistry.defaultHeartbeatInterval), cluster: config.cluster, me: me,
                        replicas: config.nats.replicas, logger: logger)
                }
            } catch let refusal as NodeRegistrationRefused {
                logger.critical("\(refusal.description)")
                serviceManager.status("refused to start: node id \(me.node) is in use on host \(refusal.other.hostname) (pid \(refusal.other.pid))")
                await client.close()
                throw refusal
            } catch {
                if Task.isShuttingDownGracefully { break }
                attempt += 1
                logger.warning("cannot register in the node registry yet; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(200 * min(attempt, 10)))
            }
        }
        return nil
    }

    private func reloadOnSIGHUP(_ signals: UnixSignalsSequence) async {
        for await _ in signals.cancelOnGracefulShutdown() {
            serviceManager.reloading()
            do {
                let newConfig = try BatonConfig.load(path: configPath)
                await node.reload(newConfig)
            } catch {
                logger.error("config reload rejected; the running config stays", metadata: ["errors": "\(error.errors.map(\.description))"])
            }
            serviceManager.ready(status: await node.status().summaryLine)
        }
    }
}
