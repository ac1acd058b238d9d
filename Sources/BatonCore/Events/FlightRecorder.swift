/// Turns what one app's supervisor sees on one node (lease observations, lifecycle
/// notifications) into ``BatonEvent``s, and measures each failover or switchover into this
/// node. No I/O: the adapter passes the clocks with every input, publishes the events, and
/// completes a ``HandoverDraft`` with what only the stream and the replica know (the old node's
/// `stepping-down` time, the promotion's data-loss facts).
public struct FlightRecorder: Sendable {
    /// What one input produced.
    public struct Output: Sendable, Hashable {
        /// Events to publish now.
        public var events: [BatonEvent] = []
        /// A failover or switchover into this node to complete and publish (set together with
        /// the ``BatonEvent/Kind/active`` event).
        public var handover: HandoverDraft?
    }

    /// The previous holder as this node last saw it.
    struct Previous: Sendable, Hashable {
        var holder: LeaseHolder
        var token: UInt64
        var lastRenewSeen: MonotonicInstant?
        var releaseSeen: MonotonicInstant?
        var target: String?
    }

    public let cluster: String
    public let app: String
    /// This batond.
    public let me: LeaseHolder
    private var previous: Previous?
    /// The previous holder when this node took the lease, and when.
    private var takeover: (previous: Previous?, acquiredAt: MonotonicInstant, token: UInt64)?
    private var steppingDownSince: MonotonicInstant?
    /// The token this node took last (what a step-down gives up).
    private var heldToken: UInt64?

    /// Creates a recorder for `app` on the batond `me`.
    public init(cluster: String, app: String, me: LeaseHolder) {
        self.cluster = cluster
        self.app = app
        self.me = me
    }

    /// Feeds a lease observation made at `now`.
    public mutating func observe(_ observation: LeaseObservation, now: MonotonicInstant) {
        switch observation {
        case .held(let holder, _, let token, _):
            guard holder != me else { return }
            if let previous, previous.holder == holder, previous.token == token, previous.releaseSeen == nil {
                self.previous?.lastRenewSeen = now
            } else {
                previous = Previous(holder: holder, token: token, lastRenewSeen: now)
            }
        case .released(let holder, let token, let handoffTo):
            guard holder != me else { return }
            previous = Previous(holder: holder, token: token, lastRenewSeen: previous?.holder == holder ? previous?.lastRenewSeen : nil, releaseSeen: now, target: handoffTo)
        case .free(let handoffTo):
            // A delete whose record did not say who released: the last holder seen, gracefully.
            if previous != nil, previous?.releaseSeen == nil {
                previous?.releaseSeen = now
                previous?.target = handoffTo
            }
        case .vanished:
            break  // expired: the last renew seen stays the start of the downtime
        }
    }

    /// Feeds a lifecycle notification made at `now` (monotonic) / `wall` (seconds since 1970).
    public mutating func record(_ notification: AppLifecycle.Notification, now: MonotonicInstant, wall: Double) -> Output {
        var output = Output()
        func event(_ kind: BatonEvent.Kind, epoch: UInt64? = nil, detail: String? = nil, duration: Duration? = nil) {
            output.events.append(
                BatonEvent(
                    time: wall, cluster: cluster, node: me.node, app: app, kind: kind, epoch: epoch, detail: detail,
                    durationMilliseconds: duration.map(Self.milliseconds)))
        }
        switch notification {
        case .acquired(let token):
            takeover = (previous, now, token)
            heldToken = token
            previous = nil
            event(.acquired, epoch: token)
        case .becameActive(let token):
            let acquiredAt = takeover?.token == token ? takeover?.acquiredAt : nil
            event(.active, epoch: token, duration: acquiredAt.map { now - $0 })
            if let takeover, takeover.token == token, let before = takeover.previous {
                output.handover = HandoverDraft(
                    cluster: cluster, app: app, fromNode: before.holder.node, fromEpoch: before.token, toNode: me.node, toEpoch: token,
                    graceful: before.releaseSeen != nil, requestedTarget: before.target,
                    sinceReleaseSeen: before.releaseSeen.map { now - $0 }, sinceLastRenewSeen: before.lastRenewSeen.map { now - $0 },
                    sinceAcquire: now - takeover.acquiredAt, activeWall: wall)
            }
            takeover = nil
        case .demoting(let reason):
            steppingDownSince = now
            event(.steppingDown, epoch: heldToken, detail: reason.description)
        case .released(let token):
            event(.released, epoch: token, duration: steppingDownSince.map { now - $0 })
            steppingDownSince = nil
        case .releaseUnconfirmed(let token, let reason):
            event(.releaseUnconfirmed, epoch: token, detail: reason, duration: steppingDownSince.map { now - $0 })
            steppingDownSince = nil
        case .fenced(let token, let reason): event(.fenced, epoch: token, detail: reason)
        case .fenceUnconfirmed(let token, let reason): event(.fenceUnconfirmed, epoch: token, detail: reason)
        case .flushAbandoned(let token, let attempts, let reason):
            event(.flushAbandoned, epoch: token, detail: "final WAL flush gave up after \(attempts) attempt(s): \(reason)")
        case .duplicateInstance(let other): event(.duplicateInstance, detail: "another batond runs as \(other)")
        case .hooksRan(_, let epoch, let summary, let succeeded): event(.hook, epoch: epoch, detail: succeeded ? summary : "hook failed: \(summary)")
        case .demotionStepFailed(let step, let reason): event(.observed, detail: "stepping down: \(step.rawValue) failed: \(reason)")
        case .observed(let text): event(.observed, detail: text)
        case .flushRetrying, .staleResult, .ignored:
            break  // the log has them; the history keeps what an operator looks back for
        }
        return output
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.totalNanoseconds) / 1e6
    }
}

/// A failover or switchover into this node, measured on this node's clock; completed into the
/// flight record by ``complete(oldStopWall:dataLoss:)``.
public struct HandoverDraft: Sendable, Hashable {
    public var cluster: String
    public var app: String
    public var fromNode: String
    public var fromEpoch: UInt64
    public var toNode: String
    public var toEpoch: UInt64
    public var graceful: Bool
    public var requestedTarget: String?
    /// From seeing the release to healthy.
    public var sinceReleaseSeen: Duration?
    /// From the old holder's last renew seen to healthy.
    public var sinceLastRenewSeen: Duration?
    /// From this node's acquire to healthy.
    public var sinceAcquire: Duration
    /// When the app became healthy here (seconds since 1970).
    public var activeWall: Double

    /// The flight record. `oldStopWall` is the time of the old node's `stepping-down` event for
    /// `fromEpoch` (nil when not found): used for a graceful handover when it is not later than
    /// this node's healthy time (two wall clocks: a negative interval means they disagree, and
    /// this node's own measurement is used). `dataLoss` comes from the promotion (nil: no
    /// replicated database).
    public func complete(oldStopWall: Double?, dataLoss: BatonEvent.DataLoss?) -> BatonEvent {
        let downtime: Double
        let from: BatonEvent.Handover.DowntimeStart
        if graceful, let oldStopWall, activeWall >= oldStopWall {
            (downtime, from) = ((activeWall - oldStopWall) * 1000, .oldBackendStop)
        } else if graceful, let sinceReleaseSeen {
            (downtime, from) = (FlightRecorder.milliseconds(sinceReleaseSeen), .releaseSeen)
        } else if let sinceLastRenewSeen {
            (downtime, from) = (FlightRecorder.milliseconds(sinceLastRenewSeen), .lastRenewSeen)
        } else {
            (downtime, from) = (FlightRecorder.milliseconds(sinceAcquire), .acquire)
        }
        let handover = BatonEvent.Handover(
            fromNode: fromNode, fromEpoch: fromEpoch, toNode: toNode, toEpoch: toEpoch, graceful: graceful, requestedTarget: requestedTarget,
            downtimeMilliseconds: downtime, downtimeFrom: from, dataLoss: dataLoss)
        let kind: BatonEvent.Kind = graceful ? .switchover : .failover
        let how = graceful ? "released by \(fromNode) (epoch \(fromEpoch))" : "lease of \(fromNode) (epoch \(fromEpoch)) ran out"
        let detail = "\(app) moved from \(fromNode) to \(toNode): \(how); down \(Self.format(downtime)) ms (from \(from.rawValue))"
        return BatonEvent(
            time: activeWall, cluster: cluster, node: toNode, app: app, kind: kind, epoch: toEpoch, detail: detail, durationMilliseconds: downtime,
            handover: handover)
    }

    static func format(_ milliseconds: Double) -> String {
        let rounded = (milliseconds * 10).rounded() / 10
        return "\(rounded)"
    }
}

extension BatonEvent.DataLoss {
    /// The data-loss record of a promotion: `txid` promoted; `transactionsAppliedDuringDrain`
    /// beyond the replica's position; `finalMarker` when the old node handed off gracefully.
    /// Every shipped record is applied by the drain, so the newest shipped txid is the promoted
    /// one unless an incomplete record was dropped or the promotion recovered without the
    /// stream (then it is unknown).
    public static func fromPromotion(
        promotedTxid: UInt64?, finalMarker: Bool, discardedIncompleteRecord: Bool, recoveredWithoutStream: Bool,
        lastTransactionAgeMilliseconds: Double?
    ) -> BatonEvent.DataLoss {
        let lastShipped: UInt64? = discardedIncompleteRecord || recoveredWithoutStream ? nil : promotedTxid
        let unshipped: String
        if finalMarker {
            unshipped = "none: the old active node's final marker was applied"
        } else if let promotedTxid {
            unshipped =
                "unknown: transactions the old active node committed after txid \(promotedTxid) were not shipped and are lost (crash failover)"
                + (discardedIncompleteRecord ? "; an incomplete last record was dropped" : "")
                + (recoveredWithoutStream ? "; the promotion recovered without the replication stream" : "")
        } else {
            unshipped = "unknown: nothing had been replicated"
        }
        return BatonEvent.DataLoss(
            promotedTxid: promotedTxid, lastShippedTxid: lastShipped, finalMarker: finalMarker, discardedIncompleteRecord: discardedIncompleteRecord,
            lastTransactionAgeMilliseconds: lastTransactionAgeMilliseconds, unshipped: unshipped)
    }
}
