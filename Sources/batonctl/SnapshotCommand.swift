import ArgumentParser
import BatonCore
import Foundation
import Control

struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Take a snapshot of an app's SQLite database now.",
        discussion: """
            Sends snapshot to the node that reports the app active (like stepdown). That node's \
            WAL shipper takes the snapshot between two records, uploads it to the app's Object \
            Store bucket and publishes its snapshot record; then batonctl prints its id (the \
            object's name), the txid it holds every transaction up to, and its size. Fails when \
            the app has no sqlite section, when no node (or more than one) reports it active, \
            or when the snapshot fails or --timeout passes first.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(help: ArgumentHelp("How long to wait for the snapshot (it copies and uploads the whole database).", valueName: "duration"))
    var timeout = DurationArgument(.seconds(300))

    @Flag(help: "Print the snapshot as JSON.")
    var json = false

    @Argument(help: ArgumentHelp("The app whose database to snapshot.", valueName: "app"), completion: ClusterCompletion.apps)
    var app: String

    func run() async throws {
        try await connection.withSession { session in
            let reports = try session.reports(for: app, in: try await session.statuses())
            guard reports.contains(where: { $0.app.replication != nil }) else {
                throw CLIError("\(app) has no sqlite section on any node (\(reports.map(\.node).joined(separator: ", "))): there is no database to snapshot")
            }
            let active = try Handover.activeNode(app: app, reports: reports)
            let reply: ControlReply
            do {
                reply = try await session.control.send(.snapshot, app: app, node: active.node, timeout: timeout.duration)
            } catch {
                throw CLIError("snapshot of \(app) on \(active.node) failed: \(error)")
            }
            guard reply.ok, let snapshot = reply.snapshot else {
                throw CLIError("\(active.node) did not take a snapshot of \(app): \(reply.message)")
            }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(snapshot), as: UTF8.self))
            } else {
                print("snapshot \(snapshot.id) of \(app) on \(snapshot.node) (epoch \(snapshot.epoch))")
                print("  txid:   \(snapshot.txid)")
                print("  size:   \(snapshot.bytes) bytes (\(Self.readableSize(snapshot.bytes)))")
                print("  bucket: \(snapshot.bucket)")
            }
        }
    }

    /// `12.3 MiB`, `512 B`.
    static func readableSize(_ bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(bytes) B" : "\(String(format: "%.1f", value)) \(units[unit])"
    }
}
