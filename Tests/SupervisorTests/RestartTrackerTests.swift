import BatonCore
import FenceKeeper
import Testing

@testable import Backends
@testable import Control
@testable import Supervisor

@Suite("Restart budget")
struct RestartTrackerTests {
    func at(_ seconds: Double) -> MonotonicInstant { MonotonicInstant(nanoseconds: Int64(seconds * 1e9)) }

    @Test("restarts after the backoff until the budget is spent")
    func spends() {
        var tracker = RestartTracker(policy: RestartPolicy(maxRestarts: 3, window: .seconds(60), backoff: .milliseconds(500)))
        #expect(tracker.backendExited(.exited(1), at: at(1)) == .restart(after: .milliseconds(500)))
        #expect(tracker.backendExited(.exited(1), at: at(2)) == .restart(after: .milliseconds(500)))
        #expect(tracker.backendExited(.signaled(11), at: at(3)) == .restart(after: .milliseconds(500)))
        #expect(
            tracker.backendExited(.exited(2), at: at(4))
                == .giveUp("restart budget spent: the backend exited with status 2 after 3 restarts within 60s"))
    }

    @Test("restarts older than the window no longer count")
    func window() {
        var tracker = RestartTracker(policy: RestartPolicy(maxRestarts: 2, window: .seconds(10), backoff: .seconds(1)))
        #expect(tracker.backendExited(.exited(1), at: at(0)) == .restart(after: .seconds(1)))
        #expect(tracker.backendExited(.exited(1), at: at(5)) == .restart(after: .seconds(1)))
        // At t=10.5 the first restart (t=0) left the window.
        #expect(tracker.backendExited(.exited(1), at: at(10.5)) == .restart(after: .seconds(1)))
        #expect(tracker.recentRestarts == [at(5), at(10.5)])
        if case .giveUp = tracker.backendExited(.exited(1), at: at(11)) {} else { Issue.record("expected to give up") }
    }

    @Test("max_restarts 0 gives up at the first exit")
    func disabled() {
        var tracker = RestartTracker(policy: RestartPolicy(maxRestarts: 0, window: .seconds(60), backoff: .seconds(1)))
        #expect(
            tracker.backendExited(.exited(0), at: at(1))
                == .giveUp("restart budget spent: the backend exited with status 0 and restarts are disabled (max_restarts 0)"))
    }

    @Test("reset restores the whole budget")
    func reset() {
        var tracker = RestartTracker(policy: RestartPolicy(maxRestarts: 1, window: .seconds(60), backoff: .milliseconds(1500)))
        #expect(tracker.backendExited(nil, at: at(1)) == .restart(after: .milliseconds(1500)))
        if case .restart = tracker.backendExited(nil, at: at(2)) { Issue.record("expected to give up") }
        tracker.reset()
        #expect(tracker.backendExited(nil, at: at(3)) == .restart(after: .milliseconds(1500)))
    }

    @Test("the reason names sub-second windows in milliseconds")
    func reasonFormatting() {
        var tracker = RestartTracker(policy: RestartPolicy(maxRestarts: 1, window: .milliseconds(1500), backoff: .zero))
        _ = tracker.backendExited(nil, at: at(0))
        #expect(tracker.backendExited(nil, at: at(1)) == .giveUp("restart budget spent: the backend exited after 1 restarts within 1500ms"))
    }
}
