import Foundation

/// One backend process of an app, as its evidence lines show it.
struct BackendRun: CustomStringConvertible {
    var app: String
    var node: String
    var epoch: UInt64
    var pid: Int
    /// First and last line (CLOCK_MONOTONIC ns).
    var first: Int64
    var last: Int64
    var stopped: Bool

    var description: String { "\(app) on \(node) epoch \(epoch) pid \(pid) [\(first) … \(last)]\(stopped ? " stopped" : "")" }
}

/// A fault the injector ran: its kind, target and times.
struct FaultRecord: Sendable {
    var index: Int
    var kind: String
    var target: String
    /// When the fault began and when it ended (the SIGCONT, restart, resume, or the graceful
    /// operation's return), CLOCK_MONOTONIC ns.
    var start: Int64
    var end: Int64
    /// When every app ran again after `end` (nil: not within the liveness bound).
    var recovered: Int64?
    var note: String
}

/// A broken promise found in the evidence.
struct Violation: CustomStringConvertible {
    var kind: String
    var detail: String
    /// The fault during or after which it happened, if any.
    var fault: Int?

    var description: String { "[\(kind)]\(fault.map { " fault #\($0)" } ?? "") \(detail)" }
}

/// Reads the per-app evidence logs and checks them.
struct Checker {
    /// Gaps between heartbeats longer than this count as the app being down (five heartbeat
    /// periods: a loaded host delays a 5 ms sleep by a few ms now and then).
    static let downGap: Int64 = 25_000_000

    var runs: [String: [BackendRun]] = [:]
    /// Every heartbeat time of each app, sorted (for unavailability).
    var beats: [String: [Int64]] = [:]

    init(evidenceDirectory: String, apps: [String]) {
        for app in apps {
            let text = (try? String(contentsOfFile: "\(evidenceDirectory)/\(app).log", encoding: .utf8)) ?? ""
            var byPid: [Int: BackendRun] = [:]
            var times: [Int64] = []
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: " ")
                guard fields.count == 5, let time = Int64(fields[0]), let epoch = UInt64(fields[3]), let pid = Int(fields[4]) else { continue }
                times.append(time)
                if var run = byPid[pid] {
                    run.first = min(run.first, time)
                    run.last = max(run.last, time)
                    if fields[1] == "stop" { run.stopped = true }
                    byPid[pid] = run
                } else {
                    byPid[pid] = BackendRun(
                        app: app, node: String(fields[2]), epoch: epoch, pid: pid, first: time, last: time, stopped: fields[1] == "stop")
                }
            }
            runs[app] = byPid.values.sorted { $0.first < $1.first }
            beats[app] = times.sorted()
        }
    }

    /// The fault in progress or most recently ended at `time`.
    static func fault(at time: Int64, in faults: [FaultRecord]) -> Int? {
        faults.last { $0.start <= time }?.index
    }

    /// Safety: no two backends of an app overlap; tokens only grow and are never shared by two
    /// nodes.
    func safetyViolations(faults: [FaultRecord]) -> [Violation] {
        var violations: [Violation] = []
        for (app, runs) in runs.sorted(by: { $0.key < $1.key }) {
            var latest: BackendRun?  // the run with the latest `last` so far
            var highest: BackendRun?  // the run with the highest epoch so far
            var nodeOfEpoch: [UInt64: String] = [:]
            for run in runs {
                if let latest, run.first <= latest.last {
                    violations.append(
                        Violation(
                            kind: "overlap",
                            detail: "two backends of \(app) ran at once for \(Double(latest.last - run.first) / 1e6) ms: \(latest) and \(run)",
                            fault: Self.fault(at: run.first, in: faults)))
                }
                if let highest, run.epoch < highest.epoch {
                    violations.append(
                        Violation(
                            kind: "epoch-backwards", detail: "\(app)'s fencing token went backwards: \(highest) then \(run)",
                            fault: Self.fault(at: run.first, in: faults)))
                }
                if let other = nodeOfEpoch[run.epoch], other != run.node {
                    violations.append(
                        Violation(
                            kind: "epoch-shared", detail: "\(app)'s epoch \(run.epoch) ran on \(other) and on \(run.node): \(run)",
                            fault: Self.fault(at: run.first, in: faults)))
                }
                nodeOfEpoch[run.epoch] = run.node
                if latest == nil || run.last > latest!.last { latest = run }
                if highest == nil || run.epoch > highest!.epoch { highest = run }
            }
        }
        return violations
    }

    /// The longest stretch without heartbeats of `app` that overlaps `[from, to]`, in ns.
    func longestOutage(app: String, from: Int64, to: Int64) -> Int64 {
        guard let times = beats[app], !times.isEmpty else { return to - from }
        // The last beat before `from` (binary search), then walk forward.
        var low = 0
        var high = times.count
        while low < high {
            let middle = (low + high) / 2
            if times[middle] < from { low = middle + 1 } else { high = middle }
        }
        var previous = low > 0 ? times[low - 1] : from
        var longest: Int64 = 0
        var index = low
        while index < times.count, previous <= to {
            let gap = times[index] - previous
            if gap > Self.downGap { longest = max(longest, gap) }
            previous = times[index]
            index += 1
        }
        if previous < to, to - previous > Self.downGap { longest = max(longest, to - previous) }
        return longest
    }

    /// Per fault: the longest outage of any app between the fault's start and its recovery.
    func unavailability(of fault: FaultRecord, apps: [String]) -> Int64 {
        let until = fault.recovered ?? fault.end
        return apps.map { longestOutage(app: $0, from: fault.start, to: until) }.max() ?? 0
    }
}

/// The table per fault kind.
func report(faults: [FaultRecord], checker: Checker, apps: [String], violations: [Violation]) -> String {
    func milliseconds(_ ns: Int64) -> String { String(format: "%.0f", Double(ns) / 1e6) }
    var kinds: [String: [FaultRecord]] = [:]
    for fault in faults { kinds[fault.kind, default: []].append(fault) }
    var violationsByKind: [String: Int] = [:]
    for violation in violations {
        if let index = violation.fault, let fault = faults.first(where: { $0.index == index }) {
            violationsByKind[fault.kind, default: 0] += 1
        } else {
            violationsByKind["(before the first fault)", default: 0] += 1
        }
    }
    let header = "fault kind".padding(toLength: 28, withPad: " ", startingAt: 0) + "count   unavail p50 ms   unavail max ms   violations"
    var lines = [header, String(repeating: "-", count: header.count)]
    for kind in kinds.keys.sorted() {
        let records = kinds[kind]!
        let outages = records.map { checker.unavailability(of: $0, apps: apps) }.sorted()
        let p50 = outages[(outages.count - 1) / 2]
        let maximum = outages.last ?? 0
        let unrecovered = records.filter { $0.recovered == nil }.count
        lines.append(
            kind.padding(toLength: 28, withPad: " ", startingAt: 0)
                + String(records.count).padding(toLength: 8, withPad: " ", startingAt: 0)
                + milliseconds(p50).padding(toLength: 17, withPad: " ", startingAt: 0)
                + (milliseconds(maximum) + (unrecovered > 0 ? "+" : "")).padding(toLength: 17, withPad: " ", startingAt: 0)
                + String(violationsByKind[kind] ?? 0))
    }
    if let other = violationsByKind["(before the first fault)"] {
        lines.append("(before the first fault)".padding(toLength: 28, withPad: " ", startingAt: 0) + "-       -                -                \(other)")
    }
    lines.append("total: \(faults.count) faults, \(violations.count) violations")
    return lines.joined(separator: "\n")
}

extension Checker {
    /// Runs the checker on made-up evidence with one violation of each kind, and on clean
    /// evidence, before a run: a checker that cannot see a violation would pass every run.
    static func selfTest(directory: String) throws {
        let ms: Int64 = 1_000_000
        func lines(_ node: String, _ epoch: Int, _ pid: Int, from: Int64, to: Int64) -> String {
            var text = "\(from * ms) start \(node) \(epoch) \(pid)\n"
            var time = from
            while time <= to {
                text += "\(time * ms) hb \(node) \(epoch) \(pid)\n"
                time += 5
            }
            return text
        }
        // Two backends 10 ms apart in time overlap; epoch 4 after 6; epoch 6 on two nodes.
        let broken = lines("node-1", 5, 1, from: 1000, to: 2000) + lines("node-2", 6, 2, from: 1990, to: 2500)
            + lines("node-3", 4, 3, from: 3000, to: 3500) + lines("node-1", 6, 4, from: 4000, to: 4500)
        let clean = lines("node-1", 5, 11, from: 1000, to: 2000) + lines("node-2", 6, 12, from: 2030, to: 2500)
            + lines("node-2", 6, 13, from: 2600, to: 2700) + lines("node-3", 9, 14, from: 3000, to: 3500)
        try broken.write(toFile: "\(directory)/broken.log", atomically: true, encoding: .utf8)
        try clean.write(toFile: "\(directory)/clean.log", atomically: true, encoding: .utf8)
        let checker = Checker(evidenceDirectory: directory, apps: ["broken", "clean"])
        let found = checker.safetyViolations(faults: [])
        let kinds = Set(found.filter { $0.detail.contains("broken") }.map(\.kind))
        guard kinds == ["overlap", "epoch-backwards", "epoch-shared"], !found.contains(where: { $0.detail.contains("clean") }) else {
            throw ChaosError("the checker's self-test failed: on made-up evidence it reported \(found)")
        }
        guard checker.longestOutage(app: "clean", from: 1500 * ms, to: 3200 * ms) == 300 * ms else {
            throw ChaosError("the checker's self-test failed: outage \(checker.longestOutage(app: "clean", from: 1500 * ms, to: 3200 * ms)) ns, expected 300 ms")
        }
        try? FileManager.default.removeItem(atPath: "\(directory)/broken.log")
        try? FileManager.default.removeItem(atPath: "\(directory)/clean.log")
    }
}
