import BatonCore
import Testing

@Suite("Flight recorder")
struct FlightRecorderTests {
    let me = LeaseHolder(node: "node-2", instance: "i2")
    let old = LeaseHolder(node: "node-1", instance: "i1")

    func at(_ milliseconds: Int64) -> MonotonicInstant { MonotonicInstant(nanoseconds: milliseconds * 1_000_000) }

    @Test("a crash failover is measured from the old holder's last renew seen to healthy, and recorded once")
    func crashFailover() throws {
        var recorder = FlightRecorder(cluster: "c", app: "web", me: me)
        recorder.observe(.held(old, revision: 7, token: 5), now: at(1_000))
        recorder.observe(.held(old, revision: 8, token: 5), now: at(2_000))
        recorder.observe(.vanished, now: at(5_200))
        let acquired = recorder.record(.acquired(token: 9), now: at(5_500), wall: 100)
        #expect(acquired.events.map(\.kind) == [.acquired])
        #expect(acquired.handover == nil)
        let active = recorder.record(.becameActive(token: 9), now: at(6_250), wall: 101)
        #expect(active.events.map(\.kind) == [.active])
        #expect(active.events[0].durationMilliseconds == 750)
        let draft = try #require(active.handover)
        #expect(!draft.graceful)
        let record = draft.complete(oldStopWall: nil, dataLoss: nil)
        #expect(record.kind == .failover)
        let handover = try #require(record.handover)
        #expect(handover.downtimeFrom == .lastRenewSeen)
        #expect(handover.downtimeMilliseconds == 4_250)
        #expect(handover.fromNode == "node-1")
        #expect(handover.fromEpoch == 5)
        #expect(handover.toEpoch == 9)
        // Becoming active again without a new takeover writes no second record.
        #expect(recorder.record(.becameActive(token: 9), now: at(7_000), wall: 102).handover == nil)
    }

    @Test("a switchover uses the old node's stepping-down time, else the release seen here")
    func switchover() throws {
        var recorder = FlightRecorder(cluster: "c", app: "web", me: me)
        recorder.observe(.held(old, revision: 7, token: 5), now: at(1_000))
        recorder.observe(.released(old, token: 5, handoffTo: "node-2"), now: at(3_000))
        _ = recorder.record(.acquired(token: 9), now: at(3_010), wall: 1_000.0)
        let draft = try #require(recorder.record(.becameActive(token: 9), now: at(3_400), wall: 1_000.39).handover)
        #expect(draft.graceful)
        #expect(draft.requestedTarget == "node-2")
        let fromStop = draft.complete(oldStopWall: 998.89, dataLoss: nil)
        #expect(fromStop.kind == .switchover)
        #expect(fromStop.handover?.downtimeFrom == .oldBackendStop)
        #expect(abs((fromStop.handover?.downtimeMilliseconds ?? 0) - 1_500) < 0.01)
        let withoutStop = draft.complete(oldStopWall: nil, dataLoss: nil)
        #expect(withoutStop.handover?.downtimeFrom == .releaseSeen)
        #expect(withoutStop.handover?.downtimeMilliseconds == 400)
        // Clocks that disagree (the old node's stop "after" healthy here): this node's own measure.
        #expect(draft.complete(oldStopWall: 1_005, dataLoss: nil).handover?.downtimeFrom == .releaseSeen)
    }

    @Test("the first activation of an app (no previous holder seen) is not a failover")
    func firstStart() {
        var recorder = FlightRecorder(cluster: "c", app: "web", me: me)
        recorder.observe(.held(me, revision: 1, token: 1), now: at(10))
        _ = recorder.record(.acquired(token: 1), now: at(20), wall: 1)
        #expect(recorder.record(.becameActive(token: 1), now: at(30), wall: 1).handover == nil)
    }

    @Test("stepping down carries the held epoch and released the step-down's duration")
    func stepDown() {
        var recorder = FlightRecorder(cluster: "c", app: "web", me: me)
        _ = recorder.record(.acquired(token: 4), now: at(0), wall: 1)
        let down = recorder.record(.demoting(.switchover(to: "node-1")), now: at(1_000), wall: 2)
        #expect(down.events.first?.kind == .steppingDown)
        #expect(down.events.first?.epoch == 4)
        #expect(down.events.first?.detail == "switchover to node-1")
        let released = recorder.record(.released(token: 4), now: at(1_800), wall: 3)
        #expect(released.events.first?.kind == .released)
        #expect(released.events.first?.durationMilliseconds == 800)
        #expect(recorder.record(.ignored("x"), now: at(1_900), wall: 3).events.isEmpty)
    }

    @Test("data loss: a final marker loses nothing; a crash names the promoted txid as the last shipped")
    func dataLoss() {
        let graceful = BatonEvent.DataLoss.fromPromotion(
            promotedTxid: 42, finalMarker: true, discardedIncompleteRecord: false, recoveredWithoutStream: false, lastTransactionAgeMilliseconds: 5)
        #expect(graceful.lostShippedTxids == 0)
        #expect(graceful.unshipped.hasPrefix("none"))
        let crash = BatonEvent.DataLoss.fromPromotion(
            promotedTxid: 42, finalMarker: false, discardedIncompleteRecord: true, recoveredWithoutStream: false, lastTransactionAgeMilliseconds: 900)
        #expect(crash.lastShippedTxid == nil)
        #expect(crash.lostShippedTxids == nil)
        #expect(crash.unshipped.contains("after txid 42"))
        #expect(crash.unshipped.contains("incomplete"))
    }

    @Test("events encode to the documented snake_case JSON")
    func schema() throws {
        let event = BatonEvent(
            time: 1.5, cluster: "c", node: "n", app: "web", kind: .switchover, epoch: 9, durationMilliseconds: 12,
            handover: BatonEvent.Handover(
                fromNode: "a", fromEpoch: 5, toNode: "n", toEpoch: 9, graceful: true, requestedTarget: nil, downtimeMilliseconds: 12,
                downtimeFrom: .oldBackendStop,
                dataLoss: .fromPromotion(promotedTxid: 3, finalMarker: true, discardedIncompleteRecord: false, recoveredWithoutStream: false, lastTransactionAgeMilliseconds: nil)))
        #expect(EventSubjects.subject(cluster: "c", app: "web", kind: .switchover) == "baton.c.events.web.switchover")
        #expect(EventSubjects.subject(cluster: "c", app: nil, kind: .nodeStarted) == "baton.c.events._node.node-started")
        #expect(EventSubjects.stream(cluster: "c") == "BATON_c_EVENTS")
        #expect(event.handover?.dataLoss?.promotedTxid == 3)
    }
}
