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
        /// Where the newest committed image of every page in the WAL is: the file offset of
        /// its frame (pages above the commit size dropped). Offsets, not page images: 16 bytes
        /// per distinct page in the WAL, whatever the WAL's size; ``write(_:database:to:)``
        /// reads the images from the WAL file.
        var overlay: [UInt32: Int]
        /// The WAL file the overlay points into.
        var walPath: String
        /// The database's size in pages.
        var commitPages: UInt32
        /// Pages the database file held when the plan was made.
        var filePages: Int
        /// The page size.
        var pageSize: Int
    }

    /// Bytes read and written at a time.
    static let bufferBytes = 1 << 20

    /// WAL bytes scanned at a time by ``plan(database:walPath:defaultPageSize:)`` (more only
    /// for a single transaction larger than this).
    static let scanWindowBytes = 4 << 20

    /// Reads the WAL's committed frames and the database file's size. Call it while nothing can
    /// commit. The WAL is scanned in windows of ``scanWindowBytes``, so memory does not grow
    /// with the WAL (only with its largest transaction).
    static func plan(database: SQLiteDatabase, walPath: String, defaultPageSize: Int) throws -> Plan {
        var header: WALHeader?
        var endOffset = WALHeader.size
        var chain = WALChecksum()
        var overlay: [UInt32: Int] = [:]
        var walCommitPages: UInt32?
        if let fd = try FileIO.openIfExists(walPath) {
            defer { Glibc.close(fd) }
            let size = try FileIO.size(fd, path: walPath)
            if size >= WALHeader.size, let parsed = try? WALHeader(parsing: try FileIO.pread(fd, count: WALHeader.size, offset: 0, path: walPath)) {
                header = parsed
                chain = parsed.checksum
                let frameSize = parsed.frameSize
                var window = max(1, scanWindowBytes / frameSize) * frameSize
                while endOffset + frameSize <= size {
                    let bytes = try FileIO.pread(fd, count: min(window, size - endOffset), offset: endOffset, path: walPath)
                    let scan = bytes.withUnsafeBytes { WALScanner.scan($0, fileOffset: endOffset, header: parsed, chain: chain) }
                    guard let last = scan.transactions.last else {
                        // A transaction larger than the window: read more at once.
                        if scan.stopReason == .tornFrame || scan.stopReason == .endOfData, endOffset + bytes.count < size, bytes.count == window {
                            window *= 2
                            continue
                        }
                        break
                    }
                    bytes.withUnsafeBytes { raw in
                        var position = 0
                        while endOffset + position < scan.committedEnd {
                            overlay[raw.readBigEndianUInt32(at: position)] = endOffset + position + WALFrame.headerSize
                            position += frameSize
                        }
                    }
                    walCommitPages = last.commitPages
                    endOffset = scan.committedEnd
                    chain = scan.chainAtCommittedEnd
                    if scan.stopReason != .endOfData { break }
                }
            }
        }
        let pragmaPageSize = try database.scalar("PRAGMA page_size")
        let size = header?.pageSize ?? (Int(pragmaPageSize ?? "") ?? defaultPageSize)
        let filePages = Int(try database.mainFileSize() / Int64(size))
        let commitPages = walCommitPages ?? UInt32(filePages)
        overlay = overlay.filter { $0.key <= commitPages }
        return Plan(
            header: header, endOffset: endOffset, chain: header == nil ? WALChecksum() : chain, overlay: overlay, walPath: walPath,
            commitPages: commitPages, filePages: filePages, pageSize: size)
    }

    /// Writes the planned image to `path` (fsynced) and returns its page hashes.
    static func write(_ plan: Plan, database: SQLiteDatabase, to path: String) throws -> DatabaseChecksum {
        let size = plan.pageSize
        let lockPage = DatabaseChecksum.lockPage(pageSize: size)
        var table = DatabaseChecksum(pageSize: size)
        table.resize(to: Int(plan.commitPages))
        let out = try FileIO.open(path, O_WRONLY | O_CREAT | O_TRUNC)
        defer { Glibc.close(out) }
        let wal = plan.overlay.isEmpty ? nil : try FileIO.openIfExists(plan.walPath)
        defer { if let wal { Glibc.close(wal) } }
        if !plan.overlay.isEmpty, wal == nil {
            throw ReplicationError(.io, "the WAL \(plan.walPath) disappeared while a snapshot was copied")
        }
        var frame = [UInt8](repeating: 0, count: WALFrame.headerSize + size)
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
                    if let offset = plan.overlay[number], let wal, let header = plan.header {
                        // The frame is the plan's unless the WAL was reset since (only possible
                        // when a checkpoint had copied every frame into the database file, so
                        // the page read from the file above is the planned image).
                        let read = try frame.withUnsafeMutableBytes { buffer throws -> Int in
                            var done = 0
                            while done < buffer.count {
                                let n = Glibc.pread(wal, buffer.baseAddress! + done, buffer.count - done, off_t(offset - WALFrame.headerSize + done))
                                if n < 0, errno == EINTR { continue }
                                guard n >= 0 else { throw FileIO.failure("cannot read", plan.walPath) }
                                if n == 0 { break }
                                done += n
                            }
                            return done
                        }
                        if read == frame.count, frame.withUnsafeBytes({ $0.readBigEndianUInt32(at: 0) }) == number,
                            frame.withUnsafeBytes({ $0.readBigEndianUInt32(at: 8) == header.salt1 && $0.readBigEndianUInt32(at: 12) == header.salt2 })
                        {
                            frame.withUnsafeBytes { page.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[WALFrame.headerSize...])) }
                        }
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
