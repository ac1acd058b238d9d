// What the lab observes: address changes on a host (`ip -ts monitor address`) and what a client
// gets from a service address (a probe in the client's namespace). Every instant is wall-clock
// microseconds (``wallMicros()``), the clock both observers print.

import Foundation
import TestSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// MARK: - Address changes

/// One address added to or deleted from an interface, as the kernel reported it.
public struct AddressEvent: Sendable, Hashable, CustomStringConvertible {
    public var time: Int64
    public var host: String
    public var added: Bool
    /// `10.88.0.100/24`.
    public var cidr: String

    public var description: String { "\(host) \(added ? "+" : "-")\(cidr) @\(time)" }

    public init(time: Int64, host: String, added: Bool, cidr: String) {
        self.time = time
        self.host = host
        self.added = added
        self.cidr = cidr
    }
}

/// `ip -ts monitor address` inside one host's namespace, from before anything changes there.
public final class AddressMonitor: Sendable {
    public let host: NetnsLab.Host
    private let process: LabProcess

    /// Starts the monitor and waits until it reports (it has no ready signal: a throwaway address
    /// is added and deleted until the monitor shows it).
    public static func start(lab: NetnsLab, host: NetnsLab.Host, logPath: String) async throws -> AddressMonitor {
        let process = try LabProcess(
            name: "monitor-\(host.name)", ipPath: lab.ipPath, namespace: host.namespace,
            arguments: [lab.ipPath, "-ts", "monitor", "address", "dev", host.interface], logPath: logPath)
        let monitor = AddressMonitor(host: host, process: process)
        let sentinel = "\(lab.subnet).253/32"
        do {
            try await eventually("ip monitor in \(host.namespace) reporting the sentinel \(sentinel)", timeout: .seconds(5), every: .milliseconds(100)) {
                _ = try? await lab.ip(["-n", host.namespace, "addr", "add", sentinel, "dev", host.interface])
                _ = try? await lab.ip(["-n", host.namespace, "addr", "del", sentinel, "dev", host.interface])
                return monitor.events().contains { $0.cidr == sentinel && !$0.added }
            }
        } catch {
            await process.kill()
            throw LabError("\(error); monitor log: \(process.log)")
        }
        return monitor
    }

    private init(host: NetnsLab.Host, process: LabProcess) {
        self.host = host
        self.process = process
    }

    /// Every address change so far, oldest first (only the `[timestamp] ... inet ADDRESS` lines).
    public func events() -> [AddressEvent] {
        process.log.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("["), let close = line.firstIndex(of: "]"),
                let time = Self.parseTimestamp(line[line.index(after: line.startIndex)..<close])
            else { return nil }
            let words = line[line.index(after: close)...].split(whereSeparator: \.isWhitespace)
            guard let inet = words.firstIndex(where: { $0 == "inet" || $0 == "inet6" }), inet + 1 < words.count else { return nil }
            return AddressEvent(time: time, host: host.name, added: words.first != "Deleted", cidr: String(words[inet + 1]))
        }
    }

    public func stop() async { await process.kill() }

    /// `2026-11-24T04:29:53.145425` (local time, as `ip -ts` prints it) → wall-clock µs.
    public static func parseTimestamp(_ text: Substring) -> Int64? {
        let parts = text.split(whereSeparator: { "-T:.".contains($0) }).map { Int($0) }
        guard parts.count == 7, let year = parts[0], let month = parts[1], let day = parts[2], let hour = parts[3],
            let minute = parts[4], let second = parts[5], let micros = parts[6]
        else { return nil }
        var tm = tm()
        tm.tm_year = Int32(year - 1900)
        tm.tm_mon = Int32(month - 1)
        tm.tm_mday = Int32(day)
        tm.tm_hour = Int32(hour)
        tm.tm_min = Int32(minute)
        tm.tm_sec = Int32(second)
        tm.tm_isdst = -1
        let seconds = mktime(&tm)
        guard seconds >= 0 else { return nil }
        return Int64(seconds) * 1_000_000 + Int64(micros)
    }
}

/// Where an address was present, per host, from a set of monitors' events.
public struct AddressTimeline: Sendable {
    /// One stretch of presence on one host; `end` is nil while still present.
    public struct Interval: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var start: Int64
        public var end: Int64?
        public var description: String { "\(host) [\(start)…\(end.map(String.init) ?? "now")]" }
    }

    public var intervals: [Interval]

    /// The presence of `cidr` on every host (absent on each at its monitor's start).
    public init(events: [AddressEvent], cidr: String) {
        var open: [String: Int64] = [:]
        var intervals: [Interval] = []
        for event in events.filter({ $0.cidr == cidr }).sorted(by: { $0.time < $1.time }) {
            if event.added {
                if open[event.host] == nil { open[event.host] = event.time }
            } else if let start = open.removeValue(forKey: event.host) {
                intervals.append(Interval(host: event.host, start: start, end: event.time))
            }
        }
        for (host, start) in open { intervals.append(Interval(host: host, start: start, end: nil)) }
        self.intervals = intervals.sorted { $0.start < $1.start }
    }

    /// Pairs of intervals on different hosts that overlap (the address on two hosts at once).
    public var overlaps: [(Interval, Interval)] {
        var found: [(Interval, Interval)] = []
        for (index, first) in intervals.enumerated() {
            for second in intervals[(index + 1)...] where second.host != first.host {
                if second.start < (first.end ?? .max) && first.start < (second.end ?? .max) { found.append((first, second)) }
            }
        }
        return found
    }

    /// One change of holder: the interval that ended, the one on another host that followed,
    /// and how long after the old host's removal the new host added the address (negative:
    /// both held it for that long).
    public struct Handover: Sendable, Hashable, CustomStringConvertible {
        public var previous: Interval
        public var next: Interval
        public var margin: Int64
        public var description: String { "\(previous.host) → \(next.host): \(margin) µs" }
    }

    /// Every change of holder, in order.
    public var handovers: [Handover] {
        zip(intervals, intervals.dropFirst()).compactMap { previous, next in
            guard previous.host != next.host else { return nil }
            return Handover(previous: previous, next: next, margin: next.start - (previous.end ?? .max))
        }
    }
}

// MARK: - The client's view

/// A probe in a client namespace: every `interval` it starts one HTTP/1.0 GET to a service
/// address (new TCP connection each time; attempts run concurrently, so a lost one does not
/// delay the next) and logs `start-µs end-µs answer`, where the answer is the response body
/// (the serving node) or `-` when the attempt failed or took longer than `timeout`.
public final class ClientProbe: Sendable {
    static let script = """
        import asyncio, os, sys, time
        host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        interval, timeout = float(sys.argv[4]) / 1000, float(sys.argv[5]) / 1000
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        def now():
            return time.time_ns() // 1000
        async def get():
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"GET / HTTP/1.0\\r\\n\\r\\n")
                return await reader.read()
            finally:
                writer.close()
        async def attempt():
            start, answer = now(), "-"
            try:
                head, _, body = (await asyncio.wait_for(get(), timeout)).partition(b"\\r\\n\\r\\n")
                if head.split(b" ")[1:2] == [b"200"]:
                    answer = body.decode().strip() or "?"
            except Exception:
                pass
            os.write(fd, f"{start} {now()} {answer}\\n".encode())
        async def main():
            tasks, due = set(), time.monotonic()
            while True:
                task = asyncio.ensure_future(attempt())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                due += interval
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        asyncio.run(main())
        """

    /// One attempt.
    public struct Sample: Sendable, Hashable {
        public var start: Int64
        public var end: Int64
        /// The node that answered, or nil when the attempt failed.
        public var answer: String?
    }

    private let process: LabProcess
    public let logPath: String

    /// Starts probing `address:port` from `host`.
    public init(
        lab: NetnsLab, host: NetnsLab.Host, address: String, port: Int, python: String, directory: String,
        interval: Duration = .milliseconds(10), timeout: Duration = .milliseconds(200)
    ) throws {
        let script = "\(directory)/probe.py"
        try Self.script.write(toFile: script, atomically: true, encoding: .utf8)
        logPath = "\(directory)/probe-\(UInt32.random(in: 0...UInt32.max)).log"
        func millis(_ duration: Duration) -> String {
            let (seconds, attoseconds) = duration.components
            return "\(Double(seconds) * 1000 + Double(attoseconds) / 1e15)"
        }
        process = try LabProcess(
            name: "probe", ipPath: lab.ipPath, namespace: host.namespace,
            arguments: [python, script, address, "\(port)", logPath, millis(interval), millis(timeout)],
            logPath: "\(directory)/probe.out")
    }

    /// Every finished attempt so far, by end time.
    public func samples() -> [Sample] {
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count == 3, let start = Int64(fields[0]), let end = Int64(fields[1]) else { return nil }
            return Sample(start: start, end: end, answer: fields[2] == "-" ? nil : String(fields[2]))
        }.sorted { $0.end < $1.end }
    }

    /// The node that answered the most recent successful attempt that ended after `after`.
    public func latestAnswer(after: Int64 = 0) -> String? {
        samples().last { $0.end > after && $0.answer != nil }?.answer
    }

    /// The client-observed outage of a failover to `node` that began at `since`: from the last
    /// successful answer (of any node) that ended before the first answer from `node` after
    /// `since`, to that first answer; nil while `node` has not answered yet. Also returns the
    /// longest stretch without a successful answer between `since` and that first answer.
    public func outage(since: Int64, to node: String) -> (gap: Int64, lastBefore: Sample?, firstAfter: Sample)? {
        let all = samples()
        guard let first = all.first(where: { $0.end > since && $0.answer == node }) else { return nil }
        // The longest silence between consecutive successes in [since - 1 s, first.end].
        let successes = all.filter { $0.answer != nil && $0.end <= first.end && $0.end > since - 1_000_000 }
        var gap: Int64 = 0
        var before: Sample?
        for (earlier, later) in zip(successes, successes.dropFirst()) where later.end - earlier.end > gap {
            gap = later.end - earlier.end
            before = earlier
        }
        return (gap, before, first)
    }

    public func stop() async { await process.kill() }
}
