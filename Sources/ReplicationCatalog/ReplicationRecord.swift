import Foundation

/// One entry of an app's replication stream.
///
/// A ``Kind/transaction`` record carries the page images of one batch of committed SQLite
/// transactions; a ``Kind/snapshot`` record says "the database at ``txid`` is the snapshot
/// object ``snapshotName``" (it starts every shipping session and follows any gap); a
/// ``Kind/finalMarker`` record ends a graceful handoff.
public struct ReplicationRecord: Sendable, Hashable {
    /// What a record says.
    public enum Kind: UInt8, Sendable, Hashable {
        /// Page images of committed transactions.
        case transaction = 1
        /// The database at ``ReplicationRecord/txid`` is a snapshot object.
        case snapshot = 2
        /// The old active node has shipped everything and stops writing.
        case finalMarker = 3
    }

    /// What the record says.
    public var kind: Kind
    /// The transaction id: contiguous for transaction records; a snapshot record may jump
    /// ahead; a final marker repeats the last transaction's id.
    public var txid: UInt64
    /// The fencing token (lease revision) of the node that wrote the record.
    public var token: UInt64
    /// The database page size.
    public var pageSize: Int
    /// The database size in pages after the record.
    public var commitPages: UInt32
    /// The rolling checksum of the replica before the record (``DatabaseChecksum``).
    public var checksumBefore: UInt64
    /// The rolling checksum after applying the record.
    public var checksumAfter: UInt64
    /// When the shipper read the transactions (nanoseconds since 1970).
    public var timestampNanos: Int64
    /// The Object Store name of the snapshot, for snapshot records.
    public var snapshotName: String?
    /// Page images (transaction records only), sorted by page number, one per page.
    public var pages: [PageImage]

    /// Creates a record.
    public init(
        kind: Kind, txid: UInt64, token: UInt64, pageSize: Int, commitPages: UInt32, checksumBefore: UInt64, checksumAfter: UInt64,
        timestampNanos: Int64, snapshotName: String? = nil, pages: [PageImage] = []
    ) {
        self.kind = kind
        self.txid = txid
        self.token = token
        self.pageSize = pageSize
        self.commitPages = commitPages
        self.checksumBefore = checksumBefore
        self.checksumAfter = checksumAfter
        self.timestampNanos = timestampNanos
        self.snapshotName = snapshotName
        self.pages = pages
    }

    /// When the shipper read the transactions.
    public var timestamp: Date { Date(timeIntervalSince1970: Double(timestampNanos) / 1e9) }
}

/// The binary encoding of ``ReplicationRecord`` (big-endian):
///
/// ```
/// "BTWR" | version u8 (1) | kind u8 | 0 u16 | txid u64 | token u64 | page size u32 |
/// commit pages u32 | checksum before u64 | checksum after u64 | timestamp ns i64 |
/// snapshot name length u16 | name (UTF-8) | page count u32 | (page number u32 | page)*
/// ```
///
/// Decoding is strict: unknown versions and kinds, trailing bytes, unsorted or duplicate pages,
/// page numbers above the commit size, the lock-byte page, or wrong lengths are errors.
public enum ReplicationRecordCodec {
    /// The first four bytes of a record.
    public static let magic: [UInt8] = Array("BTWR".utf8)
    /// The format version this code writes and reads.
    public static let version: UInt8 = 1
    static let fixedSize = 4 + 1 + 1 + 2 + 8 + 8 + 4 + 4 + 8 + 8 + 8 + 2

    /// Encodes a record.
    public static func encode(_ record: ReplicationRecord) -> [UInt8] {
        let name = Array((record.snapshotName ?? "").utf8)
        var out: [UInt8] = []
        out.reserveCapacity(fixedSize + name.count + 4 + record.pages.count * (4 + record.pageSize))
        out.append(contentsOf: magic)
        out.append(version)
        out.append(record.kind.rawValue)
        out.appendBigEndian(UInt16(0))
        out.appendBigEndian(record.txid)
        out.appendBigEndian(record.token)
        out.appendBigEndian(UInt32(record.pageSize))
        out.appendBigEndian(record.commitPages)
        out.appendBigEndian(record.checksumBefore)
        out.appendBigEndian(record.checksumAfter)
        out.appendBigEndian(record.timestampNanos)
        out.appendBigEndian(UInt16(name.count))
        out.append(contentsOf: name)
        out.appendBigEndian(UInt32(record.pages.count))
        for page in record.pages {
            out.appendBigEndian(page.pageNumber)
            out.append(contentsOf: page.data)
        }
        return out
    }

    /// Decodes a record, rejecting anything that is not exactly a valid record.
    public static func decode(_ bytes: [UInt8]) throws(ReplicationError) -> ReplicationRecord {
        var reader = ByteReader(bytes, what: "replication record")
        guard try reader.bytes(4) == magic else { throw ReplicationError(.malformedRecord, "not a replication record (bad magic)") }
        let version = try reader.uint8()
        guard version == Self.version else {
            throw ReplicationError(.malformedRecord, "replication record version \(version) is not supported (this build reads \(Self.version))")
        }
        let kindByte = try reader.uint8()
        guard let kind = ReplicationRecord.Kind(rawValue: kindByte) else {
            throw ReplicationError(.malformedRecord, "unknown replication record kind \(kindByte)")
        }
        guard try reader.uint16() == 0 else { throw ReplicationError(.malformedRecord, "reserved bytes of the record are not zero") }
        let txid = try reader.uint64()
        let token = try reader.uint64()
        let pageSize = Int(try reader.uint32())
        guard pageSize >= 512, pageSize <= 65536, pageSize & (pageSize - 1) == 0 else {
            throw ReplicationError(.malformedRecord, "record \(txid) has an invalid page size \(pageSize)")
        }
        let commitPages = try reader.uint32()
        let before = try reader.uint64()
        let after = try reader.uint64()
        let timestamp = Int64(bitPattern: try reader.uint64())
        let nameLength = Int(try reader.uint16())
        let nameBytes = try reader.bytes(nameLength)
        guard let name = String(validating: nameBytes, as: UTF8.self) else {
            throw ReplicationError(.malformedRecord, "record \(txid) has a snapshot name that is not UTF-8")
        }
        let pageCount = Int(try reader.uint32())
        switch kind {
        case .snapshot:
            guard !name.isEmpty else { throw ReplicationError(.malformedRecord, "snapshot record \(txid) has no snapshot name") }
            guard pageCount == 0 else { throw ReplicationError(.malformedRecord, "snapshot record \(txid) carries pages") }
        case .transaction, .finalMarker:
            guard name.isEmpty else { throw ReplicationError(.malformedRecord, "\(kind) record \(txid) carries a snapshot name") }
            if kind == .finalMarker, pageCount != 0 { throw ReplicationError(.malformedRecord, "final marker \(txid) carries pages") }
        }
        guard pageCount <= reader.remaining / (4 + pageSize) else {
            throw ReplicationError(.malformedRecord, "record \(txid) announces \(pageCount) pages but holds \(reader.remaining) bytes")
        }
        let lockPage = DatabaseChecksum.lockPage(pageSize: pageSize)
        var pages: [PageImage] = []
        pages.reserveCapacity(pageCount)
        var previous: UInt32 = 0
        for _ in 0..<pageCount {
            let pageNumber = try reader.uint32()
            guard pageNumber > previous else {
                throw ReplicationError(.malformedRecord, "record \(txid): page \(pageNumber) is out of order or repeated")
            }
            guard pageNumber <= commitPages else {
                throw ReplicationError(.malformedRecord, "record \(txid): page \(pageNumber) is above the commit size \(commitPages)")
            }
            guard pageNumber != lockPage else {
                throw ReplicationError(.malformedRecord, "record \(txid) writes the lock-byte page \(pageNumber)")
            }
            pages.append(PageImage(pageNumber: pageNumber, data: try reader.bytes(pageSize)))
            previous = pageNumber
        }
        guard reader.remaining == 0 else {
            throw ReplicationError(.malformedRecord, "record \(txid) has \(reader.remaining) trailing bytes")
        }
        return ReplicationRecord(
            kind: kind, txid: txid, token: token, pageSize: pageSize, commitPages: commitPages, checksumBefore: before,
            checksumAfter: after, timestampNanos: timestamp, snapshotName: kind == .snapshot ? name : nil, pages: pages)
    }
}

/// One message of the replication stream: a piece of an encoded record.
///
/// ```
/// "BTWC" | version u8 (1) | record kind u8 | 0 u16 | txid u64 | token u64 | index u32 |
/// count u32 | record length u32 | record hash u64 (xxHash64) | bytes
/// ```
///
/// A record that fits in one message is one chunk (index 0, count 1). The applier reassembles
/// the chunks of a record, checks its length and hash, and only then decodes and applies it.
public struct RecordChunk: Sendable, Hashable {
    /// The first four bytes of a chunk.
    public static let magic: [UInt8] = Array("BTWC".utf8)
    /// Bytes before the payload.
    public static let headerSize = 4 + 1 + 1 + 2 + 8 + 8 + 4 + 4 + 4 + 8

    /// The kind of the record this chunk belongs to.
    public var kind: ReplicationRecord.Kind
    /// The record's transaction id.
    public var txid: UInt64
    /// The record's fencing token.
    public var token: UInt64
    /// This chunk's position, from 0.
    public var index: UInt32
    /// How many chunks the record has.
    public var count: UInt32
    /// The length of the whole encoded record.
    public var recordLength: UInt32
    /// xxHash64 of the whole encoded record.
    public var recordHash: UInt64
    /// This chunk's part of the encoded record.
    public var bytes: [UInt8]

    /// Creates a chunk.
    public init(kind: ReplicationRecord.Kind, txid: UInt64, token: UInt64, index: UInt32, count: UInt32, recordLength: UInt32, recordHash: UInt64, bytes: [UInt8]) {
        self.kind = kind
        self.txid = txid
        self.token = token
        self.index = index
        self.count = count
        self.recordLength = recordLength
        self.recordHash = recordHash
        self.bytes = bytes
    }

    /// Splits a record into chunks whose encoding is at most `maxMessageBytes` long.
    public static func split(_ record: ReplicationRecord, maxMessageBytes: Int) -> [RecordChunk] {
        let encoded = ReplicationRecordCodec.encode(record)
        let room = max(1, maxMessageBytes - headerSize)
        let count = max(1, (encoded.count + room - 1) / room)
        let hash = XXHash64.hash(encoded)
        return (0..<count).map { index in
            let start = index * room
            let end = min(encoded.count, start + room)
            return RecordChunk(
                kind: record.kind, txid: record.txid, token: record.token, index: UInt32(index), count: UInt32(count),
                recordLength: UInt32(encoded.count), recordHash: hash, bytes: Array(encoded[start..<end]))
        }
    }

    /// The chunk's bytes, as published.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Self.headerSize + bytes.count)
        out.append(contentsOf: Self.magic)
        out.append(ReplicationRecordCodec.version)
        out.append(kind.rawValue)
        out.appendBigEndian(UInt16(0))
        out.appendBigEndian(txid)
        out.appendBigEndian(token)
        out.appendBigEndian(index)
        out.appendBigEndian(count)
        out.appendBigEndian(recordLength)
        out.appendBigEndian(recordHash)
        out.append(contentsOf: bytes)
        return out
    }

    /// Decodes a published chunk.
    public init(decoding data: [UInt8]) throws(ReplicationError) {
        var reader = ByteReader(data, what: "record chunk")
        guard try reader.bytes(4) == Self.magic else { throw ReplicationError(.malformedRecord, "not a replication chunk (bad magic)") }
        let version = try reader.uint8()
        guard version == ReplicationRecordCodec.version else {
            throw ReplicationError(.malformedRecord, "chunk version \(version) is not supported (this build reads \(ReplicationRecordCodec.version))")
        }
        let kindByte = try reader.uint8()
        guard let kind = ReplicationRecord.Kind(rawValue: kindByte) else { throw ReplicationError(.malformedRecord, "unknown record kind \(kindByte) in chunk") }
        guard try reader.uint16() == 0 else { throw ReplicationError(.malformedRecord, "reserved bytes of the chunk are not zero") }
        self.kind = kind
        txid = try reader.uint64()
        token = try reader.uint64()
        index = try reader.uint32()
        count = try reader.uint32()
        recordLength = try reader.uint32()
        recordHash = try reader.uint64()
        guard count >= 1, index < count else {
            throw ReplicationError(.malformedRecord, "chunk \(index) of \(count) of record \(txid) is out of range")
        }
        bytes = try reader.bytes(reader.remaining)
        guard bytes.count <= Int(recordLength) else {
            throw ReplicationError(.malformedRecord, "chunk \(index) of record \(txid) is longer than its whole record")
        }
    }
}

/// Reassembles records from chunks read in stream order.
///
/// A record is returned only once all its chunks arrived and its length and hash match. A chunk
/// of another record (another txid or token) while one is incomplete discards the incomplete one
/// (its writer died mid-record; it was never complete, so it was never applied) and counts it in
/// ``discardedIncompleteRecords``. Chunk 0 of the record being assembled (a redelivery, or a
/// consumer restarted mid-record) starts the record over, counted in ``restartedRecords``; any
/// other chunk already held is a duplicate and ignored. A chunk after a missing one throws
/// ``ReplicationError/Code/chunkMissing``: the reader re-reads the record from its first chunk.
public struct RecordAssembler: Sendable {
    private var pending: [RecordChunk] = []
    /// Incomplete records dropped because another record started.
    public private(set) var discardedIncompleteRecords = 0
    /// Records started over because their chunk 0 arrived again.
    public private(set) var restartedRecords = 0

    /// Creates an empty assembler.
    public init() {}

    /// Whether part of a record is waiting for more chunks.
    public var hasIncompleteRecord: Bool { !pending.isEmpty }

    /// How many chunks of the incomplete record are held.
    public var pendingChunks: Int { pending.count }

    /// Drops a partial record (for example before restoring a snapshot).
    public mutating func reset() { pending = [] }

    /// Adds a chunk; returns the record once it is complete.
    public mutating func add(_ chunk: RecordChunk) throws(ReplicationError) -> ReplicationRecord? {
        if let first = pending.first, first.txid != chunk.txid || first.token != chunk.token || first.recordHash != chunk.recordHash {
            pending = []
            discardedIncompleteRecords += 1
        }
        if chunk.index == 0, !pending.isEmpty {
            // The same record from its start again: take this copy from the beginning.
            pending = []
            restartedRecords += 1
        }
        if chunk.index < UInt32(pending.count) { return nil }  // a redelivered chunk
        guard chunk.index == UInt32(pending.count) else {
            let expected = pending.count
            pending = []
            // Chunks of this record were not delivered (or its start is not in the stream at
            // all): the reader decides which by reading the record again from its start.
            throw ReplicationError(.chunkMissing, "chunk \(chunk.index) of record \(chunk.txid) arrived where chunk \(expected) was expected")
        }
        pending.append(chunk)
        guard pending.count == Int(chunk.count) else { return nil }
        let chunks = pending
        pending = []
        var encoded: [UInt8] = []
        encoded.reserveCapacity(Int(chunk.recordLength))
        for part in chunks { encoded.append(contentsOf: part.bytes) }
        guard encoded.count == Int(chunk.recordLength) else {
            throw ReplicationError(.malformedRecord, "record \(chunk.txid) reassembled to \(encoded.count) bytes, expected \(chunk.recordLength)")
        }
        guard XXHash64.hash(encoded) == chunk.recordHash else {
            throw ReplicationError(.malformedRecord, "record \(chunk.txid) reassembled with a wrong hash")
        }
        let record = try ReplicationRecordCodec.decode(encoded)
        guard record.txid == chunk.txid, record.token == chunk.token, record.kind == chunk.kind else {
            throw ReplicationError(.malformedRecord, "record \(record.txid) does not match its chunk headers (txid \(chunk.txid))")
        }
        return record
    }
}

/// Reads big-endian fields with bounds checks.
struct ByteReader {
    private let bytes: [UInt8]
    private var offset = 0
    private let what: String

    init(_ bytes: [UInt8], what: String) {
        self.bytes = bytes
        self.what = what
    }

    var remaining: Int { bytes.count - offset }

    mutating func bytes(_ count: Int) throws(ReplicationError) -> [UInt8] {
        guard count >= 0, remaining >= count else {
            throw ReplicationError(.malformedRecord, "\(what) is truncated: needed \(count) bytes at offset \(offset), \(remaining) left")
        }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    mutating func integer<T: FixedWidthInteger>(_ type: T.Type) throws(ReplicationError) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else {
            throw ReplicationError(.malformedRecord, "\(what) is truncated: needed \(size) bytes at offset \(offset), \(remaining) left")
        }
        var value: T = 0
        for index in 0..<size { value = value << 8 | T(bytes[offset + index]) }
        offset += size
        return value
    }

    mutating func uint8() throws(ReplicationError) -> UInt8 { try integer(UInt8.self) }
    mutating func uint16() throws(ReplicationError) -> UInt16 { try integer(UInt16.self) }
    mutating func uint32() throws(ReplicationError) -> UInt32 { try integer(UInt32.self) }
    mutating func uint64() throws(ReplicationError) -> UInt64 { try integer(UInt64.self) }
}
