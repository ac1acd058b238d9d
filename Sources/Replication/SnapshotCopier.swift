import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Copies a consistent image of a WAL-mode database to a plain file, streaming its pages
/// through one fixed buffer. Blocking; used only on an ``IOThread``.
///
/// Two steps, so the expensive one need not hold SQLite's write lock:
/// 1. ``plan(database:walPath:defaultPageSize:)`` runs while nothing can commit (the caller
///    holds `BEGIN IMMEDIATE`): it reads the WAL's committed frames (the pages newer than the
///    database file: a bounded amount, since checkpoints keep the WAL short) and the size.
/// 2. ``write(_:database:to:)`` reads every other page from the database file through SQLite's
///    own descriptor, 1 MiB at a time. It needs no lock of its own as long as a read
///    transaction that began after step 1 stays open: a checkpoint never writes a page into
///    the database file that such a reader still reads from there, so the pages outside the
///    WAL overlay are the plan's.
enum SnapshotCopier {
    /// What the image holds besides the database file's own pages.
    struct Plan: Sendable {
        /// The WAL generation the plan read (nil when there was no WAL).
        var header: WALHeader?
        /// Offset after the last committed frame.
        var endOffset: Int
        /// The checksum chain at ``endOffset``.
        var chain: WALChecksum
        /// The newest committed image of every page in the WAL (pages above the commit size
        /// dropped).
        var overlay: [UInt32: [UInt8]]
        /// The database's size in pages.
        var commitPages: UInt32
        /// Pages the database file held when the plan was made.
        var filePages: Int
        /// The page size.
        var pageSize: Int
    }

    /// Bytes read and written at a time.
    static let bufferBytes = 1 << 20

    /// Reads the WAL's committed frames and the database file's size. Call it while nothing can
    /// commit.
    static func plan(database: SQLiteDatabase, walPath: String, defaultPageSize: Int) throws -> Plan {
        var header: WALHeader?
        var transactions: [WALTransaction] = []
        var endOffset = WALHeader.size
        var chain = WALChecksum()
        if let fd = try FileIO.openIfExists(walPath) {
            defer { Glibc.close(fd) }
            let size = try FileIO.size(fd, path: walPath)
            if size >= WALHeader.size {
                let bytes = try FileIO.pread(fd, count: size, offset: 0, path: walPath)
                if let parsed = try? WALScanner.parse(bytes) {
                    header = parsed.header
                    transactions = parsed.scan.transactions
                    endOffset = parsed.scan.committedEnd
                    chain = parsed.scan.chainAtCommittedEnd
                }
            }
        }
        let pragmaPageSize = try database.scalar("PRAGMA page_size")
        let size = header?.pageSize ?? (Int(pragmaPageSize ?? "") ?? defaultPageSize)
        let filePages = Int(try database.mainFileSize() / Int64(size))
        let merged = WALTransaction.merging(transactions)
        var overlay: [UInt32: [UInt8]] = [:]
        for page in merged?.pages ?? [] { overlay[page.pageNumber] = page.data }
        return Plan(
            header: header, endOffset: endOffset, chain: header == nil ? WALChecksum() : chain, overlay: overlay,
            commitPages: merged?.commitPages ?? UInt32(filePages), filePages: filePages, pageSize: size)
    }

    /// Writes the planned image to `path` (fsynced) and returns its page hashes.
    static func write(_ plan: Plan, database: SQLiteDatabase, to path: String) throws -> DatabaseChecksum {
        let size = plan.pageSize
        let lockPage = DatabaseChecksum.lockPage(pageSize: size)
        var table = DatabaseChecksum(pageSize: size)
        table.resize(to: Int(plan.commitPages))
        let out = try FileIO.open(path, O_WRONLY | O_CREAT | O_TRUNC)
        defer { Glibc.close(out) }
        let pagesPerChunk = max(1, bufferBytes / size)
        var buffer = [UInt8](repeating: 0, count: pagesPerChunk * size)
        var first = 1
        let last = Int(plan.commitPages)
        while first <= last {
            let count = min(pagesPerChunk, last - first + 1)
            try buffer.withUnsafeMutableBytes { raw throws in
                let region = UnsafeMutableRawBufferPointer(rebasing: raw[0..<(count * size)])
                let fromFile = max(0, min(count, plan.filePages - first + 1))
                if fromFile > 0 {
                    try database.readMainFile(
                        offset: Int64(first - 1) * Int64(size), into: UnsafeMutableRawBufferPointer(rebasing: region[0..<(fromFile * size)]))
                }
                if fromFile < count {
                    UnsafeMutableRawBufferPointer(rebasing: region[(fromFile * size)...]).initializeMemory(as: UInt8.self, repeating: 0)
                }
                for index in 0..<count {
                    let number = UInt32(first + index)
                    let page = UnsafeMutableRawBufferPointer(rebasing: region[(index * size)..<((index + 1) * size)])
                    if number == lockPage {
                        page.initializeMemory(as: UInt8.self, repeating: 0)
                        continue
                    }
                    if let image = plan.overlay[number] {
                        image.withUnsafeBytes { page.copyMemory(from: $0) }
                    }
                    table.setPage(number, hash: DatabaseChecksum.pageHash(pageNumber: number, bytes: UnsafeRawBufferPointer(page)))
                }
                try FileIO.pwrite(out, UnsafeRawBufferPointer(region), offset: (first - 1) * size, path: path)
            }
            first += count
        }
        try FileIO.truncate(out, size: last * size, path: path)
        try FileIO.fsync(out, path: path)
        return table
    }
}
