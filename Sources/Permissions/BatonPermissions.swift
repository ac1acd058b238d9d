import BatonCore
import Control
import Foundation
import NATS
import ReplicationCatalog

/// Who uses a NATS connection to a Baton cluster, and so which NATS permissions it needs.
public enum BatonRole: String, CaseIterable, Sendable, Hashable, Codable {
    /// `batond`: leases, node registry, replication streams and snapshots, the control service.
    case node
    /// `batonctl` with every command, including those that change something (stepdown,
    /// switchover, pause, resume, snapshot, `replica promote`).
    case `operator`
    /// `batonctl` that only looks: status, `replica status`; nothing that changes a node, a
    /// bucket or a stream.
    case observer

    /// The last token of the role's reply-subject prefix (see ``BatonPermissions/inboxPrefix(cluster:role:)``):
    /// `node` for batond, `ctl` for batonctl (it does not know whether it was given operator or
    /// observer credentials).
    var inboxToken: String { self == .node ? "node" : "ctl" }
}

/// One allowed subject of a permission set, with why the role needs it.
public struct NATSPermissionRule: Sendable, Hashable {
    /// The subject (may end in `>` or hold `*` tokens).
    public var subject: String
    /// What the role uses it for, in words (a comment in the generated config).
    public var purpose: String
    /// For a purge rule: a subject of the stream that holds no message, which the startup probe
    /// filters its (empty) purge to.
    var probeFilter: String?

    /// Creates a rule.
    public init(subject: String, purpose: String) {
        self.subject = subject
        self.purpose = purpose
    }
}

/// Why a permission set cannot be made.
public struct BatonPermissionsError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong.
    public var description: String
}

/// The NATS permissions one ``BatonRole`` needs in one cluster: publish and subscribe allow
/// lists (everything else is denied) and whether replies to received requests may be sent.
///
/// The set is derived from the same names the code uses (``LeaseStore/bucketName(cluster:app:)``,
/// ``NodeRecord/registryBucket(cluster:)``, ``NodeDirectory/bucketName(cluster:)``, ``ReplicationHistoryBucket/name(cluster:)``,
/// ``ReplicationNames``, ``ControlSubjects``, ``JetStreamNames``), so it cannot drift from them.
///
/// Bucket and stream names hold the cluster and the app in one subject token
/// (`$KV.baton_<cluster>_<app>.>`, `$JS.API.STREAM.INFO.KV_baton_<cluster>_<app>`), and NATS
/// wildcards only match whole tokens, so a set cannot say "every app of this cluster": it lists
/// the apps it is made for. Adding an app to the cluster needs a new set (for the node and for
/// the batonctl roles) before the app starts. Subjects Baton itself names (`baton.<cluster>.…`)
/// take wildcards where the cluster is a token of its own.
public struct BatonPermissions: Sendable, Hashable {
    /// The role.
    public var role: BatonRole
    /// The cluster the set is scoped to.
    public var cluster: String
    /// The apps it covers (sorted, unique).
    public var apps: [String]
    /// Subjects the role may publish to.
    public var publish: [NATSPermissionRule]
    /// Subjects the role may subscribe to.
    public var subscribe: [NATSPermissionRule]
    /// Whether the role may publish a reply to a request it received (nats-server
    /// `allow_responses`, JWT `resp`): the control service's answers.
    public var allowResponses: Bool

    /// The prefix of the reply subjects (inboxes) of a role's connections:
    /// `_INBOX.baton.<cluster>.node` for batond, `_INBOX.baton.<cluster>.ctl` for batonctl.
    /// Each role may subscribe only below its own prefix, so no role reads another cluster's
    /// (or another client's) replies.
    public static func inboxPrefix(cluster: String, role: BatonRole) -> String {
        "_INBOX.\(ControlSubjects.root).\(cluster).\(role.inboxToken)"
    }

    /// The set of `role` in `cluster` for `apps`.
    ///
    /// - Throws: ``BatonPermissionsError`` when the cluster or an app cannot be part of a
    ///   subject, or when no app is given.
    public init(role: BatonRole, cluster: String, apps: [String]) throws {
        guard ControlSubjects.isValidToken(cluster) else {
            throw BatonPermissionsError(description: "cluster name \"\(cluster)\" cannot be part of a NATS subject")
        }
        for app in apps where !ControlSubjects.isValidToken(app) {
            throw BatonPermissionsError(description: "app name \"\(app)\" cannot be part of a NATS subject")
        }
        self.role = role
        self.cluster = cluster
        self.apps = Array(Set(apps)).sorted()
        var builder = Builder()
        let control = ControlSubjects(cluster: cluster)
        let writes = role == .node

        // Replies to this role's requests (JetStream API answers, control replies, push
        // consumers' deliveries) arrive on its own inboxes.
        builder.subscribe("\(Self.inboxPrefix(cluster: cluster, role: role)).>", "replies to this role's requests and JetStream deliveries")

        // Leases, one KV bucket per app.
        for app in self.apps {
            let bucket = LeaseStore.bucketName(cluster: cluster, app: app)
            builder.keyValue(bucket: bucket, what: "lease of \(app)", access: writes ? .write : .watch)
        }
        // The node registry, the node directory and the replication history, one bucket each
        // per cluster. `batonctl nodes` lists the first two (a listing reads through a consumer).
        builder.keyValue(bucket: NodeRecord.registryBucket(cluster: cluster), what: "node registry", access: writes ? .write : .watch)
        builder.keyValue(bucket: NodeDirectory.bucketName(cluster: cluster), what: "node directory", access: writes ? .write : .watch)
        // Drained nodes (`batonctl drain`): the nodes create the bucket and watch it; the operator
        // writes and deletes a node's key; the observer sees them in status.
        let drains = DrainRecord.bucket(cluster: cluster)
        builder.keyValue(bucket: drains, what: "drained nodes", access: writes ? .write : .watch)
        if role == .operator {
            builder.publish("\(JetStreamNames.keyValueSubjectPrefix(bucket: drains)).*", "drained nodes: batonctl drain and undrain write a node's key")
        }
        let history = ReplicationHistoryBucket.name(cluster: cluster)
        switch role {
        case .node: builder.keyValue(bucket: history, what: "replication history", access: .write)
        case .operator:
            builder.keyValue(bucket: history, what: "replication history", access: .watch)
            // `batonctl replica promote --force` writes the newest record of an app (key `<app>.newest`).
            builder.publish(
                "\(JetStreamNames.keyValueSubjectPrefix(bucket: history)).\(ReplicationHistoryBucket.newestKey(app: "*"))",
                "replication history: batonctl replica promote --force writes <app>.newest")
        case .observer: builder.keyValue(bucket: history, what: "replication history", access: .watch)
        }
        // Replication: one WAL stream and one snapshot Object Store per app. Which apps have
        // `sqlite:` may change at a reload, so every app gets them.
        for app in self.apps {
            let names = ReplicationNames(cluster: cluster, app: app, nodeID: "any")
            builder.stream(names.stream, subjects: names.walSubjectPrefix, what: "WAL stream of \(app)", access: writes ? .write : .read)
            if writes { builder.publish("\(names.walSubjectPrefix).>", "WAL records of \(app)") }
            let objects = JetStreamNames.objectStoreStream(bucket: names.snapshotBucket)
            builder.stream(objects, subjects: "\(JetStreamNames.objectStoreSubjectPrefix(bucket: names.snapshotBucket)).M", what: "snapshots of \(app)", access: writes ? .write : .read)
            if writes { builder.publish("\(JetStreamNames.objectStoreSubjectPrefix(bucket: names.snapshotBucket)).>", "snapshot chunks and metadata of \(app)") }
        }

        // The event history, one stream per cluster: batond appends to it, batonctl events and
        // doctor read it (through a durable of their own, removed after the read).
        let events = EventSubjects.stream(cluster: cluster)
        let eventSubjects = String(EventSubjects.all(cluster: cluster).dropLast(2))
        builder.stream(events, subjects: eventSubjects, what: "event history", access: writes ? .write : .watch)
        if writes {
            builder.publish(EventSubjects.all(cluster: cluster), "event history: every app's transitions and failover records")
        } else {
            builder.publish("\(JetStreamNames.apiPrefix).CONSUMER.DURABLE.CREATE.\(events).>", "batonctl events: the reader's own consumer")
            builder.publish("\(JetStreamNames.apiPrefix).CONSUMER.DELETE.\(events).>", "batonctl events: remove the reader's consumer after the read")
        }

        // The control service (a NATS micro service named `baton` on every node).
        let service = ControlService.serviceName
        let discovery = [
            "\(MicroService.controlPrefix).*", "\(MicroService.controlPrefix).*.\(service)", "\(MicroService.controlPrefix).*.\(service).*",
        ]
        switch role {
        case .node:
            builder.subscribe(control.status, "control service: status requests")
            builder.subscribe("\(control.nodePrefix("*")).*", "control service: commands to a node of this cluster")
            for subject in discovery { builder.subscribe(subject, "micro service discovery (PING, INFO, STATS)") }
        case .operator, .observer:
            builder.publish(control.status, "batonctl status: asks every node")
            for subject in discovery { builder.publish(subject, "micro service discovery (nats micro ls/info/stats)") }
            if role == .operator {
                for command in ControlCommand.allCases {
                    builder.publish(control.command(command, node: "*"), "batonctl \(command.rawValue)")
                }
            }
        }
        publish = builder.publish
        subscribe = builder.subscribe
        allowResponses = role == .node
    }

    /// Collects rules in order, without duplicates.
    private struct Builder {
        enum Access { case read, watch, write }
        var publish: [NATSPermissionRule] = []
        var subscribe: [NATSPermissionRule] = []

        mutating func publish(_ subject: String, _ purpose: String, probeFilter: String? = nil) {
            guard !publish.contains(where: { $0.subject == subject }) else { return }
            var rule = NATSPermissionRule(subject: subject, purpose: purpose)
            rule.probeFilter = probeFilter
            publish.append(rule)
        }

        mutating func subscribe(_ subject: String, _ purpose: String) {
            if !subscribe.contains(where: { $0.subject == subject }) { subscribe.append(NATSPermissionRule(subject: subject, purpose: purpose)) }
        }

        /// The JetStream API of one stream: reading (info, gets, consumers to read or watch
        /// through), and for `.write` creating, updating and purging it, durable consumers,
        /// acks and deleting consumers too. Never deleting the stream.
        ///
        /// `subjects` is the stream's subject prefix (its subjects are `<subjects>.>`).
        mutating func stream(_ stream: String, subjects: String, what: String, access: Access) {
            let api = JetStreamNames.apiPrefix
            if access == .write {
                publish("\(api).STREAM.CREATE.\(stream)", "\(what): create the stream")
                publish("\(api).STREAM.UPDATE.\(stream)", "\(what): apply changed limits")
                publish(
                    "\(api).STREAM.PURGE.\(stream)", "\(what): purge (token floor, old snapshot chunks)",
                    probeFilter: "\(subjects).\(PermissionProbe.probeToken)")
            }
            publish("\(api).STREAM.INFO.\(stream)", "\(what): stream info")
            publish("\(api).STREAM.MSG.GET.\(stream)", "\(what): read a message")
            publish("\(api).DIRECT.GET.\(stream)", "\(what): direct get")
            publish("\(api).DIRECT.GET.\(stream).>", "\(what): direct get by subject")
            if access == .read && !stream.hasPrefix("OBJ_") { return }
            // Consumers: ordered push consumers (KV watch, Object Store listing and reads) and,
            // for the node, pull consumers (the WAL applier's durable).
            publish("\(api).CONSUMER.CREATE.\(stream)", "\(what): create a consumer")
            publish("\(api).CONSUMER.CREATE.\(stream).>", "\(what): create a named consumer")
            publish("\(api).CONSUMER.INFO.\(stream).>", "\(what): consumer info")
            publish("\(api).CONSUMER.MSG.NEXT.\(stream).>", "\(what): pull messages")
            publish("\(JetStreamNames.flowControlPrefix).\(stream).>", "\(what): answer flow control")
            if access == .write {
                // Deleting consumers only for the node: a batonctl role could otherwise delete the
                // nodes' lease watches (their own ephemeral consumers expire when idle; the
                // client's best-effort delete of them is then refused, harmlessly).
                publish("\(api).CONSUMER.DELETE.\(stream).>", "\(what): delete a consumer it made")
                publish("\(api).CONSUMER.DURABLE.CREATE.\(stream).>", "\(what): create a durable consumer")
                publish("\(JetStreamNames.ackPrefix).\(stream).>", "\(what): acknowledge messages")
            }
        }

        mutating func keyValue(bucket: String, what: String, access: Access) {
            stream(
                JetStreamNames.keyValueStream(bucket: bucket), subjects: JetStreamNames.keyValueSubjectPrefix(bucket: bucket), what: "\(what) (KV \(bucket))", access: access)
            if access == .write {
                publish("\(JetStreamNames.keyValueSubjectPrefix(bucket: bucket)).>", "\(what) (KV \(bucket)): write keys")
            }
        }
    }
}

extension ReplicationNames {
    /// The WAL stream's subject prefix, ``subjects`` without its `.>`: `baton.<cluster>.<app>.wal`.
    var walSubjectPrefix: String { String(subjects.dropLast(2)) }
}
