// Starting what a benchmark measures against: a nats-server on a random loopback port, the output
// of a command, and the machine's description for the report.

import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Runs `executable` with `arguments` to its end; its standard output and error, trimmed ("?"
/// when it cannot be started).
public func capture(_ executable: String, _ arguments: [String]) -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    guard (try? process.run()) != nil else { return "?" }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

/// "2 cores (nproc), <CPU model>, 23.5 GiB RAM, kernel <release>": the machine line of a report.
public func machineDescription() -> String {
    let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
        .map { $0.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "?" } ?? "?"
    let memory = Double(ProcessInfo.processInfo.physicalMemory) / Double(1 << 30)
    var names = utsname()
    uname(&names)
    let kernel = withUnsafeBytes(of: &names.release) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
    return "\(ProcessInfo.processInfo.activeProcessorCount) cores (nproc), \(model), \(String(format: "%.1f", memory)) GiB RAM, kernel \(kernel)"
}

/// CLOCK_MONOTONIC in nanoseconds (the clock backends started by a benchmark stamp their lines
/// with).
public func monotonicNanoseconds() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
}

/// A nats-server with JetStream on a random loopback port, its store and log in `directory`,
/// registered with `children` so every exit path kills it.
public final class NATSServerProcess: @unchecked Sendable {
    // @unchecked: every property is set in init and never changed.
    /// The server's process.
    public let process = Process()
    /// The client URL it listens on.
    public let url: String
    /// What `nats-server --version` printed.
    public let version: String
    private let children: ChildProcesses

    /// Starts the server and waits (at most 10 s) until it has written its ports file.
    public init(path: String, directory: String, children: ChildProcesses, trace: Bool = false) async throws {
        self.children = children
        version = capture(path, ["--version"])
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = [
            "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", "\(directory)/store", "--ports_file_dir", directory, "-l", "\(directory)/nats-server.log",
        ] + (trace ? ["-DV"] : [])
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        children.add(process.processIdentifier, name: "nats-server")
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            if ContinuousClock.now > deadline || !process.isRunning {
                throw BenchmarkError("\(path) did not start; see \(directory)/nats-server.log")
            }
            try await Task.sleep(for: .milliseconds(20))
            let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            if let file = files.first(where: { $0.hasSuffix(".ports") }),
                let data = FileManager.default.contents(atPath: "\(directory)/\(file)"),
                let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                let nats = (json["nats"] as? [String])?.first
            {
                url = nats
                return
            }
        }
    }

    /// SIGTERM and wait.
    public func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        children.remove(process.processIdentifier)
    }
}

/// CPU time (user + system) and memory of a running process, read from /proc.
public struct ProcessUsage: Sendable {
    /// User plus system CPU time consumed so far, in clock ticks (`sysconf(_SC_CLK_TCK)`).
    public var cpuTicks: Int64
    /// Resident set size now, in KiB (`VmRSS`).
    public var rssKiB: Int64
    /// Peak resident set size, in KiB (`VmHWM`).
    public var peakRSSKiB: Int64
    /// The anonymous part of ``rssKiB`` (heap, stacks: what the process allocated), in KiB (`RssAnon`).
    public var anonymousRSSKiB: Int64
    /// The file-backed part of ``rssKiB`` (code and read-only data of the executable and its
    /// libraries, shared with every other process mapping them), in KiB (`RssFile`).
    public var fileRSSKiB: Int64
    /// Context switches so far, voluntary and involuntary, summed over the process's threads
    /// (each wake-up of a sleeping thread is one).
    public var contextSwitches: Int64

    /// The usage of `pid`, or nil when it has exited.
    public static func of(_ pid: Int32) -> ProcessUsage? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // Fields after "comm)": state is field 3; utime and stime are fields 14 and 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let utime = Int64(fields[11]), let stime = Int64(fields[12]) else { return nil }
        func kib(_ key: String) -> Int64 {
            status.split(separator: "\n").first { $0.hasPrefix(key) }
                .flatMap { $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first }
                .flatMap { Int64($0) } ?? 0
        }
        var switches: Int64 = 0
        for thread in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
            guard let threadStatus = try? String(contentsOfFile: "/proc/\(pid)/task/\(thread)/status", encoding: .utf8) else { continue }
            for line in threadStatus.split(separator: "\n") where line.contains("ctxt_switches:") {
                switches += line.split(whereSeparator: { $0 == " " || $0 == "\t" }).last.flatMap { Int64($0) } ?? 0
            }
        }
        return ProcessUsage(
            cpuTicks: utime + stime, rssKiB: kib("VmRSS:"), peakRSSKiB: kib("VmHWM:"), anonymousRSSKiB: kib("RssAnon:"), fileRSSKiB: kib("RssFile:"),
            contextSwitches: switches)
    }

    /// Clock ticks per second of ``cpuTicks``.
    public static let ticksPerSecond = Int64(sysconf(Int32(_SC_CLK_TCK)))
}
