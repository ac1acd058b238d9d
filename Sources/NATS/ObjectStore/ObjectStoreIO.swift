import Atomics
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
/// synchronously), each with its own reply subject under one inbox. Any negative or missing
/// acknowledgement fails the next call. Use from one task; call ``close()`` when done.
final class ChunkPublisher {
    private enum Event: Sendable {
        case ack(NATSMessage)
        case tick
    }

    private let client: NATSClient
    private let subject: String
    private let inbox: String
    private let window: Int
    private let timeout: Duration
    private let sid: UInt64
    private let continuation: AsyncStream<Event>.Continuation
    private var events: AsyncStream<Event>.Iterator
    private let waiting: ManagedAtomic<Bool>
    private let ticker: Task<Void, Never>
    private var sent = 0
    private var acknowledged = 0
    private var lastProgress = ContinuousClock.now

    init(jetStream: JetStream, subject: String, window: Int) throws {
        client = jetStream.client
        self.subject = subject
        self.window = max(1, window)
        timeout = jetStream.timeout
        inbox = jetStream.client.newInbox()
        let (stream, continuation) = AsyncStream.makeStream(of: Event.self)
        self.continuation = continuation
        events = stream.makeAsyncIterator()
        sid = try client.subscribe(to: "\(inbox).*") { message in
            continuation.yield(.ack(message))
        }
        // Wakes the waiting reader so a lost acknowledgement turns into a timeout; ticks only
        // while someone waits, so none pile up while the producer is slow.
        let waiting = ManagedAtomic<Bool>(false)
        self.waiting = waiting
        let interval = Duration.nanoseconds(max(jetStream.timeout.nanoseconds / 10, 10_000_000))
        ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                if waiting.load(ordering: .relaxed) { continuation.yield(.tick) }
            }
        }
    }

    deinit {
        close()
    }

    /// Publishes the next chunk, first waiting for acknowledgements when `window` are pending.
    func send(_ chunk: ByteBuffer) async throws {
        while sent - acknowledged >= window {
            try await awaitAcknowledgement()
        }
        if sent == acknowledged { lastProgress = .now }
        try await client.publish(subject, payload: chunk, replyTo: "\(inbox).\(sent)")
        sent += 1
    }

    /// Waits until every chunk sent so far is acknowledged.
    func finish() async throws {
        while acknowledged < sent {
            try await awaitAcknowledgement()
        }
    }

    /// How many chunks were sent.
    var count: Int { sent }

    func close() {
        ticker.cancel()
        try? client.unsubscribe(sid: sid, after: nil)
        continuation.finish()
    }

    private func awaitAcknowledgement() async throws {
        waiting.store(true, ordering: .relaxed)
        defer { waiting.store(false, ordering: .relaxed) }
        while true {
            try Task.checkCancellation()
            guard let event = await events.next() else {
                try Task.checkCancellation()
                throw NATSError(.connectionClosed, "the acknowledgements of chunks published to \(subject) stopped (subscription closed)")
            }
            switch event {
            case .tick:
                if ContinuousClock.now - lastProgress > timeout {
                    throw NATSError(.timeout, "no acknowledgement for chunk \(acknowledged + 1) of \(subject) within \(timeout)")
                }
            case .ack(let message):
                if message.status == 503 {
                    throw JetStreamError(.noStreamForSubject, "no stream captures subject \"\(subject)\"")
                }
                _ = try JetStream.decodeAPIResponse(message.payload, as: PubAck.self, subject: subject)
                acknowledged += 1
                lastProgress = .now
                return
            }
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
