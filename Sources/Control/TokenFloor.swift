import Foundation
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The lowest fencing token this node may still hand out for one app: every token it has been
/// given or has seen is below it.
///
/// The fencing token is a KV revision, that is a stream sequence. A lease bucket that is deleted
/// and created again (by an operator, a lost JetStream store, a restore from backup) starts its
/// sequences at 1 again, so without a floor `BATON_EPOCH` would go backwards and downstream
/// systems that check it (the replication stream among them) would refuse the new active node,
/// or worse, accept a stale one. The floor keeps two numbers:
///
/// - the highest **token** this node was given or saw in a lease record, kept on disk in the
///   node's state directory (written to a temporary file, fsynced, renamed), so it survives a
///   batond restart and a host reboot;
/// - the highest **revision** seen, in memory only: renews raise revisions above the token, and
///   a watch that resumes on a recreated bucket would skip what lies below where it stopped.
///
/// ``LeaseStore`` moves a bucket whose last sequence is below the floor past it (a stream purge
/// with `seq`, see ``LeaseStore/applyFloor()``) before any acquire, so the next token is above
/// every earlier one.
public final class TokenFloor: Sendable {
    /// Where the token floor is kept; nil for a floor kept in memory only (tests).
    public let path: String?
    private let state: Mutex<(token: UInt64, revision: UInt64)>
    /// The token last written to disk (read without waiting for a write in progress).
    private let persisted: Atomic<UInt64>
    /// Held (on a thread-pool thread only) while a write runs, so writes never reorder.
    private let writing = Mutex<Void>(())

    /// A floor kept in memory only, starting at `token`.
    public init(token: UInt64 = 0) {
        self.path = nil
        self.state = Mutex((token, token))
        self.persisted = Atomic(token)
    }

    private init(path: String, token: UInt64) {
        self.path = path
        self.state = Mutex((token, token))
        self.persisted = Atomic(token)
    }

    /// The file that keeps an app's token floor in a node's state directory.
    public static func path(stateDirectory: String, app: String) -> String {
        (stateDirectory as NSString).appendingPathComponent("\(app).lease-floor")
    }

    /// Loads the floor kept at `path` (0 when the file does not exist yet). The file is read on
    /// a thread of the NIO thread pool, never on the cooperative pool.
    public static func load(path: String) async throws -> TokenFloor {
        let token = try await NIOThreadPool.singleton.runIfActive { try Self.read(path) }
        return TokenFloor(path: path, token: token)
    }

    /// The highest token given or seen.
    public var token: UInt64 { state.withLock { $0.token } }

    /// The highest token or revision given or seen: a recreated bucket is moved past it.
    public var highest: UInt64 { state.withLock { max($0.token, $0.revision) } }

    /// Notes a revision seen (a renew, a marker); kept in memory only.
    public func noteRevision(_ revision: UInt64) {
        state.withLock { $0.revision = max($0.revision, revision) }
    }

    /// Raises the token floor to `token` (no-op when it is not higher) and returns once it is on
    /// disk. Throws when it cannot be written: a token that is not durable must not be handed out.
    public func raise(to token: UInt64) async throws {
        let raised = state.withLock { state -> Bool in
            state.revision = max(state.revision, token)
            guard token > state.token else { return false }
            state.token = token
            return true
        }
        guard let path else { return }
        if !raised, persisted.load(ordering: .acquiring) >= token { return }
        try await NIOThreadPool.singleton.runIfActive { [self] in
            try writing.withLock { _ in
                let current = state.withLock { $0.token }
                guard current > persisted.load(ordering: .acquiring) else { return }
                try Self.write(current, to: path)
                persisted.store(current, ordering: .releasing)
            }
        }
    }

    // MARK: - Blocking file I/O (thread pool only)

    static func read(_ path: String) throws -> UInt64 {
        guard let data = FileManager.default.contents(atPath: path) else {
            if FileManager.default.fileExists(atPath: path) { throw TokenFloorError("cannot read \(path)") }
            return 0
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let value = UInt64(text) else { throw TokenFloorError("\(path) does not hold a token (\"\(text.prefix(40))\")") }
        return value
    }

    static func write(_ token: UInt64, to path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw TokenFloorError("cannot create \(directory): \(error)")
        }
        let temporary = "\(path).tmp"
        let bytes = Array("\(token)\n".utf8)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw TokenFloorError("cannot open \(temporary): errno \(errno)") }
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(fd) == 0 else {
            let code = errno
            close(fd)
            throw TokenFloorError("cannot write \(temporary): errno \(code)")
        }
        close(fd)
        guard rename(temporary, path) == 0 else { throw TokenFloorError("cannot rename \(temporary) to \(path): errno \(errno)") }
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            _ = fsync(directoryFD)
            close(directoryFD)
        }
    }
}

/// The token floor could not be read or written.
public struct TokenFloorError: Error, Sendable, Hashable, CustomStringConvertible {
    public var description: String

    /// Creates an error with its reason.
    public init(_ description: String) { self.description = description }
}
