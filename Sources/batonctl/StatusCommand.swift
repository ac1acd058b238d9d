import ArgumentParser
import BatonCore
import Foundation

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show every app: who is active, the fencing token, and each node's view.",
        discussion: """
            Asks every node on baton.<cluster>.status and prints the replies that arrive within \
            --wait, one table per app. Fails when no node answers.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(help: "Print the nodes' status replies as JSON instead of tables.")
    var json = false

    @Argument(help: ArgumentHelp("Show only this app.", valueName: "app"), completion: ClusterCompletion.apps)
    var app: String?

    func run() async throws {
        let output = try await connection.withSession { session in
            var statuses = try await session.statuses()
            if let app {
                _ = try session.reports(for: app, in: statuses)
                statuses = statuses.compactMap { status in
                    var status = status
                    status.apps = status.apps.filter { $0.name == app }
                    return status.apps.isEmpty ? nil : status
                }
            }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                return String(decoding: try encoder.encode(statuses), as: UTF8.self)
            }
            return StatusTable.render(cluster: session.cluster, statuses: statuses)
        }
        print(output)
    }
}

/// The human-readable form of `batonctl status`.
enum StatusTable {
    static func render(cluster: String, statuses: [NodeStatus]) -> String {
        let nodes = statuses.map(\.node)
        var lines = ["cluster \(cluster): \(nodes.count) node\(nodes.count == 1 ? "" : "s") answered (\(nodes.joined(separator: ", ")))"]
        for status in statuses {
            if let drained = status.drained { lines.append("node \(status.node) is \(drained)") }
        }
        let apps = Set(statuses.flatMap { $0.apps.map(\.name) }).sorted()
        if apps.isEmpty {
            lines.append("no apps")
        }
        for app in apps {
            let reports = statuses.compactMap { status in status.apps.first { $0.name == app }.map { (node: status.node, app: $0) } }
            lines.append("")
            lines.append(summary(app: app, reports: reports))
            if let vips = reports.lazy.compactMap(\.app.vips).first(where: { !$0.isEmpty }) {
                lines.append("  vip: \(vips.joined(separator: ", "))")
            }
            let replicated = reports.contains { $0.app.replication != nil }
            var header = ["NODE", "ROLE", "PAUSED", "BACKEND", "PRIORITY"]
            if replicated { header.append("REPLICA") }
            var rows = [header + ["LAST EVENT"]]
            for (node, report) in reports {
                var row = [node, report.role.rawValue, report.paused ? (report.pausedUntil.map { "until \($0)" } ?? "yes") : "no", backendText(report), String(report.priority)]
                if replicated { row.append(report.replication.map(replicaText) ?? "-") }
                rows.append(row + [report.lastEvent.flatMap { $0.isEmpty ? nil : $0 } ?? "-"])
            }
            lines.append(contentsOf: table(rows).map { "  " + $0 })
            for (node, report) in reports {
                if let placement = report.placement { lines.append("  placement on \(node): \(placement)") }
            }
            for (node, report) in reports {
                if let promotion = report.replication?.promotion { lines.append("  last promotion on \(node): \(promotion)") }
            }
            for (node, report) in reports {
                if let hook = report.lastHook { lines.append("  last hooks on \(node): \(hook)") }
            }
            for (node, report) in reports {
                for path in report.replication?.unshippedDatabases ?? [] {
                    lines.append(
                        "  UNSHIPPED on \(node): \(path) may hold transactions that were never shipped (a final flush gave up, or the node was fenced while shipping); inspect it, then remove it")
                }
            }
        }
        let unsupervised = statuses.filter { $0.systemdUnit == nil }.map(\.node)
        if !unsupervised.isEmpty {
            lines.append("")
            lines.append("note: batond does not run under systemd on \(unsupervised.joined(separator: ", ")): units it manages there are not bound to it")
        }
        return lines.joined(separator: "\n")
    }

    /// An active app whose backend does not run is down (restarting, or about to step down),
    /// not merely stopped.
    static func backendText(_ report: AppStatus) -> String {
        if report.backendRunning { return "running" }
        return report.role == .active ? "down" : "stopped"
    }

    /// `shipping txid 120`, `applied txid 118, 2 behind, last commit 0.4s ago`, with the error;
    /// during a snapshot restore `initial sync 41% (105.0 of 256.0 MiB, 98.2 MiB/s) to txid 90`.
    static func replicaText(_ replication: ReplicationStatus) -> String {
        var parts: [String] = []
        if let sync = replication.sync { parts.append(sync.text) }
        switch replication.role {
        case .shipping: parts.append("shipping txid \(replication.txid.map(String.init) ?? "?")")
        case .applying:
            // A new standby has applied nothing until its initial sync is done.
            if replication.txid != nil || replication.sync == nil { parts.append("applied txid \(replication.txid.map(String.init) ?? "?")") }
        case .idle: parts.append("idle")
        }
        if let lag = replication.lagTransactions {
            // Bytes and seconds only while behind: "3 behind (24.0 KiB, 1.2s)".
            var details: [String] = []
            if let bytes = replication.lagBytes, bytes > 0 { details.append(byteText(bytes)) }
            if let seconds = replication.lagSeconds, seconds > 0 { details.append(String(format: "%.1fs", seconds)) }
            parts.append("\(lag) behind" + (details.isEmpty ? "" : " (\(details.joined(separator: ", ")))"))
        }
        if let commit = replication.lastCommitTime {
            let age = max(0, Date().timeIntervalSince1970 - commit)
            parts.append(String(format: "last commit %.1fs ago", age))
        }
        if let snapshot = replication.lastSnapshotTime {
            parts.append("snapshot " + ageText(max(0, Date().timeIntervalSince1970 - snapshot)) + " ago")
        }
        if let error = replication.lastError { parts.append("error: \(error)") }
        return parts.joined(separator: ", ")
    }

    /// `512 B`, `24.0 KiB`, `3.2 MiB`, `1.1 GiB`.
    static func byteText(_ bytes: UInt64) -> String {
        if bytes < 1024 { return "\(bytes) B" }
        var value = Double(bytes) / 1024
        for unit in ["KiB", "MiB", "GiB"] {
            if value < 1024 || unit == "GiB" { return String(format: "%.1f", value) + " " + unit }
            value /= 1024
        }
        return "\(bytes) B"
    }

    /// `42s`, `12m`, `3h`, `2d` (whole units, rounded down).
    static func ageText(_ seconds: Double) -> String {
        let whole = Int(seconds)
        if whole < 120 { return "\(whole)s" }
        if whole < 7200 { return "\(whole / 60)m" }
        if whole < 172_800 { return "\(whole / 3600)h" }
        return "\(whole / 86400)d"
    }

    /// `web: active on node-a (epoch 42)`, or what is known when no single node is active.
    static func summary(app: String, reports: [(node: String, app: AppStatus)]) -> String {
        let active = reports.filter { $0.app.role == .active }
        var text: String
        switch active.count {
        case 1:
            text = "\(app): active on \(active[0].node) (epoch \(epochText(active[0].app.token)))"
        case 0:
            let leaders = Set(reports.compactMap { $0.app.leader })
            if leaders.count == 1, let leader = leaders.first {
                let token = reports.compactMap { $0.app.leader == leader ? $0.app.token : nil }.max()
                text = "\(app): no node reports active; the lease is held by \(leader) (epoch \(epochText(token)))"
            } else if leaders.isEmpty {
                text = "\(app): no active node (the lease is free)"
            } else {
                text = "\(app): no node reports active; the nodes disagree on the lease holder (\(leaders.sorted().joined(separator: ", ")))"
            }
        default:
            text = "\(app): WARNING: several nodes report active: "
                + active.map { "\($0.node) (epoch \(epochText($0.app.token)))" }.joined(separator: ", ")
        }
        let paused = reports.filter(\.app.paused).map(\.node)
        if paused.count == reports.count {
            text += " [paused]"
        } else if !paused.isEmpty {
            text += " [paused on \(paused.joined(separator: ", ")) only]"
        }
        return text
    }

    static func epochText(_ token: UInt64?) -> String { token.map(String.init) ?? "?" }

    /// Left-aligned columns two spaces apart; the last column is not padded.
    static func table(_ rows: [[String]]) -> [String] {
        guard let columns = rows.map(\.count).max() else { return [] }
        var widths = [Int](repeating: 0, count: columns)
        for row in rows {
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
    }
}
