import ArgumentParser
import BatonCore
import Foundation
import NATS
import NIOCore
import Control
import Timestamps

struct DrainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drain",
        abstract: "Move every app off a node and keep new ones away (maintenance).",
        discussion: """
            Records the drain in NATS (KV bucket baton_<cluster>__drains, key NODE), so that it \
            survives batond restarts: the node takes no lease, and hands each app it holds to the \
            least loaded eligible node by a graceful switchover (an app that is paused or in a \
            transition stays until it can move; with no eligible node it stays, and status says \
            why). With --for the drain ends by itself after that long (every node compares the \
            end time with its own clock); otherwise it lasts until `batonctl undrain NODE`. With \
            --until-empty, returns once the node holds no app, or fails naming the apps that could not \
            move and why when --timeout passes first.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(name: .customLong("for"), help: ArgumentHelp("End the drain by itself after this long (e.g. 2h).", valueName: "duration"))
    var duration: DurationArgument?

    // `--wait` is every command's status reply window (ConnectionOptions).
    @Flag(name: .customLong("until-empty"), help: "Wait until the node holds no app.")
    var untilEmpty = false

    @Option(help: ArgumentHelp("With --until-empty: how long to wait for the apps to move.", valueName: "duration"))
    var timeout = DurationArgument(.seconds(120))

    @Argument(help: ArgumentHelp("The node to drain.", valueName: "node"), completion: ClusterCompletion.nodes)
    var node: String

    func run() async throws {
        guard isValidNodeID(node) else { throw CLIError("invalid node id \"\(node)\": use one or more of a-z, 0-9 and \"-\"") }
        try await connection.withSession { session in
            let statuses = try await session.statuses()
            if !statuses.contains(where: { $0.node == node }) {
                printError("warning: node \(node) did not answer the status request (nodes that answered: \(statuses.map(\.node).joined(separator: ", "))); the drain applies when it runs")
            }
            let now = Date().timeIntervalSince1970
            let requester = ConnectionOptions.requester(try connection.resolve().clientOptions)
            let record = DrainRecord(
                node: node, since: now, until: duration.map { now + Double($0.duration.totalNanoseconds) / 1e9 },
                by: "\(requester.localUser ?? "?")@\(requester.host ?? "?")")
            let kv = try await DrainStore.open(jetStream: JetStream(client: session.client), cluster: session.cluster, replicas: 1)
            _ = try await kv.put(node, value: ByteBuffer(bytes: try JSONEncoder().encode(record)))
            print("node \(node) is \(record.summary { RFC3339.format(secondsSince1970: $0) })")
            guard untilEmpty else { return }
            try await waitUntilEmpty(session: session)
        }
    }

    /// Polls the node's status until it holds no app; fails with the apps left and why.
    private func waitUntilEmpty(session: Session) async throws {
        let deadline = ContinuousClock.now + timeout.duration
        var left: [AppStatus] = []
        while true {
            let statuses = try await session.statuses()
            guard let mine = statuses.first(where: { $0.node == node }) else {
                throw CLIError("node \(node) does not answer: cannot tell whether its apps moved")
            }
            left = mine.apps.filter { [.acquiring, .promoting, .active, .demoting, .fencing].contains($0.role) }
            if left.isEmpty {
                print("node \(node) holds no app")
                return
            }
            if ContinuousClock.now >= deadline { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        let lines = left.map { app in "  \(app.name) (\(app.role.rawValue)): \(app.placement ?? app.lastEvent ?? "no reason reported")" }
        throw CLIError("node \(node) still holds \(left.count) app\(left.count == 1 ? "" : "s") after \(timeout.duration.configString):\n" + lines.joined(separator: "\n"))
    }
}

struct UndrainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "undrain",
        abstract: "End a node's drain: it may take apps again.",
        discussion: """
            Deletes the node's drain record. The node then takes free leases again, and \
            balancing (when on) brings it its share of the active apps, one handover at a time.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: ArgumentHelp("The node to undrain.", valueName: "node"), completion: ClusterCompletion.nodes)
    var node: String

    func run() async throws {
        guard isValidNodeID(node) else { throw CLIError("invalid node id \"\(node)\": use one or more of a-z, 0-9 and \"-\"") }
        try await connection.withSession { session in
            let kv = try await DrainStore.open(jetStream: JetStream(client: session.client), cluster: session.cluster, replicas: 1)
            guard try await kv.get(node) != nil else {
                print("node \(node) is not drained")
                return
            }
            _ = try await kv.delete(node)
            print("node \(node) is no longer drained")
        }
    }
}

private func isValidNodeID(_ text: String) -> Bool {
    !text.isEmpty && text.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
}
