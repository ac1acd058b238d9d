// The lifecycle's event handlers: the results of its own actions (lease writes, steps, stops,
// fences), what the lease watch reports, and the requests of operators and components. Each
// handler is called by ``AppLifecycle/handle(_:now:)``, which evaluates the deadlines after it.

extension AppLifecycle {
    // MARK: - Lease writes

    mutating func acquireSucceeded(revision: UInt64, sentAt: MonotonicInstant, _ stamp: Stamp, now: MonotonicInstant, into actions: inout [Action]) {
        guard take(stamp, .acquire, "acquire result", into: &actions) else { return }
        guard case .acquiring = state else {
            actions.append(.notify(.ignored("acquire result while \(phase)")))
            return
        }
        let tenure = Tenure(lease: HeldLease(token: revision, revision: revision, lastSentAt: sentAt))
        // Our own write replaces the holder we had seen (a free time stays).
        if case .holder = leaseView { leaseView = .nothing }
        actions.append(.armFenceKeeper(token: revision, deadline: timing.fenceAt(sentAt: sentAt)))
        actions.append(.notify(.acquired(token: revision)))
        if paused {
            beginDemotion(.paused, tenure: tenure, now: now, into: &actions)
        } else if now < timing.fenceAt(sentAt: sentAt) {
            startPromotionStep(firstPromotionStep, tenure: tenure, now: now, into: &actions)
        } else {
            // Answered too late to start anything: the deadline check would fence at once.
            fenceForSilence(tenure, now: now, into: &actions)
        }
    }

    mutating func acquireFailed(_ failure: LeaseWriteFailure, _ stamp: Stamp, now: MonotonicInstant, into actions: inout [Action]) {
        guard take(stamp, .acquire, "acquire result", into: &actions), case .acquiring(_, let cooldownUntil) = state else { return }
        state = .passive(cooldownUntil: cooldownUntil)
        switch failure {
        case .unavailable:
            // Our create may have landed: let it expire before trying again.
            holdoffUntil = max(holdoffUntil ?? now, now + timing.ttl)
        case .conflict:
            // Still held (an expiry is silent on NATS 2.9): try again shortly, not in a loop.
            holdoffUntil = max(holdoffUntil ?? now, now + configuration.renewRetry)
        }
    }

    /// A renew (or a recognised earlier attempt) sent at `sentAt` went through at `revision`.
    mutating func renewWentThrough(revision: UInt64, sentAt: MonotonicInstant, into actions: inout [Action]) {
        guard var tenure else { return }  // fencing: the lease is given up whatever NATS says
        tenure.renewRetryAt = nil
        tenure.firstUnconfirmedRenewAt = nil
        tenure.lease.revision = max(tenure.lease.revision, revision)
        if sentAt > tenure.lease.lastSentAt { tenure.lease.lastSentAt = sentAt }
        if case .demoting(.releaseLease(let awaitsRenew), let reason, _) = state {
            // The keeper is disarmed (nothing left to kill): do not arm it again.
            state = .demoting(.releaseLease(awaitsRenew: false), reason, tenure)
            if awaitsRenew { release(tenure.lease, handoffTo: reason.handoffTarget, into: &actions) }
        } else {
            setTenure(tenure)
            actions.append(.armFenceKeeper(token: tenure.lease.token, deadline: timing.fenceAt(sentAt: tenure.lease.lastSentAt)))
        }
    }

    mutating func renewRecognized(revision: UInt64, _ stamp: Stamp, into actions: inout [Action]) {
        guard take(stamp, .renew, "renew result", into: &actions), let tenure else { return }
        let sentAt = tenure.firstUnconfirmedRenewAt ?? tenure.lease.lastSentAt
        actions.append(.notify(.observed("a renew that timed out had reached NATS (revision \(revision)); the lease is still ours")))
        renewWentThrough(revision: revision, sentAt: sentAt, into: &actions)
    }

    mutating func renewFailed(_ failure: LeaseWriteFailure, _ stamp: Stamp, now: MonotonicInstant, into actions: inout [Action]) {
        guard take(stamp, .renew, "renew result", into: &actions), var tenure else { return }
        if case .demoting(.releaseLease(let awaitsRenew), let reason, _) = state {
            guard awaitsRenew else { return }
            state = .demoting(.releaseLease(awaitsRenew: false), reason, tenure)
            if failure == .conflict {
                // Someone else's write is there: there is nothing of ours left to delete.
                finishRelease(tenure.lease, reason: reason, failure: .conflict, now: now, into: &actions)
            } else {
                release(tenure.lease, handoffTo: reason.handoffTarget, into: &actions)
            }
            return
        }
        switch failure {
        case .conflict:
            fence(reason: "renew lost the compare-and-set: the lease is no longer ours", tenure: tenure, into: &actions)
        case .unavailable:
            tenure.renewRetryAt = now + configuration.renewRetry
            setTenure(tenure)
        }
    }

    mutating func releaseFinished(_ failure: LeaseWriteFailure?, _ stamp: Stamp, now: MonotonicInstant, into actions: inout [Action]) {
        guard take(stamp, .release, "release result", into: &actions) else { return }
        guard case .demoting(.releaseLease(awaitsRenew: false), let reason, let tenure) = state else { return }
        finishRelease(tenure.lease, reason: reason, failure: failure, now: now, into: &actions)
    }

    // MARK: - Step results

    mutating func promotionStepSucceeded(_ step: PromotionStep, _ stamp: Stamp, now: MonotonicInstant, into actions: inout [Action]) {
        guard take(stamp, .step, "\(step.rawValue) result", into: &actions), case .promoting(step, _, let tenure) = state else { return }
        // Past the fence time nothing more starts: the deadline check that follows fences.
        guard now < timing.fenceAt(sentAt: tenure.lease.lastSentAt) else { return }
        if let next = promotionStep(after: step) {
            startPromotionStep(next, tenure: tenure, now: now, into: &actions)
        } else {
            state = .active(tenure)
            actions.append(.notify(.becameActive(token: tenure.lease.token)))
        }
    }

    mutating func backendStopped(_ outcome: StopOutcome, _ stamp: Stamp, now: MonotonicInstant, into actions: inout [Action]) {
        guard take(stamp, .step, "backend stop result", into: &actions) else { return }
        guard case .demoting(.stopBackend, let reason, let tenure) = state else { return }
        if case .unconfirmed(let why) = outcome {
            // Never release what may still run: kill it the hard way.
            fence(reason: "the graceful stop did not confirm the backend gone (\(why))", tenure: tenure, into: &actions)
            return
        }
        continueDemotion(after: .stopBackend, reason: reason, tenure: tenure, now: now, into: &actions)
    }

    mutating func demotionStepFinished(_ step: DemotionStep, failure: String?, _ stamp: Stamp, now: MonotonicInstant, into actions: inout [Action]) {
        guard take(stamp, .step, "\(step.rawValue) result", into: &actions) else { return }
        guard case .demoting(let demotion, let reason, let tenure) = state, demotion.step == step, step != .stopBackend, step != .releaseLease else { return }
        if step == .flushReplica, let failure {
            flushAttemptFailed(failure, now: now, into: &actions)
            return
        }
        if let failure {
            actions.append(.notify(.demotionStepFailed(step, failure)))
            if step == .releaseAddresses {
                // A VIP may still be present: never release the lease over it.
                fence(reason: "removing the virtual IPs failed: \(failure)", tenure: tenure, into: &actions)
                return
            }
        }
        continueDemotion(after: step, reason: reason, tenure: tenure, now: now, into: &actions)
    }

    mutating func fenceCompleted(_ outcome: StopOutcome, _ stamp: Stamp, now: MonotonicInstant, into actions: inout [Action]) {
        guard take(stamp, .step, "fence result", into: &actions), case .fencing(_, let lease, _) = state else { return }
        switch outcome {
        case .confirmed:
            actions.append(.disarmFenceKeeper)
            // Give the lease back if it is still ours, so another node need not wait.
            release(lease, handoffTo: nil, into: &actions)
        case .unconfirmed(let why):
            // The keeper stays armed: at its deadline (before the lease can expire) it kills
            // the backend and removes the VIPs. The lease is not released; it runs out.
            actions.append(.notify(.fenceUnconfirmed(token: stamp.token, reason: why)))
        }
        rememberOwnLease(lease)
        state = .passive(cooldownUntil: now + configuration.cooldown)
        holdoffUntil = max(holdoffUntil ?? now, now + timing.ttl)
        actions.append(.followActive)
    }

    // MARK: - Requests and failures

    mutating func failWhileHolding(_ reason: DemotionReason, now: MonotonicInstant, into actions: inout [Action]) {
        guard let tenure = holdingAndNotLeaving else { return }
        if paused {
            actions.append(.notify(.ignored("\(reason) while paused: the app does not change hands")))
            return
        }
        beginDemotion(reason, tenure: tenure, now: now, into: &actions)
    }

    mutating func shutdownRequested(now: MonotonicInstant, into actions: inout [Action]) {
        switch state {
        case .promoting(_, _, let tenure), .active(let tenure):
            beginDemotion(.shutdown, tenure: tenure, now: now, into: &actions)
        case .demoting(let demotion, _, let tenure):
            state = .demoting(demotion, .shutdown, tenure)
        case .passive:
            state = .stopped(acquire: nil)
        case .acquiring(let stamp, _):
            state = .stopped(acquire: stamp)
        case .fencing, .stopped:
            break
        }
    }

    // MARK: - The lease watch

    mutating func observe(_ observation: LeaseObservation, now: MonotonicInstant, into actions: inout [Action]) {
        knowsLeaseState = true
        switch observation {
        case .held(let holder, let revision, let token, let holderTTL):
            if let lease = held {
                if holder == me { return }  // our own write
                if case .demoting(.releaseLease, let reason, _) = state {
                    // Our release went through and someone took the lease before the release's
                    // answer reached us: we are done with it.
                    finishRelease(lease, reason: reason, failure: nil, now: now, into: &actions)
                } else if revision > lease.revision, let tenure {
                    fence(reason: "\(holder) holds the lease now (revision \(revision))", tenure: tenure, into: &actions)
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
            leaseView = .holder(ObservedLease(holder: holder, revision: revision, token: token, ttl: holderTTL, seenAt: now))
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
    mutating func keyVanished(freeing: Bool, handoffTo target: String?, now: MonotonicInstant, into actions: inout [Action]) {
        if held != nil {
            if case .demoting(.releaseLease, _, _) = state {
                // Our own release (or one racing it: the release's answer settles it).
            } else if let tenure {
                fence(reason: "the lease key vanished (expired or deleted)", tenure: tenure, into: &actions)
            }
            leaseView = .free(since: now, handoffTo: target)
            return
        }
        if freeing {
            leaseView = .free(since: now, handoffTo: target)
            return
        }
        if let last = observed {
            actions.append(.notify(.observed(
                "the lease key vanished without a release by its holder \(last.holder.node) (epoch \(last.token)): waiting out its ttl before taking over")))
        }
        // The view stays: acquireAt() keeps judging by the last holder's write time and ttl.
    }

    /// Says once per holder and ttl that the holder's ttl differs from this node's config.
    mutating func reportTimingDisagreement(holder: LeaseHolder, ttl: Duration?, into actions: inout [Action]) {
        guard let ttl, ttl != timing.ttl else {
            reportedTimingDisagreement = nil
            return
        }
        if let reported = reportedTimingDisagreement, reported.node == holder.node, reported.ttl == ttl { return }
        reportedTimingDisagreement = (holder.node, ttl)
        actions.append(.notify(.observed(
            "config disagrees with the holder: \(holder.node) holds the lease with ttl \(ttl.configString), this node's config says \(timing.ttl.configString); the lease is judged by the holder's ttl")))
    }
}
