import ArgumentParser
import BatonCore
import Control

struct PauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause",
        abstract: "Pause an app on every node, so that it does not change hands.",
        discussion: """
            Sends pause to every node that answers the status request and runs the app (a pause \
            on only some nodes would still let the app move), and prints each node's answer. \
            Fails when any of them refuses or does not answer.

            With --for, the pause ends by itself after that long (each node counts it from when \
            it got the request), and `batonctl status` shows when. Without --for, the app stays \
            paused until `batonctl resume`. Either kind ends when batond restarts (a pause is not \
            stored), except that `paused: true` in the config pauses the app at every start.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(help: ArgumentHelp("How long to wait for each node's answer.", valueName: "duration"))
    var timeout = DurationArgument(.seconds(10))

    @Option(
        name: .customLong("for"),
        help: ArgumentHelp("End the pause by itself after this long (30m, 2h); without it the pause lasts until resume.", valueName: "duration"))
    var pauseFor: DurationArgument?

    @Argument(help: ArgumentHelp("The app to pause.", valueName: "app"), completion: ClusterCompletion.apps)
    var app: String

    func run() async throws {
        try await ClusterWide.send(.pause, app: app, pauseFor: pauseFor?.duration, connection: connection, timeout: timeout.duration)
    }
}

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume",
        abstract: "Resume a paused app on every node.",
        discussion: """
            Sends resume to every node that answers the status request and runs the app, and \
            prints each node's answer. Fails when any of them refuses or does not answer.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(help: ArgumentHelp("How long to wait for each node's answer.", valueName: "duration"))
    var timeout = DurationArgument(.seconds(10))

    @Argument(help: ArgumentHelp("The app to resume.", valueName: "app"), completion: ClusterCompletion.apps)
    var app: String

    func run() async throws {
        try await ClusterWide.send(.resume, app: app, connection: connection, timeout: timeout.duration)
    }
}

/// Commands that go to every node running an app.
enum ClusterWide {
    static func send(_ command: ControlCommand, app: String, pauseFor: Duration? = nil, connection: ConnectionOptions, timeout: Duration) async throws {
        try await connection.withSession { session in
            let nodes = try session.reports(for: app, in: try await session.statuses()).map(\.node)
            let control = session.control
            let answers = await withTaskGroup(of: (String, Result<ControlReply, any Error>).self) { group in
                for node in nodes {
                    group.addTask {
                        do {
                            return (node, .success(try await control.send(command, app: app, pauseFor: pauseFor, node: node, timeout: timeout)))
                        } catch {
                            return (node, .failure(error))
                        }
                    }
                }
                var answers: [String: Result<ControlReply, any Error>] = [:]
                for await (node, answer) in group { answers[node] = answer }
                return answers
            }
            var failed: [String] = []
            for node in nodes {
                switch answers[node] {
                case .success(let reply) where reply.ok && pauseFor != nil && reply.pausedUntil == nil:
                    // A batond that predates expiring pauses ignored "for": its pause never ends.
                    print("\(node): FAILED: its batond paused \(app) without an end (it predates pause --for); run batonctl resume \(app) later")
                    failed.append(node)
                case .success(let reply) where reply.ok:
                    print("\(node): \(reply.message)")
                case .success(let reply):
                    print("\(node): FAILED: \(reply.message)")
                    failed.append(node)
                case .failure(let error):
                    print("\(node): FAILED: \(error)")
                    failed.append(node)
                case nil:
                    failed.append(node)
                }
            }
            guard failed.isEmpty else {
                throw CLIError("\(command.rawValue) of \(app) failed on \(failed.joined(separator: ", ")) (\(nodes.count - failed.count) of \(nodes.count) nodes succeeded)")
            }
        }
    }
}
