import Backends
import BatonCore
import Control
import Foundation
import Logging
import NATS

/// The other nodes as placement needs them: a watch of the cluster's node registry
/// (``NodeRegistry``), whose entries every batond rewrites each heartbeat interval with its
/// labels and capacity, and of the drained nodes (``DrainRecord``, `batonctl drain`).
///
/// A node counts as live while its latest entry was received within ``liveWindow`` on this
/// host's monotonic clock (a crashed node's entry expires silently on NATS 2.9), and until its
/// entry is deleted (a graceful exit).
public actor ClusterView {
    private let jetStream: JetStream
    private let cluster: String
    private let logger: Logger
    /// How recent a node's last registry write must be for it to count as live.
    public nonisolated let liveWindow: Duration
    private var records: [String: (record: NodeRecord, receivedAt: MonotonicInstant)] = [:]
    private var drainRecords: [String: DrainRecord] = [:]
    private let replicas: Int
    private var caughtUp = false
    private var drainsCaughtUp = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    /// Creates a view of `cluster`'s registry; ``run()`` watches it.
    public init(
        jetStream: JetStream, cluster: String, heartbeatInterval: Duration = NodeRegistry.defaultHeartbeatInterval, replicas: Int = 1, logger: Logger
    ) {
        self.jetStream = jetStream
        self.replicas = replicas
        self.cluster = cluster
        self.liveWindow = NodeRegistry.heartbeatWait(interval: heartbeatInterval)
        self.logger = logger
    }

    /// The live nodes' records, by node id.
    public func liveNodes(now: MonotonicInstant = MonotonicClock.now()) -> [String: NodeRecord] {
        var live: [String: NodeRecord] = [:]
        for (node, entry) in records where now - entry.receivedAt <= liveWindow { live[node] = entry.record }
        return live
    }

    /// The drains in force at wall-clock time `now` (seconds since 1970), by node id; an expired
    /// one (past its `until`) is left out.
    public func drains(now: Double = Date().timeIntervalSince1970) -> [String: DrainRecord] {
        drainRecords.filter { $0.value.isActive(at: now) }
    }

    /// Whether the watches delivered the registry's and the drains' current entries at least once.
    public var isReady: Bool { caughtUp && drainsCaughtUp }

    /// Waits until the registry's and the drains' current entries arrived, or `limit` passed.
    public func waitUntilReady(limit: Duration) async {
        if isReady { return }
        let timeout = Task { [weak self] in
            try? await Task.sleep(for: limit)
            await self?.releaseWaiters()
        }
        await withCheckedContinuation { waiters.append($0) }
        timeout.cancel()
    }

    private func releaseWaiters() {
        let pending = waiters
        waiters = []
        for waiter in pending { waiter.resume() }
    }

    /// Watches the registry and the drains until the task is cancelled, starting over after a
    /// failure.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.watchDrains() }
            await self.watchRegistry()
            group.cancelAll()
        }
    }

    private func watchDrains() async {
        var attempt = 0
        while !Task.isCancelled {
            do {
                let kv = try await DrainStore.open(jetStream: jetStream, cluster: cluster, replicas: replicas)
                let watch = try await kv.watch(">", options: KeyValueWatchOptions(idleHeartbeat: .seconds(5)))
                attempt = 0
                var seen: Set<String> = []
                var initial = true
                for try await event in watch {
                    switch event {
                    case .initialValuesDone:
                        // A key deleted while the watch was down is gone from the snapshot.
                        if initial { for node in drainRecords.keys where !seen.contains(node) { drainRecords[node] = nil } }
                        initial = false
                        drainsCaughtUp = true
                        if isReady { releaseWaiters() }
                    case .entry(let entry):
                        seen.insert(entry.key)
                        if entry.operation == .put, let record = try? JSONDecoder().decode(DrainRecord.self, from: Data(entry.value.readableBytesView)) {
                            if drainRecords[entry.key] != record { logger.notice("node drain recorded", metadata: ["node": "\(entry.key)", "by": "\(record.by)"]) }
                            drainRecords[entry.key] = record
                        } else {
                            if drainRecords[entry.key] != nil { logger.notice("node drain lifted", metadata: ["node": "\(entry.key)"]) }
                            drainRecords[entry.key] = nil
                        }
                    }
                }
                await watch.stop()
            } catch {
                if Task.isCancelled { break }
                attempt += 1
                if attempt == 1 { logger.warning("drain watch failed; retrying", metadata: ["error": "\(error)"]) }
                try? await Task.sleep(for: .milliseconds(min(2000, 200 * attempt)))
            }
        }
    }

    private func watchRegistry() async {
        var attempt = 0
        while !Task.isCancelled {
            do {
                let kv = try await jetStream.keyValue(NodeRecord.registryBucket(cluster: cluster))
                let watch = try await kv.watch(">", options: KeyValueWatchOptions(idleHeartbeat: .seconds(2)))
                attempt = 0
                for try await event in watch {
                    switch event {
                    case .initialValuesDone:
                        caughtUp = true
                        if isReady { releaseWaiters() }
                    case .entry(let entry):
                        apply(entry)
                    }
                }
                await watch.stop()
            } catch {
                if Task.isCancelled { break }
                attempt += 1
                if attempt == 1 { logger.warning("node registry watch failed; retrying", metadata: ["error": "\(error)"]) }
                try? await Task.sleep(for: .milliseconds(min(2000, 200 * attempt)))
            }
        }
        releaseWaiters()
    }

    private func apply(_ entry: KeyValueEntry) {
        guard entry.operation == .put else {
            records[entry.key] = nil
            return
        }
        guard let record = try? JSONDecoder().decode(NodeRecord.self, from: Data(entry.value.readableBytesView)) else { return }
        records[entry.key] = (record, MonotonicClock.now())
    }
}
