import Foundation

/// xxHash64 (Yann Collet's XXH64), implemented from its specification. Used for page hashes:
/// fast, 64-bit, and the same on every host.
public enum XXHash64 {
    private static let prime1: UInt64 = 0x9E37_79B1_85EB_CA87
    private static let prime2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    private static let prime3: UInt64 = 0x1656_67B1_9E37_79F9
    private static let prime4: UInt64 = 0x85EB_CA77_C2B2_AE63
    private static let prime5: UInt64 = 0x27D4_EB2F_1656_67C5

    @inline(__always) private static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }

    @inline(__always) private static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* prime2, 31) &* prime1
    }

    @inline(__always) private static func merge(_ acc: UInt64, _ value: UInt64) -> UInt64 {
        (acc ^ round(0, value)) &* prime1 &+ prime4
    }

    /// The hash of `bytes` with `seed`.
    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        let count = bytes.count
        var offset = 0
        @inline(__always) func load64(_ at: Int) -> UInt64 { UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
        @inline(__always) func load32(_ at: Int) -> UInt64 { UInt64(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self))) }
        var h: UInt64
        if count >= 32 {
            var v1 = seed &+ prime1 &+ prime2
            var v2 = seed &+ prime2
            var v3 = seed
            var v4 = seed &- prime1
            while offset + 32 <= count {
                v1 = round(v1, load64(offset))
                v2 = round(v2, load64(offset + 8))
                v3 = round(v3, load64(offset + 16))
                v4 = round(v4, load64(offset + 24))
                offset += 32
            }
            h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
            h = merge(h, v1)
            h = merge(h, v2)
            h = merge(h, v3)
            h = merge(h, v4)
        } else {
            h = seed &+ prime5
        }
        h = h &+ UInt64(count)
        while offset + 8 <= count {
            h ^= round(0, load64(offset))
            h = rotl(h, 27) &* prime1 &+ prime4
            offset += 8
        }
        if offset + 4 <= count {
            h ^= load32(offset) &* prime1
            h = rotl(h, 23) &* prime2 &+ prime3
            offset += 4
        }
        while offset < count {
            h ^= UInt64(bytes[offset]) &* prime5
            h = rotl(h, 11) &* prime1
            offset += 1
        }
        h ^= h >> 33
        h = h &* prime2
        h ^= h >> 29
        h = h &* prime3
        h ^= h >> 32
        return h
    }

    /// The hash of `bytes` with `seed`.
    public static func hash(_ bytes: some ContiguousBytes, seed: UInt64 = 0) -> UInt64 {
        bytes.withUnsafeBytes { hash($0, seed: seed) }
    }
}

/// The rolling checksum of a database: the XOR of one 64-bit hash per page, where a page's hash
/// is xxHash64 of its bytes seeded with its page number (so moving bytes to another page changes
/// the sum). A page that does not exist, and the lock-byte page, count as 0.
///
/// Because XOR is its own inverse, the checksum after a transaction is
/// `before ^ old(p) ^ new(p)` for every page `p` it writes, and `^ old(p)` for every page it cuts
/// off by shrinking the database. That needs the old page hashes, not the old page images: both
/// the shipper and the applier keep one `UInt64` per page of the replica state (8 bytes per page;
/// 16 MiB for a 8 GiB database of 4 KiB pages).
public struct DatabaseChecksum: Sendable, Hashable {
    /// The hash of every page, index `pgno - 1`; 0 for the lock-byte page.
    public private(set) var pageHashes: [UInt64]
    /// The XOR of all page hashes.
    public private(set) var value: UInt64
    /// The page size the hashes were computed for.
    public let pageSize: Int

    /// An empty database (zero pages).
    public init(pageSize: Int) {
        self.pageSize = pageSize
        self.pageHashes = []
        self.value = 0
    }

    /// The page number of the lock-byte page (the page holding byte offset 2^30), which SQLite
    /// never writes and replicas never hold.
    public static func lockPage(pageSize: Int) -> UInt32 { UInt32(0x4000_0000 / pageSize + 1) }

    /// The hash of one page image.
    public static func pageHash(pageNumber: UInt32, data: some ContiguousBytes) -> UInt64 {
        XXHash64.hash(data, seed: UInt64(pageNumber))
    }

    /// The hash of one page image.
    public static func pageHash(pageNumber: UInt32, bytes: UnsafeRawBufferPointer) -> UInt64 {
        XXHash64.hash(bytes, seed: UInt64(pageNumber))
    }

    /// Number of pages.
    public var pageCount: Int { pageHashes.count }

    /// Sets the hash of page `pageNumber` (growing the page count if needed; pages in between
    /// that nobody wrote count as 0).
    public mutating func setPage(_ pageNumber: UInt32, hash: UInt64) {
        let index = Int(pageNumber) - 1
        if pageNumber == Self.lockPage(pageSize: pageSize) { return }
        if index >= pageHashes.count { pageHashes.append(contentsOf: repeatElement(0, count: index - pageHashes.count + 1)) }
        value ^= pageHashes[index] ^ hash
        pageHashes[index] = hash
    }

    /// Cuts the database to `pageCount` pages (or grows it with pages that count as 0).
    public mutating func resize(to pageCount: Int) {
        if pageCount < pageHashes.count {
            for hash in pageHashes[pageCount...] { value ^= hash }
            pageHashes.removeSubrange(pageCount...)
        } else if pageCount > pageHashes.count {
            pageHashes.append(contentsOf: repeatElement(0, count: pageCount - pageHashes.count))
        }
    }

    /// Applies a transaction's page images and commit size.
    public mutating func apply(pages: [PageImage], commitPages: UInt32) {
        for page in pages where page.pageNumber <= commitPages {
            setPage(page.pageNumber, hash: Self.pageHash(pageNumber: page.pageNumber, data: page.data))
        }
        resize(to: Int(commitPages))
    }

    /// The checksum that applying `pages` and `commitPages` would produce, without changing this
    /// value (costs one hash per page written, not a copy of the table).
    public func applying(pages: [PageImage], commitPages: UInt32) -> UInt64 {
        let lock = Self.lockPage(pageSize: pageSize)
        var written: [UInt32: UInt64] = [:]
        for page in pages where page.pageNumber <= commitPages && page.pageNumber != lock {
            written[page.pageNumber] = Self.pageHash(pageNumber: page.pageNumber, data: page.data)
        }
        var result = value
        for (pageNumber, hash) in written {
            let index = Int(pageNumber) - 1
            result ^= (index < pageHashes.count ? pageHashes[index] : 0) ^ hash
        }
        if Int(commitPages) < pageHashes.count {
            for hash in pageHashes[Int(commitPages)...] { result ^= hash }
        }
        return result
    }
}

/// One database page: its number (1-based) and its bytes.
public struct PageImage: Sendable, Hashable {
    /// The page number, 1 for the first page.
    public var pageNumber: UInt32
    /// The page's bytes (exactly one page size long).
    public var data: [UInt8]

    /// Creates a page image.
    public init(pageNumber: UInt32, data: [UInt8]) {
        self.pageNumber = pageNumber
        self.data = data
    }
}
