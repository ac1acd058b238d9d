import ArgumentParser
import BatonCore
import Foundation
import NATS
import NIOCore
import ReplicationCatalog
import Timestamps

struct ReplicaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replica",
        abstract: "Inspect an app's replicated SQLite history, and accept a node's copy when Baton refuses to choose.",
        discussion: """
            Baton keeps a durable record of the newest replicated data of each app (the KV \
            bucket baton_<cluster>__replication, key <app>.newest, and <app>.newest.json in each \
            node's state_dir) and each passive node reports what its replica holds (key \
            <app>.node.<node>). A promotion never publishes older or empty data over that record: \
            when the WAL stream expired, was deleted or recreated, the node promotes its own copy \
            or the newest snapshot only if it is the newest data, and otherwise refuses (the app \
            stays down, and batonctl status shows why).
            """,
        subcommands: [ReplicaStatusCommand.self, ReplicaPromoteCommand.self]
    )
}

struct ReplicaStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show an app's newest recorded data, what each node holds, the stream and the newest snapshot.",
        discussion: """
            Reads NATS directly (no node needs to answer): the durable record, every node's \
            report (token, txid, checksum, when applied), the WAL stream's range and last \
            record, and the newest snapshot in the Object Store.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: ArgumentHelp("The app.", valueName: "app"), completion: ClusterCompletion.apps)
    var app: String

    func run() async throws {
        let output = try await connection.withSession { session in
            let view = try await ReplicaView.read(session: session, app: app)
            return view.render()
        }
        print(output)
    }
}

struct ReplicaPromoteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "promote",
        abstract: "Accept NODE's copy of APP's database as the truth (--force required).",
        discussion: """
            For an app whose promotion Baton refuses because no node it can reach holds the \
            newest recorded data (for example the node that had it is gone for good). Writes \
            NODE's reported copy (token, txid, checksum) as the app's newest record, marked \
            forced: from then on only a node holding exactly that copy may promote (the lease \
            goes to NODE at its next attempt; batonctl switchover APP --to NODE speeds it up), \
            and the other nodes resynchronise from it. Every transaction after NODE's copy — \
            what the record and the other nodes hold beyond it — is given up; the command says \
            what. Refused while a node is active for the app.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(help: "Required: confirms that data newer than NODE's copy may be given up.")
    var force = false

    @Argument(help: ArgumentHelp("The app.", valueName: "app"), completion: ClusterCompletion.apps)
    var app: String

    @Argument(help: ArgumentHelp("The node whose copy becomes the truth.", valueName: "node"), completion: ClusterCompletion.nodes)
    var node: String

    func run() async throws {
        let output = try await connection.withSession { session in
            let view = try await ReplicaView.read(session: session, app: app)
            guard let chosen = view.reports.first(where: { $0.copy.node == node }) else {
                let known = view.reports.map(\.copy.node)
                throw CLIError(
                    "node \(node) has reported no copy of \(app) (nodes that did: \(known.isEmpty ? "none" : known.joined(separator: ", "))); "
                        + "it reports once batond runs there with the app passive")
            }
            if let statuses = try? await session.control.statuses(window: session.wait).statuses {
                let active = statuses.filter { status in status.apps.contains { $0.name == app && $0.role == .active } }.map(\.node)
                if !active.isEmpty {
                    throw CLIError("\(app) is active on \(active.joined(separator: ", ")): its data is the truth; nothing to force")
                }
            }
            var lost: [String] = []
            if let newest = view.newest?.record.newest, !newest.sameData(as: chosen.copy) {
                lost.append("the durable record: \(newest.summary)")
            }
            for other in view.reports where other.copy.node != node && other.copy.txid > chosen.copy.txid {
                lost.append(other.copy.summary)
            }
            let giving = lost.isEmpty ? "nothing newer is known" : "given up: " + lost.joined(separator: "; ")
            guard force else {
                throw CLIError(
                    "this would make \(chosen.copy.summary) the truth for \(app); \(giving). Run again with --force to do it")
            }
            let kv = try await ReplicationHistoryBucket.open(jetStream: JetStream(client: session.client), cluster: session.cluster, replicas: 1)
            let record = ReplicationHistoryRecord(
                newest: chosen.copy, event: HistoryEvent.forced, recordedAt: Date(),
                forced: "an operator accepted \(node)'s copy (batonctl replica promote --force); \(giving)")
            let value = try ReplicationHistoryBucket.encode(record)
            let key = ReplicationHistoryBucket.newestKey(app: app)
            if let revision = view.newest?.revision {
                _ = try await kv.update(key, value: value, revision: revision)
            } else {
                _ = try await kv.create(key, value: value)
            }
            return "\(app): \(chosen.copy.summary) is now the newest record (forced); \(giving).\n"
                + "Only a node holding exactly this copy may promote; the others resynchronise from it."
        }
        print(output)
    }
}

/// What `batonctl replica status` shows.
struct ReplicaView {
    var app: String
    var cluster: String
    var newest: (record: ReplicationHistoryRecord, revision: UInt64)?
    var reports: [NodeHoldingReport]
    var stream: String
    var snapshot: String

    static func read(session: Session, app: String) async throws -> ReplicaView {
        let jetStream = JetStream(client: session.client)
        let kv = try await ReplicationHistoryBucket.open(jetStream: jetStream, cluster: session.cluster, replicas: 1)
        let newest: (record: ReplicationHistoryRecord, revision: UInt64)?
        do {
            newest = try await ReplicationHistoryBucket.newest(in: kv, app: app)
        } catch let error as ReplicationError {
            throw CLIError(error.message)
        }
        let reports = try await ReplicationHistoryBucket.reports(in: kv, app: app)
        let names = ReplicationNames(cluster: session.cluster, app: app, nodeID: "batonctl")
        var stream: String
        do {
            let info = try await jetStream.streamInfo(names.stream)
            stream = "\(names.stream): \(info.state.messages) message(s), sequences \(info.state.firstSequence)...\(info.state.lastSequence)"
            if info.state.messages > 0 {
                let last = try await jetStream.getMessage(stream: names.stream, sequence: info.state.lastSequence)
                if let chunk = try? RecordChunk(decoding: Array(last.payload.readableBytesView)) {
                    stream += ", last record txid \(chunk.txid) (epoch \(chunk.token), \(chunk.kind))"
                }
            } else if info.state.lastSequence > 0 {
                stream += " (every record expired)"
            }
        } catch let error as JetStreamAPIError where error.errorCode == .streamNotFound {
            stream = "\(names.stream) does not exist"
        }
        let snapshot = await SnapshotCopy.newest(jetStream: jetStream, bucket: names.snapshotBucket).map {
            "\($0.name): txid \($0.copy.txid), epoch \($0.copy.token), checksum \(hex($0.copy.checksum))"
        } ?? "none"
        return ReplicaView(app: app, cluster: session.cluster, newest: newest, reports: reports, stream: stream, snapshot: snapshot)
    }

    func render() -> String {
        var lines = ["\(app) in cluster \(cluster)"]
        if let record = newest?.record {
            let copy = record.newest
            lines.append(
                "  newest record: txid \(copy.txid), epoch \(copy.token), checksum \(hex(copy.checksum)), written by \(copy.node) (\(record.event), \(RFC3339.format(secondsSince1970: record.recordedAt.timeIntervalSince1970)))"
            )
            if let forced = record.forced { lines.append("    forced: \(forced)") }
        } else {
            lines.append("  newest record: none")
        }
        lines.append("  stream: \(stream)")
        lines.append("  newest snapshot: \(snapshot)")
        if reports.isEmpty {
            lines.append("  no node reported a replica")
        } else {
            lines.append("  NODE            ROLE      EPOCH   TXID      CHECKSUM          APPLIED AT            REPORTED AT")
            for report in reports {
                let copy = report.copy
                let matches = newest.map { copy.sameData(as: $0.record.newest) } ?? false
                lines.append(
                    "  " + [
                        pad(copy.node, 15), pad(report.role, 9), pad("\(copy.token)", 7), pad("\(copy.txid)", 9), pad(hex(copy.checksum), 17),
                        pad(report.appliedAt.map { RFC3339.format(secondsSince1970: $0.timeIntervalSince1970) } ?? "-", 21), RFC3339.format(secondsSince1970: report.reportedAt.timeIntervalSince1970),
                    ].joined(separator: " ") + (matches ? "  = newest" : ""))
                if let note = report.note { lines.append("    \(note)") }
            }
        }
        return lines.joined(separator: "\n")
    }

    private func pad(_ text: String, _ width: Int) -> String { text.count >= width ? text : text + String(repeating: " ", count: width - text.count) }
}
