import Testing

@testable import Replication

/// When the shipper takes a snapshot so that a node starting over does not replay more than
/// `snapshot_replay_ratio` restores would cost, without spending its time uploading snapshots.
@Suite("Replication: snapshot when replaying costs a few restores")
struct SnapshotPolicyTests {
    typealias Policy = ReplicationConfiguration

    @Test func aSmallDatabaseIsSnapshottedAfterAThousandRecordsByDefault() {
        let small: Int64 = 500 << 10
        #expect(!Policy.snapshotIsCheaperThanReplay(messages: 1020, bytes: 1020 * 300, databaseBytes: small))
        #expect(Policy.snapshotIsCheaperThanReplay(messages: 1024, bytes: 1024 * 300, databaseBytes: small))
        // Big records count by their bytes.
        #expect(Policy.snapshotIsCheaperThanReplay(messages: 10, bytes: 256 << 20, databaseBytes: small))
    }

    @Test func aLargeDatabaseWaitsInProportionToItsSize() {
        let fourGiB: Int64 = 4 << 30
        #expect(!Policy.snapshotIsCheaperThanReplay(messages: 64_000, bytes: 64_000 * 4096, databaseBytes: fourGiB))
        #expect(Policy.snapshotIsCheaperThanReplay(messages: 65_536, bytes: 65_536 * 4096, databaseBytes: fourGiB))
    }

    @Test func theRatioScalesTheRecordsAndZeroTurnsTheRuleOff() {
        let small: Int64 = 500 << 10
        #expect(!Policy.snapshotIsCheaperThanReplay(messages: 255, bytes: 0, databaseBytes: small, replayRatio: 1))
        #expect(Policy.snapshotIsCheaperThanReplay(messages: 256, bytes: 0, databaseBytes: small, replayRatio: 1))
        #expect(!Policy.snapshotIsCheaperThanReplay(messages: 2047, bytes: 0, databaseBytes: small, replayRatio: 8))
        #expect(Policy.snapshotIsCheaperThanReplay(messages: 2048, bytes: 0, databaseBytes: small, replayRatio: 8))
        #expect(!Policy.snapshotIsCheaperThanReplay(messages: .max, bytes: .max, databaseBytes: small, replayRatio: 0))
    }

    @Test func snapshotsForThisReasonTakeAtMostATenthOfTheTime() {
        let small: Int64 = 500 << 10
        // The last snapshot took 2 s: the next waits until 18 s have passed since it ended.
        #expect(!Policy.snapshotIsCheaperThanReplay(
            messages: 5000, bytes: 0, databaseBytes: small, sinceLastSnapshot: .milliseconds(17_999), lastSnapshotTook: .seconds(2)))
        #expect(Policy.snapshotIsCheaperThanReplay(
            messages: 5000, bytes: 0, databaseBytes: small, sinceLastSnapshot: .seconds(18), lastSnapshotTook: .seconds(2)))
    }

    @Test func hugeCountsDoNotOverflow() {
        #expect(Policy.snapshotIsCheaperThanReplay(messages: .max, bytes: .max, databaseBytes: .max))
        #expect(!Policy.snapshotIsCheaperThanReplay(messages: 1, bytes: 0, databaseBytes: .max, replayRatio: 1000))
    }
}
