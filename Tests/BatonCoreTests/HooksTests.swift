import Testing

@testable import BatonCore

private func parse(_ hooks: String) throws(ConfigErrors) -> BatonConfig {
    try BatonConfig.parse(
        yaml: """
            cluster: demo
            node: {id: node-1}
            nats: {servers: ["nats://127.0.0.1:4222"]}
            apps:
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true], env: {A: b}}}
                hooks:
            \(hooks)
            """, file: "test.yaml")
}

private func errors(_ hooks: String) -> [String] {
    do {
        _ = try parse(hooks)
        return []
    } catch {
        return error.errors.map(\.description)
    }
}

@Suite("Hooks: config, scheduling, the before_active step")
struct HooksTests {
    @Test func hooksAreReadInOrderWithTheDefaultTimeout() throws {
        let config = try parse(
            """
                  before_active:
                    - {command: [/usr/local/bin/check, "--strict"], timeout: 2s}
                    - {command: [mount-data]}
                  on_fence: [{command: [/bin/logger, fenced]}]
            """)
        let hooks = config.apps[0].hooks
        #expect(hooks[.beforeActive] == [HookCommand(command: ["/usr/local/bin/check", "--strict"], timeout: .seconds(2)), HookCommand(command: ["mount-data"])])
        #expect(hooks[.beforeActive][1].timeout == .seconds(10))
        #expect(hooks[.onFence].map(\.command) == [["/bin/logger", "fenced"]])
        #expect(hooks[.afterActive].isEmpty)
        #expect(hooks.total(.beforeActive, .onFence) == .seconds(22))
        // An app without hooks has none, and no before_active step.
        let plan = AppPlan(app: config.apps[0], node: "node-1")
        #expect(plan.beforeActiveTimeout == .seconds(12) + .seconds(10) + AppPlan.stopMargin)
        #expect(plan.lifecycle(instance: "i", hasReplica: false, hasAddresses: false, wallClockOffset: .zero).beforeActiveTimeout == plan.beforeActiveTimeout)
        var bare = config.apps[0]
        bare.hooks = HooksConfig()
        #expect(AppPlan(app: bare, node: "node-1").beforeActiveTimeout == nil)
        #expect(AppPlan(app: bare, node: "node-1").stopTimeout + .seconds(0) < plan.stopTimeout + .seconds(1))
    }

    @Test func badHooksAreReportedWithFileLineAndColumn() {
        #expect(
            errors(
                """
                      before_activ: [{command: [/bin/true]}]
                """) == [#"test.yaml:9:7: apps[0].hooks.before_activ: unknown key "before_activ"; did you mean "before_active"?"#])
        let empty = errors(
            """
                  after_active: [{command: []}]
            """)
        #expect(empty.count == 1)
        #expect(empty.first?.hasPrefix("test.yaml:9:") == true && empty.first?.contains("apps[0].hooks.after_active[0].command: must not be empty") == true, "\(empty)")
        let timeouts = errors(
            """
                  on_fence:
                    - {command: [/bin/true], timeout: 0s}
                    - {command: [/bin/true], timeout: soon}
                    - {command: [/bin/true], timeout: 11m}
            """)
        #expect(timeouts.count == 3)
        #expect(timeouts[0].hasPrefix("test.yaml:10:43: apps[0].hooks.on_fence[0].timeout:"))
        #expect(timeouts[1].hasPrefix("test.yaml:11:43: apps[0].hooks.on_fence[1].timeout:"))
        #expect(timeouts[2] == "test.yaml:12:43: apps[0].hooks.on_fence[2].timeout: timeout 11m is longer than the limit of 10m for a hook")
        let missing = errors(
            """
                  before_passive: [{timeout: 1s}]
            """)
        #expect(missing.count == 1)
        #expect(missing.first?.contains("missing required key \"command\"") == true)
        #expect(errors("      after_passive: {command: [/bin/true]}").first?.contains("a list of hooks") == true)
    }

    @Test func passiveHooksBelongToAnActivationAndOnFenceFollowsEveryFence() {
        var schedule = HookSchedule()
        func see(_ notification: AppLifecycle.Notification) -> (point: HookPoint, epoch: UInt64)? { schedule.observe(notification) }
        #expect(see(.acquired(token: 4)) == nil)
        #expect(!schedule.runsBeforePassive(epoch: 4))  // promoting: nothing to undo yet
        // A promotion that failed and released: no passive hooks.
        #expect(see(.released(token: 4)) == nil)
        #expect(see(.becameActive(token: 5)) == (HookPoint.afterActive, 5))
        #expect(schedule.runsBeforePassive(epoch: 5))
        #expect(!schedule.runsBeforePassive(epoch: 4))
        #expect(see(.demoting(.stepdown)) == nil)
        #expect(see(.released(token: 5)) == (HookPoint.afterPassive, 5))
        #expect(see(.released(token: 5)) == nil)  // once
        #expect(!schedule.runsBeforePassive(epoch: 5))
        #expect(see(.becameActive(token: 9)) == (HookPoint.afterActive, 9))
        #expect(see(.fenced(token: 9, reason: "lease lost")) == (HookPoint.onFence, 9))
        #expect(schedule.activeEpoch == nil)
        #expect(see(.released(token: 9)) == nil)
        #expect(HookPoint.allCases.map(\.role) == ["active", "active", "passive", "passive", "fenced"])
    }

    @Test func hookResultsAreEventsOfTheirOwnKind() {
        var recorder = FlightRecorder(cluster: "demo", app: "web", me: LeaseHolder(node: "node-a", instance: "i-1"))
        let ok = recorder.record(
            .hooksRan(point: .afterActive, epoch: 5, summary: "after_active hooks: 1 of 1 ran, ok", succeeded: true),
            now: MonotonicInstant(nanoseconds: 1), wall: 100)
        #expect(ok.events.map(\.kind) == [.hook])
        #expect(ok.events.first?.epoch == 5)
        #expect(ok.events.first?.detail == "after_active hooks: 1 of 1 ran, ok")
        let failed = recorder.record(
            .hooksRan(point: .onFence, epoch: 5, summary: "on_fence hooks: on_fence hook 1 (/bin/x): exited with status 2", succeeded: false),
            now: MonotonicInstant(nanoseconds: 2), wall: 101)
        #expect(failed.events.first?.detail == "hook failed: on_fence hooks: on_fence hook 1 (/bin/x): exited with status 2")
        #expect(BatonEvent.Kind.hook.rawValue == "hook")
    }

    static let timing = LeaseTiming(ttl: .seconds(3), renew: .seconds(1), fenceBudget: .milliseconds(500), skew: .milliseconds(250))

    static func lifecycle(beforeActive: Duration?) -> AppLifecycle {
        var configuration = AppLifecycle.Configuration(
            node: "node-a", instance: "i-1", timing: timing, hasHealthCheck: false, hasAddresses: true, stepTimeout: .seconds(30),
            stopTimeout: .seconds(12))
        configuration.beforeActiveTimeout = beforeActive
        return AppLifecycle(configuration: configuration)
    }

    /// Acquires the lease and returns the first step's stamp.
    static func acquire(_ machine: inout AppLifecycle, at now: MonotonicInstant) -> Stamp? {
        _ = machine.handle(.natsConnected, now: now)
        let actions = machine.handle(.leaseObserved(.free(handoffTo: nil)), now: now)
        guard case .acquireLease(_, let stamp)? = actions.first else { return nil }
        let after = machine.handle(.acquireSucceeded(revision: 3, sentAt: now, stamp), now: now)
        for action in after { if case .runPromotionStep(.claimAddresses, let step) = action { return step } }
        return nil
    }

    @Test func beforeActiveRunsAfterTheVIPsAndBeforeTheBackend() throws {
        let now = MonotonicInstant(nanoseconds: 1_000_000_000)
        var machine = Self.lifecycle(beforeActive: .seconds(7))
        let claim = try #require(Self.acquire(&machine, at: now))
        let next = machine.handle(.promotionStepSucceeded(.claimAddresses, claim), now: now)
        guard case .runPromotionStep(.beforeActive, let hooks)? = next.last else {
            Issue.record("expected the before_active step, got \(next)")
            return
        }
        #expect(machine.phase == .promoting(.beforeActive))
        let start = machine.handle(.promotionStepSucceeded(.beforeActive, hooks), now: now)
        #expect(start.contains { if case .runPromotionStep(.startBackend, _) = $0 { true } else { false } })

        // Without hooks the step is skipped.
        var bare = Self.lifecycle(beforeActive: nil)
        let bareClaim = try #require(Self.acquire(&bare, at: now))
        let bareNext = bare.handle(.promotionStepSucceeded(.claimAddresses, bareClaim), now: now)
        #expect(bareNext.contains { if case .runPromotionStep(.startBackend, _) = $0 { true } else { false } })
    }

    @Test func aFailedBeforeActiveRollsBackReleasesAndCoolsDown() throws {
        let now = MonotonicInstant(nanoseconds: 1_000_000_000)
        var machine = Self.lifecycle(beforeActive: .seconds(7))
        let claim = try #require(Self.acquire(&machine, at: now))
        guard case .runPromotionStep(.beforeActive, let hooks)? = machine.handle(.promotionStepSucceeded(.claimAddresses, claim), now: now).last else {
            Issue.record("no before_active step")
            return
        }
        let failed = machine.handle(.promotionStepFailed(.beforeActive, "before_active hook 1 (/bin/false): exited with status 1", hooks), now: now)
        #expect(failed.contains(.notify(.demoting(.promotionFailed(.beforeActive, "before_active hook 1 (/bin/false): exited with status 1")))))
        #expect(machine.phase == .demoting(.stopBackend, .promotionFailed(.beforeActive, "before_active hook 1 (/bin/false): exited with status 1")))
    }

    @Test func aHangingBeforeActiveTimesOutAtItsOwnBound() throws {
        let start = MonotonicInstant(nanoseconds: 1_000_000_000)
        var machine = Self.lifecycle(beforeActive: .seconds(7))
        let claim = try #require(Self.acquire(&machine, at: start))
        _ = machine.handle(.promotionStepSucceeded(.claimAddresses, claim), now: start)
        #expect(machine.nextDeadline()! <= start + .seconds(7))
        // Renew along the way so the lease stays valid; the step bound is what ends it.
        var now = start
        var demoted = false
        while now < start + .seconds(8), !demoted {
            now = now + .milliseconds(100)
            for action in machine.handle(.tick, now: now) {
                if case .renewLease(let revision, let stamp) = action {
                    _ = machine.handle(.renewSucceeded(revision: revision + 1, sentAt: now, stamp), now: now)
                }
                if case .notify(.demoting(.promotionFailed(.beforeActive, let reason))) = action {
                    #expect(reason == "timed out after 7.0 seconds")
                    #expect(now >= start + .seconds(7))
                    demoted = true
                }
            }
        }
        #expect(demoted)
    }
}

private func == (lhs: (point: HookPoint, epoch: UInt64)?, rhs: (HookPoint, UInt64)) -> Bool {
    guard let lhs else { return false }
    return lhs.point == rhs.0 && lhs.epoch == rhs.1
}
