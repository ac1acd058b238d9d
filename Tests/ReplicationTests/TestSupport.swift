import CSQLite
import Foundation
import NATSTestSupport
import Testing

@testable import Replication

/// A temporary directory removed at deinit.
final class TemporaryDirectory: Sendable {
    let path: String
    init(_ prefix: String = "baton-replication") throws {
        path = try makeTemporaryDirectory(prefix: prefix).path
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
}

/// An app-like SQLite connection in WAL mode (the "backend").
func openAppDatabase(_ path: String, autocheckpoint: Int = 1000) throws -> SQLiteDatabase {
    let database = try SQLiteDatabase(path: path, create: true)
    database.setBusyTimeout(milliseconds: 10_000)
    #expect(try database.scalar("PRAGMA journal_mode=WAL") == "wal")
    try database.execute("PRAGMA wal_autocheckpoint=\(autocheckpoint)")
    return database
}

func readFile(_ path: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// Content of a database by query, for comparing primary and replica.
func logicalDigest(_ database: SQLiteDatabase) throws -> [String] {
    try database.column("SELECT count(*) || ':' || coalesce(sum(length(body)), 0) || ':' || coalesce(sum(id * 7 + length(note)), 0) FROM items")
}

func openImmutable(_ path: String) throws -> SQLiteDatabase {
    try SQLiteDatabase(path: "file:\(path)?immutable=1", readOnly: true)
}

/// The rolling checksum of a plain database file.
func fileChecksum(_ path: String, pageSize: Int) throws -> UInt64 {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw ReplicationError(.io, "cannot open \(path)") }
    defer { close(fd) }
    let size = try FileIO.size(fd, path: path)
    return try FileIO.checksumOfFile(fd, path: path, pageSize: pageSize, pageCount: size / pageSize).value
}
