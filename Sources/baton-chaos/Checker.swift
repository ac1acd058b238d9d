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
