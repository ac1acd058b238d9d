import FenceKeeper
import Testing

/// The keeper's decisions on a made-up timeline (nanoseconds).
@Suite("Fence keeper decisions")
struct FenceKeeperStateTests {
    let spec = StartSpec(token: 7, arguments: ["/bin/app"])

    /// A keeper armed until `deadline` with a backend running as pid 100.
    func running(deadline: Int64 = 1_000) -> FenceKeeperState {
        var state = FenceKeeperState()
        #expect(state.handle(.command(.arm(token: 7, deadline: deadline)), now: 0) == [])
        #expect(state.handle(.command(.start(spec)), now: 10) == [.spawn(spec)])
        #expect(state.handle(.spawned(pid: 100), now: 20) == [.report(.started(pid: 100))])
        return state
    }

    @Test("a start is refused unless a deadline ahead is armed")
    func startNeedsArming() {
        var state = FenceKeeperState()
        #expect(
            state.handle(.command(.start(spec)), now: 0) == [
                .report(.startFailed("the fence keeper is not armed: it starts a backend only while a fence deadline is set"))
            ])
        _ = state.handle(.command(.arm(token: 7, deadline: 50)), now: 0)
        _ = state.handle(.command(.disarm), now: 1)
        #expect(state.handle(.command(.start(spec)), now: 2).count == 1)
        #expect(state.backend == nil)
        #expect(!state.spawning)
    }

    @Test("a start with the armed deadline already over is refused (the deadline is reported spent)")
    func startAfterDeadline() {
        var state = FenceKeeperState()
        _ = state.handle(.command(.arm(token: 7, deadline: 50)), now: 0)
        let effects = state.handle(.command(.start(spec)), now: 60)
        #expect(
            effects == [
                .releaseClaims(reason: "fence deadline of token 7 passed"),
                .report(.expired(token: 7, deadline: 50, now: 60)),
                .report(.startFailed("the fence keeper is not armed: it starts a backend only while a fence deadline is set")),
            ])
    }

    @Test("nothing happens before the deadline; at the deadline everything is killed once")
    func deadlineKills() {
        var state = running()
        #expect(state.nextWakeup() == 1_000)
        #expect(state.handle(.tick, now: 999) == [])
        #expect(
            state.handle(.tick, now: 1_000) == [
                .killAll(pid: 100), .releaseClaims(reason: "fence deadline of token 7 passed"),
                .report(.killed(pid: 100, .deadline(token: 7, deadline: 1_000, now: 1_000))),
            ])
        #expect(state.isSweeping)
        #expect(state.nextWakeup() == nil)
        #expect(state.handle(.tick, now: 2_000) == [])
        #expect(state.handle(.command(.kill), now: 2_001) == [])
        #expect(state.handle(.leaderExited(.signaled(9)), now: 2_002) == [])
        #expect(state.handle(.descendantsGone, now: 2_003) == [.report(.exited(pid: 100, .signaled(9)))])
        #expect(state.backend == nil)
        #expect(!state.isSweeping)
    }

    @Test("re-arming moves the deadline; the last ARM wins, even an earlier one")
    func rearm() {
        var state = running(deadline: 1_000)
        _ = state.handle(.command(.arm(token: 7, deadline: 2_000)), now: 900)
        #expect(state.handle(.tick, now: 1_500) == [])
        _ = state.handle(.command(.arm(token: 7, deadline: 1_600)), now: 1_550)
        #expect(state.nextWakeup() == 1_600)
        #expect(state.handle(.tick, now: 1_600).first == .killAll(pid: 100))
    }

    @Test("a re-arm that arrives after the deadline does not save the backend")
    func lateRearm() {
        var state = running(deadline: 1_000)
        let effects = state.handle(.command(.arm(token: 7, deadline: 5_000)), now: 1_001)
        #expect(effects == [
            .killAll(pid: 100), .releaseClaims(reason: "fence deadline of token 7 passed"),
            .report(.killed(pid: 100, .deadline(token: 7, deadline: 1_000, now: 1_001))),
        ])
        #expect(state.armed == FenceKeeperState.Arming(token: 7, deadline: 5_000))
    }

    @Test("an ARM with a deadline already over kills at once")
    func armInThePast() {
        var state = running(deadline: 1_000)
        let effects = state.handle(.command(.arm(token: 7, deadline: 500)), now: 600)
        #expect(effects == [
            .killAll(pid: 100), .releaseClaims(reason: "fence deadline of token 7 passed"),
            .report(.killed(pid: 100, .deadline(token: 7, deadline: 500, now: 600))),
        ])
    }

    @Test("DISARM keeps the backend alive past the old deadline")
    func disarm() {
        var state = running(deadline: 1_000)
        _ = state.handle(.command(.disarm), now: 500)
        #expect(state.nextWakeup() == nil)
        #expect(state.handle(.tick, now: 10_000) == [])
        #expect(state.backend?.killed == false)
    }

    @Test("a deadline passing with no backend releases the claims (VIPs, unit) and is reported as expired")
    func expired() {
        var state = FenceKeeperState()
        _ = state.handle(.command(.arm(token: 3, deadline: 100)), now: 0)
        #expect(state.handle(.tick, now: 150) == [
            .releaseClaims(reason: "fence deadline of token 3 passed"), .report(.expired(token: 3, deadline: 100, now: 150)),
        ])
        #expect(state.armed == nil)
    }

    @Test("SIGNAL goes to the group of a live backend only")
    func signal() {
        var state = running()
        #expect(state.handle(.command(.signal(.term)), now: 30) == [.signalGroup(.term, pid: 100)])
        _ = state.handle(.leaderExited(.signaled(15)), now: 40)
        #expect(state.handle(.command(.signal(.term)), now: 50) == [])
        var idle = FenceKeeperState()
        #expect(idle.handle(.command(.signal(.hup)), now: 0) == [])
    }

    @Test("KILL kills everything and reports it")
    func kill() {
        var state = running()
        #expect(state.handle(.command(.kill), now: 30) == [.killAll(pid: 100), .report(.killed(pid: 100, .requested))])
        #expect(state.handle(.command(.kill), now: 31) == [])
    }

    @Test("when the main process exits on its own, its leftovers are killed and EXITED waits for them")
    func leaderExit() {
        var state = running()
        #expect(state.handle(.leaderExited(.exited(3)), now: 30) == [.killAll(pid: 100)])
        #expect(state.isSweeping)
        #expect(
            state.handle(.command(.start(spec)), now: 31) == [.report(.startFailed("a backend (pid 100) is still running"))])
        #expect(state.handle(.descendantsGone, now: 32) == [.report(.exited(pid: 100, .exited(3)))])
        #expect(state.handle(.command(.start(spec)), now: 33) == [.spawn(spec)])
    }

    @Test("batond going away kills everything, then the keeper exits once all is gone")
    func batondGone() {
        var state = running()
        #expect(
            state.handle(.batondGone("end of input"), now: 30) == [
                .killAll(pid: 100), .releaseClaims(reason: "batond went away: end of input"),
                .report(.killed(pid: 100, .batondGone("end of input"))),
            ])
        #expect(state.armed == nil)
        #expect(state.handle(.command(.start(spec)), now: 31) == [])
        #expect(state.handle(.leaderExited(.signaled(9)), now: 32) == [])
        #expect(state.handle(.descendantsGone, now: 33) == [.report(.exited(pid: 100, .signaled(9))), .exit])
        #expect(state.exited)
        #expect(state.handle(.tick, now: 34) == [])
    }

    @Test("batond going away with nothing running exits at once")
    func batondGoneIdle() {
        var state = FenceKeeperState()
        _ = state.handle(.command(.arm(token: 1, deadline: 100)), now: 0)
        #expect(state.handle(.batondGone("parent process 1 exited"), now: 10) == [
            .releaseClaims(reason: "batond went away: parent process 1 exited"), .exit,
        ])
    }

    @Test("the keeper gives up waiting for unkillable processes after the grace period")
    func shutdownGrace() {
        var state = running()
        _ = state.handle(.batondGone("end of input"), now: 30)
        #expect(state.nextWakeup() == 30 + FenceKeeperState.shutdownGrace)
        #expect(state.handle(.tick, now: 29 + FenceKeeperState.shutdownGrace) == [])
        let effects = state.handle(.tick, now: 30 + FenceKeeperState.shutdownGrace)
        #expect(effects.last == .exit)
    }

    @Test("a second start while one is being spawned or running is refused")
    func startWhileBusy() {
        var state = FenceKeeperState()
        _ = state.handle(.command(.arm(token: 7, deadline: 1_000)), now: 0)
        #expect(state.handle(.command(.start(spec)), now: 1) == [.spawn(spec)])
        #expect(state.handle(.command(.start(spec)), now: 2) == [.report(.startFailed("a start is already in progress"))])
        #expect(state.handle(.spawnFailed("command /bin/app not found"), now: 3) == [.report(.startFailed("command /bin/app not found"))])
        #expect(state.backend == nil)
    }

    @Test("a spawn that finishes after the deadline is killed at once")
    func spawnPastDeadline() {
        var state = FenceKeeperState()
        _ = state.handle(.command(.arm(token: 7, deadline: 100)), now: 0)
        _ = state.handle(.command(.start(spec)), now: 1)
        let effects = state.handle(.spawned(pid: 100), now: 150)
        #expect(
            effects == [
                .report(.started(pid: 100)), .killAll(pid: 100), .releaseClaims(reason: "fence deadline of token 7 passed"),
                .report(.killed(pid: 100, .deadline(token: 7, deadline: 100, now: 150))),
            ])
        #expect(state.backend?.killed == true)
    }

    @Test("PING is answered in order")
    func ping() {
        var state = FenceKeeperState()
        #expect(state.handle(.command(.ping(9)), now: 0) == [.report(.pong(9))])
    }
}
