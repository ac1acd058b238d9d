import BatonCore
import Testing

/// A systemd unit's run (issue 13, item 1): the transitions `BackendRunState` adds for a unit
/// that is watched rather than reported on, without I/O. (Mutating calls are made before the
/// `#expect`, which cannot take them.)
@Suite("Backend run of a unit")
struct BackendRunStateUnitTests {
    let policy = RestartPolicy(maxRestarts: 1, window: .seconds(60), backoff: .milliseconds(100))
    let cause = "unit web.service went failed/failed behind Baton's back"
    func at(_ seconds: Double) -> MonotonicInstant { MonotonicInstant(nanoseconds: Int64(seconds * 1e9)) }

    func running(token: UInt64 = 7, armedAt deadline: Double = 10, policy: RestartPolicy? = nil) -> BackendRunState {
        var run = BackendRunState(policy: policy ?? self.policy)
        _ = run.armRequested(token: token, deadline: at(deadline))
        run.startRequested(token: token)
        return run
    }

    @Test func aUnitFoundDownWhileItShouldRunIsRestartedThenTheBudgetIsSpent() {
        var run = running()
        #expect(run.unitSignalled(.down))
        let down = run.unitRead(.down, cause: cause, at: at(1))
        #expect(down == [.reportDown("\(cause); restarting in 0.1 seconds"), .waitToRestart(token: 7, pause: .milliseconds(100))])
        #expect(run.restartDue(token: 7, keeperRunning: true) == [.restart(token: 7)])
        #expect(run.unitRestarted(token: 7, unit: "web.service") == [.reportRestarted("unit web.service restarted (epoch 7)")])
        // Down again within the window: the failure names the unit and the spent budget.
        let spent = "restart budget spent: the backend exited after 1 restarts within 60s"
        let downAgain = run.unitRead(.down, cause: cause, at: at(2))
        #expect(downAgain == [.reportDown("\(cause); not restarted: \(spent)"), .giveUp("\(cause); \(spent)")])
        // A new start refills the budget.
        run.startRequested(token: 8)
        #expect(run.restarts.recentRestarts.isEmpty)
    }

    @Test func aFailedRestartCountsAsOneMoreEnd() {
        var run = running(policy: RestartPolicy(maxRestarts: 2, window: .seconds(60), backoff: .milliseconds(100)))
        _ = run.unitRead(.down, cause: cause, at: at(1))
        let first = run.unitRestartFailed(token: 7, reason: "cannot start unit web.service: timed out", at: at(2))
        #expect(
            first == [
                .reportDown("restart failed: cannot start unit web.service: timed out; restarting in 0.1 seconds"),
                .waitToRestart(token: 7, pause: .milliseconds(100)),
            ])
        let spent = "restart budget spent: the backend exited after 2 restarts within 60s"
        let second = run.unitRestartFailed(token: 7, reason: "timed out", at: at(3))
        #expect(second == [.reportDown("restart failed: timed out; not restarted: \(spent)"), .giveUp("restart failed: timed out; \(spent)")])
        // Once the run is no longer wanted, a failed restart changes nothing.
        run.stopRequested()
        let afterStop = run.unitRestartFailed(token: 7, reason: "timed out", at: at(4))
        #expect(afterStop.isEmpty)
    }

    @Test func aUnitFoundUpWhileNothingShouldRunIsAStray() {
        var run = BackendRunState(policy: policy)
        #expect(run.unitSignalled(.up))
        #expect(!run.unitSignalled(.down))
        #expect(!run.unitSignalled(.changing))
        let up = run.unitRead(.up, cause: cause, at: at(1))
        #expect(up == [.stopStray])
        let down = run.unitRead(.down, cause: cause, at: at(1))
        #expect(down.isEmpty)
        #expect(run.strayStopWanted)
        // A start came before the stray stop's turn: it is no longer wanted.
        run.startRequested(token: 3)
        #expect(!run.strayStopWanted)
        // While the unit should run, up (or on its way) is what should be.
        #expect(!run.unitSignalled(.up))
        let upWhileRunning = run.unitRead(.up, cause: cause, at: at(1))
        #expect(upWhileRunning.isEmpty)
        let changing = run.unitRead(.changing, cause: cause, at: at(1))
        #expect(changing.isEmpty)
        // The backoff of another token's run ends in nothing.
        #expect(run.restartDue(token: 7, keeperRunning: true).isEmpty)
    }

    @Test func whileAnOperationIsInFlightTheUnitsStateIsNotNews() {
        var run = running()
        run.operationBegan()
        run.operationBegan()
        #expect(!run.idle)
        #expect(!run.unitSignalled(.down))
        let duringTwo = run.unitRead(.down, cause: cause, at: at(1))
        #expect(duringTwo.isEmpty)
        run.operationEnded()
        let duringOne = run.unitRead(.down, cause: cause, at: at(1))
        #expect(duringOne.isEmpty)
        run.operationEnded()
        #expect(run.idle)
        #expect(run.unitSignalled(.down))
        // Nothing was counted against the budget while busy.
        #expect(run.restarts.recentRestarts.isEmpty)
    }

    @Test func aStopDuringTheBackoffCancelsTheRestart() {
        var run = running()
        _ = run.unitRead(.down, cause: cause, at: at(1))
        run.stopRequested()
        #expect(run.restartDue(token: 7, keeperRunning: true).isEmpty)
    }

    @Test func aStartNeedsAnArmedKeeperBeforeItsDeadline() {
        var run = BackendRunState(policy: policy)
        #expect(run.startRefusal(at: at(1)) == "the fence keeper is not armed (a unit starts only under a fence deadline)")
        _ = run.armRequested(token: 7, deadline: at(10))
        #expect(run.startRefusal(at: at(1)) == nil)
        #expect(run.startRefusal(at: at(10)) == "the fence deadline has passed")
        _ = run.disarmRequested()
        #expect(run.startRefusal(at: at(1)) != nil)
    }

    @Test func aFailedStartIsNotRetriedUnlessAnotherStartCame() {
        var run = running()
        run.startFailed(token: 7)
        #expect(!run.shouldRun)
        // A unit found down afterwards is not restarted.
        let down = run.unitRead(.down, cause: cause, at: at(1))
        #expect(down.isEmpty)
        run.startRequested(token: 8)
        run.startFailed(token: 7)
        #expect(run.shouldRun(token: 8))
    }

    @Test func aDisposedBackendRunsAndWatchesNothing() {
        var run = running()
        let first = run.disposeRequested()
        let second = run.disposeRequested()
        #expect(first && !second)
        #expect(!run.shouldRun)
        #expect(!run.idle)
        #expect(!run.unitSignalled(.up))
        let up = run.unitRead(.up, cause: cause, at: at(1))
        #expect(up.isEmpty)
        #expect(!run.strayStopWanted)
    }
}
