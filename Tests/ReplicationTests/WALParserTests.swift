import Foundation
import Testing

@testable import Replication

@Suite("WAL parser")
struct WALParserTests {
    /// A database with `transactions` committed transactions in its WAL (no checkpoint), the
    /// connection still open; returns the WAL's bytes and the connection.
    func makeWAL(_ directory: TemporaryDirectory, transactions: Int) throws -> (wal: [UInt8], database: SQLiteDatabase, path: String) {
        let path = directory.file("app.db")
        let database = try openAppDatabase(path, autocheckpoint: 0)
        try database.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, note TEXT, body BLOB)")
        for index in 0..<transactions {
            try database.execute("BEGIN; INSERT INTO items(note, body) VALUES ('n\(index)', randomblob(\(500 + index * 300))); COMMIT")
        }
        return (try readFile(path + "-wal"), database, path)
    }

    @Test func parsesAWALWrittenBySQLite() throws {
        let directory = try TemporaryDirectory()
        let (wal, database, path) = try makeWAL(directory, transactions: 12)
        let (header, scan) = try WALScanner.parse(wal)
        #expect(header.magic == WALHeader.magicLittleEndian || header.magic == WALHeader.magicBigEndian)
        #expect(header.pageSize == 4096)
        #expect(scan.transactions.count == 13)  // CREATE TABLE + 12 inserts
        #expect(scan.stopReason == .endOfData)
        #expect(scan.committedEnd == wal.count)
        #expect(scan.uncommittedFrames == 0)
        let pageCount = UInt32(try database.scalar("PRAGMA page_count")!)!
        #expect(scan.transactions.last?.commitPages == pageCount)
        for transaction in scan.transactions {
            #expect(transaction.pages.map(\.pageNumber) == transaction.pages.map(\.pageNumber).sorted())
            #expect(transaction.pages.allSatisfy { $0.pageNumber <= transaction.commitPages && $0.data.count == 4096 })
        }
        // Database file + WAL pages (last copy wins) rebuild the database SQLite sees.
        var pages: [UInt32: [UInt8]] = [:]
        let file = try readFile(path)
        for number in 0..<(file.count / 4096) { pages[UInt32(number + 1)] = Array(file[(number * 4096)..<((number + 1) * 4096)]) }
        for page in WALTransaction.merging(scan.transactions)!.pages { pages[page.pageNumber] = page.data }
        var rebuilt: [UInt8] = []
        for number in 1...pageCount { rebuilt += pages[number] ?? [UInt8](repeating: 0, count: 4096) }
        let copy = directory.file("rebuilt.db")
        try Data(rebuilt).write(to: URL(fileURLWithPath: copy))
        let reopened = try openImmutable(copy)
        #expect(try reopened.scalar("SELECT count(*) FROM items") == "12")
        #expect(try reopened.scalar("PRAGMA integrity_check") == "ok")
    }

    @Test func stopsAtATornFrame() throws {
        let directory = try TemporaryDirectory()
        let (wal, _, _) = try makeWAL(directory, transactions: 5)
        let full = try WALScanner.parse(wal).scan
        let last = full.transactions.last!
        let torn = Array(wal[0..<(last.endOffset - 100)])
        let (_, scan) = try WALScanner.parse(torn)
        #expect(scan.stopReason == .tornFrame)
        #expect(scan.transactions.count == full.transactions.count - 1)
        #expect(scan.committedEnd == last.startOffset)
        #expect(scan.stopOffset == last.endOffset - (4096 + 24))
        #expect(scan.uncommittedFrames == last.frameCount - 1)
    }

    @Test func stopsAtABadChecksum() throws {
        let directory = try TemporaryDirectory()
        let (wal, _, _) = try makeWAL(directory, transactions: 5)
        let full = try WALScanner.parse(wal).scan
        let victim = full.transactions[3]
        var damaged = wal
        damaged[victim.startOffset + 24 + 100] ^= 0xFF
        let (_, scan) = try WALScanner.parse(damaged)
        #expect(scan.stopReason == .checksumMismatch)
        #expect(scan.stopOffset == victim.startOffset)
        #expect(scan.transactions.count == 3)
        #expect(scan.committedEnd == victim.startOffset)
    }

    @Test func aResetWALEndsAtTheFirstStaleFrame() throws {
        let directory = try TemporaryDirectory()
        let (oldWAL, database, path) = try makeWAL(directory, transactions: 10)
        let old = try WALScanner.parse(oldWAL)
        #expect(try database.column("PRAGMA wal_checkpoint(RESTART)").first != nil)
        try database.execute("INSERT INTO items(note, body) VALUES ('after reset', 'x')")
        let wal = try readFile(path + "-wal")
        #expect(wal.count == oldWAL.count)  // a reset does not truncate
        let (header, scan) = try WALScanner.parse(wal)
        #expect(header.salt1 == old.header.salt1 &+ 1)
        #expect(header.checkpointSequence == old.header.checkpointSequence &+ 1)
        #expect(scan.transactions.count == 1)
        #expect(scan.stopReason == .saltMismatch)
        #expect(scan.stopOffset == scan.committedEnd)
    }

    /// Builds a WAL by hand: (page, commit size, fill byte) per frame.
    func craft(bigEndian: Bool, pageSize: Int = 512, frames: [(UInt32, UInt32, UInt8)]) -> [UInt8] {
        let header = WALHeader(bigEndianChecksums: bigEndian, pageSize: pageSize, checkpointSequence: 7, salt1: 0x1234_5678, salt2: 0x9ABC_DEF0)
        var bytes = header.encoded()
        var chain = header.checksum
        for (page, commit, fill) in frames {
            let frame = WALFrame.encode(pageNumber: page, commitSize: commit, page: [UInt8](repeating: fill, count: pageSize), header: header, chain: chain)
            bytes += frame.bytes
            chain = frame.chain
        }
        return bytes
    }

    @Test(arguments: [false, true])
    func readsBothChecksumByteOrders(bigEndian: Bool) throws {
        let wal = craft(bigEndian: bigEndian, frames: [(1, 0, 1), (2, 2, 2), (2, 0, 3), (3, 3, 4)])
        let (header, scan) = try WALScanner.parse(wal)
        #expect(header.bigEndianChecksums == bigEndian)
        #expect(scan.transactions.count == 2)
        #expect(scan.stopReason == .endOfData)
        // The same bytes with the other magic fail the header checksum.
        var flipped = wal
        flipped[3] ^= 1
        #expect(throws: ReplicationError.self) { try WALHeader(parsing: flipped) }
        // Frames checksummed in the other byte order are rejected.
        var other = craft(bigEndian: !bigEndian, frames: [(1, 1, 1)])
        other.replaceSubrange(0..<32, with: wal[0..<32])
        #expect(try WALScanner.parse(other).scan.stopReason == .checksumMismatch)
    }

    @Test func lastCopyWinsAndPagesAboveTheCommitSizeAreDropped() throws {
        let wal = craft(
            bigEndian: false,
            frames: [
                (1, 0, 1), (2, 0, 2), (2, 0, 22), (5, 0, 5), (3, 4, 3),  // page 2 twice; page 5 above size 4
                (4, 0, 4), (1, 2, 11),  // shrinks to 2 pages: page 4 dropped
            ])
        let (_, scan) = try WALScanner.parse(wal)
        #expect(scan.transactions.count == 2)
        let first = scan.transactions[0]
        #expect(first.pages.map(\.pageNumber) == [1, 2, 3])
        #expect(first.pages[1].data.allSatisfy { $0 == 22 })
        #expect(first.frameCount == 5)
        let second = scan.transactions[1]
        #expect(second.pages.map(\.pageNumber) == [1])
        let merged = WALTransaction.merging(scan.transactions)!
        #expect(merged.commitPages == 2)
        #expect(merged.pages.map(\.pageNumber) == [1, 2])
        #expect(merged.pages[0].data.allSatisfy { $0 == 11 })
    }

    @Test func uncommittedFramesAreNeverReturned() throws {
        let wal = craft(bigEndian: false, frames: [(1, 1, 1), (2, 0, 2), (3, 0, 3)])
        let (_, scan) = try WALScanner.parse(wal)
        #expect(scan.transactions.count == 1)
        #expect(scan.uncommittedFrames == 2)
        #expect(scan.committedEnd == 32 + 536)
    }

    @Test func rejectsBadHeaders() throws {
        let good = craft(bigEndian: false, frames: [])
        #expect(throws: ReplicationError.self) { try WALHeader(parsing: Array(good[0..<20])) }
        var badMagic = good
        badMagic[0] = 0
        #expect(throws: ReplicationError.self) { try WALHeader(parsing: badMagic) }
        var badSum = good
        badSum[31] ^= 1
        #expect(throws: ReplicationError.self) { try WALHeader(parsing: badSum) }
    }
}

@Suite("Checksums")
struct ChecksumTests {
    @Test func xxHash64KnownValues() {
        #expect(XXHash64.hash([UInt8]()) == 0xEF46_DB37_51D8_E999)
        #expect(XXHash64.hash(Array("a".utf8)) == 0xD24E_C4F1_A98C_6E5B)
        #expect(XXHash64.hash(Array("abc".utf8)) == 0x44BC_2CF5_AD77_0999)
    }

    @Test func incrementalChecksumMatchesARecomputation() {
        var rolling = DatabaseChecksum(pageSize: 512)
        var pages: [UInt32: [UInt8]] = [:]
        var generator = SystemRandomNumberGenerator()
        for round in 0..<50 {
            let commit = UInt32.random(in: 1...40, using: &generator)
            var written: [PageImage] = []
            for number in Set((0..<8).map { _ in UInt32.random(in: 1...commit, using: &generator) }).sorted() {
                written.append(PageImage(pageNumber: number, data: [UInt8](repeating: UInt8(truncatingIfNeeded: round &+ Int(number)), count: 512)))
            }
            let predicted = rolling.applying(pages: written, commitPages: commit)
            rolling.apply(pages: written, commitPages: commit)
            #expect(predicted == rolling.value)
            for page in written { pages[page.pageNumber] = page.data }
            pages = pages.filter { $0.key <= commit }
            var fresh = DatabaseChecksum(pageSize: 512)
            for (number, data) in pages { fresh.setPage(number, hash: DatabaseChecksum.pageHash(pageNumber: number, data: data)) }
            fresh.resize(to: Int(commit))
            #expect(fresh.value == rolling.value)
        }
    }
}
