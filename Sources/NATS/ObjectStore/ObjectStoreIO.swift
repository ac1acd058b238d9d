import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Pipelined chunk publishing

/// Publishes an object's chunks in order with up to `window` acknowledgements outstanding, so a
/// large object is not limited to one chunk per round trip.
///
/// Every chunk is written to the connection in call order (the client enqueues publishes
/// synchronously), each with its own reply subject under one inbox; the answers are counted as
/// they arrive. A negative answer, or none for `timeout` while some are outstanding, fails the
/// next ``send(_:)`` or ``finish()``. Call ``send(_:)`` and ``finish()`` from one task; call
/// ``close()`` when done.
final class ChunkPublisher: Sendable {
    private struct Waiter {
        var target: Int
        /// Whether a negative answer ends the wait (not when settling before a purge).
        var endsOnFailure: Bool
        var continuation: CheckedContinuation<Void, Never>
    }

    private struct State {
        var sent = 0
        var answered = 0
        var failure: (any Error)?
        var lastProgress = NIODeadline.now()
        var waiter: Waiter?
        var timedOut = false
        var closed = false

        mutating func takeWaiter(if condition: Bool) -> Waiter? {
            guard condition, let waiter else { return nil }
            self.waiter = nil
            return waiter
        }
    }

    private let client: NATSClient
    private let subject: String
    private let inbox: String
    private let window: Int
    private let timeout: Duration
    private let sid: UInt64
    private let state: NIOLockedValueBox<State>
    private let ticker: Task<Void, Never>

    init(jetStream: JetStream, subject: String, window: Int) throws {
        client = jetStream.client
        self.subject = subject
        self.window = max(1, window)
        let timeout = jetStream.timeout
        self.timeout = timeout
        inbox = jetStream.client.newInbox()
        let state = NIOLockedValueBox(State())
        self.state = state
        sid = try client.subscribe(to: "\(inbox).*") { message in
            // On the connection's event loop: count the answer and wake a waiter it satisfies.
            let problem = Self.problem(in: message, subject: subject)
            let waiter = state.withLockedValue { state -> Waiter? in
                state.answered += 1
                state.lastProgress = .now()
                if state.failure == nil, let problem { state.failure = problem }
                guard let waiter = state.waiter else { return nil }
                return state.takeWaiter(if: state.answered >= waiter.target || (problem != nil && waiter.endsOnFailure))
            }
            waiter?.continuation.resume()
        }
        // Turns a silence while answers are outstanding into a timeout.
        let limit = TimeAmount.nanoseconds(timeout.nanoseconds)
        let interval = Duration.nanoseconds(max(timeout.nanoseconds / 10, 10_000_000))
        ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                let waiter = state.withLockedValue { state -> Waiter? in
                    guard state.waiter != nil, NIODeadline.now() - state.lastProgress > limit else { return nil }
                    state.timedOut = true
                    return state.takeWaiter(if: true)
                }
                waiter?.continuation.resume()
            }
        }
    }

    deinit {
        close()
    }

    private static func problem(in message: NATSMessage, subject: String) -> (any Error)? {
        if message.status == 503 {
            return JetStreamError(.noStreamForSubject, "no stream captures subject \"\(subject)\"")
        }
        do {
            _ = try JetStream.decodeAPIResponse(message.payload, as: PubAck.self, subject: subject)
            return nil
        } catch {
            return error
        }
    }

    /// How many chunks were sent.
    var count: Int { state.withLockedValue { $0.sent } }

    /// Publishes the next chunk, first waiting for answers when `window` are outstanding.
    func send(_ chunk: ByteBuffer) async throws {
        let sent = state.withLockedValue { $0.sent }
        await wait(untilAnswered: sent - window + 1, honouringCancellation: true)
        try check()
        let index = state.withLockedValue { state -> Int in
            if state.answered >= state.sent { state.lastProgress = .now() }
            state.sent += 1
            return state.sent - 1
        }
        do {
            try await client.publish(subject, payload: chunk, replyTo: "\(inbox).\(index)")
        } catch {
            state.withLockedValue { $0.sent -= 1 }
            throw error
        }
    }

    /// Waits until every chunk sent so far is acknowledged.
    func finish() async throws {
        await wait(untilAnswered: count, honouringCancellation: true)
        try check()
    }

    /// Waits, ignoring cancellation, until every chunk sent has been answered (or answers stop
    /// for `timeout`), so that a purge after a failure finds every chunk already stored.
    func settle() async {
        await wait(untilAnswered: count, honouringCancellation: false)
    }

    func close() {
        ticker.cancel()
        try? client.unsubscribe(sid: sid, after: nil)
        let waiter = state.withLockedValue { state -> Waiter? in
            state.closed = true
            return state.takeWaiter(if: true)
        }
        waiter?.continuation.resume()
    }

    private func check() throws {
        let (failure, timedOut, answered) = state.withLockedValue { ($0.failure, $0.timedOut, $0.answered) }
        if let failure { throw failure }
        if timedOut {
            throw NATSError(.timeout, "no acknowledgement for chunk \(answered + 1) of \(subject) within \(timeout)")
        }
        try Task.checkCancellation()
    }

    /// Waits until `target` chunks are answered, answers stop for `timeout`, or the publisher
    /// is closed; with `honouringCancellation`, also until a negative answer or cancellation.
    private func wait(untilAnswered target: Int, honouringCancellation: Bool) async {
        guard target > 0 else { return }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLockedValue { state -> Bool in
                    if state.answered >= target || state.timedOut || state.closed
                        || (honouringCancellation && (state.failure != nil || Task.isCancelled))
                    {
                        return true
                    }
                    state.waiter = Waiter(target: target, endsOnFailure: honouringCancellation, continuation: continuation)
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            guard honouringCancellation else { return }
            state.withLockedValue { $0.takeWaiter(if: true) }?.continuation.resume()
        }
    }
}

// MARK: - Re-chunking

/// Cuts an arbitrary sequence of buffers into chunks of exactly `chunkSize` bytes (the last may
/// be shorter), copying only the pieces that straddle a chunk boundary.
struct Rechunker {
    let chunkSize: Int
    private var carry = ByteBuffer()

    init(chunkSize: Int) {
        self.chunkSize = chunkSize
    }

    /// Feeds `piece`, calling `emit` for every complete chunk.
    mutating func feed(_ piece: ByteBuffer, _ emit: (ByteBuffer) async throws -> Void) async throws {
        var piece = piece
        if carry.readableBytes > 0 {
            let missing = chunkSize - carry.readableBytes
            guard piece.readableBytes >= missing else {
                carry.writeBuffer(&piece)
                return
            }
            var head = piece.readSlice(length: missing)!
            carry.writeBuffer(&head)
            let chunk = carry
            carry = ByteBuffer()
            try await emit(chunk)
        }
        while piece.readableBytes >= chunkSize {
            try await emit(piece.readSlice(length: chunkSize)!)
        }
        if piece.readableBytes > 0 {
            carry.reserveCapacity(chunkSize)
            carry.writeBuffer(&piece)
        }
    }

    /// Emits what is left.
    mutating func finish(_ emit: (ByteBuffer) async throws -> Void) async throws {
        if carry.readableBytes > 0 {
            let chunk = carry
            carry = ByteBuffer()
            try await emit(chunk)
        }
    }
}

// MARK: - Reading an ordered consumer to its end

/// Notes when the reader started waiting for the next event, so a watchdog can tell a stalled
/// consumer from a slow reader.
private final class StallWatch: Sendable {
    private struct State {
        var waitingSince: NIODeadline?
        var stalled = false
    }

    private let state = NIOLockedValueBox(State())

    func beginWait() { state.withLockedValue { $0.waitingSince = .now() } }
    func endWait() { state.withLockedValue { $0.waitingSince = nil } }
    var stalled: Bool { state.withLockedValue { $0.stalled } }

    /// Marks the watch stalled when the reader has waited longer than `limit`.
    func check(limit: TimeAmount) -> Bool {
        state.withLockedValue { state in
            if let since = state.waitingSince, NIODeadline.now() - since > limit { state.stalled = true }
            return state.stalled
        }
    }
}

extension JetStream {
    /// Runs an ordered consumer on `stream` until it has delivered every message that was
    /// pending when it started, calling `onMessage` for each, then removes it.
    ///
    /// Throws ``ObjectStoreError/Code/readStalled`` when no message arrives for `stallTimeout`
    /// while more are expected (the messages were purged under the reader, or the server went
    /// away for longer than that).
    func readToEnd(
        stream: String, filter: String, deliverPolicy: DeliverPolicy, stallTimeout: Duration, what: String,
        _ onMessage: (JetStreamMessage) async throws -> Void
    ) async throws {
        let core = try await OrderedConsumerCore.start(
            jetStream: self, stream: stream,
            options: OrderedConsumerOptions(filterSubject: filter, deliverPolicy: deliverPolicy, idleHeartbeat: .seconds(1)))
        let watch = StallWatch()
        let limit = TimeAmount.nanoseconds(stallTimeout.nanoseconds)
        let watchdog = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                if watch.check(limit: limit) {
                    await core.stop()
                    return
                }
            }
        }
        var events = core.makeEventIterator()
        do {
            reading: while true {
                watch.beginWait()
                let event = try await events.next()
                watch.endWait()
                switch event {
                case nil:
                    if watch.stalled {
                        throw ObjectStoreError(.readStalled, "\(what): nothing arrived for \(stallTimeout) before the end")
                    }
                    try Task.checkCancellation()
                    throw JetStreamError(.consumerGone, "\(what): the consumer ended before the end")
                case .caughtUp?:
                    break reading
                case .message(let message)?:
                    try await onMessage(message)
                }
            }
        } catch {
            watchdog.cancel()
            await core.stop()
            throw error
        }
        watchdog.cancel()
        await core.stop()
    }
}

// MARK: - Reading an object's chunks with bounded memory

extension JetStream {
    /// Bytes of chunks in flight to the reader of an object: one pull request's `max_bytes`.
    static let objectReadMaxBytes = 4 * 1024 * 1024

    /// Reads every message on `filter` that the stream holds when the read starts, in stream
    /// order, with an ephemeral pull consumer (`ack_policy: none`), calling `onMessage` for each,
    /// then removes the consumer. The end is the message with no more pending.
    ///
    /// Each pull request is bounded by ``objectReadMaxBytes`` (raised to one max_payload
    /// message when that is larger) and the next is sent only after `onMessage` took the
    /// batch, so a reader slower than the network holds at most one batch: a push consumer's
    /// flow control lets the server run up to 32 MiB ahead. A consumer-sequence gap (messages
    /// lost with a connection) or a pull request that brought nothing recreates the consumer
    /// after the last message read. Throws ``ObjectStoreError/Code/readStalled`` when nothing
    /// arrives for `stallTimeout` (the messages were purged under the reader, or the server
    /// went away for longer than that).
    func readPulled(
        stream: String, filter: String, stallTimeout: Duration, what: String, _ onMessage: (JetStreamMessage) async throws -> Void
    ) async throws {
        let maxBytes = max(Self.objectReadMaxBytes, (client.serverInfo?.maxPayload ?? 1024 * 1024) + 4096)
        var consumer: PullConsumer?
        var lastConsumerSequence: UInt64 = 0
        var nextStreamSequence: UInt64?
        var done = false
        var lastProgress = ContinuousClock.now
        func remove(_ consumer: PullConsumer?) async {
            guard let consumer else { return }
            try? await deleteConsumer(stream: stream, name: consumer.name)
        }
        do {
            while !done {
                if consumer == nil {
                    var config = ConsumerConfig(
                        name: "objread\(NUID.next())", deliverPolicy: nextStreamSequence.map { .byStartSequence($0) } ?? .all, ackPolicy: .none,
                        filterSubject: filter)
                    config.memoryStorage = true
                    config.replicas = 1
                    config.inactiveThreshold = .seconds(60)
                    let info = try await createConsumer(stream: stream, config: config)
                    consumer = PullConsumer(jetStream: self, stream: stream, name: info.name)
                    lastConsumerSequence = 0
                    if nextStreamSequence == nil, info.numPending == 0 { break }
                }
                // The object's chunks are all stored before its meta: take what is there
                // (`no_wait`) instead of waiting out an expiry for a last, partial batch.
                let messages = try await consumer!.fetch(batch: 256, maxBytes: maxBytes, noWait: true)
                var restart = messages.isEmpty
                for message in messages {
                    guard message.metadata.consumerSequence == lastConsumerSequence + 1 else {
                        restart = true
                        break
                    }
                    lastConsumerSequence = message.metadata.consumerSequence
                    try await onMessage(message)
                    nextStreamSequence = message.metadata.streamSequence + 1
                    lastProgress = .now
                    if message.metadata.pending == 0 {
                        done = true
                        break
                    }
                }
                if restart, !done {
                    if ContinuousClock.now - lastProgress > stallTimeout {
                        throw ObjectStoreError(.readStalled, "\(what): nothing arrived for \(stallTimeout) before the end")
                    }
                    let old = consumer
                    consumer = nil
                    await remove(old)
                }
            }
        } catch {
            await remove(consumer)
            throw error
        }
        await remove(consumer)
    }
}

// MARK: - Files

/// Blocking file operations, run on NIO's shared thread pool so they never block the
/// cooperative executor.
enum ObjectFileIO {
    static func failure(_ operation: String, _ path: String, _ code: Int32 = errno) -> ObjectStoreError {
        ObjectStoreError(.fileError, "\(operation) \(path): \(String(cString: strerror(code)))")
    }

    static func openForReading(_ path: String) async throws -> Int32 {
        try await NIOThreadPool.singleton.runIfActive {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw ObjectFileIO.failure("cannot open", path) }
            return fd
        }
    }

    /// Reads up to `count` bytes (fewer only at the end of the file).
    static func readChunk(_ fd: Int32, count: Int, path: String) async throws -> ByteBuffer {
        try await NIOThreadPool.singleton.runIfActive {
            var buffer = ByteBufferAllocator().buffer(capacity: count)
            while buffer.readableBytes < count {
                let wanted = count - buffer.readableBytes
                var code: Int32 = 0
                let got = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: wanted) { pointer -> Int in
                    while true {
                        let n = read(fd, pointer.baseAddress!, wanted)
                        if n >= 0 { return n }
                        if errno != EINTR {
                            code = errno
                            return 0
                        }
                    }
                }
                if code != 0 { throw ObjectFileIO.failure("cannot read", path, code) }
                if got == 0 { break }
            }
            return buffer
        }
    }

    static func createForWriting(_ path: String) async throws -> Int32 {
        try await NIOThreadPool.singleton.runIfActive {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw ObjectFileIO.failure("cannot create", path) }
            return fd
        }
    }

    static func writeAll(_ fd: Int32, _ buffer: ByteBuffer, path: String) async throws {
        try await NIOThreadPool.singleton.runIfActive {
            try buffer.withUnsafeReadableBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                    if n < 0, errno == EINTR { continue }
                    guard n > 0 else { throw ObjectFileIO.failure("cannot write", path) }
                    offset += n
                }
            }
        }
    }

    /// Flushes to disk, closes, and renames `temporary` to `path`.
    static func commit(_ fd: Int32, temporary: String, to path: String) async throws {
        try await NIOThreadPool.singleton.runIfActive {
            guard fsync(fd) == 0 else {
                let error = ObjectFileIO.failure("cannot sync", temporary)
                _ = close(fd)
                _ = unlink(temporary)
                throw error
            }
            _ = close(fd)
            guard rename(temporary, path) == 0 else {
                let error = ObjectFileIO.failure("cannot rename \(temporary) to", path)
                _ = unlink(temporary)
                throw error
            }
        }
    }

    /// Closes and removes a file that will not be committed.
    static func discard(_ fd: Int32, temporary: String) async {
        _ = try? await NIOThreadPool.singleton.runIfActive {
            _ = close(fd)
            _ = unlink(temporary)
        }
    }

    static func closeFile(_ fd: Int32) async {
        _ = try? await NIOThreadPool.singleton.runIfActive { _ = close(fd) }
    }
}

/// A file's contents as a sequence of buffers of `chunkSize` bytes, read on the thread pool.
struct FileChunks: AsyncSequence {
    typealias Element = ByteBuffer
    let fd: Int32
    let path: String
    let chunkSize: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        let fd: Int32
        let path: String
        let chunkSize: Int
        var done = false

        mutating func next() async throws -> ByteBuffer? {
            guard !done else { return nil }
            let buffer = try await ObjectFileIO.readChunk(fd, count: chunkSize, path: path)
            if buffer.readableBytes < chunkSize { done = true }
            return buffer.readableBytes > 0 ? buffer : nil
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(fd: fd, path: path, chunkSize: chunkSize)
    }
}
