/// Which decision of an app's lifecycle an action belongs to. Every action that has a result
/// carries one and every result echoes it: the lifecycle takes a result only when its stamp is
/// the one it waits for, so a late answer to an older decision (a step that timed out, a renew
/// of a lease since lost, a fence of an earlier epoch) never acts on a newer one.
public struct Stamp: Sendable, Hashable, CustomStringConvertible {
    /// The lease token the decision was made under (0 before a lease is held).
    public var token: UInt64
    /// Counts the decisions of one lifecycle that expect a result; never repeats.
    public var generation: UInt64

    /// Creates a stamp.
    public init(token: UInt64, generation: UInt64) {
        self.token = token
        self.generation = generation
    }

    public var description: String { "epoch \(token), decision \(generation)" }
}

/// How stopping or fencing a backend (and removing an app's virtual IPs) ended.
public enum StopOutcome: Sendable, Hashable {
    /// Known gone: the backend does not run and the VIPs are absent.
    case confirmed
    /// Not known gone: the backend may still run or a VIP may still be present, and why.
    case unconfirmed(String)
}

/// The steps of becoming active, after the lease, in order. Steps an app does not use (no
/// replica, no VIP, no health check) are skipped.
public enum PromotionStep: String, Sendable, Hashable, CaseIterable {
    /// Drain the replication stream, verify the replica and move it into place; start shipping.
    case promoteReplica
    /// Add the app's virtual IPs and announce them.
    case claimAddresses
    /// Run the app's `before_active` hooks; a failure aborts the promotion.
    case beforeActive
    case startBackend
    case awaitHealthy
}

/// Why an active node gives its lease up.
public enum DemotionReason: Sendable, Hashable, CustomStringConvertible {
    case stepdown
    case switchover(to: String)
    case shutdown
    case healthFailed(String)
    case backendFailed(String)
    case promotionFailed(PromotionStep, String)
    case paused

    /// The node a switchover hands the lease to.
    public var handoffTarget: String? {
        if case .switchover(let node) = self { node } else { nil }
    }

    public var description: String {
        switch self {
        case .stepdown: "stepdown requested"
        case .switchover(let target): "switchover to \(target)"
        case .shutdown: "batond is stopping"
        case .healthFailed(let reason): "health check failed: \(reason)"
        case .backendFailed(let reason): "backend failed: \(reason)"
        case .promotionFailed(let step, let reason): "promotion step \(step.rawValue) failed: \(reason)"
        case .paused: "paused while acquiring"
        }
    }
}

/// The steps of becoming passive, in order. Steps an app does not use are skipped.
public enum DemotionStep: String, Sendable, Hashable, CaseIterable {
    case stopBackend
    /// Ship the WAL tail and the final marker, then stop shipping. A failed or timed-out
    /// attempt is retried, with the lease still held and renewed, until the configuration's
    /// `flushTimeout` has passed since the first attempt.
    case flushReplica
    /// Only when the final flush gave up: move the database (and its `-wal`) aside so that no
    /// later promotion or restore on this node overwrites the transactions that were not
    /// shipped, and report the loss. Then the demotion goes on.
    case setAsideDatabase
    /// Remove the app's virtual IPs.
    case releaseAddresses
    case releaseLease
}

/// One app's lifecycle on one node: a pure state machine. Feed it events with the current
/// monotonic time; it answers with the actions to run, in order. It never does I/O and never
/// reads a clock, so every rule is testable.
///
/// Safety rules it enforces:
/// - The backend is started only while a lease is held whose fence time is still ahead.
/// - Every renew is timed by when it was *sent*; at `sent + ttl - fenceBudget` without a newer
///   successful renew, the answer is ``Action/fence(token:)`` (SIGKILL, no graceful stop), and the
///   fence keeper is always armed with that same instant, for when batond itself cannot act.
/// - A passive node tries to acquire only after the observed holder's write is `ttl + skew` old,
///   never while paused, never within `ttl` of a reconnect, never within the cooldown after it
///   gave the lease up, and after higher-priority nodes had their head start.
/// - Losing the lease (a renew's compare-and-set fails, or the key vanishes) fences at once.
///
/// What a phase needs lives in its case of the internal `State` (the held lease only in the
/// phases that hold one, a step's stamp and deadline only while the step runs, the flush's
/// progress only while flushing, the cooldown only while passive); the struct keeps what all
/// phases share.
/// The code is split by concern: this file (the vocabulary, the shared data, ``handle(_:now:)``),
/// `AppLifecycle+State.swift` (the phases' data and the public views of it),
/// `AppLifecycle+Events.swift` (one handler per event), `AppLifecycle+Transitions.swift`
/// (promotion, demotion, fence, release) and `AppLifecycle+Deadlines.swift` (what a tick does,
/// when the next one is due).
public struct AppLifecycle: Sendable {
    /// Settings that do not change while the app runs.
    public struct Configuration: Sendable, Hashable {
        public var node: String
        public var instance: String
        public var timing: LeaseTiming
        /// Whether becoming active waits for a healthy check.
        public var hasHealthCheck: Bool
        /// Whether the app has a SQLite replica to promote and flush.
        public var hasReplica: Bool
        /// Whether the app has virtual IPs to claim and release.
        public var hasAddresses: Bool
        /// The bound on each promotion step.
        public var stepTimeout: Duration
        /// The bound on a graceful backend stop (the backend's own stop timeout plus margin);
        /// past it the backend is fenced.
        public var stopTimeout: Duration
        /// How long a node that gave a lease up waits before it may take one again.
        public var cooldown: Duration
        /// How long this node lets higher-priority nodes try first for a free lease (zero for the
        /// highest priority).
        public var priorityHoldback: Duration
        /// How soon a failed renew is retried.
        public var renewRetry: Duration
        /// How long the final flush of a graceful demotion may take in all, retries included
        /// (`sqlite.flush_timeout`). The lease is kept and renewed meanwhile, the backend stays
        /// stopped; past it the database is set aside (``DemotionStep/setAsideDatabase``).
        public var flushTimeout: Duration
        /// The pause between two attempts of the final flush.
        public var flushRetry: Duration
        /// The bound on the ``PromotionStep/beforeActive`` step; nil when the app has no
        /// `before_active` hooks (the step is skipped).
        public var beforeActiveTimeout: Duration?
        /// Where the renew grid starts, or nil for renews exactly one renew interval
        /// apart. With a phase, a renew is due at the last grid instant (`phase + k × renew` on
        /// the monotonic clock) that is at most one renew interval after the last write: never
        /// later than without the grid, earlier when the last write was off the grid (an
        /// acquire, a retry, a late tick).
        /// All the apps of a node with the same renew interval then renew at the same instants,
        /// so their writes, their answers and every other node's watch messages come in one
        /// burst per interval instead of one wake-up per app. Renewing early is always safe:
        /// the lease counts from each write's send time.
        public var renewPhase: Duration?

        /// Creates a configuration; `cooldown` defaults to twice the ttl, `renewRetry` to a
        /// quarter of the renew interval (at most 100 ms).
        public init(
            node: String, instance: String, timing: LeaseTiming, hasHealthCheck: Bool, hasReplica: Bool = false, hasAddresses: Bool = false,
            stepTimeout: Duration, stopTimeout: Duration, cooldown: Duration? = nil, priorityHoldback: Duration = .zero, renewRetry: Duration? = nil,
            flushTimeout: Duration = .seconds(15), flushRetry: Duration = .milliseconds(500)
        ) {
            self.node = node
            self.instance = instance
            self.timing = timing
            self.hasHealthCheck = hasHealthCheck
            self.hasReplica = hasReplica
            self.hasAddresses = hasAddresses
            self.stepTimeout = stepTimeout
            self.stopTimeout = stopTimeout
            self.cooldown = cooldown ?? timing.ttl * 2
            self.priorityHoldback = priorityHoldback
            self.renewRetry = renewRetry ?? min(timing.renew / 4, .milliseconds(100))
            self.flushTimeout = flushTimeout
            self.flushRetry = flushRetry
            self.beforeActiveTimeout = nil
            self.renewPhase = nil
        }

        /// When the renew after a lease write sent at `sentAt` is due (see ``renewPhase``).
        public func renewDue(after sentAt: MonotonicInstant) -> MonotonicInstant {
            let due = sentAt + timing.renew
            let interval = timing.renew.totalNanoseconds
            guard let renewPhase, interval > 0 else { return due }
            let offset = due.nanoseconds - renewPhase.totalNanoseconds
            // Floor division: the grid instant at or before `due`, also before the clock's origin.
            let remainder = ((offset % interval) + interval) % interval
            return MonotonicInstant(nanoseconds: due.nanoseconds - remainder)
        }
    }

    /// Where the app is: the public view of the internal `State`, without its data.
    public enum Phase: Sendable, Hashable {
        case passive
        case acquiring
        case promoting(PromotionStep)
        case active
        case demoting(DemotionStep, DemotionReason)
        /// The lease could not be kept: the backend is being killed.
        case fencing
        /// batond is shutting down and this app is done.
        case stopped
    }

    /// What happened, for the actor to feed in.
    public enum Event: Sendable, Hashable {
        case natsConnected
        case natsDisconnected
        /// The lease key changed, or its current value arrived (watch initial values).
        case leaseObserved(LeaseObservation)
        case acquireSucceeded(revision: UInt64, sentAt: MonotonicInstant, Stamp)
        case acquireFailed(LeaseWriteFailure, Stamp)
        case renewSucceeded(revision: UInt64, sentAt: MonotonicInstant, Stamp)
        /// A renew lost the compare-and-set to this node's own earlier renew, which had timed
        /// out here but reached the server (a stall): the lease is still ours, at `revision`.
        /// Which attempt landed is unknown, so the lease counts from the first unconfirmed one.
        case renewRecognized(revision: UInt64, Stamp)
        case renewFailed(LeaseWriteFailure, Stamp)
        /// The release finished: `nil` when the delete went through, else why it did not (the
        /// lease then frees at its expiry). Either way the node is done with the lease.
        case releaseFinished(LeaseWriteFailure?, Stamp)
        case promotionStepSucceeded(PromotionStep, Stamp)
        case promotionStepFailed(PromotionStep, String, Stamp)
        /// The graceful stop finished: the backend is gone, or it may still run (then it is
        /// fenced).
        case backendStopped(StopOutcome, Stamp)
        /// A demotion step after the backend stop finished (``DemotionStep/flushReplica``,
        /// ``DemotionStep/releaseAddresses``); `failure` says why it did not fully succeed.
        case demotionStepFinished(DemotionStep, failure: String?, Stamp)
        /// Fencing finished: the backend is dead and the VIPs gone (`.confirmed`), or that could
        /// not be confirmed (then the lease is not released: it runs out while the fence keeper
        /// kills and removes at its deadline).
        case fenceCompleted(StopOutcome, Stamp)
        /// The backend kept failing while active (restart budget spent).
        case backendFailed(String)
        case healthFailed(String)
        case stepdownRequested
        case switchoverRequested(to: String)
        case pauseRequested
        /// A pause that ends by itself `duration` after it was asked for (`batonctl pause
        /// --for`): until then it is ``pauseRequested``; at its end the app resumes.
        case pauseRequestedFor(Duration)
        case resumeRequested
        case shutdownRequested
        /// Another live batond runs with this node id (the node registry says so): never take
        /// the lease from now on.
        case duplicateInstanceReported(LeaseHolder)
        /// The app's placement on this node changed: whether it may take the lease, and the
        /// extra head start it gives other nodes (``PlacementPolicy``). A lease already held is
        /// not affected: moving it is a switchover.
        case placementChanged(PlacementGate)
        /// Time passed; check deadlines.
        case tick
    }

    /// What the actor must do, in order.
    public enum Action: Sendable, Hashable {
        /// Take the lease with a compare-and-set: over the stale entry at `replacing` (the holder's
        /// last write, older than its ttl), or by creating the key when it is free (`nil`, or the
        /// entry at `replacing` expired meanwhile).
        case acquireLease(replacing: UInt64?, Stamp)
        /// Update the lease key if its revision is still `revision`. Note the send time.
        case renewLease(revision: UInt64, Stamp)
        /// Delete the lease key if its revision is still `revision`, naming a switchover target.
        case releaseLease(revision: UInt64, handoffTo: String?, Stamp)
        /// Tell the fence keeper to kill the backend at `deadline` unless re-armed.
        case armFenceKeeper(token: UInt64, deadline: MonotonicInstant)
        /// The backend is stopped: the keeper has nothing to kill.
        case disarmFenceKeeper
        /// Run a promotion step under the stamp's token.
        case runPromotionStep(PromotionStep, Stamp)
        /// Stop the backend gracefully (SIGTERM, then SIGKILL after its stop timeout).
        case stopBackend(Stamp)
        /// Ship the replica's WAL tail and a final marker under the stamp's token, then stop
        /// shipping. May come again for the same token after a failed attempt.
        case flushReplica(Stamp)
        /// The final flush gave up: move the database aside (never overwrite it) and report the
        /// transactions that were not shipped; `reason` says why the flush failed.
        case setAsideDatabase(reason: String, Stamp)
        /// Remove the app's virtual IPs.
        case releaseAddresses(Stamp)
        /// Kill the backend now (SIGKILL / KillUnit), remove the app's virtual IPs and stop
        /// shipping, all at once.
        case fence(Stamp)
        /// The node no longer holds the lease: follow the active node (apply its WAL, keep the
        /// VIPs absent).
        case followActive
        /// Something worth a log line, an event and a status update.
        case notify(Notification)
    }

    /// Things operators want to know.
    public enum Notification: Sendable, Hashable {
        case acquired(token: UInt64)
        case becameActive(token: UInt64)
        case demoting(DemotionReason)
        case released(token: UInt64)
        /// The release's delete did not go through; the lease frees at its expiry.
        case releaseUnconfirmed(token: UInt64, reason: String)
        /// A demotion step did not fully succeed (the demotion goes on).
        case demotionStepFailed(DemotionStep, String)
        /// An attempt of the final flush failed; the lease is kept (renewed) and the flush is
        /// tried again until `giveUpIn` has passed.
        case flushRetrying(token: UInt64, attempt: Int, reason: String, giveUpIn: Duration)
        /// The final flush did not succeed within the flush timeout: transactions committed
        /// under `token` may not have been shipped. The database is set aside next.
        case flushAbandoned(token: UInt64, attempts: Int, reason: String)
        case fenced(token: UInt64, reason: String)
        /// Fencing could not confirm the backend gone or a VIP removed: the lease is not
        /// released; it runs out while the fence keeper kills and removes at its deadline.
        case fenceUnconfirmed(token: UInt64, reason: String)
        /// A result that belongs to an older decision arrived late and was dropped.
        case staleResult(String)
        case duplicateInstance(LeaseHolder)
        /// Something an operator should see that changes nothing here (a VIP removed from
        /// outside and added again, another host answering for a VIP, ...).
        case observed(String)
        case ignored(String)
        /// The hooks of `point` ran under `epoch` (reported by the supervisor that runs them,
        /// never by the lifecycle): `summary` says how it went.
        case hooksRan(point: HookPoint, epoch: UInt64, summary: String, succeeded: Bool)
    }


    public let configuration: Configuration
    /// The phase and the data only that phase has.
    var state: State = .passive(cooldownUntil: nil)
    /// Whether the app is paused, and until when.
    var pause: Pause
    /// What this node knows of the lease key from the watch (and from its own last write).
    var leaseView: LeaseView = .nothing
    /// Whether another live batond uses this node id (it renewed a lease under it).
    public internal(set) var duplicateDetected = false
    /// What the app's placement lets this node do (see ``Event/placementChanged(_:)``).
    public internal(set) var placement: PlacementGate
    var connected = false
    var everConnected = false
    var knowsLeaseState = false
    /// No acquisition before this instant: a full ttl after a reconnect or an unanswered
    /// create, a short pause after a lost create. Kept across phases (a reconnect while active
    /// still holds back the next acquisition).
    var holdoffUntil: MonotonicInstant?
    /// The release whose answer has not come yet. It can outlive the lease: a node that saw
    /// someone else's write, or fenced, is done with the lease before the delete is answered,
    /// and the late answer is then taken without effect rather than reported as stale.
    var releaseInFlight: Stamp?
    /// The generation of the last stamp handed out.
    var lastGeneration: UInt64 = 0
    /// The holder and ttl last reported as disagreeing with this node's config.
    var reportedTimingDisagreement: (node: String, ttl: Duration)?

    /// Creates a passive lifecycle.
    public init(configuration: Configuration, paused: Bool = false, placement: PlacementGate = .open) {
        self.configuration = configuration
        self.pause = paused ? .indefinite : .none
        self.placement = placement
    }

    var timing: LeaseTiming { configuration.timing }
    var me: LeaseHolder { LeaseHolder(node: configuration.node, instance: configuration.instance) }

    /// A new stamp under `token` (the held lease's, 0 for an acquisition).
    mutating func newStamp(under token: UInt64) -> Stamp {
        lastGeneration += 1
        return Stamp(token: token, generation: lastGeneration)
    }

    // MARK: - Events

    /// Applies `event` at `now` and returns the actions to run, in order.
    public mutating func handle(_ event: Event, now: MonotonicInstant) -> [Action] {
        var actions: [Action] = []
        switch event {
        case .natsConnected:
            connected = true
            if everConnected {
                // What happened during the outage is unknown: wait a full ttl.
                holdoffUntil = max(holdoffUntil ?? now, now + timing.ttl)
            }
            everConnected = true
        case .natsDisconnected:
            connected = false
        case .leaseObserved(let observation):
            observe(observation, now: now, into: &actions)
        case .acquireSucceeded(let revision, let sentAt, let stamp):
            acquireSucceeded(revision: revision, sentAt: sentAt, stamp, now: now, into: &actions)
        case .acquireFailed(let failure, let stamp):
            acquireFailed(failure, stamp, now: now, into: &actions)
        case .renewSucceeded(let revision, let sentAt, let stamp):
            guard take(stamp, .renew, "renew result", into: &actions) else { break }
            renewWentThrough(revision: revision, sentAt: sentAt, into: &actions)
        case .renewRecognized(let revision, let stamp):
            renewRecognized(revision: revision, stamp, into: &actions)
        case .renewFailed(let failure, let stamp):
            renewFailed(failure, stamp, now: now, into: &actions)
        case .releaseFinished(let failure, let stamp):
            releaseFinished(failure, stamp, now: now, into: &actions)
        case .promotionStepSucceeded(let step, let stamp):
            promotionStepSucceeded(step, stamp, now: now, into: &actions)
        case .promotionStepFailed(let step, let reason, let stamp):
            guard take(stamp, .step, "\(step.rawValue) result", into: &actions), case .promoting(step, _, let tenure) = state else { break }
            beginDemotion(.promotionFailed(step, reason), tenure: tenure, now: now, into: &actions)
        case .backendStopped(let outcome, let stamp):
            backendStopped(outcome, stamp, now: now, into: &actions)
        case .demotionStepFinished(let step, let failure, let stamp):
            demotionStepFinished(step, failure: failure, stamp, now: now, into: &actions)
        case .fenceCompleted(let outcome, let stamp):
            fenceCompleted(outcome, stamp, now: now, into: &actions)
        case .backendFailed(let reason):
            failWhileHolding(.backendFailed(reason), now: now, into: &actions)
        case .healthFailed(let reason):
            failWhileHolding(.healthFailed(reason), now: now, into: &actions)
        case .stepdownRequested:
            if let tenure = holdingAndNotLeaving {
                beginDemotion(.stepdown, tenure: tenure, now: now, into: &actions)
            } else {
                actions.append(.notify(.ignored("stepdown: this node is not active")))
            }
        case .switchoverRequested(let target):
            if target == configuration.node {
                actions.append(.notify(.ignored("switchover: this node is already the target")))
            } else if let tenure = holdingAndNotLeaving {
                beginDemotion(.switchover(to: target), tenure: tenure, now: now, into: &actions)
            } else {
                actions.append(.notify(.ignored("switchover: this node is not active")))
            }
        case .pauseRequested:
            pause = .indefinite
        case .pauseRequestedFor(let duration):
            pause = .until(now + max(duration, .zero))
        case .resumeRequested:
            pause = .none
        case .shutdownRequested:
            shutdownRequested(now: now, into: &actions)
        case .placementChanged(let gate):
            placement = gate
        case .duplicateInstanceReported(let other):
            if !duplicateDetected {
                duplicateDetected = true
                actions.append(.notify(.duplicateInstance(other)))
            }
        case .tick:
            break
        }
        if case .until(let until) = pause, now >= until {
            pause = .none
            actions.append(.notify(.observed("pause ended by itself (it was given an end); the app may change hands again")))
        }
        evaluateDeadlines(now: now, into: &actions)
        return actions
    }

    /// A duration for a log line, to the millisecond: `1.204s`, `650ms`.
    public static func readable(_ duration: Duration) -> String {
        let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        return Duration.milliseconds(milliseconds).configString
    }
}
