// The lifecycle's moves between phases: the promotion steps, the demotion steps (with the final
// flush's retries), fencing, and giving the lease back. Each move sets the whole new ``State``
// (so nothing of the phase left behind survives by accident) and appends its actions.

extension AppLifecycle {
    // MARK: - Promotion

    /// The first promotion step this app uses (``PromotionStep/startBackend`` always is).
    var firstPromotionStep: PromotionStep { promotionStep(after: nil) ?? .startBackend }

    /// The first promotion step after `step` (or the first of all for nil) this app uses.
    func promotionStep(after step: PromotionStep?) -> PromotionStep? {
        let all = PromotionStep.allCases
        let start = step.flatMap { all.firstIndex(of: $0) }.map { $0 + 1 } ?? 0
        return all[start...].first { uses($0) }
    }

    func uses(_ step: PromotionStep) -> Bool {
        switch step {
        case .promoteReplica: configuration.hasReplica
        case .claimAddresses: configuration.hasAddresses
        case .beforeActive: configuration.beforeActiveTimeout != nil
        case .startBackend: true
        case .awaitHealthy: configuration.hasHealthCheck
        }
    }

    /// The bound on promotion step `step`.
    func stepTimeout(_ step: PromotionStep) -> Duration {
        step == .beforeActive ? configuration.beforeActiveTimeout ?? configuration.stepTimeout : configuration.stepTimeout
    }

    /// Runs promotion step `step` under the held lease.
    mutating func startPromotionStep(_ step: PromotionStep, tenure: Tenure, now: MonotonicInstant, into actions: inout [Action]) {
        let stamp = newStamp(under: tenure.lease.token)
        state = .promoting(step, StepUnderWay(stamp: stamp, deadline: now + stepTimeout(step)), tenure)
        actions.append(.runPromotionStep(step, stamp))
    }

    // MARK: - Demotion

    mutating func beginDemotion(_ reason: DemotionReason, tenure: Tenure, now: MonotonicInstant, into actions: inout [Action]) {
        actions.append(.notify(.demoting(reason)))
        let stamp = newStamp(under: tenure.lease.token)
        state = .demoting(.stopBackend(StepUnderWay(stamp: stamp, deadline: now + configuration.stopTimeout)), reason, tenure)
        actions.append(.stopBackend(stamp))
    }

    /// Moves to the demotion step after `step` that this app uses and returns its actions.
    mutating func continueDemotion(
        after step: DemotionStep, reason: DemotionReason, tenure: Tenure, now: MonotonicInstant, into actions: inout [Action]
    ) {
        let rest = DemotionStep.allCases.drop(while: { $0 != step }).dropFirst()
        let next = rest.first { step in
            switch step {
            case .stopBackend: true
            case .flushReplica: configuration.hasReplica
            case .setAsideDatabase: false  // only after a flush gave up
            case .releaseAddresses: configuration.hasAddresses
            case .releaseLease: true
            }
        } ?? .releaseLease
        switch next {
        case .flushReplica:
            startFlushAttempt(FinalFlush(giveUpAt: now + configuration.flushTimeout), reason: reason, tenure: tenure, now: now, into: &actions)
        case .setAsideDatabase:
            preconditionFailure("setAsideDatabase follows only a flush that gave up")
        case .releaseAddresses:
            let stamp = newStamp(under: tenure.lease.token)
            state = .demoting(.releaseAddresses(StepUnderWay(stamp: stamp, deadline: now + configuration.stepTimeout)), reason, tenure)
            actions.append(.releaseAddresses(stamp))
        case .stopBackend, .releaseLease:
            // Backend stopped and VIPs gone: the keeper has nothing left to do.
            actions.append(.disarmFenceKeeper)
            if tenure.renew != nil {
                state = .demoting(.releaseLease(awaitsRenew: true), reason, tenure)
            } else {
                state = .demoting(.releaseLease(awaitsRenew: false), reason, tenure)
                release(tenure.lease, handoffTo: reason.handoffTarget, into: &actions)
            }
        }
    }

    /// Sends the next attempt of the final flush, bounded by the step timeout and by the
    /// flush's give-up time.
    mutating func startFlushAttempt(_ flush: FinalFlush, reason: DemotionReason, tenure: Tenure, now: MonotonicInstant, into actions: inout [Action]) {
        var flush = flush
        flush.attempts += 1
        flush.waitingToRetry = false
        let deadline = min(now + configuration.stepTimeout, max(flush.giveUpAt, now))
        let stamp = newStamp(under: tenure.lease.token)
        state = .demoting(.flushReplica(flush, StepUnderWay(stamp: stamp, deadline: deadline)), reason, tenure)
        actions.append(.flushReplica(stamp))
    }

    /// An attempt of the final flush failed or timed out. Before the give-up time: keep the
    /// lease (the renews go on), keep the backend stopped, and try again after a pause. After
    /// it: report the loss and set the database aside before the lease is released, so no later
    /// promotion on this node overwrites what was not shipped.
    mutating func flushAttemptFailed(_ failure: String, now: MonotonicInstant, into actions: inout [Action]) {
        guard case .demoting(.flushReplica(var flush, var underWay), let reason, let tenure) = state else { return }
        if now < flush.giveUpAt, !flush.waitingToRetry {
            flush.waitingToRetry = true
            flush.lastFailure = failure
            underWay.deadline = min(now + configuration.flushRetry, flush.giveUpAt)
            state = .demoting(.flushReplica(flush, underWay), reason, tenure)
            actions.append(.notify(.flushRetrying(token: tenure.lease.token, attempt: flush.attempts, reason: failure, giveUpIn: flush.giveUpAt - now)))
            return
        }
        actions.append(.notify(.flushAbandoned(token: tenure.lease.token, attempts: flush.attempts, reason: failure)))
        let stamp = newStamp(under: tenure.lease.token)
        state = .demoting(.setAsideDatabase(StepUnderWay(stamp: stamp, deadline: now + configuration.stepTimeout)), reason, tenure)
        actions.append(.setAsideDatabase(reason: failure, stamp))
    }

    // MARK: - Fencing and release

    mutating func fence(reason: String, tenure: Tenure, into actions: inout [Action]) {
        let stamp = newStamp(under: tenure.lease.token)
        state = .fencing(stamp, lease: tenure.lease, renew: tenure.renew)
        actions.append(.fence(stamp))
        actions.append(.notify(.fenced(token: tenure.lease.token, reason: reason)))
    }

    /// Fences because no renew went through for so long that the fence time came.
    mutating func fenceForSilence(_ tenure: Tenure, now: MonotonicInstant, into actions: inout [Action]) {
        let sinceRenew = Self.readable(now - tenure.lease.lastSentAt)
        fence(
            reason: "no successful renew for \(sinceRenew) (ttl \(timing.ttl.configString), fence budget \(timing.fenceBudget.configString)); fencing before the lease can expire",
            tenure: tenure, into: &actions)
    }

    /// Deletes the lease at its latest revision.
    mutating func release(_ lease: HeldLease, handoffTo: String?, into actions: inout [Action]) {
        let stamp = newStamp(under: lease.token)
        releaseInFlight = stamp
        actions.append(.releaseLease(revision: lease.revision, handoffTo: handoffTo, stamp))
    }

    /// A lease this node held ends without a release known to have gone through (a fence, a
    /// release NATS did not answer): its own last write becomes the observed lease, so the
    /// ordinary takeover deadline (that write's send time + ttl + skew) applies to this node
    /// too. Without it a former holder has neither an observation nor a free time, and never
    /// tries again until its watch reports something — which on NATS 2.9 an expiry never does,
    /// so an app every node had held and fenced stayed down for good (chaos suite,
    /// RELIABILITY.md L2). The acquisition's compare-and-set keeps this safe if another node
    /// wrote meanwhile.
    mutating func rememberOwnLease(_ lease: HeldLease) {
        leaseView = .holder(ObservedLease(holder: me, revision: lease.revision, token: lease.token, ttl: timing.ttl, seenAt: lease.lastSentAt))
    }

    /// The node is done with the lease it gave up.
    mutating func finishRelease(
        _ lease: HeldLease, reason: DemotionReason, failure: LeaseWriteFailure?, now: MonotonicInstant, into actions: inout [Action]
    ) {
        state = reason == .shutdown ? .stopped(acquire: nil) : .passive(cooldownUntil: now + configuration.cooldown)
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
}
