import Testing

@testable import Replication

/// When the shipper takes a snapshot so that a node starting over does not replay more than a
/// restore would cost.
@Suite("Replication: snapshot when replaying costs more than restoring")
struct SnapshotPolicyTests {
    @Test func aSmallDatabaseIsSnapshottedAfterAFewHundredRecords() {
        let small: Int64 = 500 << 10
        #expect(!ReplicationConfiguration.snapshotIsCheaperThanReplay(messages: 255, bytes: 255 * 300, databaseBytes: small))
        #expect(ReplicationConfiguration.snapshotIsCheaperThanReplay(messages: 256, bytes: 256 * 300, databaseBytes: small))
        // Big records count by their bytes.
        #expect(ReplicationConfiguration.snapshotIsCheaperThanReplay(messages: 10, bytes: 64 << 20, databaseBytes: small))
    }

    @Test func aLargeDatabaseWaitsInProportionToItsSize() {
        let fourGiB: Int64 = 4 << 30
        #expect(!ReplicationConfiguration.snapshotIsCheaperThanReplay(messages: 16_000, bytes: 16_000 * 4096, databaseBytes: fourGiB))
        #expect(ReplicationConfiguration.snapshotIsCheaperThanReplay(messages: 16_384, bytes: 16_384 * 4096, databaseBytes: fourGiB))
    }

    @Test func hugeCountsDoNotOverflow() {
        #expect(ReplicationConfiguration.snapshotIsCheaperThanReplay(messages: .max, bytes: .max, databaseBytes: .max))
    }
}
