import ArgumentParser
import AsyncHTTPClient
import BatonCore
import Foundation
import NATS
import NIOCore
import NIOPosix
import Control

struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Audit what Baton depends on: NATS versions and fsync, bucket replicas, lease ttl, clocks, capabilities, systemd, config agreement.",
        discussion: """
            Prints findings with a severity (error, warning, info, unchecked) and a fix. Exits 1 \
            when any finding is an error. A check that cannot run is listed as "unchecked" with \
            the reason, never guessed. Servers' JetStream settings (sync_interval) come from their \
            VARZ: over $SYS when this user may read it, else from each --monitor URL (the \
            server's monitoring port, e.g. http://10.0.0.1:8222). Capabilities are read for a \
            batond that runs on this host.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(name: .customLong("monitor"), help: ArgumentHelp("A nats-server monitoring URL to read VARZ from (repeatable).", valueName: "url"))
    var monitors: [String] = []

    @Flag(help: "Print the findings as a JSON array.")
    var json = false

    func run() async throws {
        let configuredReplicas = connection.configSource().path.flatMap { path -> Int? in
            (try? BatonConfig.load(path: path))?.nats.replicas
        }
        let findings = try await connection.withSession { session in
            let facts = await DoctorGathering(session: session, monitors: monitors, configuredReplicas: configuredReplicas).gather()
            return Doctor.audit(facts)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(findings), as: UTF8.self))
        } else {
            print(DoctorReport.render(findings))
        }
        if findings.contains(where: { $0.severity == .error }) { throw ExitCode(1) }
    }
}

/// The text form of `batonctl doctor`.
enum DoctorReport {
    static func render(_ findings: [DoctorFinding]) -> String {
        var lines: [String] = []
        for finding in findings {
            let label = finding.severity.rawValue.uppercased().padding(toLength: 9, withPad: " ", startingAt: 0)
            lines.append("\(label) \(finding.check) [\(finding.subject)]: \(finding.message)")
            if !finding.fix.isEmpty { lines.append("          fix: \(finding.fix)") }
        }
        let count = { (severity: DoctorFinding.Severity) in findings.filter { $0.severity == severity }.count }
        lines.append("")
        lines.append("\(count(.error)) error(s), \(count(.warning)) warning(s), \(count(.info)) info, \(count(.unchecked)) not checked")
        return lines.joined(separator: "\n")
    }
}

/// Gathers ``DoctorFacts`` from NATS (INFO, VARZ, streams, the node registry), the nodes'
/// status replies, a monitoring URL and this host's /proc.
struct DoctorGathering {
    var session: Session
    var monitors: [String]
    var configuredReplicas: Int?

    struct VARZ: Decodable {
        struct Cluster: Decodable {
            var name: String?
            var urls: [String]?
        }
        struct JetStream: Decodable {
            struct Config: Decodable {
                var syncInterval: Int64?
                var syncAlways: Bool?
                enum CodingKeys: String, CodingKey {
                    case syncInterval = "sync_interval"
                    case syncAlways = "sync_always"
                }
            }
            struct Meta: Decodable {
                var clusterSize: Int?
                enum CodingKeys: String, CodingKey { case clusterSize = "cluster_size" }
            }
            var config: Config?
            var meta: Meta?
        }
        var serverName: String?
        var serverID: String?
        var version: String
        var cluster: Cluster?
        var jetstream: JetStream?
        enum CodingKeys: String, CodingKey {
            case serverName = "server_name"
            case serverID = "server_id"
            case version, cluster, jetstream
        }
    }

    /// `$SYS.REQ.SERVER.PING.VARZ` wraps each server's VARZ in `data`.
    struct SystemReply: Decodable {
        var data: VARZ?
    }

    func gather() async -> DoctorFacts {
        var unchecked: [String: String] = [:]
        let varz = await readVARZ(unchecked: &unchecked)
        var servers: [DoctorFacts.Server] = varz.map { server in
            DoctorFacts.Server(
                name: server.serverName ?? server.serverID ?? "?", version: server.version, clustered: server.cluster?.name != nil,
                syncAlways: server.jetstream?.config?.syncAlways ?? false,
                syncInterval: server.jetstream?.config?.syncInterval.flatMap { $0 > 0 ? Duration.nanoseconds($0) : nil }, varzRead: true)
        }
        let info = session.client.serverInfo
        if servers.isEmpty, let info {
            servers.append(DoctorFacts.Server(name: info.serverName ?? info.serverID, version: info.version, clustered: info.cluster != nil, varzRead: false))
        }
        var clusterSize: Int?
        if let size = varz.compactMap({ $0.jetstream?.meta?.clusterSize }).max(), size > 0 {
            clusterSize = size
        } else if let info {
            clusterSize = info.cluster == nil ? 1 : nil
            if clusterSize == nil {
                unchecked["cluster-size"] = "the server is clustered and its VARZ (jetstream.meta.cluster_size) was not readable"
            }
        }

        let statuses: [NodeStatus]
        do {
            statuses = try await session.control.statuses(window: session.wait).statuses
        } catch {
            statuses = []
        }
        if statuses.isEmpty {
            for check in ["systemd", "vip-capabilities", "config-agreement", "clock-offset"] {
                unchecked[check] = "no batond of cluster \(session.cluster) answered on \(session.control.subjects.status)"
            }
        }
        let jetStream = JetStream(client: session.client)
        let apps = Set(statuses.flatMap { $0.apps.map(\.name) }).sorted()
        var buckets: [DoctorFacts.Bucket] = []
        for app in apps {
            let stream = "KV_" + LeaseStore.bucketName(cluster: session.cluster, app: app)
            if let info = try? await jetStream.streamInfo(stream) {
                buckets.append(DoctorFacts.Bucket(stream: stream, replicas: info.config.replicas ?? 1, leaseOf: app, maxAge: info.config.maxAge))
            }
        }
        for stream in [
            "KV_" + NodeRecord.registryBucket(cluster: session.cluster), "KV_" + NodeDirectory.bucketName(cluster: session.cluster),
            EventSubjects.stream(cluster: session.cluster),
        ] {
            if let info = try? await jetStream.streamInfo(stream) {
                buckets.append(DoctorFacts.Bucket(stream: stream, replicas: info.config.replicas ?? 1))
            }
        }

        var nodes: [DoctorFacts.Node] = []
        for status in statuses {
            var node = DoctorFacts.Node(
                node: status.node, systemdUnit: status.systemdUnit, clockOffset: nil,
                hasVIPs: status.apps.contains { !($0.vips ?? []).isEmpty },
                configDigests: Dictionary(status.apps.compactMap { app in app.configDigests.map { (app.name, $0) } }, uniquingKeysWith: { first, _ in first }))
            let bucket = NodeRecord.registryBucket(cluster: session.cluster)
            if let message = try? await jetStream.getLastMessage(stream: "KV_" + bucket, subject: "$KV.\(bucket).\(status.node)"),
                let record = try? JSONDecoder().decode(NodeRecord.self, from: Data(message.payload.readableBytesView))
            {
                if let written = record.written {
                    node.clockOffset = .nanoseconds(Int64((written - message.time.timeIntervalSince1970) * 1e9))
                }
                (node.capabilities, node.capabilitiesUnreadable) = Self.capabilities(of: record)
            } else {
                node.capabilitiesUnreadable = "its node registry entry was not readable"
            }
            nodes.append(node)
        }
        return DoctorFacts(
            servers: servers, clusterSize: clusterSize, configuredReplicas: configuredReplicas, buckets: buckets, nodes: nodes, unchecked: unchecked)
    }

    /// VARZ of every server that answers on $SYS, else of each --monitor URL.
    private func readVARZ(unchecked: inout [String: String]) async -> [VARZ] {
        var found: [VARZ] = []
        if let subscription = try? await session.client.subscribe(to: session.client.newInbox()) {
            do {
                try await session.client.publish("$SYS.REQ.SERVER.PING.VARZ", payload: ByteBuffer(string: "{}"), replyTo: subscription.subject)
                let collector = Task {
                    var replies: [VARZ] = []
                    for await message in subscription {
                        if let reply = try? JSONDecoder().decode(SystemReply.self, from: Data(message.payload.readableBytesView)), let data = reply.data {
                            replies.append(data)
                        }
                    }
                    return replies
                }
                try? await Task.sleep(for: session.wait)
                try? await subscription.unsubscribe()
                found = await collector.value
            } catch {
                try? await subscription.unsubscribe()
            }
        }
        if !found.isEmpty || monitors.isEmpty { return found }
        let client = HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton))
        for monitor in monitors {
            let url = monitor.hasSuffix("/varz") ? monitor : monitor.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/varz"
            do {
                let response = try await client.execute(HTTPClientRequest(url: url), timeout: .seconds(5))
                let body = try await response.body.collect(upTo: 4 * 1024 * 1024)
                guard response.status == .ok else { throw CLIError("HTTP \(response.status.code)") }
                found.append(try JSONDecoder().decode(VARZ.self, from: Data(body.readableBytesView)))
            } catch {
                unchecked["monitor \(monitor)"] = "cannot read VARZ from \(url): \(error)"
            }
        }
        try? await client.shutdown()
        return found
    }

    /// Reads CapEff of the batond `record` describes, when it runs on this host, boot and pid
    /// namespace.
    static func capabilities(of record: NodeRecord) -> (DoctorFacts.Capabilities?, String?) {
        let here = NodeRecord.local(node: record.node, instance: "batonctl")
        guard here.sharesProcessSpace(with: record) else {
            return (nil, "batond runs on host \(record.hostname), not in this host's pid namespace; run batonctl doctor there")
        }
        guard let status = try? String(contentsOfFile: "/proc/\(record.pid)/status", encoding: .utf8) else {
            return (nil, "cannot read /proc/\(record.pid)/status (batond pid \(record.pid))")
        }
        guard let capabilities = DoctorFacts.Capabilities(procStatus: status) else {
            return (nil, "/proc/\(record.pid)/status has no CapEff line")
        }
        return (capabilities, nil)
    }
}
