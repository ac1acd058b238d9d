import Crypto
import Foundation
import NIOCore

/// An Object Store bucket (ADR-20): named objects of any size, cut into chunks stored in a
/// JetStream stream, each with a JSON meta entry that records its size, chunk count and SHA-256
/// digest. Compatible with the buckets of the Go (`nats.go`) and Python (`nats-py`) clients.
///
/// An object's chunks go to `$O.<bucket>.C.<nuid>`, a fresh NUID per put; its meta to
/// `$O.<bucket>.M.<base64url(name)>` with a subject rollup, so only the latest meta of a name is
/// kept. Replacing or deleting an object purges the chunks of the version it replaced. Reads
/// verify size, chunk count and digest, and fail rather than return corrupt data.
public struct ObjectStore: Sendable {
    /// The bucket name.
    public let bucket: String
    /// The JetStream context.
    public let jetStream: JetStream
    /// `OBJ_<bucket>`.
    public let streamName: String
    private let chunkPrefix: String
    private let metaPrefix: String

    /// The chunk size used when none is given: 128 KiB, as in the other clients.
    public static let defaultChunkSize = 128 * 1024

    /// Bytes of chunks a put keeps unacknowledged at most (and never more than 256 chunks).
    private static let publishWindowBytes = 4 * 1024 * 1024

    init(bucket: String, jetStream: JetStream) {
        self.bucket = bucket
        self.jetStream = jetStream
        self.streamName = JetStreamNames.objectStoreStream(bucket: bucket)
        self.chunkPrefix = JetStreamNames.objectStoreSubjectPrefix(bucket: bucket) + ".C."
        self.metaPrefix = JetStreamNames.objectStoreSubjectPrefix(bucket: bucket) + ".M."
    }

    // MARK: - Names

    static func validateBucket(_ bucket: String) throws(ObjectStoreError) {
        guard !bucket.isEmpty, bucket.utf8.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }) else {
            throw ObjectStoreError(.invalidBucketName, "bucket name \"\(bucket)\" must match [a-zA-Z0-9_-]+")
        }
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
    }

    /// Object names are free-form (they are base64url-encoded into the meta subject) but must
    /// not be empty.
    static func validateName(_ name: String) throws(ObjectStoreError) {
        guard !name.isEmpty else {
            throw ObjectStoreError(.invalidName, "an object name must not be empty")
        }
    }

    /// The meta subject of `name`: `$O.<bucket>.M.<base64url(name), padded>`.
    public func metaSubject(for name: String) -> String {
        metaPrefix + name.utf8.base64URLEncodedString(padded: true)
    }

    /// The chunk subject of an object version: `$O.<bucket>.C.<nuid>`.
    public func chunkSubject(for nuid: String) -> String {
        chunkPrefix + nuid
    }

    /// How long a read waits for the next chunk before giving up.
    private var stallTimeout: Duration { max(jetStream.timeout, .seconds(5)) }

    // MARK: - Reading meta

    private typealias MetaResult = Result<ObjectInfo, ObjectStoreError>

    /// The latest meta message of `name` and its stream sequence, or nil when there is none.
    ///
    /// Read through the stream leader (`STREAM.MSG.GET`), not with direct get: puts use the
    /// sequence for a compare-and-set and must see the latest write, and on nats-server 2.9 a
    /// direct get on a deleted stream times out instead of failing at once.
    private func lastMeta(_ name: String) async throws -> (sequence: UInt64, meta: MetaResult)? {
        let message: StoredMessage
        do {
            message = try await jetStream.getLastMessage(stream: streamName, subject: metaSubject(for: name))
        } catch let error as JetStreamAPIError where error.errorCode == .streamNotFound {
            throw bucketGone()
        } catch let error as JetStreamAPIError where error.errorCode == .noMessageFound {
            return nil
        }
        return (message.sequence, decodeMeta(message.payload, modified: message.time, name: name))
    }

    private func decodeMeta(_ payload: ByteBuffer, modified: Date, name: String) -> MetaResult {
        do {
            let record = try JetStreamJSON.decoder().decode(ObjectMetaRecord.self, from: Data(payload.readableBytesView))
            return .success(record.info(modified: modified))
        } catch {
            let excerpt = String(decoding: payload.readableBytesView.prefix(120), as: UTF8.self)
            return .failure(ObjectStoreError(.invalidMeta, "the meta of \"\(name)\" in bucket \(bucket) cannot be decoded (\(error)): \(excerpt)"))
        }
    }

    private func notFound(_ name: String, deleted: Bool = false) -> ObjectStoreError {
        ObjectStoreError(.objectNotFound, deleted ? "object \"\(name)\" in bucket \(bucket) was deleted" : "no object \"\(name)\" in bucket \(bucket)")
    }

    private func bucketGone() -> ObjectStoreError {
        ObjectStoreError(.bucketNotFound, "bucket \(bucket) does not exist (no stream \(streamName))")
    }

    /// Turns "no such stream" answers into ``ObjectStoreError/Code/bucketNotFound``.
    private func mapped(_ error: any Error) -> any Error {
        if let error = error as? JetStreamAPIError, error.errorCode == .streamNotFound { return bucketGone() }
        if let error = error as? JetStreamError, error.code == .noStreamForSubject { return bucketGone() }
        return error
    }

    /// The current information of `name`.
    ///
    /// Throws ``ObjectStoreError/Code/objectNotFound`` when there is no such object or it was
    /// deleted (unless `includeDeleted`), ``ObjectStoreError/Code/invalidMeta`` when its meta
    /// cannot be decoded.
    public func info(_ name: String, includeDeleted: Bool = false) async throws -> ObjectInfo {
        try Self.validateName(name)
        guard let (_, meta) = try await lastMeta(name) else { throw notFound(name) }
        let info = try meta.get()
        if info.deleted, !includeDeleted { throw notFound(name, deleted: true) }
        return info
    }

    // MARK: - Writing meta

    /// Publishes the meta `makeRecord` builds from the current one, with a subject rollup and as
    /// a compare-and-set on the meta subject, so the version it replaces is known exactly even
    /// when writers race; then purges that version's chunks. Returns false when `makeRecord`
    /// decided there is nothing to write.
    @discardableResult
    private func replaceMeta(_ name: String, _ makeRecord: (MetaResult?) throws -> ObjectMetaRecord?) async throws -> Bool {
        let subject = metaSubject(for: name)
        var attempt = 0
        while true {
            let current = try await lastMeta(name)
            guard let record = try makeRecord(current?.meta) else { return false }
            let payload = ByteBuffer(bytes: try JetStreamJSON.encoder().encode(record))
            do {
                try await jetStream.publish(subject, payload: payload, options: PublishOptions(expectedLastSubjectSequence: current?.sequence ?? 0, rollup: .subject))
            } catch let error as JetStreamAPIError where error.isWrongLastSequence && attempt < 10 {
                // Another writer got in between: read what it wrote and replace that instead.
                attempt += 1
                continue
            }
            if case .success(let replaced)? = current?.meta, !replaced.deleted, !replaced.nuid.isEmpty, replaced.link == nil {
                do {
                    try await jetStream.purgeStream(streamName, subject: chunkSubject(for: replaced.nuid))
                } catch {
                    jetStream.client.logger.warning(
                        "could not purge the chunks of a replaced object",
                        metadata: ["bucket": "\(bucket)", "object": "\(name)", "nuid": "\(replaced.nuid)", "error": "\(error)"])
                }
            }
            return true
        }
    }

    /// Removes the chunks of a failed put: waits until the server has answered every chunk
    /// published (the stream stores them on another queue than the one that purges), then purges
    /// `subject`; in a task that ignores the caller's cancellation, so a cancelled put cleans up
    /// too.
    private func discardChunks(_ subject: String, publisher: ChunkPublisher) async {
        let jetStream = jetStream
        let stream = streamName
        await Task {
            await publisher.settle()
            _ = try? await jetStream.purgeStream(stream, subject: subject)
        }.value
    }

    private func validateChunkSize(_ chunkSize: Int) throws(ObjectStoreError) {
        guard chunkSize > 0 else {
            throw ObjectStoreError(.invalidChunkSize, "the chunk size must be positive, not \(chunkSize)")
        }
        if let maxPayload = jetStream.client.serverInfo?.maxPayload, chunkSize > maxPayload {
            throw ObjectStoreError(.invalidChunkSize, "the chunk size \(chunkSize) exceeds the server's max_payload of \(maxPayload) bytes")
        }
    }

    // MARK: - Putting

    /// Stores `data` as object `name`, replacing any object of that name.
    ///
    /// The bytes go out in chunks of `chunkSize` to `$O.<bucket>.C.<nuid>`, then the meta (size,
    /// chunk count, SHA-256 digest) to the name's meta subject with a rollup; the replaced
    /// version's chunks are purged last. If anything fails before the meta is stored, the new
    /// chunks are purged and the previous version stays intact.
    @discardableResult
    public func put(
        name: String, data: ByteBuffer, description: String? = nil, headers: NATSHeaders? = nil, metadata: [String: String]? = nil,
        chunkSize: Int = ObjectStore.defaultChunkSize
    ) async throws -> ObjectInfo {
        try await put(name: name, description: description, headers: headers, metadata: metadata, chunkSize: chunkSize) { feed in
            try await feed(data)
        }
    }

    /// Stores the buffers of `chunks` as object `name`, one after another, without holding the
    /// whole object in memory. The buffers may have any size; they are re-cut into chunks of
    /// `chunkSize` bytes.
    @discardableResult
    public func put<Chunks: AsyncSequence>(
        name: String, chunks: Chunks, description: String? = nil, headers: NATSHeaders? = nil, metadata: [String: String]? = nil,
        chunkSize: Int = ObjectStore.defaultChunkSize
    ) async throws -> ObjectInfo where Chunks.Element == ByteBuffer {
        try await put(name: name, description: description, headers: headers, metadata: metadata, chunkSize: chunkSize) { feed in
            for try await piece in chunks {
                try await feed(piece)
            }
        }
    }

    /// Stores the contents of the file at `path` as object `name`, reading it one chunk at a
    /// time.
    @discardableResult
    public func put(
        name: String, fileAt path: String, description: String? = nil, headers: NATSHeaders? = nil, metadata: [String: String]? = nil,
        chunkSize: Int = ObjectStore.defaultChunkSize
    ) async throws -> ObjectInfo {
        try Self.validateName(name)
        try validateChunkSize(chunkSize)
        let fd = try await ObjectFileIO.openForReading(path)
        do {
            let info = try await put(
                name: name, chunks: FileChunks(fd: fd, path: path, chunkSize: chunkSize), description: description, headers: headers,
                metadata: metadata, chunkSize: chunkSize)
            await ObjectFileIO.closeFile(fd)
            return info
        } catch {
            await ObjectFileIO.closeFile(fd)
            throw error
        }
    }

    private func put(
        name: String, description: String?, headers: NATSHeaders?, metadata: [String: String]?, chunkSize: Int,
        source: (_ feed: (ByteBuffer) async throws -> Void) async throws -> Void
    ) async throws -> ObjectInfo {
        try Self.validateName(name)
        try validateChunkSize(chunkSize)
        let nuid = NUID.next()
        let subject = chunkSubject(for: nuid)
        var hasher = SHA256()
        var size: UInt64 = 0
        let publisher = try ChunkPublisher(jetStream: jetStream, subject: subject, window: min(256, Self.publishWindowBytes / chunkSize))
        defer { publisher.close() }
        func send(_ chunk: ByteBuffer) async throws {
            chunk.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
            size += UInt64(chunk.readableBytes)
            try await publisher.send(chunk)
        }
        do {
            var rechunker = Rechunker(chunkSize: chunkSize)
            try await source { piece in try await rechunker.feed(piece, send) }
            try await rechunker.finish(send)
            try await publisher.finish()
        } catch {
            await discardChunks(subject, publisher: publisher)
            throw mapped(error)
        }
        let digest = "SHA-256=" + hasher.finalize().base64URLEncodedString(padded: true)
        let info = ObjectInfo(
            name: name, description: description, headers: headers, metadata: metadata, bucket: bucket, nuid: nuid, size: size,
            chunks: publisher.count, digest: digest, deleted: false, modified: Date(), maxChunkSize: chunkSize, link: nil)
        do {
            try await replaceMeta(name) { _ in ObjectMetaRecord(info: info, mtime: info.modified) }
        } catch {
            await discardChunks(subject, publisher: publisher)
            throw mapped(error)
        }
        return info
    }

    // MARK: - Getting

    /// Reads object `name` whole, verifying its size, chunk count and SHA-256 digest.
    ///
    /// Follows a link to an object (in this or another bucket). Throws
    /// ``ObjectStoreError/Code/objectNotFound`` for a missing or deleted object,
    /// ``ObjectStoreError/Code/digestMismatch`` or ``ObjectStoreError/Code/sizeMismatch`` when the
    /// stored bytes do not match the meta; never returns data that failed verification.
    public func get(_ name: String) async throws -> (info: ObjectInfo, data: ByteBuffer) {
        var data = ByteBuffer()
        let info = try await read(name) { info in
            data.reserveCapacity(Int(min(info.size, 64 * 1024 * 1024)))
        } onChunk: { chunk in
            var chunk = chunk
            data.writeBuffer(&chunk)
        }
        return (info, data)
    }

    /// Reads object `name` one chunk at a time, in order, calling `onChunk` for each.
    ///
    /// The digest can only be checked after the last chunk: when this throws
    /// ``ObjectStoreError/Code/digestMismatch`` or ``ObjectStoreError/Code/sizeMismatch``,
    /// everything `onChunk` received must be discarded.
    @discardableResult
    public func get(_ name: String, onChunk: (ByteBuffer) async throws -> Void) async throws -> ObjectInfo {
        try await read(name, begin: { _ in }, onChunk: onChunk)
    }

    /// Reads object `name` into the file at `path`. The bytes go to a temporary file next to it
    /// that replaces `path` only once the object has been verified; on any failure `path` is left
    /// as it was.
    ///
    /// The object streams through one chunk at a time: memory use does not grow with its size.
    /// `progress`, when given, is called once the object's meta is known (with 0 bytes) and
    /// after every chunk written, with the bytes written so far; the meta's
    /// ``ObjectInfo/size`` is the total.
    @discardableResult
    public func get(
        _ name: String, toFile path: String, progress: (@Sendable (_ info: ObjectInfo, _ bytesWritten: UInt64) async -> Void)? = nil
    ) async throws -> ObjectInfo {
        try Self.validateName(name)
        let temporary = "\(path).\(NUID.next()).partial"
        let fd = try await ObjectFileIO.createForWriting(temporary)
        let info: ObjectInfo
        var written: UInt64 = 0
        var current: ObjectInfo?
        do {
            info = try await read(
                name,
                begin: { info in
                    current = info
                    await progress?(info, 0)
                }
            ) { chunk in
                try await ObjectFileIO.writeAll(fd, chunk, path: temporary)
                written += UInt64(chunk.readableBytes)
                if let progress, let current { await progress(current, written) }
            }
        } catch {
            await ObjectFileIO.discard(fd, temporary: temporary)
            throw error
        }
        try await ObjectFileIO.commit(fd, temporary: temporary, to: path)
        return info
    }

    private func read(_ name: String, begin: (ObjectInfo) async throws -> Void, onChunk: (ByteBuffer) async throws -> Void) async throws -> ObjectInfo {
        let info = try await self.info(name)
        guard let link = info.link else {
            return try await readVerified(info, begin: begin, onChunk: onChunk)
        }
        guard let target = link.name else {
            throw ObjectStoreError(.bucketLink, "\"\(name)\" in bucket \(bucket) is a link to bucket \(link.bucket), not to an object")
        }
        let store = link.bucket == bucket ? self : try await jetStream.objectStore(link.bucket)
        let targetInfo = try await store.info(target)
        guard targetInfo.link == nil else {
            throw ObjectStoreError(.invalidMeta, "\"\(name)\" in bucket \(bucket) links to \"\(target)\" in bucket \(link.bucket), which is itself a link")
        }
        return try await store.readVerified(targetInfo, begin: begin, onChunk: onChunk)
    }

    /// Decodes `SHA-256=<base64url>` (standard base64 and missing padding are accepted too).
    static func decodeDigest(_ digest: String?) -> [UInt8]? {
        guard let digest, let separator = digest.firstIndex(of: "="), digest[..<separator].uppercased() == "SHA-256" else { return nil }
        let encoded = digest[digest.index(after: separator)...].map { $0 == "+" ? "-" : ($0 == "/" ? "_" : $0) }
        guard let bytes = base64URLDecode(String(encoded)), bytes.count == SHA256.byteCount else { return nil }
        return bytes
    }

    private func readVerified(_ info: ObjectInfo, begin: (ObjectInfo) async throws -> Void, onChunk: (ByteBuffer) async throws -> Void) async throws -> ObjectInfo {
        let what = "object \"\(info.name)\" in bucket \(bucket)"
        guard !info.nuid.isEmpty else {
            throw ObjectStoreError(.invalidMeta, "the meta of \(what) has no nuid")
        }
        guard let expected = Self.decodeDigest(info.digest) else {
            throw ObjectStoreError(.invalidMeta, "the meta of \(what) has no usable SHA-256 digest: \(info.digest ?? "none")")
        }
        try await begin(info)
        var hasher = SHA256()
        var size: UInt64 = 0
        var chunks = 0
        if info.size > 0 || info.chunks > 0 {
            do {
                try await jetStream.readPulled(
                    stream: streamName, filter: chunkSubject(for: info.nuid), stallTimeout: stallTimeout, what: "reading \(what)"
                ) { message in
                    let chunk = message.payload
                    chunks += 1
                    size += UInt64(chunk.readableBytes)
                    guard size <= info.size, chunks <= info.chunks else {
                        throw ObjectStoreError(
                            .sizeMismatch, "\(what) has more data than its meta records (\(info.size) bytes in \(info.chunks) chunks): \(size) bytes in \(chunks) chunks so far")
                    }
                    chunk.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
                    try await onChunk(chunk)
                }
            } catch {
                throw mapped(error)
            }
        }
        guard size == info.size, chunks == info.chunks else {
            throw ObjectStoreError(.sizeMismatch, "\(what) should be \(info.size) bytes in \(info.chunks) chunks, but \(size) bytes in \(chunks) chunks are stored")
        }
        let actual = Array(hasher.finalize())
        guard actual == expected else {
            throw ObjectStoreError(
                .digestMismatch, "\(what) is corrupt: its digest is SHA-256=\(actual.base64URLEncodedString(padded: true)), the meta records \(info.digest ?? "")")
        }
        return info
    }

    // MARK: - Deleting and listing

    /// Deletes object `name`: stores a meta marked deleted (kept so other clients see the
    /// deletion) and purges the object's chunks. Deleting a deleted object does nothing.
    ///
    /// Throws ``ObjectStoreError/Code/objectNotFound`` when there never was such an object.
    public func delete(_ name: String) async throws {
        try Self.validateName(name)
        let at = Date()
        try await replaceMeta(name) { current in
            guard let current else { throw notFound(name) }
            var info = try current.get()
            if info.deleted { return nil }
            info.deleted = true
            info.size = 0
            info.chunks = 0
            info.digest = nil
            return ObjectMetaRecord(info: info, mtime: at)
        }
    }

    /// The objects in the bucket (the latest meta of each name), in stream order; deleted ones
    /// only with `includeDeleted`. Entries whose meta cannot be decoded are skipped and logged.
    public func list(includeDeleted: Bool = false) async throws -> [ObjectInfo] {
        var result: [ObjectInfo] = []
        do {
            try await jetStream.readToEnd(
                stream: streamName, filter: "\(metaPrefix)>", deliverPolicy: .lastPerSubject, stallTimeout: stallTimeout, what: "listing bucket \(bucket)"
            ) { message in
                switch decodeMeta(message.payload, modified: message.metadata.timestamp, name: message.subject) {
                case .success(let info):
                    if !info.deleted || includeDeleted { result.append(info) }
                case .failure(let error):
                    jetStream.client.logger.warning("skipping an undecodable object meta", metadata: ["bucket": "\(bucket)", "error": "\(error)"])
                }
            }
        } catch {
            throw mapped(error)
        }
        return result
    }

    // MARK: - Bucket

    /// The bucket's configuration and size.
    public func status() async throws -> ObjectStoreStatus {
        let info: StreamInfo
        do {
            info = try await jetStream.streamInfo(streamName)
        } catch {
            throw mapped(error)
        }
        let ttl = info.config.maxAge.flatMap { $0 > .zero ? $0 : nil }
        return ObjectStoreStatus(
            bucket: bucket, description: info.config.description, ttl: ttl, storage: info.config.storage ?? .file,
            replicas: info.config.replicas ?? 1, sealed: info.config.sealed ?? false, size: info.state.bytes, streamInfo: info)
    }

    /// Seals the bucket: no object can be put or deleted any more.
    public func seal() async throws {
        do {
            var config = try await jetStream.streamInfo(streamName).config
            config.sealed = true
            try await jetStream.updateStream(config)
        } catch {
            throw mapped(error)
        }
    }
}

extension JetStream {
    /// Creates an Object Store bucket, or binds to it when it already exists with the same
    /// configuration. Throws ``ObjectStoreError/Code/bucketConfigConflict`` naming the
    /// differences when it exists with another.
    public func createObjectStore(_ config: ObjectStoreConfig) async throws -> ObjectStore {
        try ObjectStore.validateBucket(config.bucket)
        guard config.replicas >= 1 else {
            throw ObjectStoreError(.invalidConfig, "replicas of bucket \(config.bucket) must be at least 1, not \(config.replicas)")
        }
        if let ttl = config.ttl, ttl < .zero {
            throw ObjectStoreError(.invalidConfig, "the ttl of bucket \(config.bucket) must not be negative")
        }
        if let maxBytes = config.maxBytes, maxBytes <= 0, maxBytes != -1 {
            throw ObjectStoreError(.invalidConfig, "max bytes of bucket \(config.bucket) must be positive (or -1 for no limit), not \(maxBytes)")
        }
        let wanted = config.streamConfig
        do {
            try await createStream(wanted)
            return ObjectStore(bucket: config.bucket, jetStream: self)
        } catch let error as JetStreamAPIError where error.errorCode == .streamNameInUse {
            let existing = try await streamInfo(wanted.name).config
            let differences = Self.objectStoreDifferences(wanted: wanted, existing: existing)
            throw ObjectStoreError(
                .bucketConfigConflict,
                "bucket \(config.bucket) exists with a different configuration: \(differences.isEmpty ? error.errorDescription : differences.joined(separator: ", "))")
        }
    }

    /// Binds to an existing Object Store bucket (one made by any client).
    public func objectStore(_ bucket: String) async throws -> ObjectStore {
        try ObjectStore.validateBucket(bucket)
        let info: StreamInfo
        do {
            info = try await streamInfo("OBJ_\(bucket)")
        } catch let error as JetStreamAPIError where error.errorCode == .streamNotFound {
            throw ObjectStoreError(.bucketNotFound, "bucket \(bucket) does not exist")
        }
        let subjects = info.config.subjects ?? []
        guard subjects.contains("$O.\(bucket).C.>"), subjects.contains("$O.\(bucket).M.>") else {
            throw ObjectStoreError(.bucketNotFound, "stream OBJ_\(bucket) exists but is not an Object Store (subjects \(subjects))")
        }
        return ObjectStore(bucket: bucket, jetStream: self)
    }

    /// Deletes an Object Store bucket and every object in it.
    public func deleteObjectStore(_ bucket: String) async throws {
        try ObjectStore.validateBucket(bucket)
        do {
            try await deleteStream("OBJ_\(bucket)")
        } catch let error as JetStreamAPIError where error.errorCode == .streamNotFound {
            throw ObjectStoreError(.bucketNotFound, "bucket \(bucket) does not exist")
        }
    }

    static func objectStoreDifferences(wanted: StreamConfig, existing: StreamConfig) -> [String] {
        var result: [String] = []
        func compare<T: Equatable>(_ name: String, _ a: T?, _ b: T?) {
            if let a, a != b { result.append("\(name) \(b.map { "\($0)" } ?? "unset") (asked for \(a))") }
        }
        compare("description", wanted.description, existing.description)
        compare("ttl", wanted.maxAge, existing.maxAge)
        compare("max bytes", wanted.maxBytes, existing.maxBytes)
        compare("storage", wanted.storage, existing.storage)
        compare("replicas", wanted.replicas, existing.replicas)
        compare("subjects", wanted.subjects, existing.subjects)
        compare("discard", wanted.discard, existing.discard)
        compare("allow rollup", wanted.allowRollup, existing.allowRollup)
        compare("allow direct", wanted.allowDirect, existing.allowDirect)
        return result
    }
}
