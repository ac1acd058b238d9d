import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Blocking POSIX file helpers. Call them only on an ``IOThread``.
enum FileIO {
    static func failure(_ operation: String, _ path: String, _ code: Int32 = errno) -> ReplicationError {
        ReplicationError(.io, "\(operation) \(path): \(String(cString: strerror(code)))")
    }

    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o644) throws -> Int32 {
        let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
        guard fd >= 0 else { throw failure("cannot open", path) }
        return fd
    }

    /// Opens for reading; nil when the file does not exist.
    static func openIfExists(_ path: String) throws -> Int32? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw failure("cannot open", path)
        }
        return fd
    }

    static func size(_ fd: Int32, path: String) throws -> Int {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw failure("cannot stat", path) }
        return Int(info.st_size)
    }

    /// Reads up to `count` bytes at `offset` (fewer only at the end of the file).
    static func pread(_ fd: Int32, count: Int, offset: Int, path: String) throws -> [UInt8] {
        guard count > 0 else { return [] }
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        var code: Int32 = 0
        buffer.withUnsafeMutableBytes { raw in
            while done < count {
                let n = Glibc.pread(fd, raw.baseAddress! + done, count - done, off_t(offset + done))
                if n < 0 {
                    if errno == EINTR { continue }
                    code = errno
                    return
                }
                if n == 0 { return }
                done += n
            }
        }
        if code != 0 { throw failure("cannot read", path, code) }
        if done < count { buffer.removeSubrange(done...) }
        return buffer
    }

    static func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, offset: Int, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw failure("cannot write", path) }
            done += n
        }
    }

    static func truncate(_ fd: Int32, size: Int, path: String) throws {
        guard ftruncate(fd, off_t(size)) == 0 else { throw failure("cannot truncate", path) }
    }

    static func fsync(_ fd: Int32, path: String) throws {
        guard Glibc.fsync(fd) == 0 else { throw failure("cannot fsync", path) }
    }

    static func fsyncDirectory(of path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let fd = try open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try fsync(fd, path: directory)
    }

    static func rename(_ from: String, _ to: String) throws {
        guard Glibc.rename(from, to) == 0 else { throw failure("cannot rename \(from) to", to) }
    }

    static func removeIfExists(_ path: String) throws {
        if unlink(path) != 0, errno != ENOENT { throw failure("cannot remove", path) }
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Owner, group and permission bits of a file; nil when it does not exist.
    static func ownership(of path: String) throws -> (uid: uid_t, gid: gid_t, mode: mode_t)? {
        var info = stat()
        guard stat(path, &info) == 0 else {
            if errno == ENOENT { return nil }
            throw failure("cannot stat", path)
        }
        return (info.st_uid, info.st_gid, info.st_mode & 0o7777)
    }

    /// Gives `path` an owner and group (only when this process may, i.e. runs as root) and
    /// permission bits.
    static func setOwnership(_ path: String, uid: uid_t, gid: gid_t, mode: mode_t?) throws {
        if geteuid() == 0, Glibc.chown(path, uid, gid) != 0 { throw failure("cannot chown", path) }
        if let mode, chmod(path, mode) != 0 { throw failure("cannot chmod", path) }
    }

    static func makeDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw ReplicationError(.io, "cannot create directory \(path): \(error)")
        }
    }

    /// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        let temporary = "\(path).tmp"
        let fd = try open(temporary, O_WRONLY | O_CREAT | O_TRUNC)
        do {
            try bytes.withUnsafeBytes { buffer throws in try pwrite(fd, buffer, offset: 0, path: temporary) }
            try fsync(fd, path: temporary)
        } catch {
            close(fd)
            throw error
        }
        close(fd)
        try rename(temporary, path)
        try fsyncDirectory(of: path)
    }

    /// Copies a file (for moves across file systems), fsyncing the copy.
    static func copy(_ from: String, to: String) throws {
        let source = try open(from, O_RDONLY)
        defer { close(source) }
        let destination = try open(to, O_WRONLY | O_CREAT | O_TRUNC)
        defer { close(destination) }
        var offset = 0
        while true {
            let chunk = try pread(source, count: 1 << 20, offset: offset, path: from)
            if chunk.isEmpty { break }
            try chunk.withUnsafeBytes { buffer throws in try pwrite(destination, buffer, offset: offset, path: to) }
            offset += chunk.count
        }
        try fsync(destination, path: to)
    }

    /// The checksum of a database file read page by page (pages up to `pageCount`; the
    /// lock-byte page counts as 0).
    static func checksumOfFile(_ fd: Int32, path: String, pageSize: Int, pageCount: Int) throws -> DatabaseChecksum {
        var checksum = DatabaseChecksum(pageSize: pageSize)
        checksum.resize(to: pageCount)
        let pagesPerRead = max(1, (1 << 20) / pageSize)
        var page = 0
        while page < pageCount {
            let count = min(pagesPerRead, pageCount - page)
            var bytes = try pread(fd, count: count * pageSize, offset: page * pageSize, path: path)
            if bytes.count < count * pageSize { bytes.append(contentsOf: repeatElement(0, count: count * pageSize - bytes.count)) }
            bytes.withUnsafeBytes { raw in
                for index in 0..<count {
                    let number = UInt32(page + index + 1)
                    let slice = UnsafeRawBufferPointer(rebasing: raw[(index * pageSize)..<((index + 1) * pageSize)])
                    checksum.setPage(number, hash: DatabaseChecksum.pageHash(pageNumber: number, bytes: slice))
                }
            }
            page += count
        }
        return checksum
    }
}
