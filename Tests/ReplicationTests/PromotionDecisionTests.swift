import Foundation
import Testing

@testable import Replication

/// The pure decision "may this node promote, from what": every case, no I/O.
@Suite("Replication: promotion decision")
struct PromotionDecisionTests {
    static let at = Date(timeIntervalSince1970: 1_800_000_000)

    func copy(_ node: String, token: UInt64, txid: UInt64, checksum: UInt64? = nil, sequence: UInt64 = 0) -> DatabaseCopy {
        DatabaseCopy(node: node, token: token, txid: txid, checksum: checksum ?? txid &* 0x9E37_79B9, pageSize: 4096, commitPages: 10, streamSequence: sequence)
    }

    func record(_ copy: DatabaseCopy, event: String = HistoryEvent.progress, forced: String? = nil, at: Date = at) -> ReplicationHistoryRecord {
        ReplicationHistoryRecord(newest: copy, event: event, recordedAt: at, forced: forced)
    }

    func stream(first: UInt64 = 1, last: UInt64, lastTxid: UInt64, lastToken: UInt64 = 3, snapshot: Bool = true, atLocal: (token: UInt64, txid: UInt64)? = nil)
        -> StreamView
    {
        .present(
            StreamView.StreamState(
                messages: last - first + 1, firstSequence: first, lastSequence: last, lastRecord: (lastToken, lastTxid), hasSnapshotRecord: snapshot,
                recordAtLocalSequence: atLocal))
    }

    func decide(
        token: UInt64 = 5, local: DatabaseCopy?, newest: ReplicationHistoryRecord?, stream: StreamView, snapshot: SnapshotCopy? = nil,
        others: [DatabaseCopy] = []
    ) -> PromotionDecision.Plan {
        PromotionDecision(app: "web", node: "node-b", token: token, local: local, newest: newest, stream: stream, snapshot: snapshot, others: others).plan
    }

    func refusal(_ plan: PromotionDecision.Plan) -> String? {
        if case .refuse(let reason) = plan { return reason }
        return nil
    }

    @Test func nothingAnywhereIsAFirstStart() {
        #expect(decide(local: nil, newest: nil, stream: .missing) == .firstStart)
        let empty = StreamView.present(.init(messages: 0, firstSequence: 0, lastSequence: 0, lastRecord: nil, hasSnapshotRecord: false))
        #expect(decide(local: nil, newest: nil, stream: empty) == .firstStart)
    }

    @Test func aStreamThatReachesTheNewestDataIsDrained() {
        let local = copy("node-b", token: 3, txid: 90, sequence: 90)
        // The durable record is rate-limited: the stream may be ahead of it.
        let newest = record(copy("node-a", token: 3, txid: 100))
        #expect(decide(local: local, newest: newest, stream: stream(last: 120, lastTxid: 120, atLocal: (3, 90))) == .drainStream)
        // Exactly at the record.
        #expect(decide(local: local, newest: newest, stream: stream(last: 100, lastTxid: 100, atLocal: (3, 90))) == .drainStream)
        // No record yet (a cluster upgraded from a Baton without one).
        #expect(decide(local: local, newest: nil, stream: stream(last: 120, lastTxid: 120, atLocal: (3, 90))) == .drainStream)
        // A new node without a replica starts from the stream's snapshot record.
        #expect(decide(local: nil, newest: newest, stream: stream(first: 40, last: 120, lastTxid: 120)) == .drainStream)
        // A stale writer's rejected record at the position's sequence is still this history.
        #expect(decide(local: local, newest: newest, stream: stream(last: 120, lastTxid: 120, atLocal: (2, 7))) == .drainStream)
        #expect(decide(local: local, newest: newest, stream: stream(last: 120, lastTxid: 120, atLocal: (2, 500))) == .drainStream)
    }

    @Test func anExpiredStreamPromotesTheLocalCopyWhenItIsTheNewest() {
        let newest = record(copy("node-a", token: 3, txid: 100), event: HistoryEvent.finalMarker)
        let expired = StreamView.present(.init(messages: 0, firstSequence: 121, lastSequence: 120, lastRecord: nil, hasSnapshotRecord: false))
        let same = copy("node-b", token: 3, txid: 100, sequence: 120)
        guard case .promoteLocalCopy(let reason) = decide(local: same, newest: newest, stream: expired) else {
            Issue.record("expected the local copy")
            return
        }
        #expect(reason.contains("expired"))
        // A later txid of the same history (the record is rate-limited) is newer still.
        let later = copy("node-b", token: 3, txid: 104, sequence: 124)
        #expect(decide(local: later, newest: newest, stream: expired) != .drainStream)
        if case .promoteLocalCopy = decide(local: later, newest: newest, stream: expired) {} else { Issue.record("a later copy is promoted") }
        // An older copy is refused, naming what each node holds.
        let older = copy("node-b", token: 3, txid: 80, sequence: 100)
        let refused = refusal(decide(local: older, newest: newest, stream: expired, others: [copy("node-c", token: 3, txid: 95)]))
        #expect(refused?.contains("node-a holds txid 100") == true)
        #expect(refused?.contains("this node (node-b): txid 80") == true)
        #expect(refused?.contains("node-c holds txid 95") == true)
        #expect(refused?.contains("batonctl replica promote web NODE --force") == true)
        // Same txid, other checksum: another history, refused.
        let diverged = copy("node-b", token: 3, txid: 100, checksum: 1, sequence: 120)
        #expect(refusal(decide(local: diverged, newest: newest, stream: expired)) != nil)
    }

    @Test func aDeletedOrRecreatedStreamIsNeverTheTruthOverNewerData() {
        let newest = record(copy("node-a", token: 3, txid: 100))
        // Deleted: a node without a replica (or with an older one) must not start empty.
        #expect(refusal(decide(local: nil, newest: newest, stream: .missing))?.contains("does not exist") == true)
        #expect(refusal(decide(local: copy("node-b", token: 2, txid: 50, sequence: 50), newest: newest, stream: .missing)) != nil)
        // Recreated empty.
        let empty = StreamView.present(.init(messages: 0, firstSequence: 0, lastSequence: 0, lastRecord: nil, hasSnapshotRecord: false))
        #expect(refusal(decide(local: nil, newest: newest, stream: empty))?.contains("empty") == true)
        // Recreated, and a stale node published an old database into it.
        let stale = stream(last: 3, lastTxid: 3, lastToken: 2)
        #expect(refusal(decide(local: nil, newest: newest, stream: stale))?.contains("behind the newest known txid 100") == true)
        // The node holding the newest copy promotes it.
        let holder = copy("node-b", token: 3, txid: 100, sequence: 100)
        if case .promoteLocalCopy = decide(local: holder, newest: newest, stream: .missing) {} else { Issue.record("the holder promotes its copy") }
        if case .promoteLocalCopy = decide(local: holder, newest: newest, stream: stale) {} else { Issue.record("the holder promotes over a stale stream") }
    }

    @Test func aStreamBehindTheLocalReplicaWentBackwards() {
        // No durable record (lost with the bucket): the replica's own position is the floor.
        let local = copy("node-b", token: 3, txid: 100, sequence: 100)
        let recreated = stream(last: 20, lastTxid: 20, lastToken: 4)
        guard case .promoteLocalCopy(let reason) = decide(local: local, newest: nil, stream: recreated) else {
            Issue.record("the replica is newer than the stream")
            return
        }
        #expect(reason.contains("went backwards"))
        // Recreated and refilled past the position: the record there is another history's.
        let refilled = stream(last: 150, lastTxid: 150, lastToken: 4, atLocal: (4, 100))
        #expect(decide(local: local, newest: nil, stream: refilled) != .drainStream)
        let refilledOlderTxid = stream(last: 150, lastTxid: 150, lastToken: 3, atLocal: (3, 140))
        #expect(decide(local: local, newest: nil, stream: refilledOlderTxid) != .drainStream)
    }

    @Test func theNewestSnapshotIsRestoredWhenNoCopyIsNewer() {
        let newest = record(copy("node-a", token: 3, txid: 100))
        let snapshot = SnapshotCopy(name: "snapshot-00000000000000000100-3", copy: copy("node-a", token: 3, txid: 100))
        guard case .restoreSnapshot(let name, _) = decide(local: copy("node-b", token: 3, txid: 60, sequence: 60), newest: newest, stream: .missing, snapshot: snapshot)
        else {
            Issue.record("expected the snapshot")
            return
        }
        #expect(name == snapshot.name)
        // An older snapshot does not do.
        let old = SnapshotCopy(name: "snapshot-00000000000000000050-3", copy: copy("node-a", token: 3, txid: 50))
        #expect(refusal(decide(local: nil, newest: newest, stream: .missing, snapshot: old))?.contains("newest snapshot snapshot-00000000000000000050-3") == true)
    }

    @Test func anotherNodeWithANewerCopyOfTheHistoryIsTheOneToPromote() {
        let newest = record(copy("node-a", token: 3, txid: 100))
        let mine = copy("node-b", token: 3, txid: 104, sequence: 104)
        let theirs = copy("node-c", token: 3, txid: 110, sequence: 110)
        #expect(refusal(decide(local: mine, newest: newest, stream: .missing, others: [theirs]))?.contains("node-c holds txid 110") == true)
        // A node reporting another history (an older epoch's longer log) does not count.
        let otherHistory = copy("node-c", token: 2, txid: 300, sequence: 300)
        if case .promoteLocalCopy = decide(local: mine, newest: newest, stream: .missing, others: [otherHistory]) {} else {
            Issue.record("an older epoch's copy is not newer")
        }
        // Without a record, the copies the nodes reported decide.
        #expect(refusal(decide(local: copy("node-b", token: 3, txid: 5, sequence: 5), newest: nil, stream: .missing, others: [theirs])) != nil)
        if case .promoteLocalCopy = decide(local: theirs.with(node: "node-b"), newest: nil, stream: .missing, others: [mine.with(node: "node-c")]) {} else {
            Issue.record("the newest reported copy promotes")
        }
    }

    @Test func aRecordOfANewerEpochRefuses() {
        let newest = record(copy("node-a", token: 9, txid: 100))
        #expect(refusal(decide(token: 5, local: copy("node-b", token: 9, txid: 100, sequence: 100), newest: newest, stream: .missing))?.contains("epoch 9") == true)
    }

    @Test func aForcedCopyIsTheOnlyOneThatMayPromote() {
        let forcedCopy = copy("node-c", token: 2, txid: 60)
        let forced = record(forcedCopy, event: HistoryEvent.forced, forced: "operator accepted node-c's copy")
        // node-b holds something newer, but the operator chose node-c's copy.
        let newer = copy("node-b", token: 3, txid: 100, sequence: 100)
        #expect(refusal(decide(local: newer, newest: forced, stream: .missing))?.contains("forced node-c's copy") == true)
        // Even a stream that reaches further is not drained: the operator chose.
        #expect(refusal(decide(local: newer, newest: forced, stream: stream(last: 100, lastTxid: 100, atLocal: (3, 100)))) != nil)
        // The node with that copy promotes it.
        if case .promoteLocalCopy = decide(local: forcedCopy.with(node: "node-b"), newest: forced, stream: .missing) {} else {
            Issue.record("the forced copy promotes")
        }
        // So does a snapshot with exactly that data.
        let snapshot = SnapshotCopy(name: "snapshot-00000000000000000060-2", copy: forcedCopy)
        if case .restoreSnapshot = decide(local: nil, newest: forced, stream: .missing, snapshot: snapshot) {} else { Issue.record("the snapshot promotes") }
    }

    @Test func theNewerOfTwoRecords() {
        let a = record(copy("node-a", token: 3, txid: 100))
        let b = record(copy("node-b", token: 3, txid: 90))
        #expect(ReplicationHistoryRecord.newer(a, b) == a)
        #expect(ReplicationHistoryRecord.newer(nil, b) == b)
        let c = record(copy("node-c", token: 4, txid: 10))
        #expect(ReplicationHistoryRecord.newer(a, c) == c)
        let forced = record(copy("node-b", token: 3, txid: 90), event: HistoryEvent.forced, forced: "x", at: Self.at.addingTimeInterval(10))
        #expect(ReplicationHistoryRecord.newer(c, forced) == forced)
        let laterClaim = record(copy("node-b", token: 6, txid: 91), event: HistoryEvent.claim, at: Self.at.addingTimeInterval(20))
        #expect(ReplicationHistoryRecord.newer(forced, laterClaim) == laterClaim)
    }
}

extension DatabaseCopy {
    func with(node: String) -> DatabaseCopy {
        var copy = self
        copy.node = node
        return copy
    }
}
