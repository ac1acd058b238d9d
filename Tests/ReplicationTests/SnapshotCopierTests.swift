import Foundation
import Logging
import Testing

@testable import Replication

/// The snapshot plan scans the WAL in windows and keeps frame offsets, not page images (issue 10
/// item 3: memory does not grow with the WAL).
@Suite struct SnapshotCopierTests {
    typealias App = ReplicationIntegrationTests.App

    /// A WAL several times the scan window, with one transaction larger than the window and
    /// pages written several times: the image equals the database.
    @Test func aWALLargerThanTheScanWindowIsCopiedExactly() async throws {
        let directory = try TemporaryDirectory()
        let app = try await App(path: directory.file("a/app.db"))
        try await app.run("PRAGMA wal_autocheckpoint=0")
        let window = SnapshotCopier.scanWindowBytes
        // One transaction of ~1.5 windows, then small ones that rewrite the same pages.
        try await app.run("INSERT INTO items(note, body) VALUES ('big', randomblob(\(window + window / 2)))")
        for index in 0..<16 {
            try await app.run("INSERT INTO items(note, body) VALUES ('n\(index)', randomblob(200000)); UPDATE items SET note = note || '+' WHERE id = 1")
        }
        let walBytes = try FileManager.default.attributesOfItem(atPath: app.path + "-wal")[.size] as? NSNumber
        #expect((walBytes?.intValue ?? 0) > 2 * window, "the WAL holds \(walBytes?.intValue ?? 0) bytes")
        let expected = try await app.digest()

        let thread = IOThread()
        let path = app.path
        let snapshot = directory.file("snapshot.db")
        let (plan, table) = try await thread.run { () throws -> (SnapshotCopier.Plan, DatabaseChecksum) in
            let database = try SQLiteDatabase(path: path)
            #expect(try database.executeUnlessBusy("BEGIN IMMEDIATE"))
            defer { database.endTransaction() }
            let plan = try SnapshotCopier.plan(database: database, walPath: path + "-wal", defaultPageSize: 4096)
            return (plan, try SnapshotCopier.write(plan, database: database, to: snapshot))
        }
        await thread.shutdown()
        #expect(plan.overlay.count > 0 && plan.overlay.count == Set(plan.overlay.values).count)
        #expect(plan.endOffset == walBytes?.intValue, "the plan stopped at \(plan.endOffset)")
        #expect(try logicalDigest(openImmutable(snapshot)) == expected)
        #expect(try fileChecksum(snapshot, pageSize: 4096) == table.value)
        try await app.checkpointTruncate()
        #expect(try fileChecksum(app.path, pageSize: 4096) == table.value)
        await app.close()
    }
}
