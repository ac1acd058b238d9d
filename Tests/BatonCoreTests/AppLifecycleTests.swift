import BatonCore
import Testing

/// Drives an ``AppLifecycle`` along a simulated monotonic clock.
private struct Harness {
    static let timing = LeaseTiming(ttl: .seconds(3), renew: .seconds(1), fenceBudget: .milliseconds(500), skew: .milliseconds(250))
    var machine: AppLifecycle
    var now = MonotonicInstant(nanoseconds: 1_000_000_000)

    init(hasHealthCheck: Bool = false, hasReplica: Bool = false, hasAddresses: Bool = false, priorityHoldback: Duration = .zero, paused: Bool = false) {
        machine = AppLifecycle(
            configuration: .init(
                node: "node-a", instance: "i-1", timing: Self.timing, hasHealthCheck: hasHealthCheck, hasReplica: hasReplica, hasAddresses: hasAddresses,
                stepTimeout: .seconds(5), stopTimeout: .seconds(12), priorityHoldback: priorityHoldback),
            paused: paused)
    }

    @discardableResult
    mutating func send(_ event: AppLifecycle.Event) -> [AppLifecycle.Action] {
        machine.handle(event, now: now)
    }

    @discardableResult
    mutating func advance(_ duration: Duration) -> [AppLifecycle.Action] {
        now = now + duration
        return send(.tick)
    }

    /// Connected, lease seen free, acquired at `now`, backend started: active with token 7.
    mutating func makeActive() {
        send(.natsConnected)
        #expect(send(.leaseObserved(.free(handoffTo: nil))) == [.acquireLease(replacing: nil)])
        send(.acquireSucceeded(revision: 7, sentAt: now))
        send(.promotionStepSucceeded(.startBackend))
        #expect(machine.phase == .active)
    }
}

private let other = LeaseHolder(node: "node-b", instance: "j-1")

@Suite("Per-app lifecycle state machine")
struct AppLifecycleTests {
    @Test func acquiresAFreeLeaseOnlyOnceItsStateIsKnown() {
        var harness = Harness()
        #expect(harness.send(.natsConnected).isEmpty)
        #expect(harness.advance(.seconds(10)).isEmpty)  // no watch snapshot yet: unknown
        #expect(harness.send(.leaseObserved(.free(handoffTo: nil))) == [.acquireLease(replacing: nil)])
        #expect(harness.machine.phase == .acquiring)
    }

    @Test func takeoverWaitsTTLPlusSkewAfterTheLastObservedWrite() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.held(other, revision: 4, token: 3)))
        let seen = harness.now
        #expect(harness.machine.acquireAt() == seen + .milliseconds(3250))
        #expect(harness.advance(.milliseconds(2000)).isEmpty)
        // A renew seen later pushes the deadline.
        harness.send(.leaseObserved(.held(other, revision: 5, token: 3)))
        let renewedAt = harness.now
        #expect(harness.advance(.milliseconds(3249)).isEmpty)
        #expect(harness.now < renewedAt + .milliseconds(3250))
        #expect(harness.advance(.milliseconds(1)) == [.acquireLease(replacing: 5)])
    }

    @Test func acquireArmsTheKeeperBeforeStartingTheBackend() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        let sent = harness.now
        harness.now = harness.now + .milliseconds(20)
        let actions = harness.send(.acquireSucceeded(revision: 42, sentAt: sent))
        #expect(actions == [
            .armFenceKeeper(token: 42, deadline: sent + .milliseconds(2500)),
            .notify(.acquired(token: 42)),
            .runPromotionStep(.startBackend, token: 42),
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
        let actions = harness.send(.acquireSucceeded(revision: 9, sentAt: sent))
        #expect(!actions.contains(.runPromotionStep(.startBackend, token: 9)))
        #expect(actions.contains(.fence(token: 9)))
        #expect(harness.machine.phase == .fencing)
    }

    @Test func healthGatesActivation() {
        var harness = Harness(hasHealthCheck: true)
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        harness.send(.acquireSucceeded(revision: 3, sentAt: harness.now))
        #expect(harness.send(.promotionStepSucceeded(.startBackend)) == [.runPromotionStep(.awaitHealthy, token: 3)])
        #expect(harness.send(.promotionStepSucceeded(.awaitHealthy)) == [.notify(.becameActive(token: 3))])
        #expect(harness.machine.phase == .active)
    }

    @Test func renewsEveryIntervalAndRearmsTheKeeperFromTheSendTime() {
        var harness = Harness()
        harness.makeActive()
        #expect(harness.advance(.milliseconds(999)).isEmpty)
        #expect(harness.advance(.milliseconds(1)) == [.renewLease(revision: 7)])
        let sent = harness.now
        #expect(harness.advance(.milliseconds(500)).isEmpty)  // one renew in flight at a time
        #expect(harness.send(.renewSucceeded(revision: 8, sentAt: sent)) == [.armFenceKeeper(token: 7, deadline: sent + .milliseconds(2500))])
        #expect(harness.machine.held == AppLifecycle.HeldLease(token: 7, revision: 8, lastSentAt: sent))
        #expect(harness.advance(.milliseconds(500)) == [.renewLease(revision: 8)])
    }

    @Test func fencesAtSentPlusTTLMinusBudgetWhenRenewsKeepFailing() {
        var harness = Harness()
        harness.makeActive()
        let acquiredAt = harness.now
        var fencedAt: MonotonicInstant?
        var fenceActions: [AppLifecycle.Action] = []
        while fencedAt == nil, harness.now < acquiredAt + .seconds(10) {
            let actions = harness.advance(.milliseconds(10))
            if actions.contains(.renewLease(revision: 7)) {
                harness.send(.renewFailed(.unavailable("timeout")))
            }
            if actions.contains(.fence(token: 7)) {
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
        let done = harness.send(.fenceCompleted)
        #expect(done == [.disarmFenceKeeper, .releaseLease(revision: 7, handoffTo: nil), .followActive])
        #expect(harness.machine.phase == .passive)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        #expect(harness.machine.acquireAt()! >= harness.now + .seconds(3))
    }

    @Test func losingTheCompareAndSetFencesAtOnce() {
        var harness = Harness()
        harness.makeActive()
        harness.advance(.seconds(1))
        #expect(harness.send(.renewFailed(.conflict)).prefix(1) == [.fence(token: 7)])
        #expect(harness.machine.phase == .fencing)
    }

    @Test func theLeaseVanishingOrAnotherHolderAppearingFencesAtOnce() {
        var vanished = Harness()
        vanished.makeActive()
        #expect(vanished.send(.leaseObserved(.free(handoffTo: nil))).first == .fence(token: 7))
        var overtaken = Harness()
        overtaken.makeActive()
        #expect(overtaken.send(.leaseObserved(.held(LeaseHolder(node: "node-a", instance: "i-1"), revision: 7, token: 7))).isEmpty)  // our own write
        #expect(overtaken.send(.leaseObserved(.held(other, revision: 12, token: 12))).first == .fence(token: 7))
    }

    @Test func stepdownStopsTheBackendThenReleasesAndCoolsDown() {
        var harness = Harness()
        harness.makeActive()
        #expect(harness.send(.stepdownRequested) == [.notify(.demoting(.stepdown)), .stopBackend])
        // The lease is still renewed while the backend stops.
        #expect(harness.advance(.seconds(1)) == [.renewLease(revision: 7)])
        harness.send(.renewSucceeded(revision: 8, sentAt: harness.now))
        #expect(harness.send(.backendStopped) == [.disarmFenceKeeper, .releaseLease(revision: 8, handoffTo: nil)])
        #expect(harness.send(.releaseFinished(nil)) == [.notify(.released(token: 7)), .followActive])
        #expect(harness.machine.phase == .passive)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        #expect(harness.machine.acquireAt() == harness.now + .seconds(6))  // cooldown: 2 x ttl
    }

    @Test func aReleaseWaitsForTheRenewInFlightAndDeletesWithItsRevision() {
        var harness = Harness()
        harness.makeActive()
        harness.send(.stepdownRequested)
        #expect(harness.advance(.seconds(1)) == [.renewLease(revision: 7)])
        let sent = harness.now
        // The backend stops while the renew is still on its way: no delete with revision 7 yet.
        #expect(harness.send(.backendStopped) == [.disarmFenceKeeper])
        #expect(harness.advance(.milliseconds(10)).isEmpty)
        // The renew's answer: delete with its revision, and the disarmed keeper stays disarmed.
        #expect(harness.send(.renewSucceeded(revision: 8, sentAt: sent)) == [.releaseLease(revision: 8, handoffTo: nil)])
        #expect(harness.send(.releaseFinished(nil)) == [.notify(.released(token: 7)), .followActive])

        var lost = Harness()
        lost.makeActive()
        lost.send(.switchoverRequested(to: "node-b"))
        lost.advance(.seconds(1))
        lost.send(.backendStopped)
        #expect(lost.send(.renewFailed(.unavailable("timeout"))) == [.releaseLease(revision: 7, handoffTo: "node-b")])
        #expect(lost.send(.releaseFinished(.conflict)) == [
            .notify(.releaseUnconfirmed(token: 7, reason: "the lease was no longer ours to delete")), .followActive,
        ])
        #expect(lost.machine.phase == .passive && lost.machine.held == nil)

        var overtaken = Harness()
        overtaken.makeActive()
        overtaken.send(.stepdownRequested)
        overtaken.advance(.seconds(1))
        overtaken.send(.backendStopped)
        #expect(overtaken.send(.renewFailed(.conflict)) == [
            .notify(.releaseUnconfirmed(token: 7, reason: "the lease was no longer ours to delete")), .followActive,
        ])
    }

    @Test func promotionRunsReplicaThenAddressesThenBackendThenHealth() {
        var harness = Harness(hasHealthCheck: true, hasReplica: true, hasAddresses: true)
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        #expect(harness.send(.acquireSucceeded(revision: 4, sentAt: harness.now)).last == .runPromotionStep(.promoteReplica, token: 4))
        #expect(harness.send(.promotionStepSucceeded(.startBackend)).isEmpty)  // not the step in progress
        #expect(harness.send(.promotionStepSucceeded(.promoteReplica)) == [.runPromotionStep(.claimAddresses, token: 4)])
        #expect(harness.send(.promotionStepSucceeded(.claimAddresses)) == [.runPromotionStep(.startBackend, token: 4)])
        #expect(harness.send(.promotionStepSucceeded(.startBackend)) == [.runPromotionStep(.awaitHealthy, token: 4)])
        #expect(harness.send(.promotionStepSucceeded(.awaitHealthy)) == [.notify(.becameActive(token: 4))])

        var addressesOnly = Harness(hasAddresses: true)
        addressesOnly.send(.natsConnected)
        addressesOnly.send(.leaseObserved(.free(handoffTo: nil)))
        #expect(addressesOnly.send(.acquireSucceeded(revision: 4, sentAt: addressesOnly.now)).last == .runPromotionStep(.claimAddresses, token: 4))
    }

    @Test func demotionStopsTheBackendFlushesTheReplicaRemovesAddressesThenReleases() {
        var harness = Harness(hasReplica: true, hasAddresses: true)
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        harness.send(.acquireSucceeded(revision: 7, sentAt: harness.now))
        harness.send(.promotionStepSucceeded(.promoteReplica))
        harness.send(.promotionStepSucceeded(.claimAddresses))
        harness.send(.promotionStepSucceeded(.startBackend))
        #expect(harness.machine.phase == .active)
        harness.send(.switchoverRequested(to: "node-b"))
        #expect(harness.send(.backendStopped) == [.flushReplica(token: 7)])
        // While the VIPs are still up the keeper stays armed: a renew re-arms it.
        #expect(harness.advance(.seconds(1)) == [.renewLease(revision: 7)])
        #expect(harness.send(.renewSucceeded(revision: 8, sentAt: harness.now)) == [.armFenceKeeper(token: 7, deadline: harness.now + .milliseconds(2500))])
        #expect(harness.send(.demotionStepFinished(.flushReplica, failure: "NATS timeout")) == [
            .notify(.demotionStepFailed(.flushReplica, "NATS timeout")), .releaseAddresses,
        ])
        #expect(harness.send(.demotionStepFinished(.flushReplica, failure: nil)).isEmpty)  // stale
        #expect(harness.send(.demotionStepFinished(.releaseAddresses, failure: nil)) == [
            .disarmFenceKeeper, .releaseLease(revision: 8, handoffTo: "node-b"),
        ])
    }

    @Test func aSlowFlushGoesOnButSlowAddressRemovalFences() {
        var harness = Harness(hasReplica: true, hasAddresses: true)
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        harness.send(.acquireSucceeded(revision: 7, sentAt: harness.now))
        for step in [PromotionStep.promoteReplica, .claimAddresses, .startBackend] { harness.send(.promotionStepSucceeded(step)) }
        harness.send(.stepdownRequested)
        harness.send(.backendStopped)
        var sawReleaseAddresses = false
        var fenced = false
        for _ in 0..<120 {
            let actions = harness.advance(.milliseconds(100))
            if let renew = actions.first(where: { if case .renewLease = $0 { true } else { false } }), case .renewLease(let revision) = renew {
                harness.send(.renewSucceeded(revision: revision + 1, sentAt: harness.now))
            }
            if actions.contains(.notify(.demotionStepFailed(.flushReplica, "timed out after 5.0 seconds"))) { #expect(actions.last == .releaseAddresses) }
            if actions.contains(.releaseAddresses) { sawReleaseAddresses = true }
            if actions.contains(.fence(token: 7)) { fenced = true }
        }
        #expect(sawReleaseAddresses)
        #expect(fenced)
        #expect(harness.send(.fenceCompleted).last == .followActive)
    }

    @Test func aNewHolderSeenBeforeTheReleaseAnswerEndsTheHandoverWithoutFencing() {
        var harness = Harness()
        harness.makeActive()
        harness.send(.stepdownRequested)
        harness.send(.backendStopped)
        let actions = harness.send(.leaseObserved(.held(other, revision: 9, token: 9)))
        #expect(actions == [.notify(.released(token: 7)), .followActive])
        #expect(harness.machine.phase == .passive)
        #expect(harness.send(.releaseFinished(nil)).isEmpty)
    }

    @Test func switchoverNamesTheTargetWhoGoesFirst() {
        var active = Harness()
        active.makeActive()
        active.send(.switchoverRequested(to: "node-b"))
        #expect(active.send(.backendStopped).last == .releaseLease(revision: 7, handoffTo: "node-b"))

        var target = Harness()
        target.send(.natsConnected)
        target.send(.leaseObserved(.held(other, revision: 7, token: 7)))
        var bystander = target
        target.machine = AppLifecycle(configuration: .init(
            node: "node-b", instance: "j-2", timing: Harness.timing, hasHealthCheck: false, stepTimeout: .seconds(5), stopTimeout: .seconds(12),
            priorityHoldback: .seconds(1)))
        target.send(.natsConnected)
        #expect(target.send(.leaseObserved(.free(handoffTo: "node-b"))) == [.acquireLease(replacing: nil)])
        #expect(bystander.send(.leaseObserved(.free(handoffTo: "node-b"))).isEmpty)
        #expect(bystander.machine.acquireAt() == bystander.now + .seconds(3))
    }

    @Test func priorityHoldbackDelaysLowerPriorityNodes() {
        var harness = Harness(priorityHoldback: .milliseconds(400))
        harness.send(.natsConnected)
        #expect(harness.send(.leaseObserved(.free(handoffTo: nil))).isEmpty)
        #expect(harness.advance(.milliseconds(399)).isEmpty)
        #expect(harness.advance(.milliseconds(1)) == [.acquireLease(replacing: nil)])
    }

    @Test func aPausedAppNeverChangesHands() {
        var passive = Harness(paused: true)
        passive.send(.natsConnected)
        passive.send(.leaseObserved(.free(handoffTo: nil)))
        #expect(passive.advance(.seconds(60)).isEmpty)
        #expect(passive.send(.resumeRequested) == [.acquireLease(replacing: nil)])

        var active = Harness()
        active.makeActive()
        active.send(.pauseRequested)
        let actions = active.send(.healthFailed("3 failures"))
        #expect(actions.count == 1)
        #expect(active.machine.phase == .active)
        active.send(.resumeRequested)
        #expect(active.send(.healthFailed("3 failures")) == [.notify(.demoting(.healthFailed("3 failures"))), .stopBackend])
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
        #expect(harness.advance(.seconds(3)) == [.acquireLease(replacing: nil)])
    }

    @Test func aLostAcquireRetriesAfterAPauseNotInALoop() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.held(other, revision: 2, token: 2)))
        harness.advance(.milliseconds(3250))
        #expect(harness.send(.acquireFailed(.conflict)).isEmpty)
        #expect(harness.machine.acquireAt() == harness.now + .milliseconds(100))
        #expect(harness.advance(.milliseconds(100)) == [.acquireLease(replacing: 2)])
    }

    @Test func anUnansweredAcquireHoldsOffForATTL() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        harness.send(.acquireFailed(.unavailable("timeout")))
        #expect(harness.machine.phase == .passive)
        #expect(harness.machine.acquireAt() == harness.now + .seconds(3))
    }

    @Test func aFailedOrSlowPromotionStepRollsBackAndReleases() {
        var failed = Harness()
        failed.send(.natsConnected)
        failed.send(.leaseObserved(.free(handoffTo: nil)))
        failed.send(.acquireSucceeded(revision: 5, sentAt: failed.now))
        let reason = DemotionReason.promotionFailed(.startBackend, "exec failed: no such file")
        #expect(failed.send(.promotionStepFailed(.startBackend, "exec failed: no such file")) == [.notify(.demoting(reason)), .stopBackend])
        #expect(failed.send(.backendStopped).last == .releaseLease(revision: 5, handoffTo: nil))

        var slow = Harness(hasHealthCheck: true)
        slow.send(.natsConnected)
        slow.send(.leaseObserved(.free(handoffTo: nil)))
        slow.send(.acquireSucceeded(revision: 5, sentAt: slow.now))
        slow.send(.promotionStepSucceeded(.startBackend))
        var sawDemotion = false
        for _ in 0..<60 {
            let actions = slow.advance(.milliseconds(100))
            if actions.contains(.renewLease(revision: 5)) { slow.send(.renewSucceeded(revision: 5, sentAt: slow.now)) }
            if actions.contains(.stopBackend) { sawDemotion = true }
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
            if actions.contains(.renewLease(revision: 7)) { harness.send(.renewSucceeded(revision: 7, sentAt: harness.now)) }
            if actions.contains(.fence(token: 7)) { fenced = true }
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
        #expect(harness.send(.shutdownRequested) == [.notify(.demoting(.shutdown)), .stopBackend])
        harness.send(.backendStopped)
        harness.send(.releaseFinished(nil))
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
        #expect(harness.advance(.milliseconds(1)) == [.acquireLease(replacing: 5)])

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
        #expect(harness.advance(.seconds(1)).contains(.renewLease(revision: 7)))
        let firstAttempt = harness.now
        harness.advance(.milliseconds(700))
        harness.send(.renewFailed(.unavailable("timeout")))
        let retry = harness.advance(.milliseconds(100))
        #expect(retry.contains(.renewLease(revision: 7)))
        harness.advance(.milliseconds(300))
        let actions = harness.send(.renewRecognized(revision: 8))
        #expect(harness.machine.phase == .active)
        #expect(harness.machine.held?.revision == 8)
        #expect(harness.machine.held?.lastSentAt == firstAttempt)
        #expect(actions.contains(.armFenceKeeper(token: 7, deadline: Harness.timing.fenceAt(sentAt: firstAttempt))))
        // Counted from the first attempt, the lease is already a renew interval old: the next
        // renew goes out at once, on the new revision.
        #expect(actions.contains(.renewLease(revision: 8)))
        // A real conflict still fences at once.
        harness.send(.renewSucceeded(revision: 9, sentAt: harness.now))
        #expect(harness.advance(.seconds(1)).contains(.renewLease(revision: 9)))
        #expect(harness.send(.renewFailed(.conflict)).contains(.fence(token: 7)))
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
        for _ in 0..<2000 {
            let before = harness.machine
            let event: AppLifecycle.Event
            switch random.next() % 16 {
            case 0: event = .leaseObserved(.free(handoffTo: nil))
            case 1:
                let ttl: Duration? = [nil, .seconds(1), .seconds(3), .seconds(10)][Int(random.next() % 4)]
                event = .leaseObserved(.held(other, revision: before.held.map { $0.revision + 1 } ?? 1, token: 1, ttl: ttl))
            case 2: event = .acquireSucceeded(revision: (before.observed?.revision ?? 0) + 10, sentAt: harness.now - .milliseconds(Int64(random.next() % 3000)))
            case 3: event = .acquireFailed(random.next() % 2 == 0 ? .conflict : .unavailable("timeout"))
            case 4: event = .renewSucceeded(revision: (before.held?.revision ?? 0) + 1, sentAt: harness.now - .milliseconds(Int64(random.next() % 3000)))
            case 5:
                switch random.next() % 6 {
                case 0: event = .renewFailed(.conflict)
                case 1: event = .renewRecognized(revision: (before.held?.revision ?? 0) + 1)
                default: event = .renewFailed(.unavailable("timeout"))
                }
            case 6: event = .promotionStepSucceeded(PromotionStep.allCases[Int(random.next() % 4)])
            case 7: event = .promotionStepFailed(.startBackend, "boom")
            case 8: event = .backendStopped
            case 9: event = random.next() % 2 == 0 ? .fenceCompleted : .demotionStepFinished(random.next() % 2 == 0 ? .flushReplica : .releaseAddresses, failure: nil)
            case 10: event = .releaseFinished(random.next() % 3 == 0 ? .conflict : nil)
            case 11: event = [.stepdownRequested, .switchoverRequested(to: "node-b"), .healthFailed("x"), .backendFailed("y")][Int(random.next() % 4)]
            case 12: event = random.next() % 2 == 0 ? .natsDisconnected : .natsConnected
            case 13: event = random.next() % 2 == 0 ? .pauseRequested : .resumeRequested
            default: event = .tick
            }
            harness.now = harness.now + .milliseconds(Int64(random.next() % 400))
            let actions = harness.send(event)
            let machine = harness.machine
            for action in actions {
                switch action {
                case .fence:
                    fences += 1
                case .runPromotionStep(.startBackend, let token), .runPromotionStep(.claimAddresses, let token):
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
