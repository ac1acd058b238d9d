import BatonCore
import Backends
import BatonEvents
import BatonHTTP
import Control
import Foundation
import Logging
import Metrics
import NATS
import Prometheus
import ServiceLifecycle
import Supervisor

/// batond's metrics: a Prometheus registry behind swift-metrics (bootstrapped here only; the
/// libraries use the Metrics API), plus the gauges sampled from the node's status.
enum BatondMetrics {
    /// The registry `/metrics` renders.
    static let registry = PrometheusCollectorRegistry()

    /// Makes swift-metrics record into ``registry``. Once per process.
    static func bootstrap() {
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    }

    /// The Prometheus text exposition of every metric.
    static func text() -> String { registry.emitToString() }

    /// Status-derived gauge names (every one with `app` and `node` labels; `baton_role` also
    /// `role`), see README "Metrics".
    static let role = "baton_role"
    static let fencingToken = "baton_fencing_token"
    static let backendRunning = "baton_backend_running"
    static let paused = "baton_app_paused"
    static let replicationTxid = "baton_replication_txid"
    static let replicationLag = "baton_replication_lag_transactions"
    static let replicationCommitAge = "baton_replication_last_commit_age_seconds"
    static let snapshotsRestored = "baton_replication_snapshots_restored"
    static let replicationLagBytes = "baton_replication_lag_bytes"
    static let replicationLagSeconds = "baton_replication_lag_seconds"
    static let snapshotAge = "baton_replication_snapshot_age_seconds"
    static let natsConnected = "baton_nats_connected"
    static let natsReconnects = "baton_nats_reconnects_total"
    static let natsDisconnects = "baton_nats_disconnects_total"
}

/// Follows both NATS connections' events (connected gauge, reconnect and disconnect counters,
/// label `connection`: `main` or `replication`) until batond stops, and turns the node's status
/// into the state gauges (role, fencing token, backend, pause, replication position and lag)
/// when `/metrics` is scraped (``record(_:node:)``): the gauges are as current as the scrape,
/// and an idle node does not ask every app for its status every second for nobody.
struct MetricsSampler: Service {
    let nodeID: String
    let connections: [(name: String, client: NATSClient)]

    func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            for (name, client) in connections {
                let dimensions = [("node", nodeID), ("connection", name)]
                let connected = Gauge(label: BatondMetrics.natsConnected, dimensions: dimensions)
                let reconnects = Counter(label: BatondMetrics.natsReconnects, dimensions: dimensions)
                let disconnects = Counter(label: BatondMetrics.natsDisconnects, dimensions: dimensions)
                connected.record(client.isConnected ? 1 : 0)
                reconnects.increment(by: 0)
                disconnects.increment(by: 0)
                let events = client.events()
                group.addTask {
                    for await event in events.cancelOnGracefulShutdown() {
                        switch event {
                        case .connected: connected.record(1)
                        case .reconnected:
                            connected.record(1)
                            reconnects.increment()
                        case .disconnected:
                            connected.record(0)
                            disconnects.increment()
                        case .closed: connected.record(0)
                        default: break
                        }
                    }
                }
            }
            // The event streams end when batond closes the connections, before this service's
            // turn to stop: it runs until its graceful shutdown is asked for (ServiceGroup takes an
            // earlier end as a failure).
            group.addTask { try? await gracefulShutdown() }
            await group.waitForAll()
        }
    }

    static let roles: [AppStatus.Role] = [.passive, .acquiring, .promoting, .active, .demoting, .fencing, .stopped]

    static func record(_ status: NodeStatus, node: String) {
        let now = Date().timeIntervalSince1970
        for app in status.apps {
            let dimensions = [("app", app.name), ("node", node)]
            for role in roles {
                Gauge(label: BatondMetrics.role, dimensions: dimensions + [("role", role.rawValue)]).record(app.role == role ? 1 : 0)
            }
            Gauge(label: BatondMetrics.fencingToken, dimensions: dimensions).record(Double(app.token ?? 0))
            Gauge(label: BatondMetrics.backendRunning, dimensions: dimensions).record(app.backendRunning ? 1 : 0)
            Gauge(label: BatondMetrics.paused, dimensions: dimensions).record(app.paused ? 1 : 0)
            if let replication = app.replication {
                Gauge(label: BatondMetrics.replicationTxid, dimensions: dimensions).record(Double(replication.txid ?? 0))
                // The lag is known on a node that applies; the active node is never behind.
                let lag = replication.role == .shipping ? 0 : replication.lagTransactions
                if let lag { Gauge(label: BatondMetrics.replicationLag, dimensions: dimensions).record(Double(lag)) }
                if let commit = replication.lastCommitTime, replication.role == .applying {
                    Gauge(label: BatondMetrics.replicationCommitAge, dimensions: dimensions).record(max(0, now - commit))
                }
                Gauge(label: BatondMetrics.snapshotsRestored, dimensions: dimensions).record(Double(replication.snapshotsRestored ?? 0))
                let shipping = replication.role == .shipping
                if let bytes = shipping ? 0 : replication.lagBytes {
                    Gauge(label: BatondMetrics.replicationLagBytes, dimensions: dimensions).record(Double(bytes))
                }
                if let seconds = shipping ? 0 : replication.lagSeconds {
                    Gauge(label: BatondMetrics.replicationLagSeconds, dimensions: dimensions).record(seconds)
                }
                if let snapshot = replication.lastSnapshotTime {
                    Gauge(label: BatondMetrics.snapshotAge, dimensions: dimensions).record(max(0, now - snapshot))
                }
            }
        }
    }
}

/// What batond's HTTP server asks, answered by the node supervisor (this node), the control
/// client (the cluster, and commands — the same NATS control service `batonctl` uses) and the
/// metrics registry.
struct BatondHTTPNode: BatonHTTPNode {
    let node: NodeSupervisor
    let client: NATSClient
    let control: ControlClient
    let nodeID: String
    let cluster: String
    /// The event history's reads (the page's history and live events) go over the replication
    /// connection, as the node's event publishing does: never in front of a lease renew.
    let eventsClient: NATSClient
    let cache = ClusterStatusCache()

    init(node: NodeSupervisor, client: NATSClient, eventsClient: NATSClient, cluster: String, nodeID: String) {
        self.node = node
        self.client = client
        self.eventsClient = eventsClient
        self.cluster = cluster
        self.control = ControlClient(client: client, cluster: cluster)
        self.nodeID = nodeID
    }

    func localStatus() async -> NodeStatus? {
        await withTimeLimit(.seconds(2)) { [node] in await node.status() }
    }

    func clusterStatuses() async throws -> [NodeStatus] {
        try await cache.statuses(control: control)
    }

    func liveness() async -> Liveness {
        let limit = ServiceManagerLink.stallLimit
        let stalled = await withTimeLimit(.seconds(2)) { [node] in await node.stalledApps(maxAge: limit) }
        return Liveness(stalledApps: stalled ?? [], nodeAnswered: stalled != nil, limit: "\(limit)")
    }

    func send(_ command: ControlCommand, app: String, to target: String?, pauseFor: Duration?, node name: String, caller: String) async throws -> ControlReply {
        var control = control
        control.requester = ControlRequester(client: "batond's HTTP API on \(nodeID)", httpClient: caller)
        return try await control.send(command, app: app, to: target, pauseFor: pauseFor, node: name, timeout: .seconds(10))
    }

    func metricsText() async -> String {
        if let status = await localStatus() { MetricsSampler.record(status, node: nodeID) }
        return BatondMetrics.text()
    }

    func eventHistory(count: Int) async throws -> [BatonEvent] {
        try await EventReader(jetStream: JetStream(client: eventsClient), cluster: cluster).lastEvents(count)
    }

    func followEvents() async throws -> AsyncThrowingStream<BatonEvent, any Error> {
        try await EventReader(jetStream: JetStream(client: eventsClient), cluster: cluster).follow()
    }
}

/// The cluster's status for `/status`, `/events` and the control endpoints: one status request
/// at a time, its answer reused for half a second (every page open on every node would
/// otherwise ask once a second each). Replies are collected for up to 500 ms, or until as many
/// nodes answered as the last time (a full window every 10 s, so a node that joined is seen).
actor ClusterStatusCache {
    private var last: (at: ContinuousClock.Instant, statuses: [NodeStatus])?
    private var inFlight: Task<[NodeStatus], any Error>?
    private var expected = 0
    private var lastFullWindow = ContinuousClock.now

    func statuses(control: ControlClient) async throws -> [NodeStatus] {
        if let last, ContinuousClock.now - last.at < .milliseconds(500) { return last.statuses }
        if let inFlight { return try await inFlight.value }
        var expected = self.expected
        if ContinuousClock.now - lastFullWindow > .seconds(10) {
            expected = 0
            lastFullWindow = ContinuousClock.now
        }
        let enough = expected
        let task = Task {
            try await control.statuses(window: .milliseconds(500), until: { enough > 0 && $0.count >= enough }).statuses
        }
        inFlight = task
        defer { inFlight = nil }
        let statuses = try await task.value
        self.expected = statuses.count
        last = (ContinuousClock.now, statuses)
        return statuses
    }
}
