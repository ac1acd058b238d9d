import Foundation
import NATSTestSupport
import Replication
import Testing

/// The files next to the replica: crash leftovers removed at start, databases with unshipped
/// transactions set aside (never overwritten) and listed. Real files, real SQLite.
@Suite("LocalDatabaseFiles: crash leftovers and set-aside databases")
struct LocalDatabaseFilesTests {
    private static func configuration(_ directory: URL, app: String = "ledger") -> ReplicationConfiguration {
        ReplicationConfiguration(
            cluster: "unit", app: app, nodeID: "node-a", databasePath: directory.appendingPathComponent("data/app.db").path,
            stateDirectory: directory.appendingPathComponent("state").path)
    }

    private static func touch(_ path: String, _ text: String = "x") throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: false, encoding: .utf8)
    }

    @Test func removesOnlyThisAppsTemporaryFiles() async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-local-files")
        defer { try? FileManager.default.removeItem(at: directory) }
        let configuration = Self.configuration(directory)
        let state = configuration.stateDirectory
        let leftovers = [
            "\(state)/ledger.snapshot.ABC123.tmp", "\(state)/ledger.replica.db.restore.XYZ", "\(state)/ledger.position.json.tmp",
            configuration.databasePath + ".baton-replaced",
        ]
        let kept = [
            "\(state)/ledger.replica.db", "\(state)/ledger.position.json", "\(state)/ledger-two.snapshot.ABC.tmp",
            "\(state)/other.snapshot.ABC.tmp", configuration.databasePath,
        ]
        for path in leftovers + kept { try Self.touch(path) }
        let files = LocalDatabaseFiles(configuration: configuration)
        let removed = try await files.removeLeftovers()
        #expect(Set(removed) == Set(leftovers))
        #expect(leftovers.allSatisfy { !FileManager.default.fileExists(atPath: $0) })
        #expect(kept.allSatisfy { FileManager.default.fileExists(atPath: $0) })
        #expect(try await files.removeLeftovers().isEmpty)
        await files.close()
    }

    @Test func setsTheDatabaseAndItsWALAsideTogetherAndListsIt() async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-local-files")
        defer { try? FileManager.default.removeItem(at: directory) }
        let configuration = Self.configuration(directory)
        let database = configuration.databasePath
        try FileManager.default.createDirectory(atPath: (database as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        // A WAL database whose last commit is only in the -wal: no checkpoint, no clean close.
        let script = """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1], isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute("CREATE TABLE t (v TEXT)")
            db.execute("INSERT INTO t VALUES ('unshipped')")
            import os
            os._exit(0)  # no checkpoint at close: the row stays in the -wal
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", script, database]
        try process.run()
        while process.isRunning { try await Task.sleep(for: .milliseconds(10)) }
        #expect(process.terminationStatus == 0)
        #expect(FileManager.default.fileExists(atPath: database + "-wal"))

        let files = LocalDatabaseFiles(configuration: configuration)
        #expect(await files.setAsideDatabases().isEmpty)
        let at = Date(timeIntervalSince1970: 1_780_000_000.25)
        let aside = try #require(try await files.setAside(token: 42, at: at))
        #expect(aside == database + ".unshipped-42-20260528T202640.250Z")
        #expect(!FileManager.default.fileExists(atPath: database) && !FileManager.default.fileExists(atPath: database + "-wal"))
        #expect(FileManager.default.fileExists(atPath: aside + "-wal"))
        #expect(await files.setAsideDatabases() == [aside])

        // The set-aside copy opens with the row that was only in the -wal.
        let read = Process()
        let output = Pipe()
        read.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        read.arguments = ["-c", "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT v FROM t').fetchone()[0])", aside]
        read.standardOutput = output
        try read.run()
        while read.isRunning { try await Task.sleep(for: .milliseconds(10)) }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(text == "unshipped\n")

        // Nothing left to set aside; a name already taken is refused, never overwritten.
        #expect(try await files.setAside(token: 43, at: at) == nil)
        try Self.touch(database)
        try Self.touch(database + "-wal")
        try FileManager.default.removeItem(atPath: aside)
        try Self.touch(aside + "-shm")
        await #expect(throws: ReplicationError.self) { try await files.setAside(token: 42, at: at) }
        // Nothing was moved: the -wal is not separated from its database.
        #expect(FileManager.default.fileExists(atPath: database) && FileManager.default.fileExists(atPath: database + "-wal"))
        #expect(!FileManager.default.fileExists(atPath: aside) && !FileManager.default.fileExists(atPath: aside + "-wal"))
        // Removing the file acknowledges it.
        #expect(await files.setAsideDatabases().isEmpty)
        await files.close()
    }
}
