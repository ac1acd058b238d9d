import BatonCore
import Testing

/// Drives an ``AppLifecycle`` along a simulated monotonic clock.
struct Harness {
    static let timing = LeaseTiming(ttl: .seconds(3), renew: .seconds(1), fenceBudget: .milliseconds(500), skew: .milliseconds(250))
    var machine: AppLifecycle
    var now = MonotonicInstant(nanoseconds: 1_000_000_000)

    init(
        hasHealthCheck: Bool = false, hasReplica: Bool = false, hasAddresses: Bool = false, priorityHoldback: Duration = .zero, paused: Bool = false,
        renewPhase: Duration? = nil
    ) {
        var configuration = AppLifecycle.Configuration(
            node: "node-a", instance: "i-1", timing: Self.timing, hasHealthCheck: hasHealthCheck, hasReplica: hasReplica, hasAddresses: hasAddresses,
            stepTimeout: .seconds(5), stopTimeout: .seconds(12), priorityHoldback: priorityHoldback)
        configuration.renewPhase = renewPhase
        machine = AppLifecycle(configuration: configuration, paused: paused)
    }

    /// Feeds `event`; a result carrying the `.pending` placeholder gets the stamp the machine
    /// waits for (stale results are built with real stamps). The stamps of the returned actions
    /// keep their token and lose their generation, so expectations can be written as literals.
    @discardableResult
    mutating func send(_ event: AppLifecycle.Event) -> [AppLifecycle.Action] {
        machine.handle(restamped(event), now: now).map(Self.normalized)
    }

    /// Feeds `event` as it is and returns the actions with their real stamps.
    mutating func sendExactly(_ event: AppLifecycle.Event) -> [AppLifecycle.Action] {
        machine.handle(event, now: now)
    }

    /// Fills in the awaited stamp for `.pending`, but only where the result is one the machine
    /// can be waiting for (the step in progress): any other result can only be a stale one in
    /// production, so it keeps the placeholder, which is never awaited.
    func restamped(_ event: AppLifecycle.Event) -> AppLifecycle.Event {
        let awaiting = machine.awaiting
        let phase = machine.phase
        func fill(_ stamp: Stamp, _ slot: Stamp?, if plausible: Bool = true) -> Stamp { stamp == .pending && plausible ? slot ?? stamp : stamp }
        let stopping: Bool = if case .demoting(.stopBackend, _) = phase { true } else { false }
        switch event {
        case .acquireSucceeded(let revision, let sentAt, let stamp): return .acquireSucceeded(revision: revision, sentAt: sentAt, fill(stamp, awaiting.acquire))
        case .acquireFailed(let failure, let stamp): return .acquireFailed(failure, fill(stamp, awaiting.acquire))
        case .renewSucceeded(let revision, let sentAt, let stamp): return .renewSucceeded(revision: revision, sentAt: sentAt, fill(stamp, awaiting.renew))
        case .renewRecognized(let revision, let stamp): return .renewRecognized(revision: revision, fill(stamp, awaiting.renew))
        case .renewFailed(let failure, let stamp): return .renewFailed(failure, fill(stamp, awaiting.renew))
        case .releaseFinished(let failure, let stamp): return .releaseFinished(failure, fill(stamp, awaiting.release))
        case .promotionStepSucceeded(let step, let stamp):
            return .promotionStepSucceeded(step, fill(stamp, awaiting.step, if: phase == .promoting(step)))
        case .promotionStepFailed(let step, let reason, let stamp):
            return .promotionStepFailed(step, reason, fill(stamp, awaiting.step, if: phase == .promoting(step)))
        case .backendStopped(let outcome, let stamp): return .backendStopped(outcome, fill(stamp, awaiting.step, if: stopping))
        case .demotionStepFinished(let step, let failure, let stamp):
            let inStep: Bool = if case .demoting(step, _) = phase { true } else { false }
            return .demotionStepFinished(step, failure: failure, fill(stamp, awaiting.step, if: inStep))
        case .fenceCompleted(let outcome, let stamp): return .fenceCompleted(outcome, fill(stamp, awaiting.step, if: phase == .fencing))
        default: return event
        }
    }

    /// Whether `actions` only report a dropped stale result.
    static func droppedAsStale(_ actions: [AppLifecycle.Action]) -> Bool {
        actions.count == 1 && { if case .notify(.staleResult) = actions[0] { true } else { false } }()
    }

    static func normalized(_ action: AppLifecycle.Action) -> AppLifecycle.Action {
        func strip(_ stamp: Stamp) -> Stamp { .epoch(stamp.token) }
        switch action {
        case .acquireLease(let replacing, let stamp): return .acquireLease(replacing: replacing, strip(stamp))
        case .renewLease(let revision, let stamp): return .renewLease(revision: revision, strip(stamp))
        case .releaseLease(let revision, let handoffTo, let stamp): return .releaseLease(revision: revision, handoffTo: handoffTo, strip(stamp))
        case .runPromotionStep(let step, let stamp): return .runPromotionStep(step, strip(stamp))
        case .stopBackend(let stamp): return .stopBackend(strip(stamp))
        case .flushReplica(let stamp): return .flushReplica(strip(stamp))
        case .setAsideDatabase(let reason, let stamp): return .setAsideDatabase(reason: reason, strip(stamp))
        case .releaseAddresses(let stamp): return .releaseAddresses(strip(stamp))
        case .fence(let stamp): return .fence(strip(stamp))
        default: return action
        }
    }

    /// Advances by `duration` in 100 ms ticks, answering every renew with success (the lease
    /// stays ours), and returns the other actions.
    mutating func advanceRenewing(_ duration: Duration) -> [AppLifecycle.Action] {
        var collected: [AppLifecycle.Action] = []
        var left = duration
        while left > .zero {
            let step = min(left, .milliseconds(100))
            left -= step
            for action in advance(step) {
                if case .renewLease(let revision, _) = action {
                    collected += send(.renewSucceeded(revision: revision + 1, sentAt: now, .pending)).filter { if case .armFenceKeeper = $0 { false } else { true } }
                } else {
                    collected.append(action)
                }
            }
        }
        return collected
    }

    @discardableResult
    mutating func advance(_ duration: Duration) -> [AppLifecycle.Action] {
        now = now + duration
        return send(.tick)
    }

    /// Connected, lease seen free, acquired at `now`, backend started: active with token 7.
    mutating func makeActive() {
        send(.natsConnected)
        #expect(send(.leaseObserved(.free(handoffTo: nil))) == [.acquireLease(replacing: nil, .epoch(0))])
        send(.acquireSucceeded(revision: 7, sentAt: now, .pending))
        send(.promotionStepSucceeded(.startBackend, .pending))
        #expect(machine.phase == .active)
    }
}

private let other = LeaseHolder(node: "node-b", instance: "j-1")

extension Stamp {
    /// In a result sent through ``Harness/send(_:)``: whatever stamp the machine waits for.
    static let pending = Stamp(token: .max, generation: .max)
    /// An action's stamp as ``Harness/send(_:)`` returns it: the token, without the generation.
    static func epoch(_ token: UInt64) -> Stamp { Stamp(token: token, generation: 0) }
}

@Suite("Per-app lifecycle state machine")
struct AppLifecycleTests {
    @Test func acquiresAFreeLeaseOnlyOnceItsStateIsKnown() {
        var harness = Harness()
        #expect(harness.send(.natsConnected).isEmpty)
        #expect(harness.advance(.seconds(10)).isEmpty)  // no watch snapshot yet: unknown
        #expect(harness.send(.leaseObserved(.free(handoffTo: nil))) == [.acquireLease(replacing: nil, .epoch(0))])
        #expect(harness.machine.phase == .acquiring)
    }

    @Test func takeoverWaitsTTLPlusSkewAfterTheLastObservedWrite() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.held(other, revision: 4, token: 3, ttl: .seconds(3))))
        let seen = harness.now
        #expect(harness.machine.acquireAt() == seen + .milliseconds(3250))
        #expect(harness.advance(.milliseconds(2000)).isEmpty)
        // A renew seen later pushes the deadline.
        harness.send(.leaseObserved(.held(other, revision: 5, token: 3, ttl: .seconds(3))))
        let renewedAt = harness.now
        #expect(harness.advance(.milliseconds(3249)).isEmpty)
        #expect(harness.now < renewedAt + .milliseconds(3250))
        #expect(harness.advance(.milliseconds(1)) == [.acquireLease(replacing: 5, .epoch(0))])
    }

    @Test func acquireArmsTheKeeperBeforeStartingTheBackend() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        let sent = harness.now
        harness.now = harness.now + .milliseconds(20)
        let actions = harness.send(.acquireSucceeded(revision: 42, sentAt: sent, .pending))
        #expect(actions == [
            .armFenceKeeper(token: 42, deadline: sent + .milliseconds(2500)),
            .notify(.acquired(token: 42)),
            .runPromotionStep(.startBackend, .epoch(42)),
        ])
        #expect(harness.machine.phase == .promoting(.startBackend))
        #expect(harness.machine.held?.token == 42)
    }

    @Test func aLateAcquireAnswerStartsNothingAndFences() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        let sent = harness.now
        harness.now = harness.now + .milliseconds(2600)  // past sent + ttl - fence budget
        let actions = harness.send(.acquireSucceeded(revision: 9, sentAt: sent, .pending))
        #expect(!actions.contains(.runPromotionStep(.startBackend, .epoch(9))))
        #expect(actions.contains(.fence(.epoch(9))))
        #expect(harness.machine.phase == .fencing)
    }

    @Test func healthGatesActivation() {
        var harness = Harness(hasHealthCheck: true)
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        harness.send(.acquireSucceeded(revision: 3, sentAt: harness.now, .pending))
        #expect(harness.send(.promotionStepSucceeded(.startBackend, .pending)) == [.runPromotionStep(.awaitHealthy, .epoch(3))])
        #expect(harness.send(.promotionStepSucceeded(.awaitHealthy, .pending)) == [.notify(.becameActive(token: 3))])
        #expect(harness.machine.phase == .active)
    }

    @Test func renewsEveryIntervalAndRearmsTheKeeperFromTheSendTime() {
        var harness = Harness()
        harness.makeActive()
        #expect(harness.advance(.milliseconds(999)).isEmpty)
        #expect(harness.advance(.milliseconds(1)) == [.renewLease(revision: 7, .epoch(7))])
        let sent = harness.now
        #expect(harness.advance(.milliseconds(500)).isEmpty)  // one renew in flight at a time
        #expect(harness.send(.renewSucceeded(revision: 8, sentAt: sent, .pending)) == [.armFenceKeeper(token: 7, deadline: sent + .milliseconds(2500))])
        #expect(harness.machine.held == AppLifecycle.HeldLease(token: 7, revision: 8, lastSentAt: sent))
        #expect(harness.advance(.milliseconds(500)) == [.renewLease(revision: 8, .epoch(7))])
    }

    /// With a renew phase, renews come on the node's grid (phase + k × renew): the first one
    /// early, once, then one interval apart; never later than one interval after the last write,
    /// and the keeper is still armed from each write's send time.
    @Test func renewsOnTheNodesGridNeverLaterThanOneIntervalAfterTheLastWrite() {
        var harness = Harness(renewPhase: .milliseconds(300))
        harness.makeActive()  // at t+1s: the grid is at t+1.3s, t+2.3s, ...
        #expect(harness.machine.nextDeadline() == MonotonicInstant(nanoseconds: 1_300_000_000))
        #expect(harness.advance(.milliseconds(299)).isEmpty)
        #expect(harness.advance(.milliseconds(1)) == [.renewLease(revision: 7, .epoch(7))])
        // The write left a little after the grid instant; the next renew is still on the grid.
        let sent = harness.now + .milliseconds(20)
        #expect(harness.send(.renewSucceeded(revision: 8, sentAt: sent, .pending)) == [.armFenceKeeper(token: 7, deadline: sent + .milliseconds(2500))])
        #expect(harness.machine.nextDeadline() == MonotonicInstant(nanoseconds: 2_300_000_000))
        #expect(harness.advance(.milliseconds(999)).isEmpty)
        #expect(harness.advance(.milliseconds(1)) == [.renewLease(revision: 8, .epoch(7))])
        // A renew answered late (sent long after its grid instant) keeps the bound: due at most
        // one interval after its own send.
        let late = harness.now + .milliseconds(900)
        harness.now = late
        harness.send(.renewSucceeded(revision: 9, sentAt: late, .pending))
        #expect(harness.machine.nextDeadline() == MonotonicInstant(nanoseconds: 3_300_000_000))
    }

    @Test(arguments: [Duration.zero, .milliseconds(1), .milliseconds(417), .milliseconds(999)])
    func theRenewGridIsNeverLaterThanOneIntervalAndAlwaysAfterTheWrite(phase: Duration) {
        var configuration = Harness().machine.configuration
        configuration.renewPhase = phase
        let renew = Harness.timing.renew.totalNanoseconds
        var random = SplitMix64(seed: 41)
        for _ in 0..<2000 {
            // Instants on both sides of the clock's origin.
            let sentAt = MonotonicInstant(nanoseconds: Int64(bitPattern: random.next() % 20_000_000_000) - 10_000_000_000)
            let due = configuration.renewDue(after: sentAt)
            #expect(due <= sentAt + Harness.timing.renew, "sent at \(sentAt), phase \(phase)")
            #expect(due > sentAt, "sent at \(sentAt), phase \(phase)")
            let offset = due.nanoseconds - phase.totalNanoseconds
            #expect(((offset % renew) + renew) % renew == 0, "due \(due) is off the grid (phase \(phase))")
        }
        configuration.renewPhase = nil
        #expect(configuration.renewDue(after: MonotonicInstant(nanoseconds: 5)) == MonotonicInstant(nanoseconds: 5) + Harness.timing.renew)
    }

    @Test func fencesAtSentPlusTTLMinusBudgetWhenRenewsKeepFailing() {
        var harness = Harness()
        harness.makeActive()
        let acquiredAt = harness.now
        var fencedAt: MonotonicInstant?
        var fenceActions: [AppLifecycle.Action] = []
        while fencedAt == nil, harness.now < acquiredAt + .seconds(10) {
            let actions = harness.advance(.milliseconds(10))
            if actions.contains(.renewLease(revision: 7, .epoch(7))) {
                harness.send(.renewFailed(.unavailable("timeout"), .pending))
            }
            if actions.contains(.fence(.epoch(7))) {
                fencedAt = harness.now
                fenceActions = actions
            }
        }
        #expect(fencedAt == acquiredAt + .milliseconds(2500))
        // The reason says how long ago, in readable units (not a monotonic clock's offset).
        #expect(fenceActions.contains(.notify(.fenced(
            token: 7, reason: "no successful renew for 2.5s (ttl 3s, fence budget 500ms); fencing before the lease can expire"))))
        #expect(harness.machine.phase == .fencing)
        // Nothing else happens until fencing completes; then the lease is given back, and the
        // node waits before it may acquire again.
        #expect(harness.advance(.seconds(1)).isEmpty)
        let done = harness.send(.fenceCompleted(.confirmed, .pending))
        #expect(done == [.disarmFenceKeeper, .releaseLease(revision: 7, handoffTo: nil, .epoch(7)), .followActive])
        #expect(harness.machine.phase == .passive)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        #expect(harness.machine.acquireAt()! >= harness.now + .seconds(3))
    }

    /// Chaos suite, RELIABILITY.md L2: on NATS 2.9 an expiry reaches no watcher, so a node that
    /// fenced must try again by its own last write's deadline, without any watch event.
    @Test(arguments: [true, false])
    func aNodeThatFencedTriesAgainWithoutAnyWatchEvent(confirmed: Bool) {
        var harness = Harness()
        // Active by a takeover (the lease was last seen held by another node, never free), so
        // the node has no earlier free time to fall back on.
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.held(other, revision: 4, token: 3, ttl: .seconds(3))))
        #expect(harness.advance(.milliseconds(3250)) == [.acquireLease(replacing: 4, .epoch(0))])
        harness.send(.acquireSucceeded(revision: 7, sentAt: harness.now, .pending))
        harness.send(.promotionStepSucceeded(.startBackend, .pending))
        #expect(harness.machine.phase == .active)
        var lastRenewSentAt = harness.now
        harness.advance(.seconds(1))
        harness.send(.renewSucceeded(revision: 8, sentAt: harness.now, .pending))
        lastRenewSentAt = harness.now
        // NATS goes quiet: renews fail until the node fences.
        while harness.machine.phase != .fencing {
            let actions = harness.advance(.milliseconds(10))
            if actions.contains(where: { if case .renewLease = $0 { true } else { false } }) {
                harness.send(.renewFailed(.unavailable("timeout"), .pending))
            }
        }
        harness.send(.fenceCompleted(confirmed ? .confirmed : .unconfirmed("keeper gone"), .pending))
        #expect(harness.machine.phase == .passive)
        // No watch event at all from here on; the node tries again, not before its own last
        // write's takeover deadline, replacing that write.
        let deadline = harness.machine.acquireAt()
        #expect(deadline != nil)
        if let deadline { #expect(deadline >= lastRenewSentAt + .milliseconds(3250)) }
        var acquired: [AppLifecycle.Action] = []
        for _ in 0..<2000 where acquired.isEmpty {
            acquired = harness.advance(.milliseconds(10)).filter { if case .acquireLease = $0 { true } else { false } }
        }
        #expect(acquired == [.acquireLease(replacing: 8, .epoch(0))])
    }

    @Test func losingTheCompareAndSetFencesAtOnce() {
        var harness = Harness()
        harness.makeActive()
        harness.advance(.seconds(1))
        #expect(harness.send(.renewFailed(.conflict, .pending)).prefix(1) == [.fence(.epoch(7))])
        #expect(harness.machine.phase == .fencing)
    }

    @Test func theLeaseVanishingOrAnotherHolderAppearingFencesAtOnce() {
        var vanished = Harness()
        vanished.makeActive()
        #expect(vanished.send(.leaseObserved(.free(handoffTo: nil))).first == .fence(.epoch(7)))
        var overtaken = Harness()
        overtaken.makeActive()
        #expect(overtaken.send(.leaseObserved(.held(LeaseHolder(node: "node-a", instance: "i-1"), revision: 7, token: 7))).isEmpty)  // our own write
        #expect(overtaken.send(.leaseObserved(.held(other, revision: 12, token: 12))).first == .fence(.epoch(7)))
    }

    @Test func stepdownStopsTheBackendThenReleasesAndCoolsDown() {
        var harness = Harness()
        harness.makeActive()
        #expect(harness.send(.stepdownRequested) == [.notify(.demoting(.stepdown)), .stopBackend(.epoch(7))])
        // The lease is still renewed while the backend stops.
        #expect(harness.advance(.seconds(1)) == [.renewLease(revision: 7, .epoch(7))])
        harness.send(.renewSucceeded(revision: 8, sentAt: harness.now, .pending))
        #expect(harness.send(.backendStopped(.confirmed, .pending)) == [.disarmFenceKeeper, .releaseLease(revision: 8, handoffTo: nil, .epoch(7))])
        #expect(harness.send(.releaseFinished(nil, .pending)) == [.notify(.released(token: 7)), .followActive])
        #expect(harness.machine.phase == .passive)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        #expect(harness.machine.acquireAt() == harness.now + .seconds(6))  // cooldown: 2 x ttl
    }

    @Test func aReleaseWaitsForTheRenewInFlightAndDeletesWithItsRevision() {
        var harness = Harness()
        harness.makeActive()
        harness.send(.stepdownRequested)
        #expect(harness.advance(.seconds(1)) == [.renewLease(revision: 7, .epoch(7))])
        let sent = harness.now
        // The backend stops while the renew is still on its way: no delete with revision 7 yet.
        #expect(harness.send(.backendStopped(.confirmed, .pending)) == [.disarmFenceKeeper])
        #expect(harness.advance(.milliseconds(10)).isEmpty)
        // The renew's answer: delete with its revision, and the disarmed keeper stays disarmed.
        #expect(harness.send(.renewSucceeded(revision: 8, sentAt: sent, .pending)) == [.releaseLease(revision: 8, handoffTo: nil, .epoch(7))])
        #expect(harness.send(.releaseFinished(nil, .pending)) == [.notify(.released(token: 7)), .followActive])

        var lost = Harness()
        lost.makeActive()
        lost.send(.switchoverRequested(to: "node-b"))
        lost.advance(.seconds(1))
        lost.send(.backendStopped(.confirmed, .pending))
        #expect(lost.send(.renewFailed(.unavailable("timeout"), .pending)) == [.releaseLease(revision: 7, handoffTo: "node-b", .epoch(7))])
        #expect(lost.send(.releaseFinished(.conflict, .pending)) == [
            .notify(.releaseUnconfirmed(token: 7, reason: "the lease was no longer ours to delete")), .followActive,
        ])
        #expect(lost.machine.phase == .passive && lost.machine.held == nil)

        var overtaken = Harness()
        overtaken.makeActive()
        overtaken.send(.stepdownRequested)
        overtaken.advance(.seconds(1))
        overtaken.send(.backendStopped(.confirmed, .pending))
        #expect(overtaken.send(.renewFailed(.conflict, .pending)) == [
            .notify(.releaseUnconfirmed(token: 7, reason: "the lease was no longer ours to delete")), .followActive,
        ])
    }

    @Test func promotionRunsReplicaThenAddressesThenBackendThenHealth() {
        var harness = Harness(hasHealthCheck: true, hasReplica: true, hasAddresses: true)
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        #expect(harness.send(.acquireSucceeded(revision: 4, sentAt: harness.now, .pending)).last == .runPromotionStep(.promoteReplica, .epoch(4)))
        #expect(Harness.droppedAsStale(harness.send(.promotionStepSucceeded(.startBackend, .pending))))  // not the step in progress
        #expect(harness.send(.promotionStepSucceeded(.promoteReplica, .pending)) == [.runPromotionStep(.claimAddresses, .epoch(4))])
        #expect(harness.send(.promotionStepSucceeded(.claimAddresses, .pending)) == [.runPromotionStep(.startBackend, .epoch(4))])
        #expect(harness.send(.promotionStepSucceeded(.startBackend, .pending)) == [.runPromotionStep(.awaitHealthy, .epoch(4))])
        #expect(harness.send(.promotionStepSucceeded(.awaitHealthy, .pending)) == [.notify(.becameActive(token: 4))])

        var addressesOnly = Harness(hasAddresses: true)
        addressesOnly.send(.natsConnected)
        addressesOnly.send(.leaseObserved(.free(handoffTo: nil)))
        #expect(addressesOnly.send(.acquireSucceeded(revision: 4, sentAt: addressesOnly.now, .pending)).last == .runPromotionStep(.claimAddresses, .epoch(4)))
    }

    @Test func demotionStopsTheBackendFlushesTheReplicaRemovesAddressesThenReleases() {
        var harness = Harness(hasReplica: true, hasAddresses: true)
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        harness.send(.acquireSucceeded(revision: 7, sentAt: harness.now, .pending))
        harness.send(.promotionStepSucceeded(.promoteReplica, .pending))
        harness.send(.promotionStepSucceeded(.claimAddresses, .pending))
        harness.send(.promotionStepSucceeded(.startBackend, .pending))
        #expect(harness.machine.phase == .active)
        harness.send(.switchoverRequested(to: "node-b"))
        #expect(harness.send(.backendStopped(.confirmed, .pending)) == [.flushReplica(.epoch(7))])
        // While the VIPs are still up the keeper stays armed: a renew re-arms it.
        #expect(harness.advance(.seconds(1)) == [.renewLease(revision: 7, .epoch(7))])
        #expect(harness.send(.renewSucceeded(revision: 8, sentAt: harness.now, .pending)) == [.armFenceKeeper(token: 7, deadline: harness.now + .milliseconds(2500))])
        #expect(harness.send(.demotionStepFinished(.flushReplica, failure: nil, .pending)) == [.releaseAddresses(.epoch(7))])
        #expect(Harness.droppedAsStale(harness.send(.demotionStepFinished(.flushReplica, failure: nil, .pending))))  // stale
        #expect(harness.send(.demotionStepFinished(.releaseAddresses, failure: nil, .pending)) == [
            .disarmFenceKeeper, .releaseLease(revision: 8, handoffTo: "node-b", .epoch(7)),
        ])
    }

    @Test func aSlowFlushIsRetriedThenSetAsideButSlowAddressRemovalFences() {
        var harness = Harness(hasReplica: true, hasAddresses: true)
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        harness.send(.acquireSucceeded(revision: 7, sentAt: harness.now, .pending))
        for step in [PromotionStep.promoteReplica, .claimAddresses, .startBackend] { harness.send(.promotionStepSucceeded(step, .pending)) }
        harness.send(.stepdownRequested)
        harness.send(.backendStopped(.confirmed, .pending))
        var sawReleaseAddresses = false
        var fenced = false
        for _ in 0..<300 {
            let actions = harness.advance(.milliseconds(100))
            if let renew = actions.first(where: { if case .renewLease = $0 { true } else { false } }), case .renewLease(let revision, _) = renew {
                harness.send(.renewSucceeded(revision: revision + 1, sentAt: harness.now, .pending))
            }
            if let setAside = actions.first(where: { if case .setAsideDatabase = $0 { true } else { false } }) {
                // 15s flush timeout, 5s per attempt, 0.5s between attempts: three attempts.
                #expect(actions.contains(.notify(.flushAbandoned(token: 7, attempts: 3, reason: "the attempt did not finish within 5s"))))
                #expect(setAside == .setAsideDatabase(reason: "the attempt did not finish within 5s", .epoch(7)))
                #expect(harness.send(.demotionStepFinished(.setAsideDatabase, failure: nil, .pending)) == [.releaseAddresses(.epoch(7))])
                sawReleaseAddresses = true
            }
            if actions.contains(.releaseAddresses(.epoch(7))) { sawReleaseAddresses = true }
            if actions.contains(.fence(.epoch(7))) { fenced = true }
        }
        #expect(sawReleaseAddresses)
        #expect(fenced)
        #expect(harness.send(.fenceCompleted(.confirmed, .pending)).last == .followActive)
    }

    /// Active with a replica and token 7, switched over to node-b, backend stopped: the first
    /// flush attempt is out.
    private static func flushing(hasAddresses: Bool = false) -> Harness {
        var harness = Harness(hasReplica: true, hasAddresses: hasAddresses)
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        harness.send(.acquireSucceeded(revision: 7, sentAt: harness.now, .pending))
        harness.send(.promotionStepSucceeded(.promoteReplica, .pending))
        if hasAddresses { harness.send(.promotionStepSucceeded(.claimAddresses, .pending)) }
        harness.send(.promotionStepSucceeded(.startBackend, .pending))
        harness.send(.switchoverRequested(to: "node-b"))
        #expect(harness.send(.backendStopped(.confirmed, .pending)) == [.flushReplica(.epoch(7))])
        return harness
    }

    @Test func aFailedFlushKeepsTheLeaseRenewingAndIsRetriedUntilItSucceeds() {
        var harness = Self.flushing()
        // Another process holds the write lock: the attempt fails. No release, no VIP change.
        #expect(harness.send(.demotionStepFinished(.flushReplica, failure: "the app still holds the write lock", .pending)) == [
            .notify(.flushRetrying(token: 7, attempt: 1, reason: "the app still holds the write lock", giveUpIn: .seconds(15)))
        ])
        #expect(harness.machine.phase == .demoting(.flushReplica, .switchover(to: "node-b")))
        #expect(harness.machine.held != nil)
        #expect(harness.advance(.milliseconds(500)) == [.flushReplica(.epoch(7))])
        #expect(harness.send(.demotionStepFinished(.flushReplica, failure: "publish failed", .pending)) == [
            .notify(.flushRetrying(token: 7, attempt: 2, reason: "publish failed", giveUpIn: .milliseconds(14_500)))
        ])
        // The lease keeps being renewed (and the keeper re-armed) while the flush is retried.
        #expect(harness.advance(.milliseconds(500)) == [.renewLease(revision: 7, .epoch(7)), .flushReplica(.epoch(7))])
        #expect(harness.send(.renewSucceeded(revision: 8, sentAt: harness.now, .pending)) == [.armFenceKeeper(token: 7, deadline: harness.now + .milliseconds(2500))])
        // Renewing for longer than the ttl: never fenced while the renews go through.
        for _ in 0..<4 {
            let actions = harness.advance(.seconds(1))
            #expect(!actions.contains { if case .fence = $0 { true } else { false } })
            if case .renewLease(let revision, _)? = actions.first(where: { if case .renewLease = $0 { true } else { false } }) {
                harness.send(.renewSucceeded(revision: revision + 1, sentAt: harness.now, .pending))
            }
        }
        #expect(harness.machine.phase == .demoting(.flushReplica, .switchover(to: "node-b")))
        // The third attempt (sent at 1s) times out at 6s, the fourth goes at 6.5s and succeeds:
        // only then is the lease released.
        let timedOut = harness.advance(.seconds(1))
        #expect(timedOut.contains(.notify(.flushRetrying(token: 7, attempt: 3, reason: "the attempt did not finish within 5s", giveUpIn: .seconds(9)))))
        if case .renewLease(let revision, _)? = timedOut.first { harness.send(.renewSucceeded(revision: revision + 1, sentAt: harness.now, .pending)) }
        #expect(harness.advance(.milliseconds(500)) == [.flushReplica(.epoch(7))])
        let revision = harness.machine.held!.revision
        #expect(revision == 13)
        let actions = harness.send(.demotionStepFinished(.flushReplica, failure: nil, .pending))
        #expect(actions == [.disarmFenceKeeper, .releaseLease(revision: revision, handoffTo: "node-b", .epoch(7))])
    }

    @Test func aFlushThatKeepsFailingSetsTheDatabaseAsideBeforeTheLeaseIsReleased() {
        var harness = Self.flushing()
        var attempts = 0
        var setAside: [AppLifecycle.Action] = []
        for _ in 0..<200 {
            let actions = harness.advance(.milliseconds(100))
            setAside += actions.filter { if case .setAsideDatabase = $0 { true } else { false } }
            if case .renewLease(let revision, _)? = actions.first(where: { if case .renewLease = $0 { true } else { false } }) {
                harness.send(.renewSucceeded(revision: revision + 1, sentAt: harness.now, .pending))
            }
            if harness.machine.awaiting.step != nil, case .demoting(.flushReplica, _) = harness.machine.phase {
                attempts += 1
                let answer = harness.send(.demotionStepFinished(.flushReplica, failure: "fenced by JetStream", .pending))
                setAside += answer.filter { if case .setAsideDatabase = $0 { true } else { false } }
                #expect(!answer.contains { if case .releaseLease = $0 { true } else { false } })
            }
            if case .demoting(.setAsideDatabase, _) = harness.machine.phase { break }
        }
        #expect(setAside == [.setAsideDatabase(reason: "fenced by JetStream", .epoch(7))])
        #expect(attempts > 20)  // one every 0.5s for 15s
        #expect(harness.machine.held != nil)
        // Moving the database aside failed: reported, and the handover goes on.
        let revision = harness.machine.held!.revision
        #expect(harness.send(.demotionStepFinished(.setAsideDatabase, failure: "rename: permission denied", .pending)) == [
            .notify(.demotionStepFailed(.setAsideDatabase, "rename: permission denied")), .disarmFenceKeeper,
            .releaseLease(revision: revision, handoffTo: "node-b", .epoch(7)),
        ])
    }

    @Test func theFlushGivesUpAfterTheFlushTimeoutWithTheLastReason() {
        var harness = Self.flushing()
        #expect(harness.send(.demotionStepFinished(.flushReplica, failure: "disk full", .pending)).count == 1)
        // The next attempts hang (at 0.5s, 6s, 11.5s); each times out after 5s, the last one at
        // the give-up time (15s): the reason is that attempt's.
        let actions = harness.advanceRenewing(.seconds(15))
        #expect(actions.filter { $0 == .flushReplica(.epoch(7)) }.count == 3)
        #expect(actions.contains(.notify(.flushAbandoned(token: 7, attempts: 4, reason: "the attempt did not finish within 5s"))))
        #expect(actions.last == .setAsideDatabase(reason: "the attempt did not finish within 5s", .epoch(7)))
        #expect(!actions.contains { if case .fence = $0 { true } else { false } })

        // A pause between attempts that ends at the give-up time gives up with the last failure.
        var failing = Self.flushing()
        var last: [AppLifecycle.Action] = []
        for _ in 0..<150 {
            if failing.machine.awaiting.step != nil, case .demoting(.flushReplica, _) = failing.machine.phase {
                last = failing.send(.demotionStepFinished(.flushReplica, failure: "disk full", .pending))
            }
            last += failing.advanceRenewing(.milliseconds(100))
            if case .demoting(.setAsideDatabase, _) = failing.machine.phase { break }
        }
        #expect(last.contains(.setAsideDatabase(reason: "disk full", .epoch(7))))
    }

    @Test func aLateAnswerOfATimedOutFlushAttemptIsDroppedAndTheRetryDecides() {
        var harness = Self.flushing()
        let first = harness.machine.awaiting.step!
        var actions = harness.advanceRenewing(.seconds(5))
        #expect(actions == [.notify(.flushRetrying(token: 7, attempt: 1, reason: "the attempt did not finish within 5s", giveUpIn: .seconds(10)))])
        #expect(Harness.droppedAsStale(harness.sendExactly(.demotionStepFinished(.flushReplica, failure: nil, first))))
        #expect(harness.machine.phase == .demoting(.flushReplica, .switchover(to: "node-b")))
        actions = harness.advanceRenewing(.milliseconds(500))
        #expect(actions == [.flushReplica(.epoch(7))])
    }

    @Test func losingTheLeaseWhileTheFlushIsRetriedFences() {
        var harness = Self.flushing()
        harness.send(.demotionStepFinished(.flushReplica, failure: "NATS timeout", .pending))
        let actions = harness.send(.leaseObserved(.held(other, revision: 20, token: 20, ttl: .seconds(3))))
        #expect(actions.contains(.fence(.epoch(7))))
        #expect(harness.machine.phase == .fencing)
        // No more flush attempts or set-aside from the lifecycle: the replica sets its database
        // aside itself at the next follow (it shipped without a final marker).
        let later = harness.advance(.seconds(1))
        #expect(!later.contains { if case .flushReplica = $0 { true } else if case .setAsideDatabase = $0 { true } else { false } })
    }

    @Test func shutdownDuringFlushRetriesKeepsRetrying() {
        var harness = Self.flushing()
        harness.send(.demotionStepFinished(.flushReplica, failure: "NATS timeout", .pending))
        harness.send(.shutdownRequested)
        #expect(harness.machine.phase == .demoting(.flushReplica, .shutdown))
        #expect(harness.advance(.milliseconds(500)) == [.flushReplica(.epoch(7))])
        let actions = harness.send(.demotionStepFinished(.flushReplica, failure: nil, .pending))
        #expect(actions == [.disarmFenceKeeper, .releaseLease(revision: 7, handoffTo: nil, .epoch(7))])
    }

    @Test func aNewHolderSeenBeforeTheReleaseAnswerEndsTheHandoverWithoutFencing() {
        var harness = Harness()
        harness.makeActive()
        harness.send(.stepdownRequested)
        harness.send(.backendStopped(.confirmed, .pending))
        let actions = harness.send(.leaseObserved(.held(other, revision: 9, token: 9)))
        #expect(actions == [.notify(.released(token: 7)), .followActive])
        #expect(harness.machine.phase == .passive)
        #expect(harness.send(.releaseFinished(nil, .pending)).isEmpty)
    }

    @Test func switchoverNamesTheTargetWhoGoesFirst() {
        var active = Harness()
        active.makeActive()
        active.send(.switchoverRequested(to: "node-b"))
        #expect(active.send(.backendStopped(.confirmed, .pending)).last == .releaseLease(revision: 7, handoffTo: "node-b", .epoch(7)))

        var target = Harness()
        target.send(.natsConnected)
        target.send(.leaseObserved(.held(other, revision: 7, token: 7)))
        var bystander = target
        target.machine = AppLifecycle(configuration: .init(
            node: "node-b", instance: "j-2", timing: Harness.timing, hasHealthCheck: false, stepTimeout: .seconds(5), stopTimeout: .seconds(12),
            priorityHoldback: .seconds(1)))
        target.send(.natsConnected)
        #expect(target.send(.leaseObserved(.free(handoffTo: "node-b"))) == [.acquireLease(replacing: nil, .epoch(0))])
        #expect(bystander.send(.leaseObserved(.free(handoffTo: "node-b"))).isEmpty)
        #expect(bystander.machine.acquireAt() == bystander.now + .seconds(3))
    }

    @Test func priorityHoldbackDelaysLowerPriorityNodes() {
        var harness = Harness(priorityHoldback: .milliseconds(400))
        harness.send(.natsConnected)
        #expect(harness.send(.leaseObserved(.free(handoffTo: nil))).isEmpty)
        #expect(harness.advance(.milliseconds(399)).isEmpty)
        #expect(harness.advance(.milliseconds(1)) == [.acquireLease(replacing: nil, .epoch(0))])
    }

    @Test func aPausedAppNeverChangesHands() {
        var passive = Harness(paused: true)
        passive.send(.natsConnected)
        passive.send(.leaseObserved(.free(handoffTo: nil)))
        #expect(passive.advance(.seconds(60)).isEmpty)
        #expect(passive.send(.resumeRequested) == [.acquireLease(replacing: nil, .epoch(0))])

        var active = Harness()
        active.makeActive()
        active.send(.pauseRequested)
        let actions = active.send(.healthFailed("3 failures"))
        #expect(actions.count == 1)
        #expect(active.machine.phase == .active)
        active.send(.resumeRequested)
        #expect(active.send(.healthFailed("3 failures")) == [.notify(.demoting(.healthFailed("3 failures"))), .stopBackend(.epoch(7))])
    }

    @Test func aPauseWithAnEndResumesByItselfAtThatInstant() {
        var passive = Harness()
        passive.send(.natsConnected)
        let start = passive.now
        #expect(passive.send(.pauseRequestedFor(.seconds(30))).isEmpty)
        #expect(passive.send(.leaseObserved(.free(handoffTo: nil))).isEmpty)
        #expect(passive.machine.paused)
        #expect(passive.machine.pausedUntil == start + .seconds(30))
        // The clock wakes the machine at the pause's end, not before.
        #expect(passive.machine.nextDeadline() == start + .seconds(30))
        #expect(passive.advance(.milliseconds(29_999)).isEmpty)
        #expect(passive.machine.paused)
        let actions = passive.advance(.milliseconds(1))
        #expect(!passive.machine.paused)
        #expect(passive.machine.pausedUntil == nil)
        #expect(actions.contains(.acquireLease(replacing: nil, .epoch(0))))
        #expect(actions.contains { if case .notify(.observed(let text)) = $0 { text.contains("pause ended") } else { false } })
    }

    @Test func anActiveNodeFailsOverAgainOnceItsPauseEnded() {
        var active = Harness()
        active.makeActive()
        active.send(.pauseRequestedFor(.seconds(2)))
        #expect(active.send(.healthFailed("3 failures")).count == 1)  // reported, ignored: paused
        #expect(active.machine.phase == .active)
        _ = active.advanceRenewing(.seconds(2))
        #expect(!active.machine.paused)
        #expect(active.send(.healthFailed("3 failures")).contains(.stopBackend(.epoch(7))))
    }

    @Test func aPauseWithoutAnEndOrAResumeClearsTheEnd() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.pauseRequestedFor(.seconds(5)))
        harness.send(.pauseRequested)  // indefinite again: the earlier end no longer applies
        #expect(harness.machine.pausedUntil == nil)
        _ = harness.advance(.seconds(60))
        #expect(harness.machine.paused)

        harness.send(.pauseRequestedFor(.seconds(5)))
        harness.send(.resumeRequested)
        #expect(!harness.machine.paused)
        #expect(harness.machine.pausedUntil == nil)
        // A longer pause replaces a shorter one, and a zero duration ends at the next event.
        harness.send(.pauseRequestedFor(.seconds(1)))
        harness.send(.pauseRequestedFor(.seconds(10)))
        _ = harness.advance(.seconds(2))
        #expect(harness.machine.paused)
        harness.send(.pauseRequestedFor(.zero))
        #expect(!harness.machine.paused)
    }

    @Test func waitsAFullTTLAfterAReconnect() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.held(other, revision: 2, token: 2)))
        harness.send(.natsDisconnected)
        #expect(harness.advance(.seconds(10)).isEmpty)  // disconnected: never
        harness.send(.natsConnected)
        let reconnectedAt = harness.now
        #expect(harness.send(.leaseObserved(.free(handoffTo: nil))).isEmpty)
        #expect(harness.machine.acquireAt() == reconnectedAt + .seconds(3))
        #expect(harness.advance(.seconds(3)) == [.acquireLease(replacing: nil, .epoch(0))])
    }

    /// A holder whose record does not say its ttl (a Baton before 0.9, or a value Baton did not
    /// write) may count on a longer ttl than this node's: the takeover is a create, which only
    /// succeeds once the key expired or was released, never an update over its revision.
    @Test func aHolderWithoutATTLIsNeverReplacedOnlyCreatedOver() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.held(other, revision: 4, token: 3)))
        #expect(harness.advance(.milliseconds(3250)) == [.acquireLease(replacing: nil, .epoch(0))])
    }

    /// A release that loses its compare-and-set (to this node's own renew that timed out but
    /// landed) leaves the node with its own last write as the observed lease, so it tries again
    /// after ttl + skew without any watch event (review finding, same family as L2).
    @Test func aReleaseThatLostToItsOwnRenewStillTriesAgainLater() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.held(other, revision: 4, token: 3, ttl: .seconds(3))))
        harness.advance(.milliseconds(3250))
        harness.send(.acquireSucceeded(revision: 7, sentAt: harness.now, .pending))
        harness.send(.promotionStepSucceeded(.startBackend, .pending))
        harness.send(.stepdownRequested)
        harness.send(.backendStopped(.confirmed, .pending))
        harness.send(.releaseFinished(.conflict, .pending))
        #expect(harness.machine.phase == .passive)
        #expect(harness.machine.acquireAt() != nil, "a former holder whose release conflicted never tries again")
    }

    @Test func aLostAcquireRetriesAfterAPauseNotInALoop() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.held(other, revision: 2, token: 2, ttl: .seconds(3))))
        harness.advance(.milliseconds(3250))
        #expect(harness.send(.acquireFailed(.conflict, .pending)).isEmpty)
        #expect(harness.machine.acquireAt() == harness.now + .milliseconds(100))
        #expect(harness.advance(.milliseconds(100)) == [.acquireLease(replacing: 2, .epoch(0))])
    }

    @Test func anUnansweredAcquireHoldsOffForATTL() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        harness.send(.acquireFailed(.unavailable("timeout"), .pending))
        #expect(harness.machine.phase == .passive)
        #expect(harness.machine.acquireAt() == harness.now + .seconds(3))
    }

    @Test func aFailedOrSlowPromotionStepRollsBackAndReleases() {
        var failed = Harness()
        failed.send(.natsConnected)
        failed.send(.leaseObserved(.free(handoffTo: nil)))
        failed.send(.acquireSucceeded(revision: 5, sentAt: failed.now, .pending))
        let reason = DemotionReason.promotionFailed(.startBackend, "exec failed: no such file")
        #expect(failed.send(.promotionStepFailed(.startBackend, "exec failed: no such file", .pending)) == [.notify(.demoting(reason)), .stopBackend(.epoch(5))])
        #expect(failed.send(.backendStopped(.confirmed, .pending)).last == .releaseLease(revision: 5, handoffTo: nil, .epoch(5)))

        var slow = Harness(hasHealthCheck: true)
        slow.send(.natsConnected)
        slow.send(.leaseObserved(.free(handoffTo: nil)))
        slow.send(.acquireSucceeded(revision: 5, sentAt: slow.now, .pending))
        slow.send(.promotionStepSucceeded(.startBackend, .pending))
        var sawDemotion = false
        for _ in 0..<60 {
            let actions = slow.advance(.milliseconds(100))
            if actions.contains(.renewLease(revision: 5, .epoch(5))) { slow.send(.renewSucceeded(revision: 5, sentAt: slow.now, .pending)) }
            if actions.contains(.stopBackend(.epoch(5))) { sawDemotion = true }
        }
        #expect(sawDemotion)
        if case .demoting(.stopBackend, .promotionFailed(.awaitHealthy, _)) = slow.machine.phase {} else {
            Issue.record("expected a demotion after the health step timed out, got \(slow.machine.phase)")
        }
    }

    @Test func aGracefulStopThatHangsIsFenced() {
        var harness = Harness()
        harness.makeActive()
        harness.send(.stepdownRequested)
        var fenced = false
        for _ in 0..<140 {
            let actions = harness.advance(.milliseconds(100))
            if actions.contains(.renewLease(revision: 7, .epoch(7))) { harness.send(.renewSucceeded(revision: 7, sentAt: harness.now, .pending)) }
            if actions.contains(.fence(.epoch(7))) { fenced = true }
        }
        #expect(fenced)
    }

    @Test func aSecondBatondWithTheSameNodeIDIsDetectedAndNeverAcquires() {
        var harness = Harness()
        harness.send(.natsConnected)
        let twin = LeaseHolder(node: "node-a", instance: "other-process")
        #expect(harness.send(.leaseObserved(.held(twin, revision: 3, token: 3))).isEmpty)  // maybe our crashed predecessor
        #expect(harness.send(.leaseObserved(.held(twin, revision: 4, token: 3))) == [.notify(.duplicateInstance(twin))])
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        #expect(harness.advance(.seconds(60)).isEmpty)
        #expect(harness.machine.duplicateDetected)
    }

    @Test func shutdownWhileActiveStopsThenReleasesAndStops() {
        var harness = Harness()
        harness.makeActive()
        #expect(harness.send(.shutdownRequested) == [.notify(.demoting(.shutdown)), .stopBackend(.epoch(7))])
        harness.send(.backendStopped(.confirmed, .pending))
        harness.send(.releaseFinished(nil, .pending))
        #expect(harness.machine.phase == .stopped)
        #expect(harness.advance(.seconds(60)).isEmpty)
    }

    /// Issue 11, item 1: a passive node judges the lease by the holder's ttl from its record,
    /// not by its own config, and says once that the two disagree.
    @Test func takeoverWaitsByTheHoldersTTLNotThisNodesConfig() {
        var harness = Harness()
        harness.send(.natsConnected)
        let seen = harness.now
        let actions = harness.send(.leaseObserved(.held(other, revision: 4, token: 3, ttl: .seconds(10))))
        #expect(actions == [.notify(.observed(
            "config disagrees with the holder: node-b holds the lease with ttl 10s, this node's config says 3s; the lease is judged by the holder's ttl"))])
        #expect(harness.machine.acquireAt() == seen + .milliseconds(10_250))
        // Renews of the same holder and ttl do not repeat the notice.
        #expect(harness.send(.leaseObserved(.held(other, revision: 5, token: 3, ttl: .seconds(10)))).isEmpty)
        let renewedAt = harness.now
        #expect(harness.advance(.milliseconds(3250)).isEmpty)  // this node's own ttl + skew: too early
        #expect(harness.advance(.milliseconds(10_249 - 3250)).isEmpty)
        #expect(harness.now < renewedAt + .milliseconds(10_250))
        #expect(harness.advance(.milliseconds(1)) == [.acquireLease(replacing: 5, .epoch(0))])

        // A holder with a shorter ttl is taken over earlier; one that does not say uses ours.
        var short = Harness()
        short.send(.natsConnected)
        short.send(.leaseObserved(.held(other, revision: 9, token: 9, ttl: .seconds(1))))
        #expect(short.machine.acquireAt() == short.now + .milliseconds(1250))
        var unsaid = Harness()
        unsaid.send(.natsConnected)
        #expect(unsaid.send(.leaseObserved(.held(other, revision: 9, token: 9))).isEmpty)
        #expect(unsaid.machine.acquireAt() == unsaid.now + .milliseconds(3250))
    }

    /// Issue 11, item 2: a renew that timed out but reached NATS makes the retry lose the
    /// compare-and-set to the node's own write; recognised, it keeps the lease, counted from
    /// the first unconfirmed attempt (the write that landed was sent no earlier).
    @Test func aRecognisedOwnRenewKeepsTheLeaseFromTheFirstUnconfirmedAttempt() {
        var harness = Harness()
        harness.makeActive()
        #expect(harness.advance(.seconds(1)).contains(.renewLease(revision: 7, .epoch(7))))
        let firstAttempt = harness.now
        harness.advance(.milliseconds(700))
        harness.send(.renewFailed(.unavailable("timeout"), .pending))
        let retry = harness.advance(.milliseconds(100))
        #expect(retry.contains(.renewLease(revision: 7, .epoch(7))))
        harness.advance(.milliseconds(300))
        let actions = harness.send(.renewRecognized(revision: 8, .pending))
        #expect(harness.machine.phase == .active)
        #expect(harness.machine.held?.revision == 8)
        #expect(harness.machine.held?.lastSentAt == firstAttempt)
        #expect(actions.contains(.armFenceKeeper(token: 7, deadline: Harness.timing.fenceAt(sentAt: firstAttempt))))
        // Counted from the first attempt, the lease is already a renew interval old: the next
        // renew goes out at once, on the new revision.
        #expect(actions.contains(.renewLease(revision: 8, .epoch(7))))
        // A real conflict still fences at once.
        harness.send(.renewSucceeded(revision: 9, sentAt: harness.now, .pending))
        #expect(harness.advance(.seconds(1)).contains(.renewLease(revision: 9, .epoch(7))))
        #expect(harness.send(.renewFailed(.conflict, .pending)).contains(.fence(.epoch(7))))
    }

    // MARK: - Stamped results (issue 11 item 5, issue 18)

    /// A promotion step that timed out under one lease and answers after a newer lease started
    /// the same step is dropped; the newer step still waits for its own answer.
    @Test func aLateStepResultOfAnEarlierLeaseIsDropped() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        let firstStart = harness.sendExactly(harness.restamped(.acquireSucceeded(revision: 5, sentAt: harness.now, .pending)))
        guard case .runPromotionStep(.startBackend, let oldStamp)? = firstStart.last else {
            Issue.record("no start step: \(firstStart)")
            return
        }
        // The step fails; the node steps down, releases and later takes the lease again.
        harness.send(.promotionStepFailed(.startBackend, "timed out", .pending))
        harness.send(.backendStopped(.confirmed, .pending))
        harness.send(.releaseFinished(nil, .pending))
        #expect(harness.machine.phase == .passive)
        harness.advance(.seconds(7))
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        harness.advance(.milliseconds(1))
        #expect(harness.machine.phase == .acquiring)
        harness.send(.acquireSucceeded(revision: 9, sentAt: harness.now, .pending))
        #expect(harness.machine.phase == .promoting(.startBackend))
        // The first lease's start answers now.
        let late = harness.sendExactly(.promotionStepSucceeded(.startBackend, oldStamp))
        #expect(Harness.droppedAsStale(late))
        #expect(harness.machine.phase == .promoting(.startBackend))
        #expect(harness.send(.promotionStepSucceeded(.startBackend, .pending)) == [.notify(.becameActive(token: 9))])
    }

    /// Issue 18 at the lifecycle's level: the result of an earlier epoch's fence that arrives
    /// after a new acquisition never acts on the new lease.
    @Test func aLateFenceResultNeverActsOnALaterLease() {
        var harness = Harness()
        harness.makeActive()
        let fenceActions = harness.sendExactly(.leaseObserved(.held(other, revision: 8, token: 8)))
        #expect(harness.machine.phase == .fencing)
        guard let fence = fenceActions.first(where: { if case .fence = $0 { true } else { false } }), case .fence(let fenceStamp) = fence else {
            Issue.record("no fence: \(fenceActions)")
            return
        }
        harness.send(.fenceCompleted(.confirmed, .pending))
        #expect(harness.machine.phase == .passive)
        harness.advance(.seconds(7))
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        harness.advance(.milliseconds(1))
        harness.send(.acquireSucceeded(revision: 934, sentAt: harness.now, .pending))
        harness.send(.promotionStepSucceeded(.startBackend, .pending))
        #expect(harness.machine.phase == .active)
        // The old fence's confirmation (or a duplicate of it) arrives late.
        #expect(Harness.droppedAsStale(harness.sendExactly(.fenceCompleted(.confirmed, fenceStamp))))
        #expect(harness.machine.phase == .active)
        #expect(harness.machine.held?.token == 934)
    }

    /// A renew answer of a lease since fenced and given up never touches a newer lease.
    @Test func aLateRenewResultOfAnEarlierLeaseIsDropped() {
        var harness = Harness()
        harness.makeActive()
        let renew = harness.advance(.seconds(1))
        #expect(renew.contains(.renewLease(revision: 7, .epoch(7))))
        let oldRenew = try! #require(harness.machine.awaiting.renew)
        harness.send(.leaseObserved(.held(other, revision: 8, token: 8)))  // lost: fence
        harness.send(.fenceCompleted(.confirmed, .pending))
        harness.advance(.seconds(7))
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        harness.advance(.milliseconds(1))
        harness.send(.acquireSucceeded(revision: 20, sentAt: harness.now, .pending))
        let held = harness.machine.held
        #expect(Harness.droppedAsStale(harness.sendExactly(.renewSucceeded(revision: 9, sentAt: harness.now + .seconds(1), oldRenew))))
        #expect(harness.machine.held == held)
    }

    // MARK: - Never release what may still run (issue 11 item 4)

    @Test func aStopThatCannotBeConfirmedFencesInsteadOfReleasing() {
        var harness = Harness()
        harness.makeActive()
        harness.send(.stepdownRequested)
        let actions = harness.send(.backendStopped(.unconfirmed("unit web.service is deactivating/stop-sigterm after the stop"), .pending))
        #expect(actions.contains(.fence(.epoch(7))))
        #expect(!actions.contains { if case .releaseLease = $0 { true } else { false } })
        #expect(harness.machine.phase == .fencing)
        // The fence confirms: only now is the lease given back.
        #expect(harness.send(.fenceCompleted(.confirmed, .pending)).contains(.releaseLease(revision: 7, handoffTo: nil, .epoch(7))))
    }

    @Test func aFenceThatCannotBeConfirmedNeverReleasesAndKeepsTheKeeperArmed() {
        var harness = Harness()
        harness.makeActive()
        harness.send(.leaseObserved(.held(other, revision: 8, token: 8)))
        #expect(harness.machine.phase == .fencing)
        let actions = harness.send(.fenceCompleted(.unconfirmed("backend: unit web.service is active/running after the fence"), .pending))
        #expect(actions.contains(.notify(.fenceUnconfirmed(token: 7, reason: "backend: unit web.service is active/running after the fence"))))
        #expect(!actions.contains { if case .releaseLease = $0 { true } else { false } })
        #expect(!actions.contains(.disarmFenceKeeper))
        #expect(harness.machine.phase == .passive)
        #expect(harness.machine.held == nil)
    }

    @Test func aFailedVIPRemovalFencesInsteadOfReleasing() {
        var harness = Harness(hasAddresses: true)
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        harness.send(.acquireSucceeded(revision: 7, sentAt: harness.now, .pending))
        harness.send(.promotionStepSucceeded(.claimAddresses, .pending))
        harness.send(.promotionStepSucceeded(.startBackend, .pending))
        harness.send(.stepdownRequested)
        #expect(harness.send(.backendStopped(.confirmed, .pending)) == [.releaseAddresses(.epoch(7))])
        let actions = harness.send(.demotionStepFinished(.releaseAddresses, failure: "eth0: Operation not permitted", .pending))
        #expect(actions.contains(.fence(.epoch(7))))
        #expect(!actions.contains { if case .releaseLease = $0 { true } else { false } })
    }

    /// Random events along a random timeline: the safety invariants hold after every step.
    @Test func safetyInvariantsHoldForRandomEventSequences() {
        var starts = 0
        var fences = 0
        for seed in UInt64(0)..<40 {
            let (seedStarts, seedFences) = randomWalk(seed: seed)
            starts += seedStarts
            fences += seedFences
        }
        // The walks really went through promotions and fencing.
        #expect(starts > 40)
        #expect(fences > 40)
    }

    /// One random walk; returns how many backend starts and fences it saw.
    private func randomWalk(seed: UInt64) -> (Int, Int) {
        var random = SplitMix64(seed: seed &+ 0x9E37_79B9)
        var harness = Harness(hasHealthCheck: seed % 2 == 0, hasReplica: seed % 3 == 0, hasAddresses: seed % 4 < 2)
        harness.send(.natsConnected)
        var starts = 0
        var fences = 0
        // Stamps of actions already answered: replayed as late (stale) results.
        var answered: [Stamp] = []
        // The backend or a VIP may still be there: an unconfirmed stop or fence was taken.
        var mayStillRun = false
        // A final flush was asked for under this token and has neither succeeded nor led to the
        // database being set aside: a graceful release now would lose what was not shipped.
        var flushPendingToken: UInt64?
        for _ in 0..<2000 {
            let before = harness.machine
            let event: AppLifecycle.Event
            switch random.next() % 18 {
            case 0: event = .leaseObserved(.free(handoffTo: nil))
            case 1:
                let ttl: Duration? = [nil, .seconds(1), .seconds(3), .seconds(10)][Int(random.next() % 4)]
                event = .leaseObserved(.held(other, revision: before.held.map { $0.revision + 1 } ?? 1, token: 1, ttl: ttl))
            case 2: event = .acquireSucceeded(revision: (before.observed?.revision ?? 0) + 10, sentAt: harness.now - .milliseconds(Int64(random.next() % 3000)), .pending)
            case 3: event = .acquireFailed(random.next() % 2 == 0 ? .conflict : .unavailable("timeout"), .pending)
            case 4: event = .renewSucceeded(revision: (before.held?.revision ?? 0) + 1, sentAt: harness.now - .milliseconds(Int64(random.next() % 3000)), .pending)
            case 5:
                switch random.next() % 6 {
                case 0: event = .renewFailed(.conflict, .pending)
                case 1: event = .renewRecognized(revision: (before.held?.revision ?? 0) + 1, .pending)
                default: event = .renewFailed(.unavailable("timeout"), .pending)
                }
            case 6: event = .promotionStepSucceeded(PromotionStep.allCases[Int(random.next() % 4)], .pending)
            case 7: event = .promotionStepFailed(.startBackend, "boom", .pending)
            case 8: event = .backendStopped(random.next() % 4 == 0 ? .unconfirmed("unit still active") : .confirmed, .pending)
            case 9:
                let outcome: StopOutcome = random.next() % 4 == 0 ? .unconfirmed("KillUnit timed out") : .confirmed
                let failure: String? = random.next() % 4 == 0 ? "netlink error" : nil
                event = random.next() % 2 == 0
                    ? .fenceCompleted(outcome, .pending)
                    : .demotionStepFinished([.flushReplica, .flushReplica, .setAsideDatabase, .releaseAddresses][Int(random.next() % 4)], failure: failure, .pending)
            case 10: event = .releaseFinished(random.next() % 3 == 0 ? .conflict : nil, .pending)
            case 11: event = [.stepdownRequested, .switchoverRequested(to: "node-b"), .healthFailed("x"), .backendFailed("y")][Int(random.next() % 4)]
            case 12: event = random.next() % 2 == 0 ? .natsDisconnected : .natsConnected
            case 13: event = random.next() % 2 == 0 ? .pauseRequested : .resumeRequested
            case 14, 15:
                // A late result of an older decision, of any kind.
                guard let old = answered.randomElement(using: &random) else { event = .tick; break }
                event = [
                    .promotionStepSucceeded(.startBackend, old), .backendStopped(.confirmed, old), .fenceCompleted(.confirmed, old),
                    .renewSucceeded(revision: 1_000, sentAt: harness.now, old), .acquireSucceeded(revision: 2_000, sentAt: harness.now, old),
                    .releaseFinished(nil, old), .demotionStepFinished(.releaseAddresses, failure: nil, old),
                ][Int(random.next() % 7)]
            default: event = .tick
            }
            harness.now = harness.now + .milliseconds(Int64(random.next() % 400))
            let awaitingBefore = harness.machine.awaiting
            let actions = harness.sendExactly(harness.restamped(event))
            let machine = harness.machine
            for stamp in [awaitingBefore.acquire, awaitingBefore.renew, awaitingBefore.release, awaitingBefore.step].compactMap({ $0 }) {
                if ![machine.awaiting.acquire, machine.awaiting.renew, machine.awaiting.release, machine.awaiting.step].contains(stamp) {
                    answered.append(stamp)
                }
            }
            let stale = Harness.droppedAsStale(actions)
            if case .demotionStepFinished(.flushReplica, nil, _) = event, !stale { flushPendingToken = nil }
            if case .fenceCompleted = event, !stale { flushPendingToken = nil }  // the replica sets aside at follow
            if case .fenceCompleted(.unconfirmed, _) = event, !stale, before.phase == .fencing { mayStillRun = true }
            if before.held == nil, machine.held != nil { mayStillRun = false }  // a new lease: the keeper is re-armed
            for action in actions {
                switch action {
                case .fence:
                    fences += 1
                case .flushReplica(let stamp):
                    flushPendingToken = stamp.token
                case .setAsideDatabase:
                    flushPendingToken = nil
                case .runPromotionStep(.startBackend, let stamp), .runPromotionStep(.claimAddresses, let stamp):
                    let token = stamp.token
                    if case .runPromotionStep(.startBackend, _) = action { starts += 1 }
                    // The backend starts only under a held lease whose fence time is ahead.
                    #expect(machine.held?.token == token)
                    if let held = machine.held {
                        #expect(harness.now < Harness.timing.fenceAt(sentAt: held.lastSentAt))
                    }
                case .acquireLease:
                    #expect(before.phase == .passive || before.phase == .acquiring || machine.phase == .acquiring)
                    #expect(!machine.paused && !machine.duplicateDetected)
                    #expect(machine.held == nil)
                case .releaseLease:
                    // Never released while the backend or a VIP may still be there.
                    #expect(!mayStillRun, "released after an unconfirmed fence (seed \(seed)): \(event) -> \(actions)")
                    // Never a graceful release over a flush that neither succeeded nor set the
                    // database aside (a fence's release is fine: the replica sets aside at follow).
                    if before.phase != .fencing {
                        #expect(flushPendingToken == nil, "released with an unfinished flush (seed \(seed)): \(event) -> \(actions)")
                    }
                case .disarmFenceKeeper:
                    #expect(!mayStillRun, "disarmed the keeper after an unconfirmed fence (seed \(seed))")
                default:
                    break
                }
            }
            // Never left holding (outside fencing) past the fence time.
            if let held = machine.held, machine.phase != .fencing {
                if harness.now >= Harness.timing.fenceAt(sentAt: held.lastSentAt) {
                    Issue.record("holding past the fence time in \(machine.phase) after \(event) -> \(actions); before: \(before.phase)")
                }
            }
            // A stale result changes nothing.
            if stale {
                #expect(machine.phase == before.phase && machine.held == before.held, "a stale result acted (seed \(seed)): \(event)")
            }
            // A fence action always comes with the fencing phase.
            if actions.contains(where: { if case .fence = $0 { return true } else { return false } }) {
                #expect(machine.phase == .fencing)
            }
        }
        return (starts, fences)
    }
}

/// A small deterministic generator for the randomized tests.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

// MARK: - Foreign deletes (issue 11, item 6)

/// A delete frees the lease only when its note names the holder and token it releases; any
/// other disappearance of the key leaves the last holder to be waited out by its own timing.
extension AppLifecycleTests {
    private static let me = LeaseHolder(node: "node-a", instance: "i-1")

    @Test func aForeignDeleteWhileAHolderWasSeenWaitsOutThatHoldersTTL() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.held(other, revision: 4, token: 3, ttl: .seconds(3))))
        let lastWrite = harness.now
        harness.advance(.milliseconds(500))
        // `nats kv del` by an operator while node-b is cut off from NATS and still running.
        let actions = harness.send(.leaseObserved(.vanished))
        #expect(!actions.contains { if case .acquireLease = $0 { true } else { false } })
        #expect(harness.machine.phase == .passive)
        #expect(harness.machine.acquireAt() == lastWrite + .milliseconds(3250))
        // A watch that restarts (the same absence reported again) does not move the deadline.
        harness.advance(.milliseconds(500))
        harness.send(.leaseObserved(.vanished))
        #expect(harness.machine.acquireAt() == lastWrite + .milliseconds(3250))
        #expect(harness.advance(lastWrite + .milliseconds(3249) - harness.now).isEmpty)
        // Then it takes over; the acquire over the stale revision falls back to a create.
        #expect(harness.advance(.milliseconds(1)) == [.acquireLease(replacing: 4, .epoch(0))])
    }

    @Test func aDeleteNamingAnotherHolderOrAnOlderTokenIsForeign() {
        for note in [
            AppLifecycle.Event.leaseObserved(.released(LeaseHolder(node: "node-c", instance: "k-1"), token: 3, handoffTo: nil)),
            .leaseObserved(.released(LeaseHolder(node: "node-b", instance: "j-0"), token: 3, handoffTo: nil)),
            .leaseObserved(.released(other, token: 2, handoffTo: nil)),
        ] {
            var harness = Harness()
            harness.send(.natsConnected)
            harness.send(.leaseObserved(.held(other, revision: 4, token: 3, ttl: .seconds(5))))
            let lastWrite = harness.now
            harness.advance(.milliseconds(100))
            #expect(!harness.send(note).contains { if case .acquireLease = $0 { true } else { false } })
            #expect(harness.machine.acquireAt() == lastWrite + .milliseconds(5250), "\(note)")
        }
    }

    @Test func aReleaseNamingTheHolderAndTokenFreesTheLeaseAtOnce() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.held(other, revision: 4, token: 3)))
        harness.advance(.milliseconds(100))
        #expect(harness.send(.leaseObserved(.released(other, token: 3, handoffTo: nil))) == [.acquireLease(replacing: nil, .epoch(0))])

        // A release of a later lease this node missed (a higher token) frees it too: that lease
        // could only have been taken after the one seen had ended.
        var missed = Harness()
        missed.send(.natsConnected)
        missed.send(.leaseObserved(.held(other, revision: 4, token: 3)))
        #expect(missed.send(.leaseObserved(.released(LeaseHolder(node: "node-c", instance: "k-1"), token: 9, handoffTo: nil)))
            == [.acquireLease(replacing: nil, .epoch(0))])

        // A switchover's release names its target, who goes first.
        var handoff = Harness()
        handoff.send(.natsConnected)
        handoff.send(.leaseObserved(.held(other, revision: 4, token: 3)))
        #expect(handoff.send(.leaseObserved(.released(other, token: 3, handoffTo: "node-c"))).isEmpty)
        #expect(handoff.machine.acquireAt() == handoff.now + .seconds(3))
    }

    @Test func aVanishedKeyWithNoHolderSeenIsFree() {
        var harness = Harness()
        harness.send(.natsConnected)
        // A fresh bucket: nothing stored, nobody seen.
        #expect(harness.send(.leaseObserved(.vanished)) == [.acquireLease(replacing: nil, .epoch(0))])
    }

    @Test func theHolderFencesAtOnceWhenItsKeyVanishesWhoeverDeletedIt() {
        for observation in [LeaseObservation.vanished, .released(other, token: 7, handoffTo: nil), .released(Self.me, token: 7, handoffTo: nil)] {
            var harness = Harness()
            harness.makeActive()
            #expect(harness.send(.leaseObserved(observation)).first == .fence(.epoch(7)), "\(observation)")
            #expect(harness.machine.phase == .fencing)
        }
    }

    @Test func theHoldersOwnReleaseDoesNotFence() {
        var harness = Harness()
        harness.makeActive()
        harness.send(.stepdownRequested)
        #expect(harness.send(.backendStopped(.confirmed, .pending)) == [.disarmFenceKeeper, .releaseLease(revision: 7, handoffTo: nil, .epoch(7))])
        #expect(harness.send(.leaseObserved(.released(Self.me, token: 7, handoffTo: nil))).isEmpty)
        #expect(harness.send(.releaseFinished(nil, .pending)) == [.notify(.released(token: 7)), .followActive])
        #expect(harness.machine.phase == .passive)
    }

    @Test func aForeignDeleteThenANewHolderIsJudgedByTheNewHolder() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.held(other, revision: 4, token: 3)))
        harness.advance(.seconds(1))
        harness.send(.leaseObserved(.vanished))
        harness.advance(.seconds(1))
        let third = LeaseHolder(node: "node-c", instance: "k-1")
        harness.send(.leaseObserved(.held(third, revision: 12, token: 12, ttl: .seconds(4))))
        #expect(harness.machine.observed?.holder == third)
        #expect(harness.machine.acquireAt() == harness.now + .milliseconds(4250))
    }
}
