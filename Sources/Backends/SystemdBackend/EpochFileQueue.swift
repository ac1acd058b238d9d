import NIOCore
import NIOPosix
import Systemd

/// Writes and removes epoch files off the cooperative pool, in the order they were asked for.
///
/// Each call enqueues its file operation at once, on the caller's executor (no suspension
/// before that), to one thread shared by every systemd backend of the process; the thread runs
/// them one at a time, first asked first done. So a removal asked for after a write (a stop or
/// fence after a start decided to write) always wins, even though the caller suspends while the
/// file system call runs; and "remove the epoch file, then stop the unit" holds as long as the
/// caller awaits the removal's ``Pending/value()`` before stopping the unit.
struct EpochFileQueue: Sendable {
    /// An enqueued file operation.
    struct Pending: Sendable {
        fileprivate let future: EventLoopFuture<Void>

        /// Waits until the operation ran; throws what it threw (a ``SystemdError`` naming the
        /// file and the operation).
        func value() async throws {
            try await future.get()
        }
    }

    /// The one thread of every queue in the process (started on first use; it blocks only in
    /// small file system calls on a tmpfs).
    private static let sharedThread: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        return pool
    }()

    private let thread: NIOThreadPool
    private let eventLoop: any EventLoop

    /// A queue on the process's epoch-file thread.
    init(eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.thread = Self.sharedThread
        self.eventLoop = eventLoopGroup.any()
    }

    /// Enqueues writing `BATON_EPOCH=<epoch>` to `path` (atomically, creating its directory).
    func write(epoch: UInt64, to path: String) -> Pending {
        Pending(future: thread.runIfActive(eventLoop: eventLoop) { try EpochFile.write(epoch: epoch, to: path) })
    }

    /// Enqueues removing `path` (a missing file is not an error).
    func remove(at path: String) -> Pending {
        Pending(future: thread.runIfActive(eventLoop: eventLoop) { try EpochFile.remove(at: path) })
    }
}
