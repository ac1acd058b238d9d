/// Why a process backend could not do what was asked. The ``message`` is meant for operators
/// as is: it names the command, path, user or keeper concerned.
public struct ProcessBackendError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure, for code that reacts differently to each.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// The `baton-fence-keeper` executable is missing or not executable.
        public static let keeperNotFound = Code("keeperNotFound")
        /// The keeper could not be spawned or set up.
        public static let keeperSpawnFailed = Code("keeperSpawnFailed")
        /// The keeper exited while a request was outstanding.
        public static let keeperExited = Code("keeperExited")
        /// `start` before `arm`: a backend only runs while a fence deadline is armed.
        public static let notArmed = Code("notArmed")
        /// The keeper could not spawn the backend (command not found, permission denied, unknown
        /// user, ...).
        public static let startFailed = Code("startFailed")
        /// A backend already runs under another token, or a start is in progress.
        public static let busy = Code("busy")

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
