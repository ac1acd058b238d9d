import BatonCore
import BatonEvents
import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Supervisor

/// The node's metrics that do not come from an app's status, sampled every second until batond
/// stops:
/// - `baton_vip_present{app,node,address,interface}`: 1 when the kernel lists the configured
///   VIP on its interface (read with netlink), whatever Baton's claim state says, on every node;
/// - `baton_events_published_total{node}` and `baton_events_dropped_total{node,reason}`
///   (`buffer_full`: the event buffer was full; `publish_failed`: the server did not accept it
///   after the retries), from the event publisher's counts.
struct NodeMetricsSampler: Service {
    let node: NodeSupervisor
    let nodeID: String
    let events: EventPublisher
    let logger: Logger

    static let vipPresent = "baton_vip_present"
    static let eventsPublished = "baton_events_published_total"
    static let eventsDropped = "baton_events_dropped_total"

    func run() async throws {
        let reader = VIPPresenceReader(logger: logger)
        defer { reader.shutdown() }
        var counts = EventCounts()
        var shown = Set<VIPSeries>()
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            counts.record(published: events.published, dropped: events.dropped, failed: events.failed, node: nodeID)
            let presences = await reader.read(apps: await node.currentConfig.apps)
            shown = Self.record(presences, node: nodeID, replacing: shown)
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
        }
    }

    /// One `baton_vip_present` series.
    struct VIPSeries: Hashable {
        var app: String
        var address: String
        var interface: String

        func dimensions(node: String) -> [(String, String)] { [("app", app), ("node", node), ("address", address), ("interface", interface)] }
    }

    /// Records `presences`; series of VIPs no longer configured are removed. Returns the series
    /// now shown.
    static func record(_ presences: [VIPPresence], node: String, replacing shown: Set<VIPSeries>) -> Set<VIPSeries> {
        var now = Set<VIPSeries>()
        for presence in presences {
            let series = VIPSeries(app: presence.app, address: presence.address, interface: presence.interface)
            now.insert(series)
            Gauge(label: vipPresent, dimensions: series.dimensions(node: node)).record(presence.present ? 1 : 0)
        }
        for gone in shown.subtracting(now) { Gauge(label: vipPresent, dimensions: gone.dimensions(node: node)).destroy() }
        return now
    }

    /// The event publisher's counts already turned into counter increments.
    struct EventCounts {
        var published = 0
        var dropped = 0
        var failed = 0
        var started = false

        mutating func record(published: Int, dropped: Int, failed: Int, node: String) {
            let publishedCounter = Counter(label: NodeMetricsSampler.eventsPublished, dimensions: [("node", node)])
            let droppedCounter = Counter(label: NodeMetricsSampler.eventsDropped, dimensions: [("node", node), ("reason", "buffer_full")])
            let failedCounter = Counter(label: NodeMetricsSampler.eventsDropped, dimensions: [("node", node), ("reason", "publish_failed")])
            if !started {
                // Every series exists from the start, at 0.
                for counter in [publishedCounter, droppedCounter, failedCounter] { counter.increment(by: 0) }
                started = true
            }
            publishedCounter.increment(by: max(0, published - self.published))
            droppedCounter.increment(by: max(0, dropped - self.dropped))
            failedCounter.increment(by: max(0, failed - self.failed))
            self.published = max(self.published, published)
            self.dropped = max(self.dropped, dropped)
            self.failed = max(self.failed, failed)
        }
    }
}
