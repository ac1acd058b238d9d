// The lifecycle's phases with the data each one keeps, and the public views of them (``phase``,
// ``held``, ``awaiting``, ...). A phase that holds no lease has no place for one, a step's stamp
// and deadline exist only while the step runs, and the final flush's progress only while
// flushing: the states the old loose variables allowed (passive with a held lease, a promotion
// step recorded while fencing, a release waiting for a renew outside the release step) cannot be
// written down.

extension AppLifecycle {
    /// The phase and its data.
    enum State: Sendable {
        /// Following the active node. `cooldownUntil`: no acquisition before it (set when this
        /// node gave a lease up or fenced; an acquisition that failed comes back with it).
        case passive(cooldownUntil: MonotonicInstant?)
        /// The acquiring write is under way.
        case acquiring(Stamp, cooldownUntil: MonotonicInstant?)
        /// The lease is held and a promotion step runs.
        case promoting(PromotionStep, StepUnderWay, Tenure)
        case active(Tenure)
        /// Giving the lease up for `reason`, one step at a time.
        case demoting(Demotion, DemotionReason, Tenure)
        /// The lease could not be kept: the backend is being killed. A renew sent before the
        /// fence may still be answered (its answer changes nothing).
        case fencing(Stamp?, lease: HeldLease, renew: Stamp?)
        /// batond is shutting down and this app is done. `acquire`: an acquiring write still
        /// unanswered when the shutdown came (its answer is ignored; the lease runs out).
        case stopped(acquire: Stamp?)
    }

    /// A held lease and the renewing of it, in the phases that renew (promoting, active,
    /// demoting).
    struct Tenure: Sendable, Hashable {
        var lease: HeldLease
        /// The renew in flight.
        var renew: Stamp?
        /// When a renew that got no answer is tried again.
        var renewRetryAt: MonotonicInstant?
        /// When the first renew since the last confirmed one was sent: where the lease counts
        /// from when a renew is recognised as our own write (``Event/renewRecognized(revision:_:)``).
        var firstUnconfirmedRenewAt: MonotonicInstant?

        init(lease: HeldLease) {
            self.lease = lease
        }
    }

    /// A promotion or demotion step that was asked for and is bounded by `deadline`.
    struct StepUnderWay: Sendable, Hashable {
        /// The stamp its result must carry; nil once a result was taken that did not move the
        /// lifecycle on (it named another step), or while a flush waits to try again.
        var stamp: Stamp?
        var deadline: MonotonicInstant
    }

    /// The final flush's progress.
    struct FinalFlush: Sendable, Hashable {
        /// When the flush gives up (`flushTimeout` after the first attempt).
        var giveUpAt: MonotonicInstant
        var attempts = 0
        /// Whether the lifecycle waits out the pause before the next attempt (no attempt in flight).
        var waitingToRetry = false
        var lastFailure: String?
    }

    /// The steps of a demotion with the data each keeps (see ``DemotionStep``).
    enum Demotion: Sendable, Hashable {
        case stopBackend(StepUnderWay)
        case flushReplica(FinalFlush, StepUnderWay)
        case setAsideDatabase(StepUnderWay)
        case releaseAddresses(StepUnderWay)
        /// `awaitsRenew`: the backend and VIPs are gone but a renew was in flight; the release
        /// waits for its outcome, so it deletes with the newest revision instead of losing the
        /// compare-and-set.
        case releaseLease(awaitsRenew: Bool)

        var step: DemotionStep {
            switch self {
            case .stopBackend: .stopBackend
            case .flushReplica: .flushReplica
            case .setAsideDatabase: .setAsideDatabase
            case .releaseAddresses: .releaseAddresses
            case .releaseLease: .releaseLease
            }
        }

        /// The step under way (none while the release runs).
        var underWay: StepUnderWay? {
            get {
                switch self {
                case .stopBackend(let step), .flushReplica(_, let step), .setAsideDatabase(let step), .releaseAddresses(let step): step
                case .releaseLease: nil
                }
            }
            set {
                guard let newValue else { return }
                switch self {
                case .stopBackend: self = .stopBackend(newValue)
                case .flushReplica(let flush, _): self = .flushReplica(flush, newValue)
                case .setAsideDatabase: self = .setAsideDatabase(newValue)
                case .releaseAddresses: self = .releaseAddresses(newValue)
                case .releaseLease: break
                }
            }
        }
    }

    /// Whether the app is paused.
    enum Pause: Sendable, Hashable {
        case none
        /// Until resumed.
        case indefinite
        /// Until resumed or until the instant passes.
        case until(MonotonicInstant)
    }

    /// What this node knows of the lease key.
    enum LeaseView: Sendable, Hashable {
        /// No holder to wait out and no free time: nothing reported yet, or this node's own
        /// acquisition replaced what it had seen.
        case nothing
        /// A holder's last write (another node's, or this node's own after a lease ended
        /// without a confirmed release), judged by its ttl.
        case holder(ObservedLease)
        /// The key was released or deleted at `since`; `handoffTo` names a switchover's target.
        case free(since: MonotonicInstant, handoffTo: String?)
    }

    /// The results the lifecycle waits for, by the stamp of the action that asked.
    public struct AwaitedResults: Sendable, Hashable {
        public var acquire: Stamp?
        public var renew: Stamp?
        public var release: Stamp?
        /// A promotion or demotion step, a graceful stop or a fence.
        public var step: Stamp?
    }

    // MARK: - Public views

    /// Where the app is.
    public var phase: Phase {
        switch state {
        case .passive: .passive
        case .acquiring: .acquiring
        case .promoting(let step, _, _): .promoting(step)
        case .active: .active
        case .demoting(let demotion, let reason, _): .demoting(demotion.step, reason)
        case .fencing: .fencing
        case .stopped: .stopped
        }
    }

    /// The lease this node holds: in the promoting, active, demoting and fencing phases only.
    public var held: HeldLease? {
        switch state {
        case .promoting(_, _, let tenure), .active(let tenure), .demoting(_, _, let tenure): tenure.lease
        case .fencing(_, let lease, _): lease
        case .passive, .acquiring, .stopped: nil
        }
    }

    /// What this node last saw of another holder (or of its own lease, after it ended without a
    /// confirmed release).
    public var observed: ObservedLease? {
        if case .holder(let lease) = leaseView { lease } else { nil }
    }

    /// Whether the app is paused.
    public var paused: Bool { pause != .none }

    /// When the current pause ends by itself; nil for an indefinite pause (or none).
    public var pausedUntil: MonotonicInstant? {
        if case .until(let instant) = pause { instant } else { nil }
    }

    /// Whether the lease watch has told this node the lease's state (held, free) at least once.
    public var leaseStateKnown: Bool { knowsLeaseState }

    /// The results this lifecycle waits for.
    public var awaiting: AwaitedResults {
        var results = AwaitedResults(release: releaseInFlight)
        switch state {
        case .passive:
            break
        case .acquiring(let stamp, _):
            results.acquire = stamp
        case .promoting(_, let step, let tenure):
            results.renew = tenure.renew
            results.step = step.stamp
        case .active(let tenure):
            results.renew = tenure.renew
        case .demoting(let demotion, _, let tenure):
            results.renew = tenure.renew
            results.step = demotion.underWay?.stamp
        case .fencing(let stamp, _, let renew):
            results.renew = renew
            results.step = stamp
        case .stopped(let acquire):
            results.acquire = acquire
        }
        return results
    }

    // MARK: - Internal views

    /// The held lease with its renewing, in the phases that renew it.
    var tenure: Tenure? {
        switch state {
        case .promoting(_, _, let tenure), .active(let tenure), .demoting(_, _, let tenure): tenure
        case .passive, .acquiring, .fencing, .stopped: nil
        }
    }

    /// Replaces the tenure of a renewing phase (no effect in the others).
    mutating func setTenure(_ tenure: Tenure) {
        switch state {
        case .promoting(let step, let underWay, _): state = .promoting(step, underWay, tenure)
        case .active: state = .active(tenure)
        case .demoting(let demotion, let reason, _): state = .demoting(demotion, reason, tenure)
        case .passive, .acquiring, .fencing, .stopped: break
        }
    }

    /// The lease, if the app is promoting or active (not on its way out).
    var holdingAndNotLeaving: Tenure? {
        switch state {
        case .promoting(_, _, let tenure), .active(let tenure): tenure
        default: nil
        }
    }

    /// Which awaited result an event answers.
    enum AwaitedSlot {
        case acquire, renew, release, step
    }

    /// Whether `stamp` is the result awaited at `slot`; if so, the slot is cleared (the phase
    /// stays; for an acquire result while acquiring, the caller moves on from acquiring). A
    /// stale result is reported and dropped.
    mutating func take(_ stamp: Stamp, _ slot: AwaitedSlot, _ what: String, into actions: inout [Action]) -> Bool {
        let awaited: Stamp? =
            switch slot {
            case .acquire: awaiting.acquire
            case .renew: awaiting.renew
            case .release: awaiting.release
            case .step: awaiting.step
            }
        guard awaited == stamp else {
            actions.append(.notify(.staleResult("\(what) (\(stamp)) arrived after a newer decision; dropped")))
            return false
        }
        clear(slot)
        return true
    }

    private mutating func clear(_ slot: AwaitedSlot) {
        switch (slot, state) {
        case (.release, _):
            releaseInFlight = nil
        case (.acquire, .acquiring):
            // The acquire result's handlers leave acquiring at once (it has no stamp-less form).
            break
        case (.acquire, .stopped):
            state = .stopped(acquire: nil)
        case (.renew, .fencing(let stamp, let lease, _)):
            state = .fencing(stamp, lease: lease, renew: nil)
        case (.renew, _):
            if var tenure { tenure.renew = nil; setTenure(tenure) }
        case (.step, .promoting(let step, var underWay, let tenure)):
            underWay.stamp = nil
            state = .promoting(step, underWay, tenure)
        case (.step, .demoting(var demotion, let reason, let tenure)):
            demotion.underWay?.stamp = nil
            state = .demoting(demotion, reason, tenure)
        case (.step, .fencing(_, let lease, let renew)):
            state = .fencing(nil, lease: lease, renew: renew)
        default:
            break
        }
    }
}
