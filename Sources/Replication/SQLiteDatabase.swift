import CSQLite
import Foundation

/// A thin SQLite connection. Not thread-safe by itself: every instance is owned by one
/// ``IOThread`` and only touched from its thread (hence `@unchecked Sendable`, so it can be
/// captured by the closures that run there).
final class SQLiteDatabase: @unchecked Sendable {
    let handle: OpaquePointer
    let path: String

    /// Opens (or creates, with `create`) the database at `path`.
    init(path: String, readOnly: Bool = false, create: Bool = false) throws {
        var db: OpaquePointer?
        var flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI
        flags |= readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE
        if create { flags |= SQLITE_OPEN_CREATE }
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            if let db { sqlite3_close_v2(db) }
            throw ReplicationError(.sqlite, "cannot open \(path): \(message)")
        }
        handle = db
        self.path = path
        sqlite3_extended_result_codes(db, 1)
    }

    deinit { sqlite3_close_v2(handle) }

    var errorMessage: String { String(cString: sqlite3_errmsg(handle)) }

    func error(_ what: String, _ rc: Int32) -> ReplicationError {
        ReplicationError(.sqlite, "\(what) on \(path): \(errorMessage) (code \(rc))")
    }

    /// Milliseconds SQLite retries a locked database before returning `SQLITE_BUSY`.
    func setBusyTimeout(milliseconds: Int32) { sqlite3_busy_timeout(handle, milliseconds) }

    /// Runs statements that return no rows.
    func execute(_ sql: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? errorMessage
            sqlite3_free(message)
            throw ReplicationError(.sqlite, "\(sql) on \(path): \(text) (code \(rc))")
        }
    }

    /// Like ``execute(_:)`` but reports `SQLITE_BUSY` as `false` instead of throwing.
    func executeUnlessBusy(_ sql: String) throws -> Bool {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        if rc == SQLITE_OK { return true }
        if rc & 0xff == SQLITE_BUSY { return false }
        throw error(sql, rc)
    }

    /// Runs a query and returns the text of the first column of every row.
    func column(_ sql: String) throws -> [String] {
        var statement: OpaquePointer?
        let prepared = sqlite3_prepare_v2(handle, sql, -1, &statement, nil)
        guard prepared == SQLITE_OK, let statement else { throw error("prepare \(sql)", prepared) }
        defer { sqlite3_finalize(statement) }
        var rows: [String] = []
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw error(sql, rc) }
            rows.append(sqlite3_column_text(statement, 0).map { String(cString: $0) } ?? "")
        }
        return rows
    }

    /// The first column of the first row, as text.
    func scalar(_ sql: String) throws -> String? { try column(sql).first }

    /// Begins a read transaction and keeps it open (a statement must read the database for
    /// SQLite to take the read lock; `BEGIN` alone does not).
    func beginReadTransaction() throws {
        try execute("BEGIN DEFERRED")
        _ = try scalar("SELECT count(*) FROM sqlite_schema")
    }

    /// Ends whatever transaction is open.
    func endTransaction() {
        if sqlite3_get_autocommit(handle) == 0 { sqlite3_exec(handle, "ROLLBACK", nil, nil, nil) }
    }

    /// Runs a PASSIVE checkpoint: copies WAL frames into the database file up to what every
    /// reader allows, never waiting and never blocking writers.
    func checkpointPassive() throws -> (walFrames: Int32, checkpointedFrames: Int32) {
        var log: Int32 = 0
        var done: Int32 = 0
        let rc = sqlite3_wal_checkpoint_v2(handle, "main", SQLITE_CHECKPOINT_PASSIVE, &log, &done)
        if rc != SQLITE_OK, rc & 0xff != SQLITE_BUSY { throw error("wal_checkpoint(PASSIVE)", rc) }
        return (log, done)
    }

    /// Keeps the `-wal` file when this connection closes last (`SQLITE_FCNTL_PERSIST_WAL`), so
    /// closing the shipper never truncates or deletes a WAL it has not read.
    func persistWAL() throws {
        var on: Int32 = 1
        let rc = sqlite3_file_control(handle, "main", SQLITE_FCNTL_PERSIST_WAL, &on)
        guard rc == SQLITE_OK else { throw error("SQLITE_FCNTL_PERSIST_WAL", rc) }
    }

    /// The database file as SQLite opened it. Reading through it uses SQLite's own descriptor,
    /// so no descriptor on the database file is ever opened or closed behind SQLite's back
    /// (closing one would drop every POSIX lock this process holds on the file).
    private func mainFile() throws -> UnsafeMutablePointer<sqlite3_file> {
        var file: UnsafeMutablePointer<sqlite3_file>?
        let rc = sqlite3_file_control(handle, "main", SQLITE_FCNTL_FILE_POINTER, &file)
        guard rc == SQLITE_OK, let file, file.pointee.pMethods != nil else { throw error("SQLITE_FCNTL_FILE_POINTER", rc) }
        return file
    }

    /// The database file's size in bytes, through SQLite's descriptor.
    func mainFileSize() throws -> Int64 {
        let file = try mainFile()
        var size: sqlite3_int64 = 0
        let rc = file.pointee.pMethods.pointee.xFileSize(file, &size)
        guard rc == SQLITE_OK else { throw error("xFileSize", rc) }
        return size
    }

    /// Reads `count` bytes at `offset` of the database file through SQLite's descriptor (a
    /// short read is zero-filled, as SQLite does).
    func readMainFile(offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws {
        let file = try mainFile()
        let rc = file.pointee.pMethods.pointee.xRead(file, buffer.baseAddress, Int32(buffer.count), offset)
        guard rc == SQLITE_OK || rc == (SQLITE_IOERR | (2 << 8)) else { throw error("xRead at \(offset)", rc) }
    }
}
