import BatonCore
import Foundation
import Testing

/// How a starting batond claims its node id in the node registry (issue 11, item 7): the
/// decisions without I/O.
@Suite("Node claim")
struct NodeClaimTests {
    let me = NodeRecord(
        node: "node-1", instance: "i-me", hostname: "host-a", pid: 200, started: "2026-01-01T00:00:00Z", version: "0.1.0", bootID: "boot-1",
        pidNamespace: "pid:[1]")
    let wait: Duration = .milliseconds(2500)

    func other(
        hostname: String = "host-b", pid: Int32 = 100, bootID: String? = "boot-1", pidNamespace: String? = "pid:[1]", instance: String = "i-other"
    ) -> NodeRecord {
        NodeRecord(
            node: "node-1", instance: instance, hostname: hostname, pid: pid, started: "2026-01-01T00:00:00Z", version: "0.1.0", bootID: bootID,
            pidNamespace: pidNamespace)
    }

    func alive(_: Int32) -> Bool { true }
    func dead(_: Int32) -> Bool { false }

    @Test func aFreeKeyIsCreated() {
        var claim = NodeClaim(me: me, heartbeatWait: wait)
        #expect(claim.observe(nil, processAlive: alive) == .create)
    }

    @Test func anotherHostsInstanceThatHeartbeatsIsRefused() {
        var claim = NodeClaim(me: me, heartbeatWait: wait)
        let first = NodeRegistryEntry(record: other(), revision: 7)
        #expect(claim.observe(first, processAlive: alive) == .recheck(after: wait))
        #expect(claim.waitingOn == 7)
        let next = NodeRegistryEntry(record: other(), revision: 9)
        #expect(claim.observe(next, processAlive: alive) == .refuse(other()))
    }

    @Test func anotherHostsInstanceThatStaysSilentIsTakenOver() {
        var claim = NodeClaim(me: me, heartbeatWait: wait)
        let entry = NodeRegistryEntry(record: other(), revision: 7)
        #expect(claim.observe(entry, processAlive: alive) == .recheck(after: wait))
        #expect(claim.observe(entry, processAlive: alive) == .replace(revision: 7))
    }

    @Test func anEntryGoneDuringTheWaitIsCreatedAgain() {
        var claim = NodeClaim(me: me, heartbeatWait: wait)
        #expect(claim.observe(NodeRegistryEntry(record: other(), revision: 7), processAlive: alive) == .recheck(after: wait))
        #expect(claim.observe(nil, processAlive: alive) == .create)
        #expect(claim.waitingOn == nil)
    }

    @Test func aCrashedPredecessorOnThisHostIsTakenOverAtOnce() {
        var claim = NodeClaim(me: me, heartbeatWait: wait)
        let predecessor = other(hostname: "host-a")
        var asked: [Int32] = []
        let step = claim.observe(NodeRegistryEntry(record: predecessor, revision: 3)) { pid in
            asked.append(pid)
            return false
        }
        #expect(step == .replace(revision: 3))
        #expect(asked == [100])
    }

    @Test func aLiveInstanceOnThisHostIsWaitedForThenRefused() {
        var claim = NodeClaim(me: me, heartbeatWait: wait)
        let twin = other(hostname: "host-a")
        #expect(claim.observe(NodeRegistryEntry(record: twin, revision: 3), processAlive: alive) == .recheck(after: wait))
        #expect(claim.observe(NodeRegistryEntry(record: twin, revision: 4), processAlive: alive) == .refuse(twin))
    }

    /// A pid says nothing across hosts, boots or pid namespaces (containers): never trust it
    /// there, wait for a heartbeat instead.
    @Test(arguments: [
        ("host-b", "boot-1", "pid:[1]"), ("host-a", "boot-2", "pid:[1]"), ("host-a", "boot-1", "pid:[2]"), ("host-a", nil, nil),
    ] as [(String, String?, String?)])
    func aPidElsewhereIsNeverChecked(hostname: String, bootID: String?, pidNamespace: String?) {
        var claim = NodeClaim(me: me, heartbeatWait: wait)
        var asked = false
        let step = claim.observe(NodeRegistryEntry(record: other(hostname: hostname, bootID: bootID, pidNamespace: pidNamespace), revision: 3)) { _ in
            asked = true
            return false
        }
        #expect(step == .recheck(after: wait))
        #expect(!asked)
    }

    @Test func aValueBatonDidNotWriteIsWaitedOutLikeASilentInstance() {
        var claim = NodeClaim(me: me, heartbeatWait: wait)
        let foreign = NodeRegistryEntry(record: nil, revision: 5)
        #expect(claim.observe(foreign, processAlive: dead) == .recheck(after: wait))
        // Rewritten by something else again: wait on the new revision.
        #expect(claim.observe(NodeRegistryEntry(record: nil, revision: 6), processAlive: dead) == .recheck(after: wait))
        #expect(claim.observe(NodeRegistryEntry(record: nil, revision: 6), processAlive: dead) == .replace(revision: 6))
    }

    @Test func ourOwnWriteIsOurs() {
        var claim = NodeClaim(me: me, heartbeatWait: wait)
        #expect(claim.observe(NodeRegistryEntry(record: me, revision: 11), processAlive: dead) == .replace(revision: 11))
    }

    @Test func heartbeatConflicts() {
        #expect(NodeHeartbeatConflict.classify(nil, me: me) == .recreate)
        #expect(NodeHeartbeatConflict.classify(NodeRegistryEntry(record: me, revision: 4), me: me) == .ownWrite(revision: 4))
        #expect(NodeHeartbeatConflict.classify(NodeRegistryEntry(record: other(), revision: 4), me: me) == .duplicate(other()))
        #expect(NodeHeartbeatConflict.classify(NodeRegistryEntry(record: nil, revision: 4), me: me) == .duplicate(nil))
    }

    @Test func theRecordUsesStableJSONKeys() throws {
        let text = String(decoding: try JSONEncoder().encode(me), as: UTF8.self)
        for key in ["\"node\"", "\"instance\"", "\"hostname\"", "\"pid\"", "\"started\"", "\"version\"", "\"boot_id\"", "\"pid_ns\""] {
            #expect(text.contains(key), "\(text)")
        }
        #expect(me.summary.contains("host-a") && me.summary.contains("pid 200") && me.summary.contains("i-me"))
    }
}

/// The node registry's runtime detection feeds the lifecycle: no lease is taken from then on.
@Suite("Lifecycle: duplicate instance reported by the node registry")
struct DuplicateInstanceReportTests {
    @Test func aReportedDuplicateNeverAcquiresAFreeLease() {
        let timing = LeaseTiming(ttl: .seconds(3), renew: .seconds(1), fenceBudget: .milliseconds(500), skew: .milliseconds(250))
        var machine = AppLifecycle(
            configuration: .init(
                node: "node-a", instance: "i-1", timing: timing, hasHealthCheck: false, hasReplica: false, hasAddresses: false,
                stepTimeout: .seconds(5), stopTimeout: .seconds(12), priorityHoldback: .zero))
        var now = MonotonicInstant(nanoseconds: 1_000_000_000)
        let twin = LeaseHolder(node: "node-a", instance: "other-process")
        _ = machine.handle(.natsConnected, now: now)
        #expect(machine.handle(.duplicateInstanceReported(twin), now: now) == [.notify(.duplicateInstance(twin))])
        #expect(machine.handle(.duplicateInstanceReported(twin), now: now).isEmpty)  // reported once
        #expect(machine.handle(.leaseObserved(.free(handoffTo: nil)), now: now).isEmpty)
        for _ in 0..<60 {
            now = now + .seconds(1)
            #expect(machine.handle(.tick, now: now).isEmpty)
        }
        #expect(machine.duplicateDetected && machine.phase == .passive)
    }
}
