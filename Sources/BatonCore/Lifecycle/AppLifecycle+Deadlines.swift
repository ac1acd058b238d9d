// The lifecycle's deadlines: what a tick does (fence before the lease can expire, renew, time a
// step out, try to acquire) and when the next tick is due. The lease's own arithmetic (fence
// time, takeover time) is ``LeaseTiming``'s; this file decides which of those instants counts
// in the current phase.

extension AppLifecycle {
    /// Acts on every deadline that has passed at `now`; ``handle(_:now:)`` calls it after
    /// every event.
    mutating func evaluateDeadlines(now: MonotonicInstant, into actions: inout [Action]) {
        if case .fencing = state { return }  // the fence runs: no renew, no step, no acquisition
        if var tenure {
            if now >= timing.fenceAt(sentAt: tenure.lease.lastSentAt) {
                fenceForSilence(tenure, now: now, into: &actions)
                return
            }
            if tenure.renew == nil, isRenewDue(tenure, now: now) {
                tenure.renewRetryAt = nil
                if tenure.firstUnconfirmedRenewAt == nil { tenure.firstUnconfirmedRenewAt = now }
                let stamp = newStamp(under: tenure.lease.token)
                tenure.renew = stamp
                setTenure(tenure)
                actions.append(.renewLease(revision: tenure.lease.revision, stamp))
            }
            evaluateStepDeadline(now: now, into: &actions)
            return
        }
        if case .passive(let cooldownUntil) = state, let at = acquireAt(), now >= at {
            let stamp = newStamp(under: 0)
            state = .acquiring(stamp, cooldownUntil: cooldownUntil)
            // Over a stale revision only when the holder's record says its ttl: a holder that does
            // not (a Baton before 0.9, a foreign value) may count on a longer one, so the key must
            // expire or be released first (a create).
            actions.append(.acquireLease(replacing: observed?.ttl != nil ? observed?.revision : nil, stamp))
        }
    }

    /// Times out the promotion or demotion step under way when its deadline has passed.
    private mutating func evaluateStepDeadline(now: MonotonicInstant, into actions: inout [Action]) {
        switch state {
        case .promoting(let step, let underWay, let tenure) where now >= underWay.deadline:
            beginDemotion(.promotionFailed(step, "timed out after \(stepTimeout(step))"), tenure: tenure, now: now, into: &actions)
        case .demoting(let demotion, let reason, let tenure):
            guard let underWay = demotion.underWay, now >= underWay.deadline else { return }
            switch demotion {
            case .stopBackend:
                fence(reason: "graceful stop did not finish within \(configuration.stopTimeout)", tenure: tenure, into: &actions)
            case .flushReplica(let flush, var underWay):
                if flush.waitingToRetry, now < flush.giveUpAt {
                    startFlushAttempt(flush, reason: reason, tenure: tenure, now: now, into: &actions)
                } else if flush.waitingToRetry {
                    flushAttemptFailed(flush.lastFailure ?? "the flush failed", now: now, into: &actions)
                } else {
                    // The attempt's answer is dropped if it comes late (its stamp is stale).
                    underWay.stamp = nil
                    state = .demoting(.flushReplica(flush, underWay), reason, tenure)
                    flushAttemptFailed("the attempt did not finish within \(Self.readable(configuration.stepTimeout))", now: now, into: &actions)
                }
            case .setAsideDatabase:
                actions.append(.notify(.demotionStepFailed(.setAsideDatabase, "timed out after \(Self.readable(configuration.stepTimeout))")))
                continueDemotion(after: .setAsideDatabase, reason: reason, tenure: tenure, now: now, into: &actions)
            case .releaseAddresses:
                fence(reason: "removing the virtual IPs did not finish within \(configuration.stepTimeout)", tenure: tenure, into: &actions)
            case .releaseLease:
                break
            }
        default:
            break
        }
    }

    private func isRenewDue(_ tenure: Tenure, now: MonotonicInstant) -> Bool {
        if case .demoting(.releaseLease, _, _) = state { return false }
        if let retry = tenure.renewRetryAt { return now >= retry }
        return now >= configuration.renewDue(after: tenure.lease.lastSentAt)
    }

    /// When this passive node may try to acquire, or nil when it may not (disconnected, paused,
    /// lease state unknown, duplicate instance, not eligible by the app's placement).
    public func acquireAt() -> MonotonicInstant? {
        guard case .passive(let cooldownUntil) = state, connected, knowsLeaseState, !paused, !duplicateDetected, placement.eligible else { return nil }
        var earliest: MonotonicInstant
        let holdback = configuration.priorityHoldback + placement.holdback
        switch leaseView {
        case .holder(let observed):
            earliest = timing.takeoverAt(seenAt: observed.seenAt, holderTTL: observed.ttl) + holdback
        case .free(let freeSince, let handoffTarget):
            switch handoffTarget {
            case .some(configuration.node): earliest = freeSince
            case .some: earliest = freeSince + timing.ttl + placement.holdback  // the target gets a head start
            case .none: earliest = freeSince + holdback
            }
        case .nothing:
            return nil
        }
        if let holdoffUntil { earliest = max(earliest, holdoffUntil) }
        if let cooldownUntil { earliest = max(earliest, cooldownUntil) }
        return earliest
    }

    /// The next instant at which ``handle(_:now:)`` with ``Event/tick`` has something to do.
    public func nextDeadline() -> MonotonicInstant? {
        var candidates: [MonotonicInstant] = []
        if let pausedUntil { candidates.append(pausedUntil) }
        if let tenure {
            candidates.append(timing.fenceAt(sentAt: tenure.lease.lastSentAt))
            // No renew while the release is in flight: offering its deadline would make the
            // clock tick without anything to do (a busy loop).
            let releasing: Bool = if case .demoting(.releaseLease, _, _) = state { true } else { false }
            if tenure.renew == nil, !releasing { candidates.append(tenure.renewRetryAt ?? configuration.renewDue(after: tenure.lease.lastSentAt)) }
            switch state {
            case .promoting(_, let underWay, _): candidates.append(underWay.deadline)
            case .demoting(let demotion, _, _): if let underWay = demotion.underWay { candidates.append(underWay.deadline) }
            default: break
            }
        } else if let at = acquireAt() {
            candidates.append(at)
        }
        return candidates.min()
    }
}
