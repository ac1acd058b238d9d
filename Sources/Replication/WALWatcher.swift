import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// Wakes the shipper when something writes the `-wal` file, so a commit is shipped at once
/// instead of at the next poll (``ReplicationConfiguration/pollInterval`` then only bounds how
/// late a change is noticed when no event comes).
///
/// inotify watches the database's directory (the `-wal` file may not exist yet, and a directory
/// watch survives the file being recreated); events are filtered by the `-wal` file's name on a
/// dedicated thread that blocks in `poll(2)`. A write that is not a commit (the frames before a
/// commit frame) wakes the shipper for nothing; the commit frame's own write wakes it again. When
/// no watch can be added (no inotify, the watch limit) ``wait(upTo:)`` just sleeps.
final class WALWatcher: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
        var closed = false
    }

    private let state = NIOLockedValueBox(State())
    /// Whether inotify watches the directory.
    let active: Bool

    /// The write end of the pipe that stops the thread (-1 when inactive).
    private let stopFD: Int32

    init(walPath: String) {
        #if canImport(Glibc)
        let slash = walPath.lastIndex(of: "/")
        let directory = slash.map { $0 == walPath.startIndex ? "/" : String(walPath[..<$0]) } ?? "."
        let name = Array((slash.map { String(walPath[walPath.index(after: $0)...]) } ?? walPath).utf8)
        let fd = inotify_init1(Int32(IN_CLOEXEC))
        var stopPipe: [Int32] = [-1, -1]
        guard fd >= 0 else {
            active = false
            stopFD = -1
            return
        }
        guard inotify_add_watch(fd, directory, UInt32(IN_MODIFY | IN_CREATE | IN_MOVED_TO)) >= 0, pipe(&stopPipe) == 0 else {
            Glibc.close(fd)
            active = false
            stopFD = -1
            return
        }
        active = true
        stopFD = stopPipe[1]
        let (inotifyFD, stopRead) = (fd, stopPipe[0])
        let thread = Thread { [self] in
            watch(inotifyFD: inotifyFD, stopFD: stopRead, name: name)
            Glibc.close(inotifyFD)
            Glibc.close(stopRead)
        }
        thread.name = "baton-wal-watch"
        thread.start()
        #else
        active = false
        stopFD = -1
        #endif
    }

    #if canImport(Glibc)
    private func watch(inotifyFD: Int32, stopFD: Int32, name: [UInt8]) {
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        var fds = [pollfd(fd: inotifyFD, events: Int16(POLLIN), revents: 0), pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0)]
        while true {
            fds[0].revents = 0
            fds[1].revents = 0
            if poll(&fds, 2, -1) < 0 {
                if errno == EINTR { continue }
                return
            }
            if fds[1].revents != 0 { return }
            let count = buffer.withUnsafeMutableBytes { read(inotifyFD, $0.baseAddress, $0.count) }
            if count <= 0 {
                if count < 0, errno == EINTR || errno == EAGAIN { continue }
                return
            }
            // struct inotify_event: wd (4), mask (4), cookie (4), len (4), name (len, NUL-padded).
            var relevant = false
            buffer.withUnsafeBytes { bytes in
                var offset = 0
                while offset + 16 <= count {
                    let mask = bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)
                    let length = Int(bytes.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
                    if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                        relevant = true
                    } else if length >= name.count, offset + 16 + length <= count {
                        let candidate = bytes[(offset + 16)..<(offset + 16 + length)].prefix { $0 != 0 }
                        if candidate.elementsEqual(name) { relevant = true }
                    }
                    offset += 16 + length
                }
            }
            if relevant { wake() }
        }
    }
    #endif

    /// Wakes a pending ``wait(upTo:)`` (or makes the next one return at once).
    func wake() {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Returns after the next write to the `-wal` file (or one since the last call), a
    /// ``wake()``, or `timeout`.
    func wait(upTo timeout: Duration) async {
        let alreadyPending = state.withLockedValue { state -> Bool in
            defer { state.pending = false }
            return state.pending || state.closed
        }
        if alreadyPending { return }
        guard active else {
            try? await Task.sleep(for: timeout)
            return
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.nextWake() }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    private func nextWake() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLockedValue { state -> Bool in
                    if state.pending || state.closed || Task.isCancelled {
                        state.pending = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }

    /// Stops the thread and wakes any waiter; later waits return at once.
    func close() {
        let (first, waiter) = state.withLockedValue { state -> (Bool, CheckedContinuation<Void, Never>?) in
            guard !state.closed else { return (false, nil) }
            state.closed = true
            defer { state.waiter = nil }
            return (true, state.waiter)
        }
        waiter?.resume()
        #if canImport(Glibc)
        if first, active {
            var byte: UInt8 = 1
            _ = write(stopFD, &byte, 1)
            Glibc.close(stopFD)
        }
        #endif
    }
}
