import Foundation
import NIOCore

/// A KV bucket: keys with revisioned values in a JetStream stream.
///
/// The revision of each write is its stream sequence, so it only grows; `create` and `update`
/// are compare-and-set operations, which is what leases are built on.
public struct KeyValue: Sendable {
    /// The bucket name.
    public let bucket: String
    /// The JetStream context.
    public let jetStream: JetStream
    /// `KV_<bucket>`.
    public let streamName: String
    private let subjectPrefix: String
    private let useDirectGet: Bool

    static let operationHeader = "KV-Operation"

    init(bucket: String, jetStream: JetStream, allowDirect: Bool) {
        self.bucket = bucket
        self.jetStream = jetStream
        self.streamName = JetStreamNames.keyValueStream(bucket: bucket)
        self.subjectPrefix = JetStreamNames.keyValueSubjectPrefix(bucket: bucket) + "."
        self.useDirectGet = allowDirect
    }

    // MARK: - Validation

    static func validateBucket(_ bucket: String) throws(KeyValueError) {
        guard !bucket.isEmpty, bucket.utf8.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }) else {
            throw KeyValueError(.invalidBucketName, "bucket name \"\(bucket)\" must match [a-zA-Z0-9_-]+")
        }
    }

    static func validateKey(_ key: String, allowWildcards: Bool = false) throws(KeyValueError) {
        let bytes = key.utf8
        guard !bytes.isEmpty, bytes.first != UInt8(ascii: "."), bytes.last != UInt8(ascii: ".") else {
            throw KeyValueError(.invalidKey, "key \"\(key)\" is empty or starts or ends with '.'")
        }
        for byte in bytes {
            let allowed = isAlphanumeric(byte) || "-/_=.".utf8.contains(byte) || (allowWildcards && (byte == UInt8(ascii: "*") || byte == UInt8(ascii: ">")))
            if !allowed {
                throw KeyValueError(.invalidKey, "key \"\(key)\" may only contain letters, digits and -/_=.\(allowWildcards ? " (and wildcards)" : "")")
            }
        }
        if allowWildcards {
            do { try NATSSubject.validateSubscribe(key) } catch {
                throw KeyValueError(.invalidKey, "key filter \"\(key)\": \(error.message)")
            }
        }
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
    }

    // MARK: - Reading

    /// The current value of `key`, or nil when it was never set, was deleted or purged, or
    /// expired.
    public func get(_ key: String) async throws -> KeyValueEntry? {
        guard let entry = try await entry(key), entry.operation == .put else { return nil }
        return entry
    }

    /// A specific revision of `key`, or nil when it is not stored (any more).
    public func get(_ key: String, revision: UInt64) async throws -> KeyValueEntry? {
        try Self.validateKey(key)
        let message: StoredMessage
        do {
            message = useDirectGet
                ? try await jetStream.directGet(stream: streamName, sequence: revision)
                : try await jetStream.getMessage(stream: streamName, sequence: revision)
        } catch let error as JetStreamAPIError where error.errorCode == .noMessageFound || error.code == 404 {
            return nil
        }
        guard message.subject == subjectPrefix + key else { return nil }
        let entry = makeEntry(message)
        return entry.operation == .put ? entry : nil
    }

    /// The latest entry for `key` including delete and purge markers, or nil when none is stored.
    public func entry(_ key: String) async throws -> KeyValueEntry? {
        try Self.validateKey(key)
        let subject = subjectPrefix + key
        do {
            let message = useDirectGet
                ? try await jetStream.directGetLast(stream: streamName, subject: subject)
                : try await jetStream.getLastMessage(stream: streamName, subject: subject)
            return makeEntry(message)
        } catch let error as JetStreamAPIError where error.errorCode == .noMessageFound || error.code == 404 {
            return nil
        }
    }

    private func makeEntry(_ message: StoredMessage) -> KeyValueEntry {
        KeyValueEntry(
            bucket: bucket, key: String(message.subject.dropFirst(subjectPrefix.count)), value: message.payload,
            revision: message.sequence, created: message.time, delta: 0, operation: Self.operation(message.headers))
    }

    static func operation(_ headers: NATSHeaders?) -> KeyValueOperation {
        guard let headers else { return .put }
        if let text = headers[operationHeader], let operation = KeyValueOperation(rawValue: text) { return operation }
        if headers[NATSHeaderName.markerReason] != nil { return .purge }
        return .put
    }

    // MARK: - Writing

    /// Sets `key` to `value` unconditionally; returns the new revision.
    @discardableResult
    public func put(_ key: String, value: ByteBuffer) async throws -> UInt64 {
        try Self.validateKey(key)
        return try await jetStream.publish(subjectPrefix + key, payload: value).sequence
    }

    /// Sets `key` only if it has no live value (never set, deleted, purged, or expired);
    /// returns the new revision. Throws ``KeyValueError/Code/keyExists`` otherwise.
    @discardableResult
    public func create(_ key: String, value: ByteBuffer) async throws -> UInt64 {
        try await createConditioned(key, value: value).revision
    }

    /// Like ``create(_:value:)``, and also returns the revision the write was conditioned on:
    /// 0, or the delete or purge marker it replaced. With ``firstRevision(of:after:)`` a caller
    /// can check afterwards that its write is the one that directly followed that revision.
    public func createConditioned(_ key: String, value: ByteBuffer) async throws -> (revision: UInt64, after: UInt64) {
        do {
            return (try await update(key, value: value, revision: 0), 0)
        } catch let error as KeyValueError where error.code == .wrongLastRevision {
            // The last entry may be a delete or purge marker: then replace the marker.
            if let last = try await entry(key), last.operation != .put {
                do {
                    return (try await update(key, value: value, revision: last.revision), last.revision)
                } catch let error as KeyValueError where error.code == .wrongLastRevision {
                    throw KeyValueError(.keyExists, "key \"\(key)\" in bucket \(bucket) was created concurrently", revision: nil)
                }
            }
            let live = try await entry(key)
            throw KeyValueError(.keyExists, "key \"\(key)\" in bucket \(bucket) already exists", revision: live?.revision)
        }
    }

    /// The revision of the first entry of `key` stored after `revision` (puts and markers
    /// alike), read through the stream leader; nil when there is none (or the bucket's history
    /// no longer holds it).
    public func firstRevision(of key: String, after revision: UInt64) async throws -> UInt64? {
        try Self.validateKey(key)
        return try await jetStream.getNextMessage(stream: streamName, subject: subjectPrefix + key, fromSequence: revision + 1)?.sequence
    }

    /// Sets `key` only if its latest revision is `revision` (0: the key holds nothing); returns
    /// the new revision. Throws ``KeyValueError/Code/wrongLastRevision`` when someone else wrote
    /// in between.
    @discardableResult
    public func update(_ key: String, value: ByteBuffer, revision: UInt64) async throws -> UInt64 {
        try Self.validateKey(key)
        do {
            return try await jetStream.publish(subjectPrefix + key, payload: value, options: PublishOptions(expectedLastSubjectSequence: revision)).sequence
        } catch let error as JetStreamAPIError where error.isWrongLastSequence {
            throw KeyValueError(.wrongLastRevision, "key \"\(key)\" in bucket \(bucket) is not at revision \(revision): \(error.errorDescription)", revision: revision)
        }
    }

    /// Marks `key` deleted (history is kept). With `lastRevision`, only if that is still the
    /// latest revision. `note` travels in the delete marker's body (other clients ignore it;
    /// watchers see it as the entry's value), for example to say why the key was deleted.
    @discardableResult
    public func delete(_ key: String, lastRevision: UInt64? = nil, note: ByteBuffer = ByteBuffer()) async throws -> UInt64 {
        try await writeMarker(key, operation: .delete, lastRevision: lastRevision, body: note)
    }

    /// Removes every revision of `key`, leaving one purge marker. With `lastRevision`, only if
    /// that is still the latest revision.
    @discardableResult
    public func purge(_ key: String, lastRevision: UInt64? = nil) async throws -> UInt64 {
        try await writeMarker(key, operation: .purge, lastRevision: lastRevision)
    }

    private func writeMarker(_ key: String, operation: KeyValueOperation, lastRevision: UInt64?, body: ByteBuffer = ByteBuffer()) async throws -> UInt64 {
        try Self.validateKey(key)
        var headers = NATSHeaders()
        headers[Self.operationHeader] = operation.rawValue
        let options = PublishOptions(expectedLastSubjectSequence: lastRevision, rollup: operation == .purge ? .subject : nil)
        do {
            return try await jetStream.publish(subjectPrefix + key, payload: body, headers: headers, options: options).sequence
        } catch let error as JetStreamAPIError where error.isWrongLastSequence {
            throw KeyValueError(.wrongLastRevision, "key \"\(key)\" in bucket \(bucket) is not at revision \(lastRevision ?? 0): \(error.errorDescription)", revision: lastRevision)
        }
    }

    // MARK: - Listing and watching

    /// Every key with a live value.
    public func keys() async throws -> [String] {
        var keys: [String] = []
        for entry in try await snapshot(filter: ">", includeHistory: false, metaOnly: true) where entry.operation == .put {
            keys.append(entry.key)
        }
        return keys
    }

    /// Every stored revision of `key`, oldest first, including delete and purge markers.
    public func history(_ key: String) async throws -> [KeyValueEntry] {
        try Self.validateKey(key)
        return try await snapshot(filter: key, includeHistory: true, metaOnly: false)
    }

    private func snapshot(filter: String, includeHistory: Bool, metaOnly: Bool) async throws -> [KeyValueEntry] {
        let watcher = try await watch(filter, options: KeyValueWatchOptions(includeHistory: includeHistory, metaOnly: metaOnly))
        var entries: [KeyValueEntry] = []
        do {
            for try await event in watcher {
                switch event {
                case .entry(let entry): entries.append(entry)
                case .initialValuesDone:
                    await watcher.stop()
                    return entries
                }
            }
        } catch {
            await watcher.stop()
            throw error
        }
        return entries
    }

    /// Watches one key, a wildcard (`app.*`, `app.>`), or everything (`>`).
    ///
    /// Delivers the current values first (or every revision with `includeHistory`), then
    /// ``KeyValueWatchEvent/initialValuesDone``, then every change as it happens. The watch
    /// survives reconnects and server restarts without missing or repeating updates.
    public func watch(_ keys: String = ">", options: KeyValueWatchOptions = KeyValueWatchOptions()) async throws -> KeyValueWatcher {
        try Self.validateKey(keys, allowWildcards: true)
        let deliverPolicy: DeliverPolicy = options.updatesOnly ? .new : (options.includeHistory ? .all : .lastPerSubject)
        let core = try await OrderedConsumerCore.start(
            jetStream: jetStream, stream: streamName,
            options: OrderedConsumerOptions(filterSubject: subjectPrefix + keys, deliverPolicy: deliverPolicy, headersOnly: options.metaOnly, idleHeartbeat: options.idleHeartbeat))
        return KeyValueWatcher(core: core, bucket: bucket, prefixLength: subjectPrefix.count, options: options)
    }

    /// The bucket's configuration and size.
    public func status() async throws -> KeyValueStatus {
        let info = try await jetStream.streamInfo(streamName)
        let ttl = info.config.maxAge.flatMap { $0 > .zero ? $0 : nil }
        return KeyValueStatus(
            bucket: bucket, values: info.state.messages, bytes: info.state.bytes, history: Int(info.config.maxMessagesPerSubject ?? 1), ttl: ttl, streamInfo: info)
    }
}

/// The updates of a KV watch. Iterate from one task; call ``stop()`` when done.
public final class KeyValueWatcher: AsyncSequence, Sendable {
    public typealias Element = KeyValueWatchEvent
    let core: OrderedConsumerCore
    let bucket: String
    let prefixLength: Int
    let options: KeyValueWatchOptions

    init(core: OrderedConsumerCore, bucket: String, prefixLength: Int, options: KeyValueWatchOptions) {
        self.core = core
        self.bucket = bucket
        self.prefixLength = prefixLength
        self.options = options
    }

    /// Stops the watch and ends the sequence.
    public func stop() async { await core.stop() }

    /// How many times the underlying consumer was recreated.
    public var resets: Int { core.resetCount }

    public func makeAsyncIterator() -> Iterator {
        Iterator(events: core.makeEventIterator(), watcher: self)
    }

    /// Iterates watch events.
    public struct Iterator: AsyncIteratorProtocol {
        var events: OrderedConsumerCore.EventIterator
        let watcher: KeyValueWatcher

        public mutating func next() async throws -> KeyValueWatchEvent? {
            while let event = try await events.next() {
                switch event {
                case .caughtUp:
                    return .initialValuesDone
                case .message(let message):
                    let operation = KeyValue.operation(message.headers)
                    if watcher.options.ignoreDeletes, operation != .put { continue }
                    let entry = KeyValueEntry(
                        bucket: watcher.bucket, key: String(message.subject.dropFirst(watcher.prefixLength)), value: message.payload,
                        revision: message.metadata.streamSequence, created: message.metadata.timestamp, delta: message.metadata.pending,
                        operation: operation)
                    return .entry(entry)
                }
            }
            return nil
        }
    }
}

extension JetStream {
    /// Creates a KV bucket, or binds to it when it already exists with the same configuration.
    /// Throws ``KeyValueError/Code/bucketConfigConflict`` naming the differences when it exists
    /// with another.
    public func createKeyValue(_ config: KeyValueConfig) async throws -> KeyValue {
        try KeyValue.validateBucket(config.bucket)
        guard (1...64).contains(config.history) else {
            throw KeyValueError(.invalidConfig, "history of bucket \(config.bucket) must be between 1 and 64, not \(config.history)")
        }
        let wanted = config.streamConfig
        do {
            let info = try await createStream(wanted)
            return KeyValue(bucket: config.bucket, jetStream: self, allowDirect: info.config.allowDirect ?? false)
        } catch let error as JetStreamAPIError where error.errorCode == .streamNameInUse {
            let existing = try await streamInfo(wanted.name).config
            let differences = Self.differences(wanted: wanted, existing: existing)
            throw KeyValueError(
                .bucketConfigConflict,
                "bucket \(config.bucket) exists with a different configuration: \(differences.isEmpty ? error.errorDescription : differences.joined(separator: ", "))")
        }
    }

    /// Binds to an existing bucket.
    public func keyValue(_ bucket: String) async throws -> KeyValue {
        try KeyValue.validateBucket(bucket)
        let info: StreamInfo
        do {
            info = try await streamInfo("KV_\(bucket)")
        } catch let error as JetStreamAPIError where error.errorCode == .streamNotFound {
            throw KeyValueError(.bucketNotFound, "bucket \(bucket) does not exist")
        }
        guard info.config.subjects?.contains("$KV.\(bucket).>") == true else {
            throw KeyValueError(.bucketNotFound, "stream KV_\(bucket) exists but is not a KV bucket (no $KV.\(bucket).> subject)")
        }
        return KeyValue(bucket: bucket, jetStream: self, allowDirect: info.config.allowDirect ?? false)
    }

    /// Deletes a bucket and everything in it.
    public func deleteKeyValue(_ bucket: String) async throws {
        try KeyValue.validateBucket(bucket)
        do {
            try await deleteStream("KV_\(bucket)")
        } catch let error as JetStreamAPIError where error.errorCode == .streamNotFound {
            throw KeyValueError(.bucketNotFound, "bucket \(bucket) does not exist")
        }
    }

    static func differences(wanted: StreamConfig, existing: StreamConfig) -> [String] {
        var result: [String] = []
        func compare<T: Equatable>(_ name: String, _ a: T?, _ b: T?) {
            if let a, a != b { result.append("\(name) \(b.map { "\($0)" } ?? "unset") (asked for \(a))") }
        }
        compare("history", wanted.maxMessagesPerSubject, existing.maxMessagesPerSubject)
        compare("ttl", wanted.maxAge, existing.maxAge)
        compare("max value size", wanted.maxMessageSize, existing.maxMessageSize)
        compare("max bytes", wanted.maxBytes, existing.maxBytes)
        compare("storage", wanted.storage, existing.storage)
        compare("replicas", wanted.replicas, existing.replicas)
        compare("description", wanted.description, existing.description)
        compare("duplicate window", wanted.duplicateWindow, existing.duplicateWindow)
        compare("allow direct", wanted.allowDirect, existing.allowDirect)
        compare("discard", wanted.discard, existing.discard)
        compare("subject delete marker ttl", wanted.subjectDeleteMarkerTTL, existing.subjectDeleteMarkerTTL)
        return result
    }
}
