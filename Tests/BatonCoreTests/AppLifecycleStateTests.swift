import BatonCore
import Testing

/// The invariants the lifecycle's per-phase state makes structural, checked through its public
/// views after every event of random walks, and the lifetimes of the data that belongs to one
/// lease or one step.
struct AppLifecycleStateTests {
    /// After any event sequence: a lease is held exactly in the phases that hold one, results
    /// are awaited only where the phase can receive them, every stamp awaited under a lease
    /// carries its token, a pause end implies a pause, and only a passive node has an
    /// acquisition time.
    @Test func viewsAgreeWithThePhaseAfterAnyEvent() {
        var phasesSeen: Set<String> = []
        for seed in UInt64(0)..<60 { randomWalk(seed: seed, phasesSeen: &phasesSeen) }
        // The walks went through the phases they check.
        #expect(phasesSeen.isSuperset(of: ["passive", "acquiring", "promoting", "active", "demoting(stopBackend)", "fencing", "stopped"]), "saw only \(phasesSeen.sorted())")
    }

    /// One random walk (its seed is in every failure's message).
    private func randomWalk(seed: UInt64, phasesSeen: inout Set<String>) {
        var random = SplitMix64(seed: seed &* 0x2545_F491 &+ 3)
        var harness = Harness(
            hasHealthCheck: seed % 2 == 0, hasReplica: seed % 3 == 0, hasAddresses: seed % 4 < 2, paused: seed % 7 == 0,
            renewPhase: seed % 5 < 2 ? .milliseconds(Int64(seed * 37 % 1000)) : nil)
        var answered: [Stamp] = []
        let other = LeaseHolder(node: "node-b", instance: "j-1")
        for index in 0..<1500 {
            let machine = harness.machine
            let awaited = machine.awaiting
            let event: AppLifecycle.Event
            let rev = (machine.held?.revision ?? machine.observed?.revision ?? 0) + 1
            switch random.next() % 16 {
            case 0: event = .leaseObserved(.free(handoffTo: random.next() % 2 == 0 ? nil : "node-a"))
            case 1: event = .leaseObserved(.held(other, revision: rev, token: 1, ttl: .seconds(3)))
            case 2: event = .leaseObserved(random.next() % 2 == 0 ? .vanished : .released(other, token: 1, handoffTo: nil))
            case 3: event = random.next() % 2 == 0 ? .natsConnected : .natsDisconnected
            case 4: event = [.pauseRequested, .resumeRequested, .pauseRequestedFor(.seconds(2)), .stepdownRequested, .healthFailed("h")][Int(random.next() % 5)]
            case 5: event = random.next() % 200 == 0 ? .shutdownRequested : .tick
            case 6:
                // A late answer to an older decision.
                guard let old = answered.randomElement(using: &random) else { event = .tick; break }
                event = [.backendStopped(.confirmed, old), .fenceCompleted(.confirmed, old), .releaseFinished(nil, old), .renewSucceeded(revision: rev, sentAt: harness.now, old)][Int(random.next() % 4)]
            case 7:
                event = awaited.renew.map { random.next() % 3 == 0 ? .renewFailed(.unavailable("timeout"), $0) : .renewSucceeded(revision: rev, sentAt: harness.now, $0) } ?? .tick
            case 8:
                event = awaited.renew.map { random.next() % 2 == 0 ? .renewFailed(.conflict, $0) : .renewRecognized(revision: rev, $0) } ?? .tick
            default:
                // Answer what the phase waits for, as its component would.
                switch machine.phase {
                case .acquiring:
                    event = awaited.acquire.map { random.next() % 4 == 0 ? .acquireFailed(.conflict, $0) : .acquireSucceeded(revision: rev + 5, sentAt: harness.now, $0) } ?? .tick
                case .promoting(let step):
                    event = awaited.step.map { random.next() % 8 == 0 ? .promotionStepFailed(step, "boom", $0) : .promotionStepSucceeded(step, $0) } ?? .tick
                case .demoting(.stopBackend, _):
                    event = awaited.step.map { .backendStopped(random.next() % 8 == 0 ? .unconfirmed("still running") : .confirmed, $0) } ?? .tick
                case .demoting(let step, _):
                    event = awaited.step.map { .demotionStepFinished(step, failure: random.next() % 4 == 0 ? "failed" : nil, $0) }
                        ?? awaited.release.map { .releaseFinished(random.next() % 4 == 0 ? .unavailable("timeout") : nil, $0) } ?? .tick
                case .fencing:
                    event = awaited.step.map { .fenceCompleted(random.next() % 6 == 0 ? .unconfirmed("KillUnit timed out") : .confirmed, $0) } ?? .tick
                default:
                    event = .tick
                }
            }
            harness.now = harness.now + .milliseconds(Int64(random.next() % 300))
            let actions = harness.sendExactly(event)
            let after = harness.machine
            for stamp in [awaited.acquire, awaited.renew, awaited.release, awaited.step].compactMap({ $0 }) {
                let still = after.awaiting
                if ![still.acquire, still.renew, still.release, still.step].contains(stamp) { answered.append(stamp) }
            }
            phasesSeen.insert(Self.name(after.phase))
            let context = "seed \(seed), event \(index): \(event) -> \(actions), now \(after.phase)"
            let holds: Bool =
                switch after.phase {
                case .promoting, .active, .demoting, .fencing: true
                case .passive, .acquiring, .stopped: false
                }
            #expect((after.held != nil) == holds, "a lease held outside the holding phases, or missing in one (\(context))")
            let waits = after.awaiting
            if waits.acquire != nil {
                #expect(after.phase == .acquiring || after.phase == .stopped, "an acquisition awaited in \(after.phase) (\(context))")
            }
            if after.phase == .acquiring { #expect(waits.acquire != nil, "acquiring without an acquire in flight (\(context))") }
            if let held = after.held {
                #expect(waits.renew.map { $0.token == held.token } ?? true, "a renew stamped with another token (\(context))")
                #expect(waits.step.map { $0.token == held.token } ?? true, "a step stamped with another token (\(context))")
            } else {
                #expect(waits.renew == nil, "a renew awaited without a lease (\(context))")
                #expect(waits.step == nil, "a step awaited without a lease (\(context))")
            }
            switch after.phase {
            case .active, .demoting(.releaseLease, _):
                #expect(waits.step == nil, "a step awaited in \(after.phase) (\(context))")
            case .fencing:
                #expect(waits.step != nil, "fencing without a fence in flight (\(context))")
            case .demoting(.stopBackend, _), .demoting(.releaseAddresses, _), .demoting(.setAsideDatabase, _), .promoting:
                #expect(waits.step != nil, "\(after.phase) without its step in flight (\(context))")
            default:
                break
            }
            if after.pausedUntil != nil { #expect(after.paused, "a pause end without a pause (\(context))") }
            if after.acquireAt() != nil { #expect(after.phase == .passive, "an acquisition time in \(after.phase) (\(context))") }
            // Past the fence time only a fencing (or lease-less) phase remains.
            if let held = after.held, after.phase != .fencing {
                #expect(harness.now < Harness.timing.fenceAt(sentAt: held.lastSentAt), "holding past the fence time (\(context))")
            }
        }
    }

    /// The walks together reach every phase (a walk that never leaves passive checks nothing).
    @Test func randomWalksReachEveryPhase() {
        var phases: Set<String> = []
        for seed in UInt64(0)..<60 {
            var random = SplitMix64(seed: seed)
            var harness = Harness(hasReplica: true, hasAddresses: true)
            harness.send(.natsConnected)
            harness.send(.leaseObserved(.free(handoffTo: nil)))
            for _ in 0..<300 {
                let awaited = harness.machine.awaiting
                let event: AppLifecycle.Event =
                    switch harness.machine.phase {
                    case .acquiring: awaited.acquire.map { .acquireSucceeded(revision: 10, sentAt: harness.now, $0) } ?? .tick
                    case .promoting(let step): awaited.step.map { .promotionStepSucceeded(step, $0) } ?? .tick
                    case .active: random.next() % 3 == 0 ? .stepdownRequested : .tick
                    case .demoting(.stopBackend, _): awaited.step.map { .backendStopped(.confirmed, $0) } ?? .tick
                    case .demoting(let step, _):
                        // Every fourth walk's flushes always fail: the flush gives up, the database is set aside.
                        awaited.step.map { .demotionStepFinished(step, failure: (step == .flushReplica && seed % 4 == 0) || random.next() % 3 == 0 ? "failed" : nil, $0) }
                            ?? awaited.release.map { .releaseFinished(nil, $0) } ?? .tick
                    case .fencing: awaited.step.map { .fenceCompleted(.confirmed, $0) } ?? .tick
                    case .passive: random.next() % 2 == 0 ? .leaseObserved(.free(handoffTo: nil)) : .tick
                    case .stopped: .tick
                    }
                harness.now = harness.now + .milliseconds(Int64(random.next() % 700))
                _ = harness.sendExactly(event)
                if let renew = harness.machine.awaiting.renew { _ = harness.sendExactly(.renewSucceeded(revision: 11, sentAt: harness.now, renew)) }
                phases.insert(Self.name(harness.machine.phase))
            }
        }
        #expect(phases.isSuperset(of: ["passive", "acquiring", "promoting", "active", "demoting(stopBackend)", "demoting(flushReplica)",
            "demoting(setAsideDatabase)", "demoting(releaseAddresses)", "demoting(releaseLease)"]), "reached only \(phases.sorted())")
    }

    /// A renew retry belongs to its lease: a lease given up before its retry came leaves
    /// nothing behind, and the next lease renews on its own schedule (`sent + renew`).
    @Test func aRenewRetryEndsWithItsLease() {
        var harness = Harness()
        harness.makeActive()
        harness.advance(.seconds(1))
        let renew = try! #require(harness.machine.awaiting.renew)
        #expect(harness.sendExactly(.renewFailed(.unavailable("timeout"), renew)).isEmpty)
        #expect(harness.machine.nextDeadline() == harness.now + .milliseconds(100))  // the retry
        harness.send(.stepdownRequested)
        #expect(harness.send(.backendStopped(.confirmed, .pending)) == [.disarmFenceKeeper, .releaseLease(revision: 7, handoffTo: nil, .epoch(7))])
        harness.send(.releaseFinished(nil, .pending))
        #expect(harness.machine.phase == .passive)
        harness.advance(.seconds(7))  // past the cooldown
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        #expect(harness.machine.phase == .acquiring)
        let acquired = harness.send(.acquireSucceeded(revision: 20, sentAt: harness.now, .pending))
        #expect(acquired == [.armFenceKeeper(token: 20, deadline: harness.now + .milliseconds(2500)), .notify(.acquired(token: 20)), .runPromotionStep(.startBackend, .epoch(20))])
        #expect(harness.machine.awaiting.renew == nil)
        #expect(harness.machine.nextDeadline() == harness.now + .seconds(1))
    }

    /// The release a fence sends outlives the lease: its answer, arriving when the node is
    /// passive again, is taken without effect (not reported as stale, no second release).
    @Test func aFencesReleaseIsAnsweredAfterTheLeaseEnded() {
        var harness = Harness()
        harness.makeActive()
        harness.send(.leaseObserved(.vanished))
        #expect(harness.machine.phase == .fencing)
        let fenced = harness.send(.fenceCompleted(.confirmed, .pending))
        #expect(fenced == [.disarmFenceKeeper, .releaseLease(revision: 7, handoffTo: nil, .epoch(7)), .followActive])
        #expect(harness.machine.phase == .passive && harness.machine.held == nil)
        let release = try! #require(harness.machine.awaiting.release)
        #expect(release.token == 7)
        #expect(harness.sendExactly(.releaseFinished(nil, release)).isEmpty)
        #expect(harness.machine.awaiting.release == nil)
        #expect(harness.machine.phase == .passive)
    }

    /// An acquisition still unanswered at shutdown stays awaited in `stopped`: its answer is
    /// ignored there (the lease runs out), not taken as a new lease.
    @Test func anAcquisitionAnsweredAfterShutdownIsIgnored() {
        var harness = Harness()
        harness.send(.natsConnected)
        harness.send(.leaseObserved(.free(handoffTo: nil)))
        #expect(harness.machine.phase == .acquiring)
        harness.send(.shutdownRequested)
        #expect(harness.machine.phase == .stopped)
        let acquire = try! #require(harness.machine.awaiting.acquire)
        #expect(harness.sendExactly(.acquireSucceeded(revision: 3, sentAt: harness.now, acquire)) == [.notify(.ignored("acquire result while stopped"))])
        #expect(harness.machine.held == nil && harness.machine.awaiting.acquire == nil && harness.machine.phase == .stopped)
    }

    static func name(_ phase: AppLifecycle.Phase) -> String {
        switch phase {
        case .passive: "passive"
        case .acquiring: "acquiring"
        case .promoting: "promoting"
        case .active: "active"
        case .demoting(let step, _): "demoting(\(step.rawValue))"
        case .fencing: "fencing"
        case .stopped: "stopped"
        }
    }
}
