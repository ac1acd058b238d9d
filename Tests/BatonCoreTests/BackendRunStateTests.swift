import BatonCore
import Testing

/// A backend run's decisions (issue 13, item 1), without I/O.
@Suite("Backend run")
struct BackendRunStateTests {
    let policy = RestartPolicy(maxRestarts: 2, window: .seconds(60), backoff: .milliseconds(500))
    func at(_ seconds: Double) -> MonotonicInstant { MonotonicInstant(nanoseconds: Int64(seconds * 1e9)) }

    func running(token: UInt64 = 7, armedAt deadline: Double = 10) -> BackendRunState {
        var run = BackendRunState(policy: policy)
        #expect(run.armRequested(token: token, deadline: at(deadline)) == [.arm(.init(token: token, deadline: at(deadline)))])
        run.startRequested(token: token)
        return run
    }

    @Test func anExitWhileRunningIsRestartedAfterTheBackoff() {
        var run = running()
        #expect(run.shouldRun(token: 7))
        #expect(
            run.backendEnded(token: 7, ending: .exited("exited with status 1"), cause: "exited on its own", at: at(1)) == [
                .reportDown("backend exited on its own (epoch 7); restarting in 0.5 seconds"),
                .waitToRestart(token: 7, pause: .milliseconds(500)),
            ])
        // The keeper still runs: restart at once.
        #expect(run.restartDue(token: 7, keeperRunning: true) == [.restart(token: 7)])
        #expect(run.restarted(token: 7, pid: 4242) == [.reportRestarted("backend restarted (epoch 7, pid 4242)")])
        #expect(run.restarted(token: 7, pid: nil) == [.reportRestarted("backend restarted (epoch 7, pid ?)")])
    }

    @Test func whenTheBudgetIsSpentTheRunGivesUp() {
        var run = running()
        for second in [1.0, 2.0] {
            if case .waitToRestart = run.backendEnded(token: 7, ending: .exited("exited with status 1"), cause: "exited on its own", at: at(second)).last {
            } else {
                Issue.record("expected a restart at \(second)s")
            }
        }
        #expect(
            run.backendEnded(token: 7, ending: .other, cause: "killed: SIGKILL from outside", at: at(3)) == [
                .reportDown(
                    "backend killed: SIGKILL from outside (epoch 7); not restarted: restart budget spent: the backend exited after 2 restarts within 60s"),
                .giveUp("restart budget spent: the backend exited after 2 restarts within 60s"),
            ])
        // A new start refills the budget.
        run.startRequested(token: 8)
        #expect(run.restarts.recentRestarts.isEmpty)
    }

    @Test func endsThatDoNotBelongToTheWantedRunChangeNothing() {
        var run = running()
        // Asked for: a graceful stop.
        #expect(run.backendEnded(token: 7, ending: .stopped, cause: "stopped", at: at(1)).isEmpty)
        // Another token's run.
        #expect(run.backendEnded(token: 6, ending: .exited(nil), cause: "exited on its own", at: at(1)).isEmpty)
        // After a stop or fence.
        run.stopRequested()
        #expect(!run.shouldRun)
        #expect(run.backendEnded(token: 7, ending: .exited(nil), cause: "exited on its own", at: at(1)).isEmpty)
        #expect(run.restarts.recentRestarts.isEmpty)
    }

    @Test func aStopDuringTheBackoffCancelsTheRestart() {
        var run = running()
        _ = run.backendEnded(token: 7, ending: .exited(nil), cause: "exited on its own", at: at(1))
        run.stopRequested()
        #expect(run.restartDue(token: 7, keeperRunning: true).isEmpty)
        #expect(run.restartDue(token: 7, keeperRunning: false).isEmpty)
    }

    @Test func aKeeperThatDiedWithTheBackendIsRearmedWithTheLastDeadlineFirst() {
        var run = running(armedAt: 12)
        _ = run.backendEnded(token: 7, ending: .other, cause: "keeper lost: the fence keeper exited", at: at(1))
        #expect(run.restartDue(token: 7, keeperRunning: false) == [.rearmForRestart(.init(token: 7, deadline: at(12)))])
        #expect(run.rearmedForRestart(token: 7) == [.restart(token: 7)])
        #expect(run.restartFailed(token: 7, reason: "the fence deadline has passed") == [.fail("restart failed: the fence deadline has passed")])
    }

    @Test func aDeadlineOfAnotherTokenIsNotReused() {
        var run = BackendRunState(policy: policy)
        _ = run.armRequested(token: 6, deadline: at(10))
        run.startRequested(token: 7)
        _ = run.backendEnded(token: 7, ending: .other, cause: "keeper lost", at: at(1))
        #expect(run.restartDue(token: 7, keeperRunning: false) == [.restart(token: 7)])
        // Nothing armed at all: the same.
        _ = run.disarmRequested()
        #expect(run.armed == nil)
        #expect(run.restartDue(token: 7, keeperRunning: false) == [.restart(token: 7)])
    }

    @Test func aStopWhileTheKeeperIsRearmedDisarmsItUnlessArmedAgain() {
        var run = running()
        _ = run.backendEnded(token: 7, ending: .other, cause: "keeper lost", at: at(1))
        #expect(run.restartDue(token: 7, keeperRunning: false) == [.rearmForRestart(.init(token: 7, deadline: at(10)))])
        // A fence ran meanwhile and the lifecycle lifted the deadline: disarm what was armed for nothing.
        var disarmed = run
        disarmed.stopRequested()
        #expect(disarmed.disarmRequested() == [.disarm])
        #expect(disarmed.rearmedForRestart(token: 7) == [.disarm])
        // A stop ran but the lifecycle armed the keeper again: leave it armed.
        var rearmed = run
        rearmed.stopRequested()
        _ = rearmed.armRequested(token: 9, deadline: at(20))
        #expect(rearmed.rearmedForRestart(token: 7).isEmpty)
    }
}
