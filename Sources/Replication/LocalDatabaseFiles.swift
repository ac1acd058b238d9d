import Foundation
import Logging

/// The files an app's replication leaves next to its database and in the state directory that
/// are not the replica itself: databases set aside because they hold transactions that were
/// never shipped, and temporary files a crash left behind. Blocking file work runs on a
/// dedicated ``IOThread``.
///
/// **Set-aside databases.** When a graceful handover's final flush gives up, or a node that
/// was shipping is fenced, its database may hold committed transactions no other node has. It
/// is renamed (never copied, never deleted) to `<db>.unshipped-<epoch>-<UTC time>`, with its
/// `-wal` and `-shm` renamed alike, so `sqlite3 <db>.unshipped-...` opens it with those
/// transactions, and no later promotion or restore on this node (which moves a replica over
/// `<db>`) can overwrite them. They stay until an operator removes them; while they exist
/// ``setAsideDatabases()`` lists them (shown by `batonctl status`).
///
/// **Leftover temporary files**, removed by ``removeLeftovers()`` when the replica starts (no
/// shipper or applier of this app runs yet): snapshot images `<state_dir>/<app>.snapshot.<id>.tmp`
/// (written by the shipper before an upload), restore downloads
/// `<state_dir>/<app>.replica.db.restore.<id>`, and `<state_dir>/<app>.position.json.tmp` (an
/// interrupted atomic write of the applier's position).
public final class LocalDatabaseFiles: Sendable {
    /// The replication settings whose files these are.
    public let configuration: ReplicationConfiguration
    private let io = IOThread()

    /// The marker in a set-aside database's name.
    public static let setAsideMarker = ".unshipped-"

    /// Creates the helper; nothing happens until a method is called.
    public init(configuration: ReplicationConfiguration) {
        self.configuration = configuration
    }

    /// Removes the temporary files a crash left in the state directory (and the second link to a
    /// database a promotion replaced, next to the database) and returns their paths.
    /// Call it only while no shipper or applier of the app runs.
    public func removeLeftovers() async throws -> [String] {
        let directory = configuration.stateDirectory
        let app = configuration.app
        let replicaName = (configuration.replicaPath as NSString).lastPathComponent
        let replaced = ReplicaPromotion.replacedDatabasePath(configuration.databasePath)
        return try await io.run {
            var removed: [String] = []
            if FileIO.exists(replaced) {
                try FileIO.removeIfExists(replaced)
                removed.append(replaced)
            }
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return removed }
            for name in names.sorted() {
                let snapshotImage = name.hasPrefix("\(app).snapshot.") && name.hasSuffix(".tmp")
                let restoreDownload = name.hasPrefix("\(replicaName).restore.")
                let positionWrite = name == "\(app).position.json.tmp"
                guard snapshotImage || restoreDownload || positionWrite else { continue }
                let path = (directory as NSString).appendingPathComponent(name)
                try FileIO.removeIfExists(path)
                removed.append(path)
            }
            return removed
        }
    }

    /// Renames the database and its `-wal` and `-shm` to `<db>.unshipped-<token>-<UTC time>`
    /// (plus the same suffixes) and fsyncs the directory. Returns the new database path, or nil
    /// when there is no database. Call it only while nothing has the database open for writing
    /// (the backend stopped, no shipper).
    public func setAside(token: UInt64, at date: Date = Date()) async throws -> String? {
        let path = configuration.databasePath
        let formatter = Date.ISO8601FormatStyle(
            dateSeparator: .omitted, dateTimeSeparator: .standard, timeSeparator: .omitted, includingFractionalSeconds: true)
        let target = "\(path)\(Self.setAsideMarker)\(token)-\(formatter.format(date))"
        return try await io.run {
            guard FileIO.exists(path) || FileIO.exists(path + "-wal") else { return nil }
            // Every name is checked before anything moves, so a -wal is never separated from
            // its database; the -wal moves first: a database seen without it would lack the
            // transactions in it.
            let suffixes = ["-wal", "-shm", ""].filter { FileIO.exists(path + $0) }
            for suffix in ["-wal", "-shm", ""] where FileIO.exists(target + suffix) {
                throw ReplicationError(.io, "cannot set \(path) aside: \(target + suffix) already exists")
            }
            for suffix in suffixes { try FileIO.rename(path + suffix, target + suffix) }
            try FileIO.fsyncDirectory(of: path)
            return target
        }
    }

    /// The databases set aside next to the app's database that still exist, oldest first.
    public func setAsideDatabases() async -> [String] {
        let path = configuration.databasePath
        let directory = (path as NSString).deletingLastPathComponent
        let prefix = (path as NSString).lastPathComponent + Self.setAsideMarker
        return (try? await io.run {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            return names.filter { $0.hasPrefix(prefix) && !$0.hasSuffix("-wal") && !$0.hasSuffix("-shm") }
                .sorted { Self.setAsideTime($0) < Self.setAsideTime($1) }
                .map { (directory as NSString).appendingPathComponent($0) }
        }) ?? []
    }

    /// The time part of a set-aside name (sorts chronologically).
    private static func setAsideTime(_ name: String) -> String {
        String(name.split(separator: "-").last ?? "")
    }

    /// Stops the file thread.
    /// `<state_dir>/<app>.handoff.json`: the final marker this node shipped at its last
    /// graceful stepdown, kept across a restart of batond.
    public var handoffPath: String { (configuration.stateDirectory as NSString).appendingPathComponent("\(configuration.app).handoff.json") }

    /// Keeps the final marker this node shipped (atomically, fsynced), so that after a restart
    /// it still makes its replica from its own database — which is the database at that marker
    /// — instead of restoring a snapshot and replaying the stream (chaos finding R2). nil
    /// removes it (the node ships again: its database moves on from the marker).
    public func persistHandoff(_ handoff: HandoffReport?) async throws {
        let path = handoffPath
        let directory = configuration.stateDirectory
        let bytes = try handoff.map { Array(try JSONEncoder().encode($0)) }
        try await io.run {
            guard let bytes else {
                try FileIO.removeIfExists(path)
                return
            }
            try FileIO.makeDirectory(directory)
            try FileIO.writeAtomically(bytes, to: path)
        }
    }

    /// The final marker kept by ``persistHandoff(_:)``, nil when there is none or it cannot be
    /// read (then the replica is made the usual way; the applier checks any marker against the
    /// database's checksum before it adopts the database anyway).
    public func persistedHandoff() async -> HandoffReport? {
        let path = handoffPath
        return try? await io.run {
            guard let data = FileManager.default.contents(atPath: path) else { return nil }
            return try JSONDecoder().decode(HandoffReport.self, from: data)
        }
    }

    public func close() async {
        await io.shutdown()
    }
}
