import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The blocking half of the shipper: SQLite connections, the `-wal` file, the page hashes of
/// the replica state. Used only on the shipper's ``IOThread``.
///
/// ## How the WAL is kept from being reset behind the shipper
/// `pin` holds a read transaction at all times except inside the shipper's own checkpoint. A
/// reader that uses WAL frames keeps SQLite from resetting the WAL (a reset needs every reader
/// off the WAL), so the frames after the shipped position stay in the file until they are read.
/// The app's own autocheckpoint may copy frames into the database file; that loses nothing.
///
/// ## Checkpoints
/// `barrier` runs `BEGIN IMMEDIATE`: it holds SQLite's WAL write lock, so the app cannot commit.
/// Under it the shipper ships the WAL to its end, ends `pin`'s transaction, runs a PASSIVE
/// checkpoint (which therefore copies only shipped frames), begins `pin`'s transaction again and
/// releases the barrier. When the checkpoint copied everything, the app's next write resets the
/// WAL (salt-1 and the checkpoint sequence go up by one).
///
/// ## Snapshots
/// The barrier is held only to ship what is committed, run a PASSIVE checkpoint and plan the
/// copy (``SnapshotCopier/plan(database:walPath:defaultPageSize:)``: the WAL's committed pages and
/// the database's size), then `pin` begins a read transaction at exactly that state and the
/// barrier is released. The pages are copied 1 MiB at a time while the app commits: `pin` keeps
/// the pages it does not find in the WAL unchanged in the database file, and keeps the WAL from
/// being reset more than once (see ``Cursor/pinnedSinceOffset``).
///
/// ## Accepting a new WAL generation
/// A new header is accepted without a snapshot only when exactly one reset happened (checkpoint
/// sequence and salt-1 are the old ones plus one) and the file shows that the old generation
/// ended where the shipper stopped: the frame at the shipped offset is absent, or carries salts
/// of an older generation. A frame there with the old salts (the old generation went on) or the
/// new salts (the evidence is overwritten) means frames may have been missed: the shipper takes
/// a snapshot instead of shipping a gap. So do several resets, a page size change, or a WAL that
/// shrank below the shipped offset.
///
/// ## File access
/// The `-wal` file is read with this process's own descriptor, opened and closed per read.
/// That is safe: SQLite keeps no POSIX locks on the `-wal` file (WAL locks live on `-shm`), and
/// closing a descriptor only drops locks on the file it refers to. The database file itself is
/// read only through SQLite's descriptor (`SQLITE_FCNTL_FILE_POINTER`), never opened here.
final class ShipperEngine: @unchecked Sendable {
    struct Cursor {
        /// The generation being read; nil while the WAL is empty.
        var header: WALHeader?
        /// The last generation seen, to check that a new one follows it directly.
        var lastHeader: WALHeader?
        /// Offset after the last shipped commit frame.
        var offset: Int = WALHeader.size
        /// Checksum chain at `offset`.
        var chain = WALChecksum()
        /// `pin` has held its read transaction since the generation ended at `offset` (set by a
        /// snapshot, whose copy runs outside the barrier). While it is held, a checkpoint cannot
        /// both backfill frames after `offset` and reset the WAL (a reader on the WAL blocks the
        /// reset; a reader of the database file alone blocks the backfill), so a single reset
        /// proves the old generation ended at `offset`, even when the new one has already
        /// overwritten that offset.
        var pinnedSinceOffset = false
    }

    /// A record's worth of committed transactions, ready to publish.
    struct Batch: Sendable {
        var pages: [PageImage]
        var commitPages: UInt32
        var checksumBefore: UInt64
        var checksumAfter: UInt64
        var endOffset: Int
        var chainAfter: WALChecksum
        var transactions: Int
        var pageSize: Int
        var readAt: Date
    }

    enum PollOutcome: Sendable {
        case batch(Batch)
        case nothing
        case needsSnapshot(reason: String)
    }

    /// A consistent copy of the database written to a file.
    struct SnapshotImage: Sendable {
        var path: String
        var pageSize: Int
        var commitPages: UInt32
        var checksum: UInt64
        var takenAt: Date
    }

    let databasePath: String
    let walPath: String
    let configuration: ReplicationConfiguration
    let logger: Logger
    private let pin: SQLiteDatabase
    private let barrier: SQLiteDatabase
    private(set) var cursor = Cursor()
    private(set) var checksum: DatabaseChecksum
    private(set) var pageSize: Int
    private(set) var barrierHeld = false
    private(set) var checkpoints = 0

    /// Whether the engine started from the promoted replica's page hashes (no snapshot needed).
    private(set) var resumed = false

    /// Opens both connections, checks WAL mode, sets `SQLITE_FCNTL_PERSIST_WAL`, and pins.
    ///
    /// `resume` is the page hashes of the database as promotion verified it: when the database
    /// still is exactly that (same page size and size, no WAL frames yet), shipping continues
    /// from it without a snapshot (``resumed``).
    init(configuration: ReplicationConfiguration, logger: Logger, resume: DatabaseChecksum? = nil) throws {
        self.configuration = configuration
        self.logger = logger
        databasePath = configuration.databasePath
        walPath = databasePath + "-wal"
        guard FileIO.exists(databasePath) else {
            throw ReplicationError(.sqlite, "the database \(databasePath) does not exist")
        }
        pin = try SQLiteDatabase(path: databasePath)
        barrier = try SQLiteDatabase(path: databasePath)
        pin.setBusyTimeout(milliseconds: 5000)
        barrier.setBusyTimeout(milliseconds: Int32(configuration.barrierTimeout.components.seconds * 1000 + configuration.barrierTimeout.components.attoseconds / 1_000_000_000_000_000))
        let mode = try pin.scalar("PRAGMA journal_mode")?.lowercased()
        guard mode == "wal" else {
            throw ReplicationError(
                .notWALMode, "\(databasePath) is in journal mode \(mode ?? "?"); replication needs WAL mode (PRAGMA journal_mode=WAL in the app)")
        }
        try pin.persistWAL()
        try barrier.persistWAL()
        pageSize = Int(try pin.scalar("PRAGMA page_size") ?? "4096") ?? 4096
        checksum = DatabaseChecksum(pageSize: pageSize)
        try pin.beginReadTransaction()
        if let resume {
            let walSize = try FileIO.openIfExists(walPath).map { fd in
                defer { Glibc.close(fd) }
                return try FileIO.size(fd, path: walPath)
            } ?? 0
            let fileSize = try pin.mainFileSize()
            if resume.pageSize == pageSize, walSize < WALHeader.size, fileSize == Int64(resume.pageCount) * Int64(pageSize) {
                checksum = resume
                resumed = true
            } else {
                logger.warning(
                    "the database is not the promoted replica any more; shipping starts with a snapshot",
                    metadata: ["wal-bytes": "\(walSize)", "file-bytes": "\(fileSize)", "replica-pages": "\(resume.pageCount)"])
            }
        }
    }

    func close() {
        barrier.endTransaction()
        pin.endTransaction()
        barrierHeld = false
    }

    // MARK: - Barrier

    /// Takes the write lock (`BEGIN IMMEDIATE`); false when the app's writer kept it past the
    /// barrier timeout.
    func beginBarrier() throws -> Bool {
        precondition(!barrierHeld)
        guard try barrier.executeUnlessBusy("BEGIN IMMEDIATE") else { return false }
        barrierHeld = true
        return true
    }

    func releaseBarrier() {
        barrier.endTransaction()
        barrierHeld = false
    }

    /// Under the barrier, after everything was shipped: PASSIVE checkpoint, re-pin, release.
    func checkpointAndReleaseBarrier() throws -> (walFrames: Int32, checkpointedFrames: Int32) {
        precondition(barrierHeld)
        defer { releaseBarrier() }
        let mode = try barrier.scalar("PRAGMA journal_mode")?.lowercased()
        guard mode == "wal" else { throw ReplicationError(.notWALMode, "\(databasePath) left WAL mode (journal mode \(mode ?? "?"))") }
        pin.endTransaction()
        cursor.pinnedSinceOffset = false
        let result: (walFrames: Int32, checkpointedFrames: Int32)
        do {
            result = try pin.checkpointPassive()
        } catch {
            try pin.beginReadTransaction()
            throw error
        }
        try pin.beginReadTransaction()
        checkpoints += 1
        return result
    }

    /// The replica state the shipper has published: checksum, pages, page size.
    var publishedState: (checksum: UInt64, pages: UInt32, pageSize: Int) {
        (checksum.value, UInt32(checksum.pageCount), pageSize)
    }

    /// Frames of the current generation already shipped.
    var shippedFramesInGeneration: Int {
        guard let header = cursor.header else { return 0 }
        return (cursor.offset - WALHeader.size) / header.frameSize
    }

    // MARK: - Reading the WAL

    private func repin() throws {
        pin.endTransaction()
        try pin.beginReadTransaction()
    }

    /// Looks for committed transactions after the shipped position.
    func poll() throws -> PollOutcome {
        guard let fd = try FileIO.openIfExists(walPath) else {
            if cursor.header == nil { return .nothing }
            return .needsSnapshot(reason: "the WAL file disappeared")
        }
        defer { Glibc.close(fd) }
        let size = try FileIO.size(fd, path: walPath)
        if size < WALHeader.size {
            if cursor.header == nil { return .nothing }
            return .needsSnapshot(reason: "the WAL was truncated (a TRUNCATE checkpoint this shipper did not run)")
        }
        let headerBytes = try FileIO.pread(fd, count: WALHeader.size, offset: 0, path: walPath)
        guard let header = try? WALHeader(parsing: headerBytes) else {
            // A header being rewritten by a reset; look again at the next poll.
            return .nothing
        }
        if let current = cursor.header {
            if current.salts != header.salts || current.checkpointSequence != header.checkpointSequence {
                let singleReset =
                    header.pageSize == pageSize && header.checkpointSequence == current.checkpointSequence &+ 1 && header.salt1 == current.salt1 &+ 1
                if !(cursor.pinnedSinceOffset && singleReset), let reason = try reasonToRefuse(newHeader: header, old: current, fd: fd, size: size) {
                    return .needsSnapshot(reason: reason)
                }
                logger.debug("WAL reset accepted", metadata: ["checkpoint-sequence": "\(header.checkpointSequence)"])
                adopt(header)
                try repin()
            }
        } else {
            guard header.pageSize == pageSize else { return .needsSnapshot(reason: "the page size changed to \(header.pageSize)") }
            if let last = cursor.lastHeader, last.salts != header.salts,
                header.checkpointSequence != last.checkpointSequence &+ 1 || header.salt1 != last.salt1 &+ 1
            {
                return .needsSnapshot(reason: "the WAL was reset more than once while it was empty")
            }
            adopt(header)
            try repin()
        }
        guard size > cursor.offset else {
            if size < cursor.offset { return .needsSnapshot(reason: "the WAL shrank below the shipped offset \(cursor.offset)") }
            return .nothing
        }
        guard let current = cursor.header else { return .nothing }
        // Read enough frames for one record; grow when a single transaction is larger.
        var want = min(size - cursor.offset, current.frameSize * configuration.maxFramesPerRecord)
        while true {
            let bytes = try FileIO.pread(fd, count: want, offset: cursor.offset, path: walPath)
            let scan = bytes.withUnsafeBytes { WALScanner.scan($0, fileOffset: cursor.offset, header: current, chain: cursor.chain) }
            guard let first = scan.transactions.first else {
                if scan.stopReason == .tornFrame || scan.stopReason == .endOfData, cursor.offset + bytes.count < size, bytes.count == want {
                    want = min(size - cursor.offset, want * 2)
                    continue
                }
                return .nothing
            }
            return .batch(makeBatch(first, then: scan.transactions.dropFirst()))
        }
    }

    private func adopt(_ header: WALHeader) {
        cursor.pinnedSinceOffset = false
        cursor.header = header
        cursor.lastHeader = header
        cursor.offset = WALHeader.size
        cursor.chain = header.checksum
    }

    private func reasonToRefuse(newHeader: WALHeader, old: WALHeader, fd: Int32, size: Int) throws -> String? {
        guard newHeader.pageSize == pageSize else { return "the page size changed to \(newHeader.pageSize)" }
        guard newHeader.checkpointSequence == old.checkpointSequence &+ 1, newHeader.salt1 == old.salt1 &+ 1 else {
            return "the WAL was reset more than once since the shipper last read it"
        }
        let evidenceOffset = cursor.offset
        guard size >= evidenceOffset + WALFrame.headerSize else { return nil }
        let frameHeader = try FileIO.pread(fd, count: WALFrame.headerSize, offset: evidenceOffset, path: walPath)
        let salts = frameHeader.withUnsafeBytes { UInt64($0.readBigEndianUInt32(at: 8)) << 32 | UInt64($0.readBigEndianUInt32(at: 12)) }
        if salts == old.salts {
            return "the previous WAL generation continued past the shipped offset \(evidenceOffset) before it was reset"
        }
        if salts == newHeader.salts {
            return "the new WAL generation overwrote offset \(evidenceOffset) before the shipper could check the old one ended there"
        }
        return nil
    }

    /// One record's worth: `first` (whatever its size) and as many of `following` as fit in
    /// `maxFramesPerRecord` frames.
    private func makeBatch(_ first: WALTransaction, then following: ArraySlice<WALTransaction>) -> Batch {
        var included: [WALTransaction] = []
        var frames = first.frameCount
        for transaction in following {
            if frames + transaction.frameCount > configuration.maxFramesPerRecord { break }
            included.append(transaction)
            frames += transaction.frameCount
        }
        let merged = WALTransaction.merging(first, then: included[...])
        return Batch(
            pages: merged.pages, commitPages: merged.commitPages, checksumBefore: checksum.value,
            checksumAfter: checksum.applying(pages: merged.pages, commitPages: merged.commitPages), endOffset: merged.endOffset,
            chainAfter: merged.chainAfter, transactions: 1 + included.count, pageSize: pageSize, readAt: Date())
    }

    /// Records that `batch` was published.
    func commit(_ batch: Batch) {
        checksum.apply(pages: batch.pages, commitPages: batch.commitPages)
        cursor.offset = batch.endOffset
        cursor.chain = batch.chainAfter
    }

    // MARK: - Snapshots

    /// Under the barrier, after everything committed was shipped (or continuity was lost):
    /// runs a PASSIVE checkpoint (so the WAL overlay stays short), plans the snapshot, re-pins
    /// at exactly the planned state and, with `release`, releases the barrier. The copy itself
    /// (``writeSnapshot(_:to:)``) then runs while the app writes: `pin`'s read transaction keeps
    /// the pages it reads from the database file as planned, and the WAL frames after the plan
    /// stay in the file until they are shipped.
    ///
    /// Shipping restarts from the planned end of the WAL once the snapshot is written.
    func prepareSnapshot(release: Bool) throws -> SnapshotCopier.Plan {
        precondition(barrierHeld)
        defer { if release { releaseBarrier() } }
        pin.endTransaction()
        let plan: SnapshotCopier.Plan
        do {
            _ = try? pin.checkpointPassive()
            plan = try SnapshotCopier.plan(database: barrier, walPath: walPath, defaultPageSize: pageSize)
        } catch {
            try pin.beginReadTransaction()
            throw error
        }
        try pin.beginReadTransaction()
        return plan
    }

    /// Writes a planned snapshot to `path` through a fixed buffer, without the barrier (see
    /// ``prepareSnapshot(release:)``). The page hashes and the shipping position become the
    /// snapshot's.
    func writeSnapshot(_ plan: SnapshotCopier.Plan, to path: String) throws -> SnapshotImage {
        let table = try SnapshotCopier.write(plan, database: barrier, to: path)
        pageSize = plan.pageSize
        checksum = table
        cursor = Cursor(
            header: plan.header, lastHeader: plan.header ?? cursor.lastHeader, offset: plan.endOffset, chain: plan.chain, pinnedSinceOffset: plan.header != nil)
        return SnapshotImage(path: path, pageSize: plan.pageSize, commitPages: plan.commitPages, checksum: table.value, takenAt: Date())
    }

    /// Writes the database as of now to `path`: the barrier only for the plan (taken here if
    /// not held; kept when the caller holds it), the copy outside it.
    func takeSnapshot(to path: String) throws -> SnapshotImage {
        var tookBarrier = false
        if !barrierHeld {
            var attempts = 0
            while try !beginBarrier() {
                attempts += 1
                if attempts >= 10 { throw ReplicationError(.timeout, "the app's writer kept the write lock; cannot take a snapshot") }
            }
            tookBarrier = true
        }
        let plan = try prepareSnapshot(release: tookBarrier)
        return try writeSnapshot(plan, to: path)
    }
}
