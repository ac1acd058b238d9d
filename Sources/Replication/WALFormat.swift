// The SQLite write-ahead log format (https://www.sqlite.org/fileformat2.html#walformat and the
// header comment of SQLite's src/wal.c). Everything here is pure: it works on bytes.
//
// Header (32 bytes, big-endian): magic, format version (3007000), page size, checkpoint
// sequence, salt-1, salt-2, checksum-1, checksum-2 (over bytes 0..<24).
// Frame header (24 bytes, big-endian): page number, database size in pages after commit
// (non-zero only on a transaction's last frame), salt-1, salt-2, checksum-1, checksum-2. The
// checksum covers the frame header's first 8 bytes and the page data and is chained from the
// previous frame (the first frame starts from the header's checksum).

/// The running value of SQLite's WAL checksum (two 32-bit sums).
public struct WALChecksum: Sendable, Hashable {
    /// The first sum.
    public var s0: UInt32
    /// The second sum.
    public var s1: UInt32

    /// Creates a checksum value.
    public init(_ s0: UInt32 = 0, _ s1: UInt32 = 0) {
        self.s0 = s0
        self.s1 = s1
    }

    /// Folds `bytes` (a multiple of 8 long) into the sums, reading 32-bit words in big-endian
    /// order when `bigEndianWords` is set and little-endian otherwise (the WAL magic says which).
    public mutating func update(_ bytes: UnsafeRawBufferPointer, bigEndianWords: Bool) {
        precondition(bytes.count % 8 == 0, "WAL checksums run over 8-byte multiples")
        var a = s0
        var b = s1
        var offset = 0
        let count = bytes.count
        if bigEndianWords {
            while offset < count {
                a = a &+ UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) &+ b
                b = b &+ UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)) &+ a
                offset += 8
            }
        } else {
            while offset < count {
                a = a &+ UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) &+ b
                b = b &+ UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)) &+ a
                offset += 8
            }
        }
        s0 = a
        s1 = b
    }
}

/// The 32-byte header of a WAL file.
public struct WALHeader: Sendable, Hashable {
    /// Header length in bytes.
    public static let size = 32
    /// Magic for checksums computed over little-endian 32-bit words.
    public static let magicLittleEndian: UInt32 = 0x377F_0682
    /// Magic for checksums computed over big-endian 32-bit words.
    public static let magicBigEndian: UInt32 = 0x377F_0683
    /// The only format version SQLite writes.
    public static let formatVersion: UInt32 = 3_007_000

    /// ``magicLittleEndian`` or ``magicBigEndian``.
    public var magic: UInt32
    /// Always ``formatVersion``.
    public var version: UInt32
    /// The database page size in bytes (512...65536, a power of two).
    public var pageSize: Int
    /// Incremented each time the WAL is reset.
    public var checkpointSequence: UInt32
    /// Incremented each time the WAL is reset; frames carry it.
    public var salt1: UInt32
    /// Random, new at each reset; frames carry it.
    public var salt2: UInt32
    /// The checksum of the header's first 24 bytes, where the frame chain starts.
    public var checksum: WALChecksum

    /// Whether checksums read 32-bit words big-endian (magic `0x377f0683`).
    public var bigEndianChecksums: Bool { magic == Self.magicBigEndian }

    /// Both salts, which identify one generation of the WAL (between two resets).
    public var salts: UInt64 { UInt64(salt1) << 32 | UInt64(salt2) }

    /// Creates a header and computes its checksum.
    public init(bigEndianChecksums: Bool, pageSize: Int, checkpointSequence: UInt32, salt1: UInt32, salt2: UInt32) {
        self.magic = bigEndianChecksums ? Self.magicBigEndian : Self.magicLittleEndian
        self.version = Self.formatVersion
        self.pageSize = pageSize
        self.checkpointSequence = checkpointSequence
        self.salt1 = salt1
        self.salt2 = salt2
        self.checksum = WALChecksum()
        let bytes = encoded()
        var sum = WALChecksum()
        bytes.withUnsafeBytes { sum.update(UnsafeRawBufferPointer(rebasing: $0[0..<24]), bigEndianWords: bigEndianChecksums) }
        self.checksum = sum
    }

    /// Parses and verifies a header (magic, version, page size, checksum).
    public init(parsing bytes: UnsafeRawBufferPointer) throws(ReplicationError) {
        guard bytes.count >= Self.size else {
            throw ReplicationError(.invalidWALHeader, "the WAL is \(bytes.count) bytes long, shorter than its 32-byte header")
        }
        magic = bytes.readBigEndianUInt32(at: 0)
        guard magic == Self.magicLittleEndian || magic == Self.magicBigEndian else {
            throw ReplicationError(.invalidWALHeader, "bad WAL magic 0x\(String(magic, radix: 16))")
        }
        version = bytes.readBigEndianUInt32(at: 4)
        guard version == Self.formatVersion else {
            throw ReplicationError(.invalidWALHeader, "unsupported WAL format version \(version)")
        }
        let size = Int(bytes.readBigEndianUInt32(at: 8))
        guard size >= 512, size <= 65536, size & (size - 1) == 0 else {
            throw ReplicationError(.invalidWALHeader, "invalid WAL page size \(size)")
        }
        pageSize = size
        checkpointSequence = bytes.readBigEndianUInt32(at: 12)
        salt1 = bytes.readBigEndianUInt32(at: 16)
        salt2 = bytes.readBigEndianUInt32(at: 20)
        checksum = WALChecksum(bytes.readBigEndianUInt32(at: 24), bytes.readBigEndianUInt32(at: 28))
        var computed = WALChecksum()
        computed.update(UnsafeRawBufferPointer(rebasing: bytes[0..<24]), bigEndianWords: magic == Self.magicBigEndian)
        guard computed == checksum else {
            throw ReplicationError(.invalidWALHeader, "WAL header checksum mismatch")
        }
    }

    /// Parses and verifies a header.
    public init(parsing bytes: [UInt8]) throws(ReplicationError) {
        let result: Result<WALHeader, ReplicationError> = bytes.withUnsafeBytes { buffer in
            do throws(ReplicationError) { return .success(try WALHeader(parsing: buffer)) } catch { return .failure(error) }
        }
        self = try result.get()
    }

    /// The 32 bytes of this header.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Self.size)
        for word in [magic, version, UInt32(pageSize), checkpointSequence, salt1, salt2, checksum.s0, checksum.s1] {
            out.appendBigEndian(word)
        }
        return out
    }

    /// The size of one frame (header + page).
    public var frameSize: Int { WALFrame.headerSize + pageSize }
}

/// Helpers for the frames of a WAL.
public enum WALFrame {
    /// Frame header length in bytes.
    public static let headerSize = 24

    /// Encodes a valid frame that continues `chain` (for tests and tools that write WALs).
    /// Returns the frame's bytes and the chain value after it.
    public static func encode(
        pageNumber: UInt32, commitSize: UInt32, page: [UInt8], header: WALHeader, chain: WALChecksum
    ) -> (bytes: [UInt8], chain: WALChecksum) {
        precondition(page.count == header.pageSize)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(headerSize + page.count)
        bytes.appendBigEndian(pageNumber)
        bytes.appendBigEndian(commitSize)
        bytes.appendBigEndian(header.salt1)
        bytes.appendBigEndian(header.salt2)
        var sum = chain
        bytes.withUnsafeBytes { sum.update(UnsafeRawBufferPointer(rebasing: $0[0..<8]), bigEndianWords: header.bigEndianChecksums) }
        page.withUnsafeBytes { sum.update($0, bigEndianWords: header.bigEndianChecksums) }
        bytes.appendBigEndian(sum.s0)
        bytes.appendBigEndian(sum.s1)
        bytes.append(contentsOf: page)
        return (bytes, sum)
    }
}

/// One committed transaction found in a WAL: the last image of each page it wrote, without
/// the pages above its commit size.
public struct WALTransaction: Sendable, Hashable {
    /// Page images, sorted by page number, one per page.
    public var pages: [PageImage]
    /// The database size in pages after the transaction.
    public var commitPages: UInt32
    /// File offset of the transaction's first frame.
    public var startOffset: Int
    /// File offset just past the commit frame.
    public var endOffset: Int
    /// Number of frames the transaction used (several may hold the same page).
    public var frameCount: Int
    /// The checksum chain value after the commit frame (where a scan resumes).
    public var chainAfter: WALChecksum

    /// Merges consecutive transactions into one batch: the last image of each page wins and
    /// pages above the last commit size are dropped. `nil` for no transactions.
    public static func merging(_ transactions: [WALTransaction]) -> WALTransaction? {
        guard let first = transactions.first else { return nil }
        return merging(first, then: transactions.dropFirst())
    }

    /// Merges `first` and the transactions that follow it (`then`, consecutive) into one batch:
    /// the last image of each page wins and pages above the last commit size are dropped.
    public static func merging(_ first: WALTransaction, then following: ArraySlice<WALTransaction>) -> WALTransaction {
        guard let last = following.last else { return first }
        let transactions = [first] + following
        var latest: [UInt32: [UInt8]] = [:]
        for transaction in transactions {
            for page in transaction.pages { latest[page.pageNumber] = page.data }
            // A page beyond an intermediate commit size was cut off by that commit; a later
            // transaction that grows the database again writes it anew.
            latest = latest.filter { $0.key <= transaction.commitPages }
        }
        let pages = latest.filter { $0.key <= last.commitPages }.map { PageImage(pageNumber: $0.key, data: $0.value) }
            .sorted { $0.pageNumber < $1.pageNumber }
        return WALTransaction(
            pages: pages, commitPages: last.commitPages, startOffset: first.startOffset, endOffset: last.endOffset,
            frameCount: transactions.reduce(0) { $0 + $1.frameCount }, chainAfter: last.chainAfter)
    }
}

/// Why a WAL scan stopped.
public enum WALScanStopReason: String, Sendable, Hashable {
    /// The bytes ran out exactly at a frame boundary.
    case endOfData
    /// Fewer bytes than a whole frame were left (a frame being written, or a torn write).
    case tornFrame
    /// A frame carries other salts than the header: a stale frame from an earlier generation.
    case saltMismatch
    /// A frame's chained checksum does not match.
    case checksumMismatch
    /// A frame names page 0.
    case invalidPageNumber
}

/// The result of scanning a WAL (or the part of one after a known position).
public struct WALScan: Sendable, Hashable {
    /// Committed transactions in order.
    public var transactions: [WALTransaction]
    /// File offset just past the last valid commit frame (the scan's start when there is none):
    /// where the next scan continues.
    public var committedEnd: Int
    /// The checksum chain value at ``committedEnd``.
    public var chainAtCommittedEnd: WALChecksum
    /// Valid frames after the last commit frame (a transaction in progress); never shipped.
    public var uncommittedFrames: Int
    /// Why the scan stopped.
    public var stopReason: WALScanStopReason
    /// File offset of the frame where the scan stopped (the end of the data for
    /// ``WALScanStopReason/endOfData``).
    public var stopOffset: Int
}

/// Scans WAL frames: verifies salts and the chained checksum, cuts at the last commit frame.
public enum WALScanner {
    /// Scans frames in `bytes`, which hold the file from `fileOffset` on (a frame boundary:
    /// 32, or a ``WALScan/committedEnd`` of an earlier scan), continuing the chain `chain`.
    public static func scan(_ bytes: UnsafeRawBufferPointer, fileOffset: Int, header: WALHeader, chain: WALChecksum) -> WALScan {
        let frameSize = header.frameSize
        let pageSize = header.pageSize
        var transactions: [WALTransaction] = []
        var current: [UInt32: Int] = [:]  // page -> offset of its latest frame's page data in `bytes`
        var currentFrames = 0
        var currentStart = fileOffset
        var running = chain
        var committedEnd = fileOffset
        var committedChain = chain
        var position = 0
        var stop = WALScanStopReason.endOfData
        while true {
            if position == bytes.count { stop = .endOfData; break }
            if bytes.count - position < frameSize { stop = .tornFrame; break }
            let pageNumber = bytes.readBigEndianUInt32(at: position)
            let commitSize = bytes.readBigEndianUInt32(at: position + 4)
            if bytes.readBigEndianUInt32(at: position + 8) != header.salt1 || bytes.readBigEndianUInt32(at: position + 12) != header.salt2 {
                stop = .saltMismatch
                break
            }
            if pageNumber == 0 { stop = .invalidPageNumber; break }
            var next = running
            next.update(UnsafeRawBufferPointer(rebasing: bytes[position..<(position + 8)]), bigEndianWords: header.bigEndianChecksums)
            next.update(
                UnsafeRawBufferPointer(rebasing: bytes[(position + WALFrame.headerSize)..<(position + frameSize)]),
                bigEndianWords: header.bigEndianChecksums)
            guard next.s0 == bytes.readBigEndianUInt32(at: position + 16), next.s1 == bytes.readBigEndianUInt32(at: position + 20) else {
                stop = .checksumMismatch
                break
            }
            running = next
            current[pageNumber] = position + WALFrame.headerSize
            currentFrames += 1
            position += frameSize
            if commitSize != 0 {
                let pages = current.filter { $0.key <= commitSize }.sorted { $0.key < $1.key }.map { entry in
                    PageImage(pageNumber: entry.key, data: Array(UnsafeRawBufferPointer(rebasing: bytes[entry.value..<(entry.value + pageSize)])))
                }
                transactions.append(
                    WALTransaction(
                        pages: pages, commitPages: commitSize, startOffset: currentStart, endOffset: fileOffset + position,
                        frameCount: currentFrames, chainAfter: running))
                current = [:]
                currentFrames = 0
                currentStart = fileOffset + position
                committedEnd = fileOffset + position
                committedChain = running
            }
        }
        return WALScan(
            transactions: transactions, committedEnd: committedEnd, chainAtCommittedEnd: committedChain,
            uncommittedFrames: currentFrames, stopReason: stop, stopOffset: fileOffset + position)
    }

    /// Parses a whole WAL file: its header, then every frame from offset 32.
    public static func parse(_ file: [UInt8]) throws(ReplicationError) -> (header: WALHeader, scan: WALScan) {
        let header = try WALHeader(parsing: file)
        let scan = file.withUnsafeBytes { buffer in
            Self.scan(UnsafeRawBufferPointer(rebasing: buffer[WALHeader.size...]), fileOffset: WALHeader.size, header: header, chain: header.checksum)
        }
        return (header, scan)
    }
}

extension UnsafeRawBufferPointer {
    @inline(__always) func readBigEndianUInt32(at offset: Int) -> UInt32 {
        UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
}
