import Foundation

/// The SQLite app's checks, from its ack log (`mono-ns epoch node seq pid` per acknowledged
/// commit) and its inventory (one line per backend start: `mono-ns pid node epoch integrity
/// epoch:pid:count:max,...`, the rows present in the database it was started on):
/// - *integrity*: `PRAGMA integrity_check` said `ok` at every start (after crashes and
///   promotions alike);
/// - *prefix*: for every writer (epoch, pid) the rows present are exactly seq 1…count (the
///   database holds a prefix of each writer's commits, never a hole);
/// - *no acknowledged row lost on a graceful handover*: when backend R stopped gracefully
///   (`stop` line) and the next backend R' started during a switchover, stepdown or SIGTERM
///   restart (between the fault's start and its recovery), R''s database holds every row R
///   acknowledged. Rows of a backend whose node was killed or cut off may be missing at the next
///   start (committed, not yet shipped): they are counted and reported, not checked — Baton says
///   nothing per row about what was replicated when a node crashes.
struct SQLiteCheck {
    var violations: [Violation] = []
    var summary = ""

    init(evidenceDirectory: String, app: String, runs: [BackendRun], faults: [FaultRecord]) {
        var acked: [Int: Int] = [:]  // pid → highest acknowledged seq
        var errors = 0
        for line in ((try? String(contentsOfFile: "\(evidenceDirectory)/\(app).acks", encoding: .utf8)) ?? "").split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count == 5, let pid = Int(fields[4]) else { continue }
            if fields[1] == "error" { errors += 1; continue }
            guard let seq = Int(fields[3]) else { continue }
            acked[pid] = max(acked[pid] ?? 0, seq)
        }
        struct Inventory {
            var time: Int64
            var node: String
            var integrity: String
            var rows: [String: (count: Int, max: Int)]  // "epoch:pid" → rows
        }
        var inventories: [Int: Inventory] = [:]
        for line in ((try? String(contentsOfFile: "\(evidenceDirectory)/\(app).inventory", encoding: .utf8)) ?? "").split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count == 6, let time = Int64(fields[0]), let pid = Int(fields[1]) else { continue }
            var rows: [String: (count: Int, max: Int)] = [:]
            for entry in fields[5].split(separator: ",") where entry != "-" {
                let parts = entry.split(separator: ":")
                guard parts.count == 4, let count = Int(parts[2]), let maximum = Int(parts[3]) else { continue }
                rows["\(parts[0]):\(parts[1])"] = (count, maximum)
            }
            inventories[pid] = Inventory(time: time, node: String(fields[2]), integrity: String(fields[4]), rows: rows)
        }
        for (pid, inventory) in inventories.sorted(by: { $0.value.time < $1.value.time }) {
            let fault = Checker.fault(at: inventory.time, in: faults)
            if inventory.integrity != "ok" {
                violations.append(
                    Violation(
                        kind: "sqlite-integrity", detail: "\(app)'s database on \(inventory.node) failed PRAGMA integrity_check at the start of pid \(pid): \(inventory.integrity)",
                        fault: fault))
            }
            for (writer, rows) in inventory.rows.sorted(by: { $0.key < $1.key }) where rows.count != rows.max {
                violations.append(
                    Violation(
                        kind: "sqlite-hole",
                        detail: "\(app)'s database on \(inventory.node) at the start of pid \(pid) holds \(rows.count) rows of writer \(writer) but seq up to \(rows.max): not a prefix of its commits",
                        fault: fault))
            }
        }
        var graceful = 0
        var crash = 0
        var lostInCrashes = 0
        var ackedTotal = 0
        for (run, next) in zip(runs, runs.dropFirst()) {
            ackedTotal += acked[run.pid] ?? 0
            guard let inventory = inventories[next.pid] else { continue }
            let acknowledged = acked[run.pid] ?? 0
            let present = inventory.rows["\(run.epoch):\(run.pid)"]?.count ?? 0
            let handover = faults.first { fault in
                FaultKind(rawValue: fault.kind)?.isGraceful == true && fault.start <= next.first && next.first <= (fault.recovered ?? fault.end)
                    && run.last >= fault.start
            }
            if run.stopped, let handover {
                graceful += 1
                if present < acknowledged {
                    violations.append(
                        Violation(
                            kind: "sqlite-lost",
                            detail: "\(app): \(run) acknowledged \(acknowledged) rows and stopped gracefully (\(handover.kind), fault #\(handover.index)); the next backend (pid \(next.pid) on \(next.node)) started on a database with only \(present) of them",
                            fault: handover.index))
                }
            } else {
                crash += 1
                lostInCrashes += max(0, acknowledged - present)
            }
        }
        ackedTotal += runs.last.map { acked[$0.pid] ?? 0 } ?? 0
        summary =
            "\(app) (SQLite): \(ackedTotal) commits acknowledged by \(runs.count) backends, \(inventories.count) starts checked (integrity_check, prefix); "
            + "\(graceful) graceful handovers checked (every acknowledged row present); \(crash) other handovers lost \(lostInCrashes) acknowledged rows (allowed: not yet shipped)"
            + (errors > 0 ? "; \(errors) commits failed in the backend (not acknowledged)" : "")
    }
}

/// The VIP check, from the prober's log (`s mono-ns k` per ARP request k for the VIP, `r mono-ns
/// k mac` per reply; request k is sent every 5 ms from address `.150 + k mod 100`, so a reply
/// names the request it answers). Rule: no ARP request is answered by two different MACs — both
/// hosts had the VIP configured when the same broadcast request reached them, within the same
/// few milliseconds. Resolution: one request period (5 ms) — a double ownership shorter than
/// that, falling between two requests, can go unseen. Gratuitous ARP (a request, "who-has VIP
/// tell VIP") is not an answer and is not counted. Replies more than 250 ms late are not
/// attributed to a request (counted apart).
struct VIPCheck {
    var violations: [Violation] = []
    var summary = ""

    init(path: String, app: String, address: String, macNames: [String: String], faults: [FaultRecord]) {
        var sent: [(number: Int, time: Int64)] = []
        var answers: [Int: Set<String>] = [:]
        var late = 0
        for line in ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count == 3, fields[0] == "s", let time = Int64(fields[1]), let number = Int(fields[2]) {
                sent.append((number, time))
            } else if fields.count == 4, fields[0] == "r", let number = Int(fields[2]) {
                if number < 0 { late += 1 } else { answers[number, default: []].insert(String(fields[3])) }
            }
        }
        func name(_ mac: String) -> String { macNames[mac].map { "\(mac) (\($0))" } ?? "\(mac) (not a node's)" }
        var answered = 0
        var changes = 0
        var owner: String?
        var longestSilence: Int64 = 0
        var silentSince: Int64?
        var doubleFrom: (number: Int, time: Int64, macs: Set<String>)?
        var doubleTo = 0
        func closeDouble() {
            guard let start = doubleFrom else { return }
            violations.append(
                Violation(
                    kind: "vip-two-macs",
                    detail: "ARP requests #\(start.number)…#\(doubleTo) for \(app)'s VIP \(address) were each answered by two MACs: \(start.macs.sorted().map(name).joined(separator: " and "))",
                    fault: Checker.fault(at: start.time, in: faults)))
            doubleFrom = nil
        }
        for request in sent {
            let macs = answers[request.number] ?? []
            if macs.isEmpty {
                if silentSince == nil { silentSince = request.time }
            } else {
                answered += 1
                if let since = silentSince { longestSilence = max(longestSilence, request.time - since) }
                silentSince = nil
                if macs.count == 1, let mac = macs.first {
                    if let owner, owner != mac { changes += 1 }
                    owner = mac
                }
            }
            if macs.count > 1 {
                if doubleFrom == nil { doubleFrom = (request.number, request.time, macs) }
                doubleTo = request.number
            } else {
                closeDouble()
            }
        }
        closeDouble()
        if sent.isEmpty {
            violations.append(Violation(kind: "vip-prober", detail: "the VIP prober logged no request (see vip-prober.log): the VIP was not checked", fault: nil))
        }
        summary =
            "\(app) (VIP \(address)): \(sent.count) ARP requests, \(answered) answered, \(changes) owner changes, longest unanswered stretch \(longestSilence / 1_000_000) ms, \(late) late replies; resolution 5 ms"
    }
}

extension Checker {
    /// The SQLite and VIP checks on made-up evidence, before a run: each must report its planted
    /// violation and nothing on the clean part.
    static func selfTestDataChecks(directory: String) throws {
        let ms: Int64 = 1_000_000
        // VIP: requests 0…9; 3 and 4 answered by two MACs; the owner changes at 6 (not a violation).
        var vip = ""
        for k in 0..<10 {
            vip += "s \(Int64(k) * 5 * ms) \(k)\n"
            vip += "r \(Int64(k) * 5 * ms + 100_000) \(k) \(k < 6 ? NetLab.nodeMAC(1) : NetLab.nodeMAC(2))\n"
            if k == 3 || k == 4 { vip += "r \(Int64(k) * 5 * ms + 200_000) \(k) \(NetLab.nodeMAC(3))\n" }
        }
        try vip.write(toFile: "\(directory)/vip-selftest.log", atomically: true, encoding: .utf8)
        let names = Dictionary(uniqueKeysWithValues: (1...3).map { (NetLab.nodeMAC($0), "node-\($0)") })
        let vipCheck = VIPCheck(path: "\(directory)/vip-selftest.log", app: "selftest", address: "10.0.0.100", macNames: names, faults: [])
        guard vipCheck.violations.count == 1, vipCheck.violations[0].kind == "vip-two-macs", vipCheck.violations[0].detail.contains("#3…#4") else {
            throw ChaosError("the checker's self-test failed: on made-up VIP evidence it reported \(vipCheck.violations)")
        }
        // SQLite: pid 1 (epoch 5) acknowledged 10 rows and stopped during a switchover; pid 2
        // started on a database with 9 of them (lost), then pid 2 stopped (graceful again) and
        // pid 3 found all of pid 2's rows but a hole in pid 1's and a failed integrity check.
        let runs = [
            BackendRun(app: "selftest", node: "node-1", epoch: 5, pid: 1, first: 0, last: 100 * ms, stopped: true),
            BackendRun(app: "selftest", node: "node-2", epoch: 6, pid: 2, first: 110 * ms, last: 200 * ms, stopped: true),
            BackendRun(app: "selftest", node: "node-3", epoch: 7, pid: 3, first: 210 * ms, last: 300 * ms, stopped: false),
        ]
        let faults = [
            FaultRecord(index: 1, kind: FaultKind.switchover.rawValue, target: "", start: 90 * ms, end: 120 * ms, recovered: 130 * ms, note: ""),
            FaultRecord(index: 2, kind: FaultKind.stepdown.rawValue, target: "", start: 190 * ms, end: 220 * ms, recovered: 230 * ms, note: ""),
        ]
        let acks = (1...10).map { "\(Int64($0) * ms) 5 node-1 \($0) 1" } + (1...4).map { "\(150 * ms + Int64($0)) 6 node-2 \($0) 2" }
        let inventory = [
            "\(1 * ms) 1 node-1 5 ok -",
            "\(110 * ms) 2 node-2 6 ok 5:1:9:9",
            "\(210 * ms) 3 node-3 7 *** 5:1:8:9,6:2:4:4",
        ]
        try (acks.joined(separator: "\n") + "\n").write(toFile: "\(directory)/selftest.acks", atomically: true, encoding: .utf8)
        try (inventory.joined(separator: "\n") + "\n").write(toFile: "\(directory)/selftest.inventory", atomically: true, encoding: .utf8)
        let sqlite = SQLiteCheck(evidenceDirectory: directory, app: "selftest", runs: runs, faults: faults)
        let kinds = sqlite.violations.map(\.kind).sorted()
        guard kinds == ["sqlite-hole", "sqlite-integrity", "sqlite-lost"], sqlite.violations.first(where: { $0.kind == "sqlite-lost" })?.fault == 1 else {
            throw ChaosError("the checker's self-test failed: on made-up SQLite evidence it reported \(sqlite.violations)")
        }
        for file in ["vip-selftest.log", "selftest.acks", "selftest.inventory"] { try? FileManager.default.removeItem(atPath: "\(directory)/\(file)") }
    }
}
