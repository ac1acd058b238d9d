import NIOPosix

/// A dedicated thread for blocking work (SQLite calls, file reads and writes, fsync), so none of
/// it runs on Swift's cooperative pool. Work runs one item at a time, in submission order, which
/// also makes the SQLite connections owned by one `IOThread` safe to use without locks.
final class IOThread: Sendable {
    private let pool: NIOThreadPool

    init() {
        pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
    }

    /// Runs `body` on the thread and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }

    /// Stops the thread after the work already submitted.
    func shutdown() async {
        try? await pool.shutdownGracefully()
    }
}
