import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The replica file and its persisted position on a passive node. Blocking; used only on the
/// applier's ``IOThread``.
///
/// Applying a record: pwrite every page image (never the lock-byte page), truncate to the commit
/// size, fsync, then persist the position (temporary file + rename + directory fsync). A crash
/// between the two leaves the file ahead of the position; page images are idempotent, so
/// applying the same record again yields the same file, and ``load()`` notices the difference
/// (the file's checksum is not the position's) and only accepts the next record if its
/// after-checksum matches the file once applied.
final class ReplicaStore: @unchecked Sendable {
    let replicaPath: String
    let positionPath: String
    private(set) var position: ReplicaPosition?
    private(set) var checksum: DatabaseChecksum?
    /// The file was changed after the position was persisted (a crash mid-apply).
    private(set) var fileAheadOfPosition = false
    /// The page hashes were computed by reading the whole file (load, snapshot install, local
    /// adoption) and no page was written since: ``verifiedChecksum()`` need not read it again.
    private(set) var checksumReadFromFile = false
    /// Whether the last ``load(handover:)`` took a handover instead of reading the file.
    private(set) var tookHandover = false
    private var fd: Int32 = -1

    init(replicaPath: String, positionPath: String) {
        self.replicaPath = replicaPath
        self.positionPath = positionPath
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Reads the position and the replica's page hashes. A position without a replica file (or
    /// one that cannot be read) is dropped: the applier then restores a snapshot.
    ///
    /// With a `handover` from the applier that stopped just now, whose position is the one on
    /// disk and whose page count the file has, its page hashes are taken instead of reading the
    /// file: the applier wrote every page since it last read the file and verified each record's
    /// checksums.
    func load(handover: ReplicaHandover? = nil) throws {
        try FileIO.makeDirectory((replicaPath as NSString).deletingLastPathComponent)
        position = nil
        checksum = nil
        fileAheadOfPosition = false
        tookHandover = false
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        guard FileIO.exists(positionPath), FileIO.exists(replicaPath) else { return }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: positionPath))
        } catch {
            throw ReplicationError(.io, "cannot read \(positionPath): \(error)")
        }
        guard let stored = try? JSONDecoder().decode(ReplicaPosition.self, from: data) else { return }
        fd = try FileIO.open(replicaPath, O_RDWR)
        if let handover, handover.position == stored, handover.checksum.value == stored.checksum,
            handover.checksum.pageSize == stored.pageSize, handover.checksum.pageCount == Int(stored.commitPages),
            try FileIO.size(fd, path: replicaPath) == Int(stored.commitPages) * stored.pageSize
        {
            position = stored
            checksum = handover.checksum
            checksumReadFromFile = false
            tookHandover = true
            return
        }
        let computed = try FileIO.checksumOfFile(fd, path: replicaPath, pageSize: stored.pageSize, pageCount: Int(stored.commitPages))
        position = stored
        checksum = computed
        let fileSize = try FileIO.size(fd, path: replicaPath)
        fileAheadOfPosition = computed.value != stored.checksum || fileSize != Int(stored.commitPages) * stored.pageSize
        checksumReadFromFile = !fileAheadOfPosition
    }

    /// Applies a transaction record that follows the position, verifying both checksums.
    func apply(_ record: ReplicationRecord, sequence: UInt64) throws {
        guard let position, var checksum else { throw ReplicationError(.gap, "no replica to apply record \(record.txid) to") }
        // The page-hash table (8 bytes per page: 8 MiB at 4 GiB) is updated in place, not
        // copied per record: drop the stored reference while the local copy is mutated.
        self.checksum = nil
        defer { if self.checksum == nil, self.position != nil { self.checksum = checksum } }
        guard record.pageSize == position.pageSize else {
            throw ReplicationError(.gap, "record \(record.txid) has page size \(record.pageSize), the replica \(position.pageSize)")
        }
        if !fileAheadOfPosition {
            guard record.checksumBefore == checksum.value else {
                throw ReplicationError(
                    .checksumMismatch,
                    "record \(record.txid) expects checksum \(hex(record.checksumBefore)) before, the replica has \(hex(checksum.value))")
            }
        }
        let pageSize = record.pageSize
        let lockPage = DatabaseChecksum.lockPage(pageSize: pageSize)
        checksumReadFromFile = false
        for page in record.pages where page.pageNumber != lockPage && page.pageNumber <= record.commitPages {
            try page.data.withUnsafeBytes { buffer throws in
                try FileIO.pwrite(fd, buffer, offset: Int(page.pageNumber - 1) * pageSize, path: replicaPath)
            }
        }
        try FileIO.truncate(fd, size: Int(record.commitPages) * pageSize, path: replicaPath)
        try FileIO.fsync(fd, path: replicaPath)
        if fileAheadOfPosition {
            checksum = try FileIO.checksumOfFile(fd, path: replicaPath, pageSize: pageSize, pageCount: Int(record.commitPages))
        } else {
            checksum.apply(pages: record.pages, commitPages: record.commitPages)
        }
        self.checksum = checksum
        guard checksum.value == record.checksumAfter else {
            // The file is now in an unknown state: make the applier restore a snapshot.
            self.position = nil
            try? FileIO.removeIfExists(positionPath)
            throw ReplicationError(
                .checksumMismatch, "after record \(record.txid) the replica has checksum \(hex(checksum.value)), the record says \(hex(record.checksumAfter))")
        }
        fileAheadOfPosition = false
        try persist(
            ReplicaPosition(
                txid: record.txid, streamSequence: sequence, checksum: checksum.value, token: max(record.token, position.token), pageSize: pageSize,
                commitPages: record.commitPages, transactionTime: record.timestamp, appliedAt: Date()))
    }

    /// Records a message that changed nothing in the file (a snapshot record whose content the
    /// replica already has, a final marker, a rejected record).
    func advance(to newPosition: ReplicaPosition) throws {
        try persist(newPosition)
    }

    /// Replaces the replica with a downloaded snapshot file, after checking it.
    func install(snapshotFile: String, record: ReplicationRecord, sequence: UInt64) throws {
        let candidate = try FileIO.open(snapshotFile, O_RDWR)
        var keep = false
        defer { if !keep { close(candidate) } }
        let pageCount = Int(record.commitPages)
        guard try FileIO.size(candidate, path: snapshotFile) == pageCount * record.pageSize else {
            throw ReplicationError(.checksumMismatch, "snapshot \(record.snapshotName ?? "?") is not \(pageCount) pages of \(record.pageSize) bytes")
        }
        let computed = try FileIO.checksumOfFile(candidate, path: snapshotFile, pageSize: record.pageSize, pageCount: pageCount)
        guard computed.value == record.checksumAfter else {
            throw ReplicationError(
                .checksumMismatch, "snapshot \(record.snapshotName ?? "?") has checksum \(hex(computed.value)), its record says \(hex(record.checksumAfter))")
        }
        try FileIO.fsync(candidate, path: snapshotFile)
        try FileIO.rename(snapshotFile, replicaPath)
        try FileIO.fsyncDirectory(of: replicaPath)
        if fd >= 0 { close(fd) }
        fd = candidate
        keep = true
        checksum = computed
        fileAheadOfPosition = false
        checksumReadFromFile = true
        try persist(
            ReplicaPosition(
                txid: record.txid, streamSequence: sequence, checksum: computed.value, token: max(record.token, position?.token ?? 0),
                pageSize: record.pageSize, commitPages: record.commitPages, transactionTime: record.timestamp, appliedAt: Date()))
    }

    /// Makes the replica from the app's own database on this node, which an old active node
    /// holds at its final marker: copies a consistent image of `databasePath` (its WAL
    /// included) through a fixed buffer and installs it with the marker's position, but only
    /// when its checksum, page size and size are the marker's. Returns false when they are not
    /// (the database diverged: the caller restores a snapshot) or when another process holds
    /// the database's write lock.
    func adopt(databasePath: String, handoff: HandoffReport, nodeToken: UInt64) throws -> Bool {
        guard FileIO.exists(databasePath) else { return false }
        try FileIO.makeDirectory((replicaPath as NSString).deletingLastPathComponent)
        let temporary = replicaPath + ".adopt.\(UUID().uuidString)"
        defer { try? FileIO.removeIfExists(temporary) }
        let table: DatabaseChecksum
        do {
            let database = try SQLiteDatabase(path: databasePath)
            database.setBusyTimeout(milliseconds: 1000)
            // Nothing commits while the image is planned and copied (the backend is stopped;
            // this keeps anything else out too). Readers are not blocked.
            guard try database.executeUnlessBusy("BEGIN IMMEDIATE") else { return false }
            defer { database.endTransaction() }
            let plan = try SnapshotCopier.plan(database: database, walPath: databasePath + "-wal", defaultPageSize: handoff.pageSize)
            guard plan.pageSize == handoff.pageSize, plan.commitPages == handoff.commitPages else { return false }
            table = try SnapshotCopier.write(plan, database: database, to: temporary)
        }
        guard table.value == handoff.checksum else { return false }
        let candidate = try FileIO.open(temporary, O_RDWR)
        do {
            try FileIO.rename(temporary, replicaPath)
            try FileIO.fsyncDirectory(of: replicaPath)
        } catch {
            close(candidate)
            throw error
        }
        if fd >= 0 { close(fd) }
        fd = candidate
        checksum = table
        fileAheadOfPosition = false
        checksumReadFromFile = true
        try persist(
            ReplicaPosition(
                txid: handoff.txid, streamSequence: handoff.markerSequence, checksum: table.value, token: max(handoff.token, nodeToken),
                pageSize: handoff.pageSize, commitPages: handoff.commitPages, transactionTime: Date(), appliedAt: Date(),
                finalMarkerToken: handoff.token))
        return true
    }

    /// The replica's page hashes proven equal to the position: read from the file again, unless
    /// they were read from it whole (``load()``, a snapshot install, a local adoption) and no
    /// page was written since, which saves promotion a second pass over the database (the
    /// switchover case: the drain applies only the final marker). Position-only advances (a
    /// final marker, a snapshot record the replica already holds) write no page.
    ///
    /// `readingFile` false: the page hashes verified while applying are enough (no read) when
    /// they are the position's.
    func verifiedChecksum(readingFile: Bool = true) throws -> DatabaseChecksum {
        guard let position else { throw ReplicationError(.noSnapshot, "there is no replica") }
        if checksumReadFromFile || !readingFile, !fileAheadOfPosition, let checksum, checksum.value == position.checksum,
            checksum.pageCount == Int(position.commitPages), checksum.pageSize == position.pageSize
        {
            return checksum
        }
        return try verifyFile()
    }

    /// Re-reads the replica file and compares it with the position; returns its page hashes.
    func verifyFile() throws -> DatabaseChecksum {
        guard let position else { throw ReplicationError(.noSnapshot, "there is no replica") }
        let computed = try FileIO.checksumOfFile(fd, path: replicaPath, pageSize: position.pageSize, pageCount: Int(position.commitPages))
        guard computed.value == position.checksum else {
            throw ReplicationError(.checksumMismatch, "the replica file has checksum \(hex(computed.value)), its position says \(hex(position.checksum))")
        }
        return computed
    }

    /// Closes the replica and forgets the position file (after promotion moved the replica).
    func forget() throws {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        position = nil
        checksum = nil
        try FileIO.removeIfExists(positionPath)
        try FileIO.fsyncDirectory(of: positionPath)
    }

    /// The position and page hashes for a promotion right after this store's applier stopped,
    /// when they agree (nil after a crash mid-apply left the file ahead of the position).
    func handover() -> ReplicaHandover? {
        guard let position, let checksum, !fileAheadOfPosition, checksum.value == position.checksum,
            checksum.pageCount == Int(position.commitPages), checksum.pageSize == position.pageSize
        else { return nil }
        return ReplicaHandover(position: position, checksum: checksum)
    }

    func closeFile() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
    }

    private func persist(_ newPosition: ReplicaPosition) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data: Data
        do {
            data = try encoder.encode(newPosition)
        } catch {
            throw ReplicationError(.io, "cannot encode the position: \(error)")
        }
        try FileIO.writeAtomically(Array(data), to: positionPath)
        position = newPosition
    }
}

/// What a stopped applier knew of its replica: the position and the page hashes it verified
/// record by record. A promotion right after takes them instead of reading the file again.
public struct ReplicaHandover: Sendable {
    let position: ReplicaPosition
    let checksum: DatabaseChecksum
}
