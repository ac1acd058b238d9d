import Backends
import BatonCore
import Foundation
import Logging
import NATS

/// The other nodes as placement needs them: a watch of the cluster's node registry
/// (``NodeRegistry``), whose entries every batond rewrites each heartbeat interval with its
/// labels and capacity.
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
    private var caughtUp = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    /// Creates a view of `cluster`'s registry; ``run()`` watches it.
    public init(jetStream: JetStream, cluster: String, heartbeatInterval: Duration = NodeRegistry.defaultHeartbeatInterval, logger: Logger) {
        self.jetStream = jetStream
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

    /// Whether the watch delivered the registry's current entries at least once.
    public var isReady: Bool { caughtUp }

    /// Waits until the registry's current entries arrived, or `limit` passed.
    public func waitUntilReady(limit: Duration) async {
        if caughtUp { return }
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

    /// Watches the registry until the task is cancelled, starting over after a failure.
    public func run() async {
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
                        releaseWaiters()
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
