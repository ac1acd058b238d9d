/// One thing `batonctl doctor` found.
public struct DoctorFinding: Codable, Sendable, Hashable {
    /// How bad it is.
    public enum Severity: String, Codable, Sendable, Hashable, Comparable {
        /// Can lose data Baton said was replicated, or run an app twice: fix before relying on Baton.
        case error
        /// Weakens a guarantee or an operator's view (slower failover, less history).
        case warning
        /// Worth knowing; nothing to fix.
        case info
        /// The check could not run; the message says why.
        case unchecked

        private var rank: Int {
            switch self {
            case .error: 0
            case .warning: 1
            case .info: 2
            case .unchecked: 3
            }
        }

        public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rank < rhs.rank }
    }

    public var severity: Severity
    /// The check's name (`nats-version`, `sync-interval`, `bucket-replicas`, `lease-ttl`,
    /// `clock-offset`, `vip-capabilities`, `systemd`, `config-agreement`).
    public var check: String
    /// What it is about: a server, node, bucket or app.
    public var subject: String
    public var message: String
    /// What to do about it (empty for info).
    public var fix: String

    /// Creates a finding.
    public init(_ severity: Severity, check: String, subject: String, message: String, fix: String = "") {
        self.severity = severity
        self.check = check
        self.subject = subject
        self.message = message
        self.fix = fix
    }
}

/// What `batonctl doctor` learned about a cluster, gathered by the command; ``Doctor/audit(_:)``
/// turns it into findings without I/O.
public struct DoctorFacts: Sendable, Hashable {
    /// A nats-server.
    public struct Server: Sendable, Hashable {
        public var name: String
        public var version: String
        /// Whether it runs in a cluster (has a cluster name).
        public var clustered: Bool
        /// From VARZ: `jetstream.config.sync_always`; nil when VARZ was not available.
        public var syncAlways: Bool?
        /// From VARZ: `jetstream.config.sync_interval` (nil: not set, the 2-minute default, or VARZ unavailable).
        public var syncInterval: Duration?
        /// Whether the server's VARZ was read (so that the sync fields mean something).
        public var varzRead: Bool

        public init(name: String, version: String, clustered: Bool, syncAlways: Bool? = nil, syncInterval: Duration? = nil, varzRead: Bool) {
            self.name = name
            self.version = version
            self.clustered = clustered
            self.syncAlways = syncAlways
            self.syncInterval = syncInterval
            self.varzRead = varzRead
        }
    }

    /// One of Baton's buckets or streams.
    public struct Bucket: Sendable, Hashable {
        /// The stream name (`KV_baton_<cluster>_<app>`, ...).
        public var stream: String
        public var replicas: Int
        /// The app whose lease it holds, for lease buckets.
        public var leaseOf: String?
        /// The bucket's max_age (a lease bucket's ttl).
        public var maxAge: Duration?

        public init(stream: String, replicas: Int, leaseOf: String? = nil, maxAge: Duration? = nil) {
            self.stream = stream
            self.replicas = replicas
            self.leaseOf = leaseOf
            self.maxAge = maxAge
        }
    }

    /// One batond, as its status and registry entry say.
    public struct Node: Sendable, Hashable {
        public var node: String
        /// The systemd unit batond runs in; nil when not under systemd.
        public var systemdUnit: String?
        /// The node's clock minus the server's, from its last registry heartbeat; nil when unknown.
        public var clockOffset: Duration?
        /// Whether any of its apps has a VIP.
        public var hasVIPs: Bool
        /// Capabilities of its batond process (effective set), when read on this host.
        public var capabilities: Capabilities?
        /// Why its capabilities could not be read (another host, no registry entry, ...).
        public var capabilitiesUnreadable: String?
        /// Each app's config section digests (``ConfigDigest/sections(of:)``).
        public var configDigests: [String: [String: String]]

        public init(
            node: String, systemdUnit: String?, clockOffset: Duration?, hasVIPs: Bool, capabilities: Capabilities? = nil,
            capabilitiesUnreadable: String? = nil, configDigests: [String: [String: String]] = [:]
        ) {
            self.node = node
            self.systemdUnit = systemdUnit
            self.clockOffset = clockOffset
            self.hasVIPs = hasVIPs
            self.capabilities = capabilities
            self.capabilitiesUnreadable = capabilitiesUnreadable
            self.configDigests = configDigests
        }
    }

    /// The two capabilities VIPs need.
    public struct Capabilities: Sendable, Hashable {
        public var netAdmin: Bool
        public var netRaw: Bool

        public init(netAdmin: Bool, netRaw: Bool) {
            self.netAdmin = netAdmin
            self.netRaw = netRaw
        }

        /// Reads `CapEff:` of a `/proc/<pid>/status` text; nil when absent.
        public init?(procStatus: String) {
            guard let line = procStatus.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
                let mask = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(), radix: 16)
            else { return nil }
            netAdmin = mask & (1 << 12) != 0
            netRaw = mask & (1 << 13) != 0
        }
    }

    public var servers: [Server]
    /// JetStream servers in the cluster (1 for a single server); nil when unknown.
    public var clusterSize: Int?
    /// `nats.replicas` of the config batonctl read, nil without one.
    public var configuredReplicas: Int?
    public var buckets: [Bucket]
    public var nodes: [Node]
    /// Checks that could not run, by check name, with the reason.
    public var unchecked: [String: String]

    public init(
        servers: [Server], clusterSize: Int?, configuredReplicas: Int?, buckets: [Bucket], nodes: [Node], unchecked: [String: String] = [:]
    ) {
        self.servers = servers
        self.clusterSize = clusterSize
        self.configuredReplicas = configuredReplicas
        self.buckets = buckets
        self.nodes = nodes
        self.unchecked = unchecked
    }
}

/// The audit of `batonctl doctor`: every rule, without I/O.
public enum Doctor {
    /// JetStream's leader election window: a follower waits 4 to 9 s for a lost leader before it
    /// campaigns (nats-server `server/raft.go`, `minElectionTimeoutDefault` and
    /// `maxElectionTimeoutDefault`).
    public static let electionWindow: (min: Duration, max: Duration) = (.seconds(4), .seconds(9))
    /// A clock offset above this is a warning (event times and cross-node downtimes get wrong;
    /// leases never use wall clocks).
    public static let clockOffsetWarning: Duration = .milliseconds(500)
    /// A sync interval above this is a warning (acknowledged writes can be lost on power loss).
    public static let syncIntervalWarning: Duration = .seconds(1)

    /// The findings for `facts`, worst first.
    public static func audit(_ facts: DoctorFacts) -> [DoctorFinding] {
        var findings: [DoctorFinding] = []
        let replicated = facts.buckets.contains { $0.replicas > 1 } || (facts.configuredReplicas ?? 1) > 1
        for server in facts.servers {
            findings += versionFindings(server, replicated: replicated)
            findings += syncFindings(server)
        }
        findings += replicaFindings(facts)
        findings += leaseTTLFindings(facts)
        findings += nodeFindings(facts)
        findings += agreementFindings(facts)
        for (check, reason) in facts.unchecked.sorted(by: { $0.key < $1.key }) {
            findings.append(DoctorFinding(.unchecked, check: check, subject: "-", message: "could not check: \(reason)"))
        }
        return findings.enumerated().sorted { ($0.element.severity, $0.offset) < ($1.element.severity, $1.offset) }.map(\.element)
    }

    /// `12.3 ms`.
    static func milliseconds(_ duration: Duration) -> String {
        let tenths = (Double(duration.totalNanoseconds) / 100_000).rounded() / 10
        return "\(tenths) ms"
    }

    static func version(_ text: String) -> (Int, Int, Int)? {
        let parts = text.drop { !$0.isNumber }.split(separator: ".").prefix(3).map { Int($0.prefix { $0.isNumber }) }
        guard parts.count >= 2, let major = parts[0], let minor = parts[1] else { return nil }
        return (major, minor, parts.count > 2 ? parts[2] ?? 0 : 0)
    }

    static func versionFindings(_ server: DoctorFacts.Server, replicated: Bool) -> [DoctorFinding] {
        guard let (major, minor, patch) = version(server.version) else {
            return [DoctorFinding(.unchecked, check: "nats-version", subject: server.name, message: "could not check: cannot read version \"\(server.version)\"")]
        }
        var findings: [DoctorFinding] = []
        let subject = "server \(server.name)"
        if server.clustered && replicated && (major, minor) < (2, 11) {
            findings.append(
                DoctorFinding(
                    .error, check: "nats-version", subject: subject,
                    message: "nats-server \(server.version) in a cluster with replicated Baton buckets: clustered streams may accept two compare-and-set writes at once (nats-server issues #4320, #5794), so two nodes can take one lease",
                    fix: "upgrade every server to nats-server 2.11 or later"))
        }
        if (major, minor) == (2, 10) && (20...22).contains(patch) {
            findings.append(
                DoctorFinding(
                    .error, check: "nats-version", subject: subject,
                    message: "nats-server \(server.version) can forget a whole stream after process crashes (nats-server issue #6888; Jepsen's NATS 2.12.1 analysis, note on 2.10.22)",
                    fix: "upgrade to nats-server 2.10.23 or later"))
        }
        if findings.isEmpty {
            findings.append(DoctorFinding(.info, check: "nats-version", subject: subject, message: "nats-server \(server.version): no known Baton-relevant data-loss bug"))
        }
        return findings
    }

    static func syncFindings(_ server: DoctorFacts.Server) -> [DoctorFinding] {
        let subject = "server \(server.name)"
        guard server.varzRead else {
            return [
                DoctorFinding(
                    .unchecked, check: "sync-interval", subject: subject,
                    message: "could not check sync_interval: the server's VARZ was not readable (no system-account access over $SYS and no --monitor URL)",
                    fix: "give --monitor http://HOST:8222 for each server, or check `jetstream { sync_interval: always }` in its config by hand")
            ]
        }
        if server.syncAlways == true {
            return [DoctorFinding(.info, check: "sync-interval", subject: subject, message: "JetStream syncs to disk before acknowledging (sync_interval: always)")]
        }
        let interval = server.syncInterval
        if let interval, interval <= syncIntervalWarning {
            return [
                DoctorFinding(
                    .info, check: "sync-interval", subject: subject,
                    message: "JetStream fsyncs every \(interval.configString): a power loss can lose up to that much acknowledged data")
            ]
        }
        let what = interval.map { "every \($0.configString)" } ?? "on the default 2-minute timer (sync_interval not set)"
        return [
            DoctorFinding(
                .warning, check: "sync-interval", subject: subject,
                message: "JetStream fsyncs \(what), after acknowledging writes: a power loss or kernel crash can lose acknowledged lease writes and replicated transactions (Jepsen, NATS 2.12.1 analysis; nats-server issue #7564)",
                fix: "set `jetstream { sync_interval: always }` on every server (costs write throughput)")
        ]
    }

    static func replicaFindings(_ facts: DoctorFacts) -> [DoctorFinding] {
        var findings: [DoctorFinding] = []
        if let configured = facts.configuredReplicas, let size = facts.clusterSize, configured > size {
            findings.append(
                DoctorFinding(
                    .error, check: "bucket-replicas", subject: "config nats.replicas",
                    message: "nats.replicas is \(configured) but the JetStream cluster has \(size) server\(size == 1 ? "" : "s"): batond cannot create its buckets",
                    fix: "set nats.replicas to at most \(size) (3 on a 3-server cluster)"))
        }
        for bucket in facts.buckets {
            if let size = facts.clusterSize, bucket.replicas > size {
                findings.append(
                    DoctorFinding(
                        .error, check: "bucket-replicas", subject: bucket.stream,
                        message: "\(bucket.replicas) replicas on a cluster of \(size): the stream has no quorum", fix: "recreate it with at most \(size) replicas"))
            } else if let size = facts.clusterSize, size >= 3, bucket.replicas < 3 {
                findings.append(
                    DoctorFinding(
                        .warning, check: "bucket-replicas", subject: bucket.stream,
                        message: "\(bucket.replicas) replica\(bucket.replicas == 1 ? "" : "s") on a cluster of \(size): losing \(bucket.replicas == 1 ? "its server" : "one server") stops Baton",
                        fix: "set nats.replicas: 3 and restart batond on every node (buckets are updated to the new count)"))
            } else if bucket.replicas == 2 {
                findings.append(
                    DoctorFinding(
                        .warning, check: "bucket-replicas", subject: bucket.stream,
                        message: "2 replicas tolerate no server loss (a quorum of 2 needs both)", fix: "use 3 replicas"))
            }
            if let configured = facts.configuredReplicas, bucket.replicas != configured, facts.clusterSize.map({ configured <= $0 }) ?? true {
                findings.append(
                    DoctorFinding(
                        .warning, check: "bucket-replicas", subject: bucket.stream,
                        message: "has \(bucket.replicas) replica(s) but the config says nats.replicas: \(configured)",
                        fix: "restart batond with the config so that it updates the bucket, or correct the config"))
            }
        }
        return findings
    }

    static func leaseTTLFindings(_ facts: DoctorFacts) -> [DoctorFinding] {
        var findings: [DoctorFinding] = []
        for bucket in facts.buckets {
            guard let app = bucket.leaseOf, let ttl = bucket.maxAge, bucket.replicas > 1 else { continue }
            if ttl <= electionWindow.max {
                findings.append(
                    DoctorFinding(
                        .warning, check: "lease-ttl", subject: "app \(app)",
                        message: "lease ttl \(ttl.configString) is within JetStream's leader election window (\(electionWindow.min.configString)-\(electionWindow.max.configString), nats-server raft.go) on a replicated bucket: losing the bucket's stream leader can make the active node fence itself before a new leader answers",
                        fix: "use a ttl above \(electionWindow.max.configString) (e.g. 12s) if a stream-leader loss must not cause a failover"))
            }
        }
        return findings
    }

    static func nodeFindings(_ facts: DoctorFacts) -> [DoctorFinding] {
        var findings: [DoctorFinding] = []
        let offsets = facts.nodes.compactMap { node in node.clockOffset.map { (node.node, $0) } }
        for (node, offset) in offsets where (offset < .zero ? .zero - offset : offset) > clockOffsetWarning {
            findings.append(
                DoctorFinding(
                    .warning, check: "clock-offset", subject: "node \(node)",
                    message: "its clock is \(milliseconds(offset)) off the NATS server's (from its last registry heartbeat): event times and cross-node downtimes in `batonctl events` are off by as much (leases never use wall clocks)",
                    fix: "run chrony or systemd-timesyncd on every node"))
        }
        if let low = offsets.min(by: { $0.1 < $1.1 }), let high = offsets.max(by: { $0.1 < $1.1 }), offsets.count > 1 {
            let spread = high.1 - low.1
            findings.append(
                DoctorFinding(
                    spread > clockOffsetWarning ? .warning : .info, check: "clock-offset", subject: "nodes",
                    message: "clocks differ by up to \(milliseconds(spread)) between \(low.0) and \(high.0)",
                    fix: spread > clockOffsetWarning ? "synchronise the nodes' clocks (chrony)" : ""))
        }
        for node in facts.nodes where node.clockOffset == nil {
            findings.append(DoctorFinding(.unchecked, check: "clock-offset", subject: "node \(node.node)", message: "could not check: no registry heartbeat with a time (batond older than this batonctl?)"))
        }
        for node in facts.nodes {
            if node.systemdUnit == nil {
                findings.append(
                    DoctorFinding(
                        .warning, check: "systemd", subject: "node \(node.node)",
                        message: "batond does not run under systemd: no watchdog restarts a hung batond, and systemd units of apps are not bound to it",
                        fix: "run batond from units/batond.service (systemctl enable --now batond)"))
            }
            guard node.hasVIPs else { continue }
            if let caps = node.capabilities {
                var missing: [String] = []
                if !caps.netAdmin { missing.append("CAP_NET_ADMIN") }
                if !caps.netRaw { missing.append("CAP_NET_RAW") }
                if !missing.isEmpty {
                    findings.append(
                        DoctorFinding(
                            .error, check: "vip-capabilities", subject: "node \(node.node)",
                            message: "batond lacks \(missing.joined(separator: " and ")): it cannot add its apps' VIPs or announce them",
                            fix: "grant them (AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW in batond.service) or run batond as root"))
                }
            } else {
                findings.append(
                    DoctorFinding(
                        .unchecked, check: "vip-capabilities", subject: "node \(node.node)",
                        message: "could not check: \(node.capabilitiesUnreadable ?? "batond's capabilities were not readable")",
                        fix: "run batonctl doctor on that node"))
            }
        }
        return findings
    }

    static func agreementFindings(_ facts: DoctorFacts) -> [DoctorFinding] {
        var findings: [DoctorFinding] = []
        let apps = Set(facts.nodes.flatMap { $0.configDigests.keys }).sorted()
        for app in apps {
            let reports = facts.nodes.compactMap { node in node.configDigests[app].map { (node.node, $0) } }
            let sections = Set(reports.flatMap { $0.1.keys }).sorted()
            for section in sections {
                var groups: [String: [String]] = [:]
                for (node, digests) in reports { groups[digests[section] ?? "-", default: []].append(node) }
                guard groups.count > 1 else { continue }
                let split = groups.values.map { "[\($0.sorted().joined(separator: ", "))]" }.sorted().joined(separator: " vs ")
                let severity: DoctorFinding.Severity = section == "vip" || section == "sqlite" ? .error : .warning
                findings.append(
                    DoctorFinding(
                        severity, check: "config-agreement", subject: "app \(app)",
                        message: "the \(section) section differs between nodes: \(split)",
                        fix: "give every node the same \(section) section for \(app), then reload (systemctl reload batond)"))
            }
        }
        return findings
    }
}

extension Substring {
    fileprivate func trimmingCharacters() -> Substring {
        var text = self
        while let first = text.first, first == " " || first == "\t" { text.removeFirst() }
        while let last = text.last, last == " " || last == "\t" || last == "\r" { text.removeLast() }
        return text
    }
}
