import BatonCore
import Testing

@Suite("Transition tally (metrics)")
struct TransitionTallyTests {
    @Test("a takeover that becomes active counts one successful failover; a plain acquisition none")
    func failover() {
        var tally = TransitionTally()
        tally.acquiring(takeover: true)
        #expect(tally.observe(.acquired(token: 5)) == [])
        #expect(tally.observe(.becameActive(token: 5)) == [.failover(outcome: "active")])
        tally.acquiring(takeover: false)
        #expect(tally.observe(.becameActive(token: 6)) == [])
    }

    @Test("a takeover whose promotion fails counts a failed failover")
    func failedFailover() {
        var tally = TransitionTally()
        tally.acquiring(takeover: true)
        #expect(tally.observe(.demoting(.promotionFailed(.startBackend, "exit 1"))) == [.failover(outcome: "failed")])
        #expect(tally.observe(.released(token: 5)) == [])
    }

    @Test("switchover and stepdown count by outcome; other demotions do not")
    func handovers() {
        var tally = TransitionTally()
        _ = tally.observe(.demoting(.switchover(to: "node-2")))
        #expect(tally.observe(.released(token: 9)) == [.handover(kind: "switchover", outcome: "released")])
        _ = tally.observe(.demoting(.stepdown))
        #expect(tally.observe(.releaseUnconfirmed(token: 9, reason: "timeout")) == [.handover(kind: "stepdown", outcome: "release_unconfirmed")])
        _ = tally.observe(.demoting(.switchover(to: "node-3")))
        #expect(
            tally.observe(.fenced(token: 9, reason: "graceful stop did not finish within 10s"))
                == [.fenced(.stopFailed), .handover(kind: "switchover", outcome: "fenced")])
        _ = tally.observe(.demoting(.shutdown))
        #expect(tally.observe(.released(token: 9)) == [])
    }

    @Test("fence causes come from the lifecycle's reasons")
    func causes() {
        let cases: [(String, TransitionTally.FenceCause)] = [
            ("no successful renew for 2.5s (ttl 3s, fence budget 500ms); fencing before the lease can expire", .renewDeadline),
            ("renew lost the compare-and-set: the lease is no longer ours", .leaseTaken),
            ("node-2/abc holds the lease now (revision 12)", .leaseTaken),
            ("the lease key vanished (expired or deleted)", .leaseVanished),
            ("the graceful stop did not confirm the backend gone (timeout)", .stopFailed),
            ("graceful stop did not finish within 10s", .stopFailed),
            ("removing the virtual IPs failed: EPERM", .vipRemovalFailed),
            ("removing the virtual IPs did not finish within 5s", .vipRemovalFailed),
            ("something new", .other),
        ]
        for (reason, cause) in cases { #expect(TransitionTally.FenceCause(reason: reason) == cause, "\(reason)") }
    }
}
