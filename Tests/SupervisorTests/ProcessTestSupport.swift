import Foundation
import Logging
import NIOConcurrencyHelpers

@testable import Backends
@testable import Control
@testable import Supervisor

#if canImport(Glibc)
import Glibc
#endif

/// Collects values from any thread and lets a test await the first one that matches, with a
/// bound: a test never hangs on a value that does not come.
final class Recorder<Value: Sendable>: Sendable {
    private struct Waiter {
        var predicate: @Sendable (Value) -> Bool
        var continuation: CheckedContinuation<Value?, Never>
    }

    private struct State {
        var values: [Value] = []
        var waiters: [Int: Waiter] = [:]
        var nextWaiter = 0
    }

    private let state = NIOLockedValueBox(State())

    /// Everything recorded so far.
    var values: [Value] { state.withLockedValue { $0.values } }

    func record(_ value: Value) {
        let matched: [CheckedContinuation<Value?, Never>] = state.withLockedValue { state in
            state.values.append(value)
            var matched: [CheckedContinuation<Value?, Never>] = []
            for (id, waiter) in state.waiters where waiter.predicate(value) {
                matched.append(waiter.continuation)
                state.waiters[id] = nil
            }
            return matched
        }
        for continuation in matched { continuation.resume(returning: value) }
    }

    /// The first value (already recorded or still to come) matching `predicate`, or nil after
    /// `timeout`.
    func first(within timeout: Duration = .seconds(10), where predicate: @escaping @Sendable (Value) -> Bool) async -> Value? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Value?, Never>) in
            let id: Int? = state.withLockedValue { state in
                if let found = state.values.first(where: predicate) {
                    continuation.resume(returning: found)
                    return nil
                }
                let id = state.nextWaiter
                state.nextWaiter += 1
                state.waiters[id] = Waiter(predicate: predicate, continuation: continuation)
                return id
            }
            guard let id else { return }
            Task {
                try? await Task.sleep(for: timeout)
                let expired = self.state.withLockedValue { $0.waiters.removeValue(forKey: id) }
                expired?.continuation.resume(returning: nil)
            }
        }
    }
}

/// One log line a test saw.
struct LogLine: Sendable {
    var level: Logger.Level
    var message: String
    var metadata: [String: String]
}

/// A log handler that feeds a ``Recorder``.
struct RecordingLogHandler: LogHandler {
    let recorder: Recorder<LogLine>
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        for (key, value) in event.metadata ?? [:] { merged[key] = value }
        recorder.record(
            LogLine(level: event.level, message: event.message.description, metadata: merged.mapValues { "\($0)" }))
    }
}

/// A logger whose lines land in `recorder`.
func recordingLogger(_ recorder: Recorder<LogLine>) -> Logger {
    Logger(label: "baton.test") { _ in RecordingLogHandler(recorder: recorder) }
}

/// Starts recording a backend's exits.
func recordExits(of backend: ProcessBackend) -> Recorder<ProcessBackend.Exit> {
    let recorder = Recorder<ProcessBackend.Exit>()
    let exits = backend.exits
    Task {
        for await exit in exits { recorder.record(exit) }
    }
    return recorder
}

/// Whether `pid` is gone: no such process, or a zombie (PID 1 here does not reap orphans).
func processIsGone(_ pid: pid_t) -> Bool {
    if kill(pid, 0) != 0 && errno == ESRCH { return true }
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return true }
    let state = stat[stat.index(after: close)...].split(separator: " ").first
    return state == "Z" || state == "X"
}

/// The keeper built next to the test binary.
func keeperPath() throws -> String {
    try FenceKeeperLocator.locate()
}

/// Nanoseconds between two monotonic instants, in milliseconds.
func milliseconds(_ nanoseconds: Int64) -> Double { Double(nanoseconds) / 1e6 }

/// A fresh temporary directory.
func makeTemporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "baton-process-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}
