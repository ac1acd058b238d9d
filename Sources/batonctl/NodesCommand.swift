import ArgumentParser
import BatonCore
import Control
import Foundation
import NATS
import Timestamps

struct NodesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nodes",
        abstract: "Show every node of the cluster: state, labels, active apps, version, uptime, last seen, drained.",
        discussion: """
            Merges the node registry (running batond instances), the node directory (every node \
            seen in the last 7 days, with its last record) and the answers to the status request \
            that arrive within --wait. A node is "up" when it answered, "unresponsive" when it \
            did not answer although it did not stop gracefully (crashed, frozen, cut off from \
            NATS, or its control service is stuck), and "stopped" when its batond exited \
            gracefully. For a node that does not answer, the active apps are those another node \
            reports it holding the lease of. Labels are those of the node's config when its \
            batond started. Fails only when neither a node nor a record of one is found.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(help: "Print the nodes as JSON instead of a table.")
    var json = false

    func run() async throws {
        let output = try await connection.withSession { session in
            let replies = try await session.control.statuses(window: session.wait)
            for problem in replies.problems { printError("warning: \(problem)") }
            let jetStream = JetStream(client: session.client)
            let read = try await NodeDirectory.read(jetStream: jetStream, cluster: session.cluster)
            let now = Date().timeIntervalSince1970
            var nodes = NodeOverview.merge(registry: read.registry, directory: read.directory, statuses: replies.statuses, now: now)
            let drains = try await DrainStore.activeDrains(jetStream: jetStream, cluster: session.cluster, now: now)
            for index in nodes.indices {
                nodes[index].drained = drains[nodes[index].node]?.summary { RFC3339.format(secondsSince1970: $0) }
            }
            guard !nodes.isEmpty else {
                throw CLIError(
                    "no baton node answered on \(session.control.subjects.status) and no node is recorded in cluster \(session.cluster) "
                        + "(is batond running and connected to \(session.servers.joined(separator: ", "))?)")
            }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                return String(decoding: try encoder.encode(nodes), as: UTF8.self)
            }
            return NodesTable.render(cluster: session.cluster, nodes: nodes)
        }
        print(output)
    }
}

/// The human-readable form of `batonctl nodes`: one row per node, the columns below (a column is
/// a header and how to fill it, so adding one is one line).
enum NodesTable {
    static let columns: [(header: String, cell: @Sendable (NodeOverview) -> String)] = [
        ("NODE", { $0.node }),
        ("STATE", { $0.state.rawValue }),
        ("LABELS", { $0.labels.isEmpty ? "-" : $0.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") }),
        ("ACTIVE", { $0.activeApps.isEmpty ? "-" : $0.activeApps.joined(separator: ",") }),
        ("VERSION", { $0.version ?? "-" }),
        ("UPTIME", { $0.uptimeSeconds.map(uptime) ?? "-" }),
        ("LAST SEEN", { $0.state == .up ? "now" : $0.lastSeen ?? "-" }),
        ("DRAINED", { $0.drained == nil ? "no" : "yes" }),
    ]

    static func render(cluster: String, nodes: [NodeOverview]) -> String {
        let up = nodes.filter { $0.state == .up }.count
        var lines = ["cluster \(cluster): \(nodes.count) node\(nodes.count == 1 ? "" : "s"), \(up) up"]
        let rows = [columns.map(\.header)] + nodes.map { node in columns.map { $0.cell(node) } }
        lines.append(contentsOf: StatusTable.table(rows))
        for node in nodes {
            if let detail = node.detail { lines.append("\(node.node): \(detail)") }
            if let drained = node.drained { lines.append("\(node.node) is \(drained)") }
        }
        return lines.joined(separator: "\n")
    }

    /// `3d4h`, `2h5m`, `4m10s`, `12s`.
    static func uptime(_ seconds: Double) -> String {
        let total = Int(seconds)
        let (days, hours, minutes, secs) = (total / 86400, total % 86400 / 3600, total % 3600 / 60, total % 60)
        if days > 0 { return "\(days)d\(hours)h" }
        if hours > 0 { return "\(hours)h\(minutes)m" }
        if minutes > 0 { return "\(minutes)m\(secs)s" }
        return "\(secs)s"
    }
}
