// What every benchmark needs and used to copy: percentiles, the machine's load, duration and list
// arguments (for ArgumentParser), and the error a benchmark step throws.

import ArgumentParser
import Foundation
import Synchronization

/// A benchmark step that failed; the description says which and why.
public struct BenchmarkError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Nearest-rank percentile `p` (0...100) of `sorted` (ascending); 0 for no samples.
public func percentile(_ sorted: [Int64], _ p: Double) -> Int64 {
    guard !sorted.isEmpty else { return 0 }
    let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
    return sorted[min(max(rank, 1), sorted.count) - 1]
}

/// The 1, 5 and 15 minute load averages from /proc/loadavg ("?" where it cannot be read).
public func loadAverage() -> String {
    ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?").split(separator: " ").prefix(3).joined(separator: " ")
}

/// A non-negative duration written with a unit: `300ms`, `1.5s`, `200us`, `50ns`; nil otherwise.
public func parseDuration(_ text: String) -> Duration? {
    for (suffix, scale) in [("ms", 1_000_000.0), ("us", 1_000.0), ("ns", 1.0), ("s", 1_000_000_000.0)] where text.hasSuffix(suffix) {
        guard let number = Double(text.dropLast(suffix.count)), number >= 0, number.isFinite else { return nil }
        return .nanoseconds(Int64((number * scale).rounded()))
    }
    return nil
}

/// A comma-separated list argument (`--sizes 20,200`), each element converted by `element`
/// (which returns nil for a bad one); for ArgumentParser's `transform:`. The error names the
/// option and the bad element.
public func commaSeparated<Element>(
    _ option: String, _ what: String, _ element: @escaping @Sendable (String) -> Element?
) -> @Sendable (String) throws -> [Element] {
    return { text in
        try text.split(separator: ",").map { part in
            guard let value = element(String(part)) else {
                throw ValidationError("\(option): \(part) is not \(what)")
            }
            return value
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// The dispatch sources of ``installKillers(timeLimit:doing:log:abort:)``, kept alive for the
/// process's lifetime. Written once, at start-up, before any other thread reads it.
nonisolated(unsafe) private var killerSources: [any DispatchSourceSignal] = []

/// Makes every exit path clean up what the benchmark started: on SIGINT or SIGTERM it logs
/// "interrupted; `doing`", runs `abort` and exits 130; once `timeLimit` seconds have passed it
/// logs "time limit of … s reached; `doing`", runs `abort` and exits 3. `abort` runs on a plain
/// thread (never the cooperative pool) and must kill by pid what is still running.
public func installKillers(
    timeLimit: Int, doing: String, log: @escaping @Sendable (String) -> Void, abort: @escaping @Sendable () -> Void
) {
    for signalNumber in [SIGINT, SIGTERM] {
        signal(signalNumber, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
        source.setEventHandler {
            log("interrupted; \(doing)")
            abort()
            exit(130)
        }
        source.resume()
        killerSources.append(source)
    }
    Thread {
        Thread.sleep(forTimeInterval: TimeInterval(timeLimit))
        log("time limit of \(timeLimit) s reached; \(doing)")
        abort()
        exit(3)
    }.start()
}

/// Every process a benchmark started, killed by pid on every exit path (see
/// ``installKillers(timeLimit:doing:log:abort:)``). Processes named `batond…` are killed first
/// (their fence keepers then kill the backends on their own); `strays` finds this run's
/// processes that are not direct children (backends, keepers), killed after the children.
public final class ChildProcesses: Sendable {
    private struct State {
        var pids: [Int32: String] = [:]
        var workDirectory: (path: String, remove: Bool)?
    }

    private let state = Mutex(State())
    private let strays: (@Sendable () -> [Int32])?

    /// A registry; `strays` (none unless given) is asked after the children were killed.
    public init(strays: (@Sendable () -> [Int32])? = nil) {
        self.strays = strays
    }

    /// Registers a started process (`pid` > 0, i.e. after it was launched).
    public func add(_ pid: Int32, name: String) {
        guard pid > 0 else { return }
        state.withLock { $0.pids[pid] = name }
    }

    /// Registers a launched `Process`, named after its executable.
    public func add(_ process: Process) {
        add(process.processIdentifier, name: process.executableURL?.lastPathComponent ?? "child")
    }

    /// Forgets a process that has exited (and was waited for).
    public func remove(_ pid: Int32) {
        _ = state.withLock { $0.pids.removeValue(forKey: pid) }
    }

    /// Forgets a `Process` that has exited.
    public func remove(_ process: Process) {
        remove(process.processIdentifier)
    }

    /// The work directory ``abort()`` removes when `remove` is set.
    public func setWorkDirectory(_ path: String, remove: Bool) {
        state.withLock { $0.workDirectory = (path, remove) }
    }

    /// SIGKILL to every registered process (batonds first), then to the strays until none is
    /// left (at most 20 rounds, 50 ms apart); returns how many strays were found at first.
    @discardableResult
    public func killAll() -> Int {
        let pids = state.withLock { $0.pids }
        for (pid, name) in pids where name.hasPrefix("batond") { kill(pid, SIGKILL) }
        for (pid, name) in pids where !name.hasPrefix("batond") { kill(pid, SIGKILL) }
        guard let strays else { return 0 }
        usleep(100_000)
        var found = strays()
        let count = found.count
        for _ in 0..<20 where !found.isEmpty {
            for pid in found { kill(pid, SIGKILL) }
            usleep(50_000)
            found = strays()
        }
        return count
    }

    /// After an interruption or the time limit: kills everything, removes the work directory
    /// when it was set to be removed.
    public func abort() {
        killAll()
        if let directory = state.withLock({ $0.workDirectory }), directory.remove {
            try? FileManager.default.removeItem(atPath: directory.path)
        }
    }
}
