import Backends
import BatonCore
import BatonEvents
import Foundation
import Logging
import Synchronization

/// Executes one app's ``FlightRecorder`` on one node: feeds it the supervisor's lease
/// observations and notifications and the backend's notices, publishes what it returns
/// (through the node's ``EventPublisher``, never waiting for NATS), and completes each
/// failover or switchover record with the old node's `stepping-down` event from the stream and
/// the promotion's data-loss facts from the replica.
actor AppEventRecorder {
    /// Behind a lock rather than on the actor: ``observe(_:at:)`` is called synchronously by the
    /// app supervisor for every lease observation, without a hop to this actor.
    private let recorder: Mutex<FlightRecorder>
    private let publisher: EventPublisher
    private let reader: EventReader
    private let replica: (any AppReplica)?
    /// The app's VIPs (`address/prefix on interface`), named in the events that move them.
    private let vips: [String]
    private let logger: Logger

    init(recorder: FlightRecorder, publisher: EventPublisher, reader: EventReader, replica: (any AppReplica)?, vips: [String], logger: Logger) {
        self.recorder = Mutex(recorder)
        self.publisher = publisher
        self.reader = reader
        self.replica = replica
        self.vips = vips
        self.logger = logger
    }

    nonisolated func observe(_ observation: LeaseObservation, at instant: MonotonicInstant) {
        recorder.withLock { $0.observe(observation, now: instant) }
    }

    func record(_ notification: AppLifecycle.Notification) async {
        let output = recorder.withLock { $0.record(notification, now: MonotonicClock.now(), wall: Date().timeIntervalSince1970) }
        for var event in output.events {
            // VIP moves: claimed before the backend started (active), removed before the release.
            if !vips.isEmpty, event.kind == .active || event.kind == .released || event.kind == .fenced {
                let moved = event.kind == .active ? "VIPs claimed here: " : "VIPs removed here: "
                event.detail = (event.detail.map { $0 + "; " } ?? "") + moved + vips.joined(separator: ", ")
            }
            // The promotion that preceded it (every activation of a replicated app, the first too).
            if event.kind == .active, let replica, let promotion = await replica.status().promotion, promotion.hasPrefix("epoch \(event.epoch ?? 0):") {
                event.detail = (event.detail.map { $0 + "; " } ?? "") + "SQLite promotion: " + promotion
            }
            publisher.publish(event)
        }
        if let draft = output.handover { await complete(draft) }
    }

    func record(_ notice: AppBackendNotice) {
        let (cluster, node, app) = recorder.withLock { ($0.cluster, $0.me.node, $0.app) }
        let kind: BatonEvent.Kind
        switch notice {
        case .backendDown: kind = .backendDown
        case .backendRestarted: kind = .backendRestarted
        case .strayStopped, .cannotStop: kind = .observed
        }
        publisher.publish(
            BatonEvent(
                time: Date().timeIntervalSince1970, cluster: cluster, node: node, app: app, kind: kind,
                detail: notice.description))
    }

    /// Reads what the record needs beyond this node's clock (bounded: the stream read times out
    /// with the JetStream context), then publishes it.
    private func complete(_ draft: HandoverDraft) async {
        var oldStop: Double?
        if draft.graceful {
            do {
                if let event = try await reader.lastEvent(app: draft.app, kind: .steppingDown), event.node == draft.fromNode, event.epoch == draft.fromEpoch,
                    event.time >= draft.activeWall - 600
                {
                    oldStop = event.time
                }
            } catch {
                logger.info("cannot read the old node's stepping-down event; downtime is measured from the release seen here", metadata: ["error": "\(error)"])
            }
        }
        var dataLoss: BatonEvent.DataLoss?
        if let replica, let facts = await replica.status().promotionDataLoss, facts.epoch == draft.toEpoch {
            dataLoss = facts.dataLoss
        }
        let event = draft.complete(oldStopWall: oldStop, dataLoss: dataLoss)
        logger.notice("\(event.detail ?? "handover")", metadata: ["epoch": "\(draft.toEpoch)", "kind": "\(event.kind.rawValue)"])
        publisher.publish(event)
    }
}
