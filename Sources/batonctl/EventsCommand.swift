import ArgumentParser
import BatonCore
import BatonEvents
import Foundation
import NATS
import Timestamps

struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Show the cluster's event history: transitions, fences, failovers and switchovers with their downtime and data loss.",
        discussion: """
            Reads the JetStream stream BATON_<cluster>_EVENTS that every batond writes to \
            (subjects baton.<cluster>.events.<app>.<kind>; node events under _node). One line per \
            event, oldest first: time (UTC), node, app, kind, epoch and what happened; a failover \
            or switchover line carries its downtime and data loss. --json prints one JSON object \
            per line (the schema in README.md). --follow keeps printing new events until \
            interrupted.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: ArgumentHelp("Show only this app's events.", valueName: "app"), completion: ClusterCompletion.apps)
    var app: String?

    @Option(help: ArgumentHelp("Only events of the last DURATION, e.g. 30m, 1h, 24h (default: all that are kept).", valueName: "duration"))
    var since: DurationArgument?

    @Option(help: ArgumentHelp("At most the newest N events of the history (before following).", valueName: "n"))
    var limit: Int?

    @Flag(help: "Keep printing new events as they are recorded, until interrupted.")
    var follow = false

    @Flag(help: "Print one JSON object per event (JSON lines) instead of text.")
    var json = false

    func validate() throws {
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1, got \(limit)") }
    }

    func run() async throws {
        try await connection.withSession { session in
            let reader = EventReader(jetStream: JetStream(client: session.client), cluster: session.cluster)
            let start = since.map { Date().addingTimeInterval(-Double($0.duration.totalNanoseconds) / 1e9) }
            let history: [BatonEvent]
            do {
                history = try await reader.recentEvents(app: app, since: start, limit: limit)
            } catch let error as EventStreamError {
                throw CLIError(error.description)
            }
            // Follow from just after the last event shown (by time), so nothing falls between.
            // (Stream times are the server's, event times the nodes': overlap by 2 s and skip
            // what was shown.)
            let followFrom = history.last.map { Date(timeIntervalSince1970: $0.time - 2) } ?? start ?? Date().addingTimeInterval(-2)
            let stream = follow ? try await reader.follow(app: app, since: followFrom) : nil
            if !json && history.isEmpty && !follow {
                FileHandle.standardOutput.write(Data("no events\(app.map { " of \($0)" } ?? "")\(since.map { " in the last \($0.duration.configString)" } ?? "") in \(reader.streamName)\n".utf8))
            }
            for event in history { try emit(event) }
            guard let stream else { return }
            let shown = Set(history.suffix(64))
            for try await event in stream where !shown.contains(event) {
                try emit(event)
            }
        }
    }

    private func emit(_ event: BatonEvent) throws {
        let line: String
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            line = String(decoding: try encoder.encode(event), as: UTF8.self)
        } else {
            line = EventLine.render(event)
        }
        // Unbuffered: a follower piped into another program sees each event at once.
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}

/// The text form of one event for `batonctl events`.
enum EventLine {
    static func render(_ event: BatonEvent) -> String {
        var parts = [
            timestamp(event.time), pad(event.node, 10), pad(event.app ?? "-", 10), pad(event.kind.rawValue, 18),
            pad(event.epoch.map { "epoch \($0)" } ?? "", 10),
        ]
        var text = event.detail ?? ""
        if let duration = event.durationMilliseconds, event.handover == nil {
            text += (text.isEmpty ? "" : " ") + "(\(format(duration)) ms)"
        }
        if let loss = event.handover?.dataLoss {
            text += "; data: promoted txid \(loss.promotedTxid.map(String.init) ?? "none")"
            if let lost = loss.lostShippedTxids { text += ", \(lost) shipped txid(s) lost" }
            text += ", unshipped: \(loss.unshipped)"
        } else if event.handover != nil {
            text += "; data: no replicated database"
        }
        parts.append(text)
        var line = parts.joined(separator: "  ")
        while line.hasSuffix(" ") { line.removeLast() }
        return line
    }

    static func timestamp(_ seconds: Double) -> String {
        RFC3339.format(secondsSince1970: seconds, fractionDigits: 3)
    }

    static func format(_ milliseconds: Double) -> String { String(format: "%.1f", milliseconds) }

    private static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text.padding(toLength: width, withPad: " ", startingAt: 0)
    }
}
