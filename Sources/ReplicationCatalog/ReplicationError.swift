/// An error raised by the replication module.
///
/// ``code`` says what kind of failure it is (stable, for programs); ``message`` says what
/// happened in words (for operators and logs).
public struct ReplicationError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate let name: String
        public var description: String { name }
        /// SQLite returned an error.
        public static let sqlite = Code(name: "sqlite")
        /// The database is not in WAL mode (the shipper needs `PRAGMA journal_mode=WAL`).
        public static let notWALMode = Code(name: "notWALMode")
        /// A file operation failed.
        public static let io = Code(name: "io")
        /// The `-wal` file's header is not a valid SQLite WAL header.
        public static let invalidWALHeader = Code(name: "invalidWALHeader")
        /// Bytes that should hold a replication record (or chunk) do not.
        public static let malformedRecord = Code(name: "malformedRecord")
        /// JetStream refused a write: another node published since (a newer active node holds
        /// the lease), so this node must stop writing.
        public static let fenced = Code(name: "fenced")
        /// A record's before-checksum does not match the replica, or the after-checksum does not
        /// match what applying produced.
        public static let checksumMismatch = Code(name: "checksumMismatch")
        /// A record's transaction id does not follow the replica's.
        public static let gap = Code(name: "gap")
        /// A chunk arrived where an earlier chunk of its record was expected (a delivery lost
        /// chunks, for example across a reconnect): re-read the record from its first chunk.
        public static let chunkMissing = Code(name: "chunkMissing")
        /// No snapshot is available to restore from.
        public static let noSnapshot = Code(name: "noSnapshot")
        /// `PRAGMA quick_check` reported problems.
        public static let integrityCheckFailed = Code(name: "integrityCheckFailed")
        /// The operation did not finish in time.
        public static let timeout = Code(name: "timeout")
        /// The component was stopped, or was never started.
        public static let notRunning = Code(name: "notRunning")
        /// Promoting would publish older (or empty) data over newer data that the durable
        /// replication record or another node holds; the message names what each node holds.
        public static let newerDataElsewhere = Code(name: "newerDataElsewhere")
        /// The WAL stream is behind this replica (it was deleted, recreated or lost records).
        public static let streamBehind = Code(name: "streamBehind")
        /// A storage limit was hit: the stream's or snapshot bucket's `max_bytes`, or the
        /// server's (or account's) JetStream storage. The message names which.
        public static let storageLimit = Code(name: "storageLimit")
        /// The configuration is not usable.
        public static let invalidConfiguration = Code(name: "invalidConfiguration")
    }

    /// What kind of failure this is.
    public var code: Code
    /// What happened.
    public var message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "replication \(code): \(message)" }
}
