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
        }
    }

    /// Where the app is.
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
    public private(set) var phase: Phase = .passive
    public private(set) var paused: Bool
    /// When the current pause ends by itself; nil for an indefinite pause (or none).
    public private(set) var pausedUntil: MonotonicInstant?
    public private(set) var held: HeldLease?
    public private(set) var observed: ObservedLease?
    /// Whether another live batond uses this node id (it renewed a lease under it).
    public private(set) var duplicateDetected = false
    /// What the app's placement lets this node do (see ``Event/placementChanged(_:)``).
    public private(set) var placement: PlacementGate
    /// Whether the lease watch has told this node the lease's state (held, free) at least once.
    public var leaseStateKnown: Bool { knowsLeaseState }
    private var connected = false
    private var everConnected = false
    private var knowsLeaseState = false
    private var freeSince: MonotonicInstant?
    private var handoffTarget: String?
    private var holdoffUntil: MonotonicInstant?
    private var cooldownUntil: MonotonicInstant?
    /// The results the lifecycle waits for, by the stamp of the action that asked.
    public struct AwaitedResults: Sendable, Hashable {
        public var acquire: Stamp?
        public var renew: Stamp?
        public var release: Stamp?
        /// A promotion or demotion step, a graceful stop or a fence.
        public var step: Stamp?
    }

    /// The results this lifecycle waits for.
    public private(set) var awaiting = AwaitedResults()
    private var lastGeneration: UInt64 = 0
    private var renewInFlight: Bool { awaiting.renew != nil }
    /// When the first renew since the last confirmed one was sent: where the lease counts from
    /// when a renew is recognised as our own write (``Event/renewRecognized(revision:)``).
    private var firstUnconfirmedRenewAt: MonotonicInstant?
    /// The holder and ttl last reported as disagreeing with this node's config.
    private var reportedTimingDisagreement: (node: String, ttl: Duration)?
    /// The backend and VIPs are gone but a renew was in flight: the release waits for its
    /// outcome, so it deletes with the newest revision instead of losing the compare-and-set.
    private var releaseAwaitsRenew = false
    private var renewRetryAt: MonotonicInstant?
    private var stepDeadline: MonotonicInstant?
    /// The final flush under way: when it gives up, the attempts made, and whether the lifecycle
    /// waits out the pause before the next attempt (no attempt in flight).
    private var flush: (giveUpAt: MonotonicInstant, attempts: Int, waitingToRetry: Bool, lastFailure: String?)?

    /// Creates a passive lifecycle.
    public init(configuration: Configuration, paused: Bool = false, placement: PlacementGate = .open) {
        self.configuration = configuration
        self.paused = paused
        self.placement = placement
    }

    private var timing: LeaseTiming { configuration.timing }
    private var me: LeaseHolder { LeaseHolder(node: configuration.node, instance: configuration.instance) }

    /// A new stamp under the held lease's token (0 when none is held).
    private mutating func newStamp() -> Stamp {
        lastGeneration += 1
        return Stamp(token: held?.token ?? 0, generation: lastGeneration)
    }

    /// Whether `stamp` is the result awaited at `slot`; if so, the slot is cleared. A stale
    /// result is reported and dropped.
    private mutating func take(
        _ stamp: Stamp, _ slot: WritableKeyPath<AwaitedResults, Stamp?>, _ what: String, into actions: inout [Action]
    ) -> Bool {
        guard awaiting[keyPath: slot] == stamp else {
            actions.append(.notify(.staleResult("\(what) (\(stamp)) arrived after a newer decision; dropped")))
            return false
        }
        awaiting[keyPath: slot] = nil
        return true
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
            guard take(stamp, \.acquire, "acquire result", into: &actions) else { break }
            guard phase == .acquiring else {
                actions.append(.notify(.ignored("acquire result while \(phase)")))
                break
            }
            held = HeldLease(token: revision, revision: revision, lastSentAt: sentAt)
            firstUnconfirmedRenewAt = nil
            observed = nil
            actions.append(.armFenceKeeper(token: revision, deadline: timing.fenceAt(sentAt: sentAt)))
            actions.append(.notify(.acquired(token: revision)))
            if paused {
                beginDemotion(.paused, now: now, into: &actions)
            } else if now < timing.fenceAt(sentAt: sentAt), let first = promotionStep(after: nil) {
                phase = .promoting(first)
                stepDeadline = now + stepTimeout(first)
                let step = newStamp()
                awaiting.step = step
                actions.append(.runPromotionStep(first, step))
            }
        case .acquireFailed(let failure, let stamp):
            guard take(stamp, \.acquire, "acquire result", into: &actions), phase == .acquiring else { break }
            phase = .passive
            switch failure {
            case .unavailable:
                // Our create may have landed: let it expire before trying again.
                holdoffUntil = max(holdoffUntil ?? now, now + timing.ttl)
            case .conflict:
                // Still held (an expiry is silent on NATS 2.9): try again shortly, not in a loop.
                holdoffUntil = max(holdoffUntil ?? now, now + configuration.renewRetry)
            }
        case .renewSucceeded(let revision, let sentAt, let stamp):
            guard take(stamp, \.renew, "renew result", into: &actions) else { break }
            renewWentThrough(revision: revision, sentAt: sentAt, into: &actions)
        case .renewRecognized(let revision, let stamp):
            guard take(stamp, \.renew, "renew result", into: &actions), let lease = held, phase != .fencing else { break }
            let sentAt = firstUnconfirmedRenewAt ?? lease.lastSentAt
            actions.append(.notify(.observed("a renew that timed out had reached NATS (revision \(revision)); the lease is still ours")))
            renewWentThrough(revision: revision, sentAt: sentAt, into: &actions)
        case .renewFailed(let failure, let stamp):
            guard take(stamp, \.renew, "renew result", into: &actions), let lease = held, phase != .fencing else { break }
            if case .demoting(.releaseLease, let reason) = phase {
                guard releaseAwaitsRenew else { break }
                releaseAwaitsRenew = false
                if failure == .conflict {
                    // Someone else's write is there: there is nothing of ours left to delete.
                    finishRelease(lease, reason: reason, failure: .conflict, now: now, into: &actions)
                } else {
                    release(lease, handoffTo: reason.handoffTarget, into: &actions)
                }
                break
            }
            switch failure {
            case .conflict:
                fence(reason: "renew lost the compare-and-set: the lease is no longer ours", lease: lease, into: &actions)
            case .unavailable:
                renewRetryAt = now + configuration.renewRetry
            }
        case .releaseFinished(let failure, let stamp):
            guard take(stamp, \.release, "release result", into: &actions) else { break }
            guard case .demoting(.releaseLease, let reason) = phase, let lease = held, !releaseAwaitsRenew else { break }
            finishRelease(lease, reason: reason, failure: failure, now: now, into: &actions)
        case .promotionStepSucceeded(let step, let stamp):
            guard take(stamp, \.step, "\(step.rawValue) result", into: &actions), phase == .promoting(step), let lease = held else { break }
            // Past the fence time nothing more starts: the deadline check below fences.
            guard now < timing.fenceAt(sentAt: lease.lastSentAt) else { break }
            if let next = promotionStep(after: step) {
                phase = .promoting(next)
                stepDeadline = now + stepTimeout(next)
                let stepStamp = newStamp()
                awaiting.step = stepStamp
                actions.append(.runPromotionStep(next, stepStamp))
            } else {
                phase = .active
                stepDeadline = nil
                actions.append(.notify(.becameActive(token: lease.token)))
            }
        case .promotionStepFailed(let step, let reason, let stamp):
            guard take(stamp, \.step, "\(step.rawValue) result", into: &actions), phase == .promoting(step) else { break }
            beginDemotion(.promotionFailed(step, reason), now: now, into: &actions)
        case .backendStopped(let outcome, let stamp):
            guard take(stamp, \.step, "backend stop result", into: &actions) else { break }
            guard case .demoting(.stopBackend, let reason) = phase, let lease = held else { break }
            if case .unconfirmed(let why) = outcome {
                // Never release what may still run: kill it the hard way.
                fence(reason: "the graceful stop did not confirm the backend gone (\(why))", lease: lease, into: &actions)
                break
            }
            continueDemotion(after: .stopBackend, reason: reason, lease: lease, now: now, into: &actions)
        case .demotionStepFinished(let step, let failure, let stamp):
            guard take(stamp, \.step, "\(step.rawValue) result", into: &actions) else { break }
            guard case .demoting(step, let reason) = phase, step != .stopBackend, step != .releaseLease, let lease = held else { break }
            if step == .flushReplica, let failure {
                flushAttemptFailed(failure, reason: reason, lease: lease, now: now, into: &actions)
                break
            }
            if let failure {
                actions.append(.notify(.demotionStepFailed(step, failure)))
                if step == .releaseAddresses {
                    // A VIP may still be present: never release the lease over it.
                    fence(reason: "removing the virtual IPs failed: \(failure)", lease: lease, into: &actions)
                    break
                }
            }
            continueDemotion(after: step, reason: reason, lease: lease, now: now, into: &actions)
        case .fenceCompleted(let outcome, let stamp):
            guard take(stamp, \.step, "fence result", into: &actions), phase == .fencing else { break }
            switch outcome {
            case .confirmed:
                actions.append(.disarmFenceKeeper)
                if let lease = held {
                    // Give the lease back if it is still ours, so another node need not wait.
                    release(lease, handoffTo: nil, into: &actions)
                }
            case .unconfirmed(let why):
                // The keeper stays armed: at its deadline (before the lease can expire) it kills
                // the backend and removes the VIPs. The lease is not released; it runs out.
                actions.append(.notify(.fenceUnconfirmed(token: stamp.token, reason: why)))
            }
            if let lease = held { rememberOwnLease(lease) }
            held = nil
            awaiting.renew = nil
            releaseAwaitsRenew = false
            firstUnconfirmedRenewAt = nil
            phase = .passive
            holdoffUntil = max(holdoffUntil ?? now, now + timing.ttl)
            cooldownUntil = now + configuration.cooldown
            actions.append(.followActive)
        case .backendFailed(let reason):
            failWhileHolding(.backendFailed(reason), now: now, into: &actions)
        case .healthFailed(let reason):
            failWhileHolding(.healthFailed(reason), now: now, into: &actions)
        case .stepdownRequested:
            if isHoldingAndNotLeaving {
                beginDemotion(.stepdown, now: now, into: &actions)
            } else {
                actions.append(.notify(.ignored("stepdown: this node is not active")))
            }
        case .switchoverRequested(let target):
            if target == configuration.node {
                actions.append(.notify(.ignored("switchover: this node is already the target")))
            } else if isHoldingAndNotLeaving {
                beginDemotion(.switchover(to: target), now: now, into: &actions)
            } else {
                actions.append(.notify(.ignored("switchover: this node is not active")))
            }
        case .pauseRequested:
            paused = true
            pausedUntil = nil
        case .pauseRequestedFor(let duration):
            paused = true
            pausedUntil = now + max(duration, .zero)
        case .resumeRequested:
            paused = false
            pausedUntil = nil
        case .shutdownRequested:
            if isHoldingAndNotLeaving {
                beginDemotion(.shutdown, now: now, into: &actions)
            } else if case .demoting(let step, _) = phase {
                phase = .demoting(step, .shutdown)
            } else if held == nil && phase != .fencing {
                phase = .stopped
            }
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
        if paused, let until = pausedUntil, now >= until {
            paused = false
            pausedUntil = nil
            actions.append(.notify(.observed("pause ended by itself (it was given an end); the app may change hands again")))
        }
        evaluateDeadlines(now: now, into: &actions)
        return actions
    }

    /// A renew (or a recognised earlier attempt) sent at `sentAt` went through at `revision`.
    private mutating func renewWentThrough(revision: UInt64, sentAt: MonotonicInstant, into actions: inout [Action]) {
        renewRetryAt = nil
        firstUnconfirmedRenewAt = nil
        guard var lease = held, phase != .fencing else { return }
        lease.revision = max(lease.revision, revision)
        if sentAt > lease.lastSentAt { lease.lastSentAt = sentAt }
        held = lease
        if case .demoting(.releaseLease, let reason) = phase {
            // The keeper is disarmed (nothing left to kill): do not arm it again.
            if releaseAwaitsRenew {
                releaseAwaitsRenew = false
                release(lease, handoffTo: reason.handoffTarget, into: &actions)
            }
        } else {
            actions.append(.armFenceKeeper(token: lease.token, deadline: timing.fenceAt(sentAt: lease.lastSentAt)))
        }
    }

    private var isHoldingAndNotLeaving: Bool {
        switch phase {
        case .promoting, .active: held != nil
        default: false
        }
    }

    private mutating func observe(_ observation: LeaseObservation, now: MonotonicInstant, into actions: inout [Action]) {
        knowsLeaseState = true
        switch observation {
        case .held(let holder, let revision, let token, let holderTTL):
            if let lease = held {
                if holder == me { return }  // our own write
                if case .demoting(.releaseLease, let reason) = phase {
                    // Our release went through and someone took the lease before the release's
                    // answer reached us: we are done with it.
                    finishRelease(lease, reason: reason, failure: nil, now: now, into: &actions)
                } else if revision > lease.revision, phase != .fencing {
                    fence(reason: "\(holder) holds the lease now (revision \(revision))", lease: lease, into: &actions)
                }
            }
            if holder.node == configuration.node, holder.instance != configuration.instance,
                let previous = observed, previous.holder == holder, revision > previous.revision, !duplicateDetected
            {
                // A renew under our node id by another process: a second batond is running.
                duplicateDetected = true
                actions.append(.notify(.duplicateInstance(holder)))
            }
            if holder != me {
                reportTimingDisagreement(holder: holder, ttl: holderTTL, into: &actions)
            }
            observed = ObservedLease(holder: holder, revision: revision, token: token, ttl: holderTTL, seenAt: now)
            freeSince = nil
            handoffTarget = nil
        case .free(let target):
            keyVanished(freeing: true, handoffTo: target, now: now, into: &actions)
        case .released(let holder, let token, let target):
            // Free at once only for a release of the lease this node last saw (the same holder
            // and token), or of a later lease it missed (a higher token: that lease could only
            // be taken after the one seen had ended). A note naming anything else is a foreign
            // delete.
            let releasesWhatWasSeen = observed.map { ($0.holder == holder && $0.token == token) || token > $0.token } ?? true
            keyVanished(freeing: releasesWhatWasSeen, handoffTo: target, now: now, into: &actions)
        case .vanished:
            keyVanished(freeing: observed == nil, handoffTo: nil, now: now, into: &actions)
        }
    }

    /// The lease key is gone. A holder fences at once, whoever deleted it (unless it is its own
    /// release). A passive node that last saw a holder frees the lease only for `freeing` (a
    /// proper release of that lease); otherwise it keeps the holder's last write time and ttl
    /// and takes over after `ttl + skew` as if the key were still there — the acquire over the
    /// stale revision falls back to a create, since the key is absent.
    private mutating func keyVanished(freeing: Bool, handoffTo target: String?, now: MonotonicInstant, into actions: inout [Action]) {
        if let lease = held {
            if phase != .fencing {
                if case .demoting(.releaseLease, _) = phase {
                    // Our own release (or one racing it: the release's answer settles it).
                } else {
                    fence(reason: "the lease key vanished (expired or deleted)", lease: lease, into: &actions)
                }
            }
            observed = nil
            freeSince = now
            handoffTarget = target
            return
        }
        if freeing {
            observed = nil
            freeSince = now
            handoffTarget = target
            return
        }
        if let last = observed {
            actions.append(.notify(.observed(
                "the lease key vanished without a release by its holder \(last.holder.node) (epoch \(last.token)): waiting out its ttl before taking over")))
        }
        // observed stays: acquireAt() keeps judging by the last holder's write time and ttl.
    }

    /// Says once per holder and ttl that the holder's ttl differs from this node's config.
    private mutating func reportTimingDisagreement(holder: LeaseHolder, ttl: Duration?, into actions: inout [Action]) {
        guard let ttl, ttl != timing.ttl else {
            reportedTimingDisagreement = nil
            return
        }
        if let reported = reportedTimingDisagreement, reported.node == holder.node, reported.ttl == ttl { return }
        reportedTimingDisagreement = (holder.node, ttl)
        actions.append(.notify(.observed(
            "config disagrees with the holder: \(holder.node) holds the lease with ttl \(ttl.configString), this node's config says \(timing.ttl.configString); the lease is judged by the holder's ttl")))
    }

    private mutating func failWhileHolding(_ reason: DemotionReason, now: MonotonicInstant, into actions: inout [Action]) {
        guard isHoldingAndNotLeaving else { return }
        if paused {
            actions.append(.notify(.ignored("\(reason) while paused: the app does not change hands")))
            return
        }
        beginDemotion(reason, now: now, into: &actions)
    }

    /// The first promotion step after `step` (or the first of all for nil) this app uses.
    /// The bound on promotion step `step`.
    private func stepTimeout(_ step: PromotionStep) -> Duration {
        step == .beforeActive ? configuration.beforeActiveTimeout ?? configuration.stepTimeout : configuration.stepTimeout
    }

    private func promotionStep(after step: PromotionStep?) -> PromotionStep? {
        let all = PromotionStep.allCases
        let start = step.flatMap { all.firstIndex(of: $0) }.map { $0 + 1 } ?? 0
        return all[start...].first { uses($0) }
    }

    private func uses(_ step: PromotionStep) -> Bool {
        switch step {
        case .promoteReplica: configuration.hasReplica
        case .claimAddresses: configuration.hasAddresses
        case .beforeActive: configuration.beforeActiveTimeout != nil
        case .startBackend: true
        case .awaitHealthy: configuration.hasHealthCheck
        }
    }

    /// Moves to the demotion step after `step` that this app uses and returns its actions.
    private mutating func continueDemotion(
        after step: DemotionStep, reason: DemotionReason, lease: HeldLease, now: MonotonicInstant, into actions: inout [Action]
    ) {
        let all = DemotionStep.allCases
        let rest = all[(all.firstIndex(of: step)! + 1)...]
        let next = rest.first { step in
            switch step {
            case .stopBackend: true
            case .flushReplica: configuration.hasReplica
            case .setAsideDatabase: false  // only after a flush gave up
            case .releaseAddresses: configuration.hasAddresses
            case .releaseLease: true
            }
        } ?? .releaseLease
        phase = .demoting(next, reason)
        flush = nil
        switch next {
        case .flushReplica:
            flush = (giveUpAt: now + configuration.flushTimeout, attempts: 0, waitingToRetry: false, lastFailure: nil)
            startFlushAttempt(now: now, into: &actions)
        case .setAsideDatabase:
            preconditionFailure("setAsideDatabase follows only a flush that gave up")
        case .releaseAddresses:
            stepDeadline = now + configuration.stepTimeout
            let stamp = newStamp()
            awaiting.step = stamp
            actions.append(.releaseAddresses(stamp))
        case .stopBackend, .releaseLease:
            // Backend stopped and VIPs gone: the keeper has nothing left to do.
            stepDeadline = nil
            actions.append(.disarmFenceKeeper)
            awaiting.step = nil
            if renewInFlight {
                releaseAwaitsRenew = true
            } else {
                release(lease, handoffTo: reason.handoffTarget, into: &actions)
            }
        }
    }

    /// A lease this node held ends without a release known to have gone through (a fence, a
    /// release NATS did not answer): its own last write becomes the observed lease, so the
    /// ordinary takeover deadline (that write's send time + ttl + skew) applies to this node
    /// too. Without it a former holder has neither an observation nor a free time, and never
    /// tries again until its watch reports something — which on NATS 2.9 an expiry never does,
    /// so an app every node had held and fenced stayed down for good (chaos suite,
    /// RELIABILITY.md L2). The acquisition's compare-and-set keeps this safe if another node
    /// wrote meanwhile.
    private mutating func rememberOwnLease(_ lease: HeldLease) {
        observed = ObservedLease(holder: me, revision: lease.revision, token: lease.token, ttl: timing.ttl, seenAt: lease.lastSentAt)
        freeSince = nil
    }

    /// The node is done with the lease it gave up.
    private mutating func finishRelease(
        _ lease: HeldLease, reason: DemotionReason, failure: LeaseWriteFailure?, now: MonotonicInstant, into actions: inout [Action]
    ) {
        held = nil
        awaiting.renew = nil
        awaiting.step = nil
        releaseAwaitsRenew = false
        firstUnconfirmedRenewAt = nil
        phase = reason == .shutdown ? .stopped : .passive
        cooldownUntil = now + configuration.cooldown
        switch failure {
        case nil: actions.append(.notify(.released(token: lease.token)))
        case .conflict:
            actions.append(.notify(.releaseUnconfirmed(token: lease.token, reason: "the lease was no longer ours to delete")))
            // Our own renew may be what the delete lost to (it timed out here but landed), and
            // its expiry is silent on NATS 2.9: without this the app could stay down for good.
            rememberOwnLease(lease)
        case .unavailable(let why):
            actions.append(.notify(.releaseUnconfirmed(token: lease.token, reason: why)))
            rememberOwnLease(lease)
        }
        if reason != .shutdown { actions.append(.followActive) }
    }

    /// Sends the next attempt of the final flush, bounded by the step timeout and by the
    /// flush's give-up time.
    private mutating func startFlushAttempt(now: MonotonicInstant, into actions: inout [Action]) {
        guard var current = flush else { return }
        current.attempts += 1
        current.waitingToRetry = false
        flush = current
        stepDeadline = min(now + configuration.stepTimeout, max(current.giveUpAt, now))
        let stamp = newStamp()
        awaiting.step = stamp
        actions.append(.flushReplica(stamp))
    }

    /// An attempt of the final flush failed or timed out. Before the give-up time: keep the
    /// lease (the renews go on), keep the backend stopped, and try again after a pause. After
    /// it: report the loss and set the database aside before the lease is released, so no later
    /// promotion on this node overwrites what was not shipped.
    private mutating func flushAttemptFailed(
        _ failure: String, reason: DemotionReason, lease: HeldLease, now: MonotonicInstant, into actions: inout [Action]
    ) {
        guard var current = flush else { return }
        if now < current.giveUpAt, !current.waitingToRetry {
            current.waitingToRetry = true
            current.lastFailure = failure
            flush = current
            stepDeadline = min(now + configuration.flushRetry, current.giveUpAt)
            actions.append(.notify(.flushRetrying(token: lease.token, attempt: current.attempts, reason: failure, giveUpIn: current.giveUpAt - now)))
            return
        }
        flush = nil
        actions.append(.notify(.flushAbandoned(token: lease.token, attempts: current.attempts, reason: failure)))
        phase = .demoting(.setAsideDatabase, reason)
        stepDeadline = now + configuration.stepTimeout
        let stamp = newStamp()
        awaiting.step = stamp
        actions.append(.setAsideDatabase(reason: failure, stamp))
    }

    private mutating func beginDemotion(_ reason: DemotionReason, now: MonotonicInstant, into actions: inout [Action]) {
        phase = .demoting(.stopBackend, reason)
        stepDeadline = now + configuration.stopTimeout
        actions.append(.notify(.demoting(reason)))
        let stamp = newStamp()
        awaiting.step = stamp
        actions.append(.stopBackend(stamp))
    }

    private mutating func fence(reason: String, lease: HeldLease, into actions: inout [Action]) {
        phase = .fencing
        stepDeadline = nil
        flush = nil
        renewRetryAt = nil
        firstUnconfirmedRenewAt = nil
        releaseAwaitsRenew = false
        let stamp = newStamp()
        awaiting.step = stamp
        actions.append(.fence(stamp))
        actions.append(.notify(.fenced(token: lease.token, reason: reason)))
    }

    /// Deletes the lease at its latest revision.
    private mutating func release(_ lease: HeldLease, handoffTo: String?, into actions: inout [Action]) {
        let stamp = newStamp()
        awaiting.release = stamp
        actions.append(.releaseLease(revision: lease.revision, handoffTo: handoffTo, stamp))
    }

    // MARK: - Deadlines

    private mutating func evaluateDeadlines(now: MonotonicInstant, into actions: inout [Action]) {
        if let lease = held {
            if phase != .fencing, now >= timing.fenceAt(sentAt: lease.lastSentAt) {
                let sinceRenew = Self.readable(now - lease.lastSentAt)
                fence(
                    reason: "no successful renew for \(sinceRenew) (ttl \(timing.ttl.configString), fence budget \(timing.fenceBudget.configString)); fencing before the lease can expire",
                    lease: lease, into: &actions)
                return
            }
            if phase != .fencing, !renewInFlight, renewDue(lease, now: now) {
                renewRetryAt = nil
                if firstUnconfirmedRenewAt == nil { firstUnconfirmedRenewAt = now }
                let stamp = newStamp()
                awaiting.renew = stamp
                actions.append(.renewLease(revision: lease.revision, stamp))
            }
            if let deadline = stepDeadline, now >= deadline {
                switch phase {
                case .promoting(let step):
                    beginDemotion(.promotionFailed(step, "timed out after \(stepTimeout(step))"), now: now, into: &actions)
                case .demoting(.stopBackend, _):
                    fence(reason: "graceful stop did not finish within \(configuration.stopTimeout)", lease: lease, into: &actions)
                case .demoting(.flushReplica, let reason):
                    if let current = flush, current.waitingToRetry, now < current.giveUpAt {
                        startFlushAttempt(now: now, into: &actions)
                    } else if let current = flush, current.waitingToRetry {
                        flushAttemptFailed(current.lastFailure ?? "the flush failed", reason: reason, lease: lease, now: now, into: &actions)
                    } else {
                        // The attempt's answer is dropped if it comes late (its stamp is stale).
                        awaiting.step = nil
                        flushAttemptFailed("the attempt did not finish within \(Self.readable(configuration.stepTimeout))", reason: reason, lease: lease, now: now, into: &actions)
                    }
                case .demoting(.setAsideDatabase, let reason):
                    actions.append(.notify(.demotionStepFailed(.setAsideDatabase, "timed out after \(Self.readable(configuration.stepTimeout))")))
                    continueDemotion(after: .setAsideDatabase, reason: reason, lease: lease, now: now, into: &actions)
                case .demoting(.releaseAddresses, _):
                    fence(reason: "removing the virtual IPs did not finish within \(configuration.stepTimeout)", lease: lease, into: &actions)
                default:
                    stepDeadline = nil
                }
            }
            return
        }
        if phase == .passive, let at = acquireAt(), now >= at {
            phase = .acquiring
            let stamp = newStamp()
            awaiting.acquire = stamp
            // Over a stale revision only when the holder's record says its ttl: a holder that does
            // not (a Baton before 0.9, a foreign value) may count on a longer one, so the key must
            // expire or be released first (a create).
            actions.append(.acquireLease(replacing: observed?.ttl != nil ? observed?.revision : nil, stamp))
        }
    }

    /// A duration for a log line, to the millisecond: `1.204s`, `650ms`.
    public static func readable(_ duration: Duration) -> String {
        let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        return Duration.milliseconds(milliseconds).configString
    }

    private func renewDue(_ lease: HeldLease, now: MonotonicInstant) -> Bool {
        if case .demoting(.releaseLease, _) = phase { return false }
        if let retry = renewRetryAt { return now >= retry }
        return now >= lease.lastSentAt + timing.renew
    }

    /// When this passive node may try to acquire, or nil when it may not (disconnected, paused,
    /// lease state unknown, duplicate instance, not eligible by the app's placement).
    public func acquireAt() -> MonotonicInstant? {
        guard phase == .passive, connected, knowsLeaseState, !paused, !duplicateDetected, placement.eligible else { return nil }
        var earliest: MonotonicInstant
        let holdback = configuration.priorityHoldback + placement.holdback
        if let observed {
            earliest = timing.takeoverAt(seenAt: observed.seenAt, holderTTL: observed.ttl) + holdback
        } else if let freeSince {
            switch handoffTarget {
            case .some(configuration.node): earliest = freeSince
            case .some: earliest = freeSince + timing.ttl + placement.holdback  // the target gets a head start
            case .none: earliest = freeSince + holdback
            }
        } else {
            return nil
        }
        if let holdoffUntil { earliest = max(earliest, holdoffUntil) }
        if let cooldownUntil { earliest = max(earliest, cooldownUntil) }
        return earliest
    }

    /// The next instant at which ``handle(_:now:)`` with ``Event/tick`` has something to do.
    public func nextDeadline() -> MonotonicInstant? {
        var candidates: [MonotonicInstant] = []
        if paused, let pausedUntil { candidates.append(pausedUntil) }
        if let lease = held, phase != .fencing {
            candidates.append(timing.fenceAt(sentAt: lease.lastSentAt))
            // No renew while the release is in flight: offering its deadline would make the
            // clock tick without anything to do (a busy loop).
            let releasing: Bool = if case .demoting(.releaseLease, _) = phase { true } else { false }
            if !renewInFlight, !releasing { candidates.append(renewRetryAt ?? lease.lastSentAt + timing.renew) }
            if let stepDeadline { candidates.append(stepDeadline) }
        } else if let at = acquireAt() {
            candidates.append(at)
        }
        return candidates.min()
    }
}
