/// Why a fence keeper could not be started, for either backend. The ``message`` is meant for
/// operators as is: it names the executable and the reason. A process backend passes it on as
/// a ``ProcessBackendError`` with the same code and message; the systemd backend reports it as
/// it is.
public struct FenceKeeperError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// The `baton-fence-keeper` executable is missing or not executable.
        public static let keeperNotFound = Code("keeperNotFound")
        /// The keeper could not be spawned or set up (pipes, spawn, NIO attachment).
        public static let keeperSpawnFailed = Code("keeperSpawnFailed")

        public var description: String { name }
    }

    /// The kind of failure.
    public var code: Code
    /// What happened, for operators.
    public var message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

extension ProcessBackendError {
    /// A keeper failure as a process backend reports it: same kind, same message.
    public init(_ keeper: FenceKeeperError) {
        self.init(keeper.code == .keeperNotFound ? .keeperNotFound : .keeperSpawnFailed, keeper.message)
    }
}
