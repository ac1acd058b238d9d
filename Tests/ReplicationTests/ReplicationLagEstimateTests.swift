import Foundation
import Testing

import Replication

@Suite("Replication lag in bytes and seconds")
struct ReplicationLagEstimateTests {
    @Test("bytes behind: messages behind × the stream's mean stored message size, 0 when caught up")
    func bytesBehind() {
        #expect(ReplicationLagEstimate.bytesBehind(messagesBehind: 0, streamMessages: 10, streamBytes: 10_000) == 0)
        #expect(ReplicationLagEstimate.bytesBehind(messagesBehind: 3, streamMessages: 10, streamBytes: 10_000) == 3_000)
        #expect(ReplicationLagEstimate.bytesBehind(messagesBehind: 1, streamMessages: 3, streamBytes: 1_000) == 333)
        #expect(ReplicationLagEstimate.bytesBehind(messagesBehind: 2, streamMessages: 3, streamBytes: 1_000) == 667)
        // An empty stream, or more behind than it holds (a replica behind its retention).
        #expect(ReplicationLagEstimate.bytesBehind(messagesBehind: 5, streamMessages: 0, streamBytes: 0) == 0)
        #expect(ReplicationLagEstimate.bytesBehind(messagesBehind: 50, streamMessages: 10, streamBytes: 10_000) == 10_000)
        // Large streams do not overflow.
        #expect(ReplicationLagEstimate.bytesBehind(messagesBehind: 1 << 40, streamMessages: 1 << 41, streamBytes: 1 << 62) == 1 << 61)
    }

    @Test("seconds behind: 0 when caught up, else the age of the oldest missing transaction")
    func secondsBehind() {
        let now = Date(timeIntervalSince1970: 1_700_000_100)
        #expect(ReplicationLagEstimate.secondsBehind(messagesBehind: 0, oldestUnapplied: nil, now: now) == 0)
        #expect(ReplicationLagEstimate.secondsBehind(messagesBehind: 0, oldestUnapplied: now.addingTimeInterval(-50), now: now) == 0)
        #expect(ReplicationLagEstimate.secondsBehind(messagesBehind: 4, oldestUnapplied: now.addingTimeInterval(-2.5), now: now) == 2.5)
        #expect(ReplicationLagEstimate.secondsBehind(messagesBehind: 4, oldestUnapplied: nil, now: now) == nil)
        // The active node's clock ahead of this one: never negative.
        #expect(ReplicationLagEstimate.secondsBehind(messagesBehind: 1, oldestUnapplied: now.addingTimeInterval(3), now: now) == 0)
    }

    @Test("a record's first chunk gives its transaction time; later chunks and foreign bytes the stored time")
    func transactionTimeOfAChunk() {
        let record = ReplicationRecord(
            kind: .transaction, txid: 42, token: 7, pageSize: 1024, commitPages: 5, checksumBefore: 1, checksumAfter: 2,
            timestampNanos: 1_700_000_000_250_000_000,
            pages: (1...3).map { PageImage(pageNumber: UInt32($0), data: [UInt8](repeating: UInt8($0), count: 1024)) })
        let stored = Date(timeIntervalSince1970: 1_800_000_000)
        let chunks = RecordChunk.split(record, maxMessageBytes: 1500)
        #expect(chunks.count > 1)
        let first = ReplicationLagEstimate.transactionTime(ofChunk: chunks[0].encoded(), storedAt: stored)
        #expect(abs(first.timeIntervalSince1970 - 1_700_000_000.25) < 1e-6)
        #expect(ReplicationLagEstimate.transactionTime(ofChunk: chunks[1].encoded(), storedAt: stored) == stored)
        #expect(ReplicationLagEstimate.transactionTime(ofChunk: Array("not a chunk".utf8), storedAt: stored) == stored)
        let whole = RecordChunk.split(record, maxMessageBytes: 1 << 20)
        #expect(whole.count == 1)
        #expect(abs(ReplicationLagEstimate.transactionTime(ofChunk: whole[0].encoded(), storedAt: stored).timeIntervalSince1970 - 1_700_000_000.25) < 1e-6)
    }
}
