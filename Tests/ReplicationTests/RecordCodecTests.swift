import Foundation
import Testing

@testable import Replication

@Suite("Record codec")
struct RecordCodecTests {
    func sampleRecord(pages: Int = 3, pageSize: Int = 1024) -> ReplicationRecord {
        ReplicationRecord(
            kind: .transaction, txid: 42, token: 7, pageSize: pageSize, commitPages: UInt32(pages + 2), checksumBefore: 0x0102_0304_0506_0708,
            checksumAfter: 0xFFEE_DDCC_BBAA_9988, timestampNanos: 1_700_000_000_123_456_789,
            pages: (1...pages).map { PageImage(pageNumber: UInt32($0 * 1), data: [UInt8](repeating: UInt8($0), count: pageSize)) })
    }

    @Test func roundTripsEveryKind() throws {
        let transaction = sampleRecord()
        #expect(try ReplicationRecordCodec.decode(ReplicationRecordCodec.encode(transaction)) == transaction)
        let snapshot = ReplicationRecord(
            kind: .snapshot, txid: 9, token: 3, pageSize: 4096, commitPages: 100, checksumBefore: 1, checksumAfter: 2, timestampNanos: 5,
            snapshotName: "snapshot-00000000000000000009-3")
        #expect(try ReplicationRecordCodec.decode(ReplicationRecordCodec.encode(snapshot)) == snapshot)
        let marker = ReplicationRecord(
            kind: .finalMarker, txid: 9, token: 3, pageSize: 4096, commitPages: 100, checksumBefore: 2, checksumAfter: 2, timestampNanos: 5)
        #expect(try ReplicationRecordCodec.decode(ReplicationRecordCodec.encode(marker)) == marker)
    }

    func expectMalformed(_ bytes: [UInt8], _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try ReplicationRecordCodec.decode(bytes)
            Issue.record("decoded malformed bytes", sourceLocation: sourceLocation)
        } catch {
            #expect(error.code == .malformedRecord, sourceLocation: sourceLocation)
            #expect(error.message.contains(fragment), "\(error.message)", sourceLocation: sourceLocation)
        }
    }

    @Test func rejectsMalformedRecords() {
        let good = ReplicationRecordCodec.encode(sampleRecord())
        var bytes = good
        bytes[0] = 0x58
        expectMalformed(bytes, "magic")
        bytes = good
        bytes[4] = 2
        expectMalformed(bytes, "version 2")
        bytes = good
        bytes[5] = 9
        expectMalformed(bytes, "kind 9")
        expectMalformed(Array(good.dropLast(10)), "announces")
        expectMalformed(good + [0], "trailing")
        expectMalformed(Array(good[0..<20]), "truncated")
        // Page size 1000 is not a power of two.
        bytes = good
        bytes.replaceSubrange(24..<28, with: [0, 0, 0x03, 0xE8])
        expectMalformed(bytes, "page size")
        // Pages out of order.
        var record = sampleRecord()
        record.pages.swapAt(0, 1)
        expectMalformed(ReplicationRecordCodec.encode(record), "out of order")
        // A page above the commit size.
        record = sampleRecord()
        record.commitPages = 2
        expectMalformed(ReplicationRecordCodec.encode(record), "above the commit size")
        // The lock-byte page (page 1048577 for 1 KiB pages).
        record = sampleRecord(pages: 1)
        record.commitPages = 2_000_000
        record.pages = [PageImage(pageNumber: DatabaseChecksum.lockPage(pageSize: 1024), data: [UInt8](repeating: 0, count: 1024))]
        expectMalformed(ReplicationRecordCodec.encode(record), "lock-byte")
        // A snapshot record must name its snapshot.
        record = sampleRecord()
        record.kind = .snapshot
        record.pages = []
        expectMalformed(ReplicationRecordCodec.encode(record), "no snapshot name")
    }

    @Test func chunksReassembleAndVerify() throws {
        let record = sampleRecord(pages: 20, pageSize: 4096)
        let chunks = RecordChunk.split(record, maxMessageBytes: 10_000)
        #expect(chunks.count > 8)
        #expect(chunks.allSatisfy { $0.encoded().count <= 10_000 })
        var assembler = RecordAssembler()
        for (index, chunk) in chunks.enumerated() {
            let decoded = try RecordChunk(decoding: chunk.encoded())
            #expect(decoded == chunk)
            let result = try assembler.add(decoded)
            if index < chunks.count - 1 {
                #expect(result == nil)
                // A redelivered chunk changes nothing.
                #expect(try assembler.add(decoded) == nil)
            } else {
                #expect(result == record)
            }
        }
        // One small record is one chunk.
        #expect(RecordChunk.split(sampleRecord(pages: 1), maxMessageBytes: 1 << 20).count == 1)
    }

    /// A record's chunks delivered again from chunk 0 part-way (a redelivery, or a consumer
    /// restarted mid-record: chunks 0...k, then 0...n) reassemble into the record, without an
    /// error and without counting a discarded record.
    @Test func aRecordRestartedFromItsFirstChunkReassembles() throws {
        let record = sampleRecord(pages: 12, pageSize: 4096)
        let chunks = RecordChunk.split(record, maxMessageBytes: 9000)
        #expect(chunks.count >= 6)
        for k in 0..<(chunks.count - 1) {
            var assembler = RecordAssembler()
            for chunk in chunks[0...k] { #expect(try assembler.add(chunk) == nil) }
            var result: ReplicationRecord?
            for (index, chunk) in chunks.enumerated() {
                result = try assembler.add(try RecordChunk(decoding: chunk.encoded()))
                if index < chunks.count - 1 { #expect(result == nil) }
            }
            #expect(result == record)
            #expect(assembler.restartedRecords == 1)
            #expect(assembler.discardedIncompleteRecords == 0)
            #expect(!assembler.hasIncompleteRecord)
        }
        // Restarted twice, with single chunks redelivered in between.
        var assembler = RecordAssembler()
        let order = [0, 1, 2, 1, 0, 1, 2, 3, 2, 0] + Array(1..<chunks.count)
        var result: ReplicationRecord?
        for index in order { result = try assembler.add(chunks[index]) }
        #expect(result == record)
        #expect(assembler.restartedRecords == 2)
        // A chunk after a missing one asks for the record again; the next full copy works.
        var lossy = RecordAssembler()
        #expect(try lossy.add(chunks[0]) == nil)
        let missing = #expect(throws: ReplicationError.self) { try lossy.add(chunks[2]) }
        #expect(missing?.code == .chunkMissing)
        #expect(!lossy.hasIncompleteRecord)
        for (index, chunk) in chunks.enumerated() {
            let assembled = try lossy.add(chunk)
            #expect((assembled == record) == (index == chunks.count - 1))
        }
    }

    @Test func incompleteOrDamagedRecordsAreNeverReturned() throws {
        let first = RecordChunk.split(sampleRecord(pages: 10, pageSize: 4096), maxMessageBytes: 8000)
        var second = sampleRecord(pages: 2)
        second.txid = 43
        let secondChunks = RecordChunk.split(second, maxMessageBytes: 8000)
        var assembler = RecordAssembler()
        // The writer of record 42 died after two chunks; record 43 follows.
        #expect(try assembler.add(first[0]) == nil)
        #expect(try assembler.add(first[1]) == nil)
        var result: ReplicationRecord?
        for chunk in secondChunks { result = try assembler.add(chunk) }
        #expect(result == second)
        #expect(assembler.discardedIncompleteRecords == 1)
        // A chunk that arrives without its predecessors is a gap.
        var fresh = RecordAssembler()
        #expect(throws: ReplicationError.self) { try fresh.add(first[3]) }
        // Damaged bytes fail the hash.
        var damaged = first
        damaged[2].bytes[10] ^= 0xFF
        var checker = RecordAssembler()
        #expect(throws: ReplicationError.self) {
            for chunk in damaged { _ = try checker.add(chunk) }
        }
        // Malformed chunk headers.
        var bytes = first[0].encoded()
        bytes[4] = 9
        #expect(throws: ReplicationError.self) { try RecordChunk(decoding: bytes) }
        #expect(throws: ReplicationError.self) { try RecordChunk(decoding: Array(bytes[0..<10])) }
    }
}
