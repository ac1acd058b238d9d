import ArgumentParser
import BatonCore
import NATS
import Control

struct StepdownCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stepdown",
        abstract: "Make the active node give an app up, so that another node takes it.",
        discussion: """
            Sends stepdown to the node that reports the app active, then follows the app's lease \
            until another node holds it and reports the app active, and prints that node and the \
            new fencing token. Fails when the active node refuses, when no other node takes the \
            app, or when --timeout passes first.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(help: ArgumentHelp("How long to wait for another node to run the app.", valueName: "duration"))
    var timeout = DurationArgument(.seconds(30))

    @Argument(help: ArgumentHelp("The app to step down.", valueName: "app"), completion: ClusterCompletion.apps)
    var app: String

    func run() async throws {
        try await connection.withSession { session in
            let reports = try session.reports(for: app, in: try await session.statuses())
            let active = try Handover.activeNode(app: app, reports: reports)
            let outcome = try await Handover.run(
                session: session, app: app, active: active, target: nil, command: .stepdown, timeout: timeout.duration)
            try Handover.finish(outcome)
        }
    }
}

struct SwitchoverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchover",
        abstract: "Move an app to a named node and wait for the outcome.",
        discussion: """
            Checks that the target node runs the app, sends switchover to the node that reports \
            the app active, then follows the app's lease until the target holds it and reports \
            the app active ("web is now active on node-b (epoch 42)"). Fails, with what happened \
            instead, when the active node refuses, when another node takes the app, or when \
            --timeout passes first. When the target is already active, says so and does nothing.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(help: ArgumentHelp("The node to move the app to.", valueName: "node"), completion: ClusterCompletion.nodes)
    var to: String

    @Option(help: ArgumentHelp("How long to wait for the target to run the app.", valueName: "duration"))
    var timeout = DurationArgument(.seconds(30))

    @Argument(help: ArgumentHelp("The app to move.", valueName: "app"), completion: ClusterCompletion.apps)
    var app: String

    func run() async throws {
        try await connection.withSession { session in
            let reports = try session.reports(for: app, in: try await session.statuses())
            guard let target = reports.first(where: { $0.node == to }) else {
                throw CLIError(
                    "\(to) is not a node of app \(app) (nodes that run it: \(reports.map(\.node).joined(separator: ", ")))")
            }
            if target.app.role == .active {
                print("\(app) is already active on \(to) (epoch \(StatusTable.epochText(target.app.token)))")
                return
            }
            let active = try Handover.activeNode(app: app, reports: reports)
            let outcome = try await Handover.run(
                session: session, app: app, active: active, target: to, command: .switchover, timeout: timeout.duration)
            try Handover.finish(outcome)
        }
    }
}

/// What stepdown and switchover share.
enum Handover {
    static func activeNode(app: String, reports: [(node: String, app: AppStatus)]) throws -> (node: String, app: AppStatus) {
        let active = reports.filter { $0.app.role == .active }
        switch active.count {
        case 1:
            return active[0]
        case 0:
            let roles = reports.map { "\($0.node) \($0.app.role.rawValue)\($0.app.paused ? " (paused)" : "")" }.joined(separator: ", ")
            throw CLIError("no node reports \(app) active (\(roles))")
        default:
            throw CLIError("several nodes report \(app) active (\(active.map(\.node).joined(separator: ", "))); refusing to pick one")
        }
    }

    /// Watches the lease, sends the command to the active node, prints its reply and waits for
    /// the outcome.
    static func run(
        session: Session, app: String, active: (node: String, app: AppStatus), target: String?, command: ControlCommand,
        timeout: Duration
    ) async throws -> HandoverOutcome {
        let store = try await session.control.leaseStore(app: app, jetStream: JetStream(client: session.client))
        // Watch first, so nothing between reading the holder and the outcome is missed.
        let watch = try await store.watch()
        let holder: LeaseHolderSnapshot
        do {
            holder = try await session.control.currentHolder(of: store)
                ?? LeaseHolderSnapshot(node: active.node, token: active.app.token ?? 0)
        } catch {
            await watch.stop()
            throw CLIError("cannot read the lease of \(app): \(error)")
        }
        let reply: ControlReply
        do {
            reply = try await session.control.send(command, app: app, to: target, node: active.node, timeout: timeout)
        } catch {
            await watch.stop()
            throw CLIError("\(command.rawValue) of \(app) failed: \(error)")
        }
        print("\(active.node): \(reply.message)")
        guard reply.ok else {
            await watch.stop()
            throw CLIError("\(active.node) refused to \(command == .stepdown ? "step down" : "switch over") \(app): \(reply.message)")
        }
        return await session.control.awaitHandover(
            app: app, from: holder, to: target, lease: watch, timeout: timeout)
    }

    static func finish(_ outcome: HandoverOutcome) throws {
        guard outcome.succeeded else { throw CLIError(outcome.description) }
        print(outcome.description)
    }
}
