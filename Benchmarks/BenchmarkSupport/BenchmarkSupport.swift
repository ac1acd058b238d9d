// What every benchmark needs and used to copy: percentiles, the machine's load, duration and list
// arguments (for ArgumentParser), and the error a benchmark step throws.

import ArgumentParser
import Foundation

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
