/// A node's whole configuration, as read from `baton.yaml` and validated.
///
/// Build one with ``parse(yaml:file:)`` or ``load(path:)``: they apply the documented defaults
/// and refuse anything unsafe, so a `BatonConfig` obtained from them is always usable. The
/// memberwise initializers exist for tests and tools and do not validate.
public struct BatonConfig: Sendable, Hashable {
    /// Namespace for every NATS bucket, stream and subject Baton uses; `[a-z0-9-]+`.
    public var cluster: String
    /// This node.
    public var node: NodeConfig
    /// How to reach NATS.
    public var nats: NATSConfig
    /// The supervised apps, in file order; names are unique.
    public var apps: [AppConfig]
    /// batond's HTTP server (`http:`), off when nil.
    public var http: HTTPConfig?
    /// Retention of the cluster's event history (`events:`, optional).
    public var events: EventsConfig
    /// Cluster-wide placement switches (`placement:`, optional): balancing on or off.
    public var placement: ClusterPlacementConfig

    /// Creates a config (without validation).
    public init(
        cluster: String, node: NodeConfig, nats: NATSConfig, apps: [AppConfig], http: HTTPConfig? = nil, events: EventsConfig = EventsConfig(),
        placement: ClusterPlacementConfig = ClusterPlacementConfig()
    ) {
        self.cluster = cluster
        self.node = node
        self.nats = nats
        self.apps = apps
        self.http = http
        self.events = events
        self.placement = placement
    }

    /// The app called `name`, if any.
    public func app(named name: String) -> AppConfig? {
        apps.first { $0.name == name }
    }
}

/// The `node:` section.
public struct NodeConfig: Sendable, Hashable {
    /// The default for ``stateDirectory``.
    public static let defaultStateDirectory = "/var/lib/baton"

    /// Unique within the cluster; `[a-z0-9-]+`.
    public var id: String
    /// Free-form labels (`zone: a`), shown in status and usable for placement.
    public var labels: [String: String]
    /// Where the node keeps replicas and positions (`state_dir`, absolute, default
    /// `/var/lib/baton`).
    public var stateDirectory: String
    /// The node's weight when active apps are balanced (`capacity`, default 1): a node of
    /// capacity 2 gets twice the share of one of capacity 1.
    public var capacity: Int

    /// Creates a node section.
    public init(id: String, labels: [String: String] = [:], stateDirectory: String = NodeConfig.defaultStateDirectory, capacity: Int = 1) {
        self.id = id
        self.labels = labels
        self.stateDirectory = stateDirectory
        self.capacity = capacity
    }
}

/// The `nats:` section.
public struct NATSConfig: Sendable, Hashable {
    /// Server URLs as written (`nats://host:port`, `tls://host:port` or `host:port`); at least one.
    public var servers: [String]
    /// How the node authenticates; at most one method.
    public var auth: NATSAuth
    /// TLS settings, when the `tls:` key is given.
    public var tls: TLSConfig?
    /// JetStream replicas for Baton's buckets and streams, 1 to 5 (default 1).
    public var replicas: Int

    /// Creates a NATS section.
    public init(servers: [String], auth: NATSAuth = .none, tls: TLSConfig? = nil, replicas: Int = 1) {
        self.servers = servers
        self.auth = auth
        self.tls = tls
        self.replicas = replicas
    }
}

/// How a node authenticates to NATS: the keys `credentials`, `user` + `password`, `token` and
/// `nkey_seed_file` are mutually exclusive.
public enum NATSAuth: Sendable, Hashable {
    /// No credentials (or only those embedded in a server URL).
    case none
    /// A `.creds` file (user JWT and NKey seed): `credentials`.
    case credentials(path: String)
    /// `user` and `password`, always together.
    case userPassword(user: String, password: String)
    /// `token`.
    case token(String)
    /// A file holding an NKey seed: `nkey_seed_file`.
    case nkeySeedFile(path: String)
}

/// The `nats.tls:` section. Every path is absolute.
public struct TLSConfig: Sendable, Hashable {
    /// A client certificate with its private key (`cert` and `key`, always together).
    public struct ClientCertificate: Sendable, Hashable {
        /// PEM certificate chain file.
        public var certificatePath: String
        /// PEM private key file.
        public var keyPath: String

        /// Creates a client certificate reference.
        public init(certificatePath: String, keyPath: String) {
            self.certificatePath = certificatePath
            self.keyPath = keyPath
        }
    }

    /// PEM file of the CAs that sign the servers' certificates (`ca`); the system's roots when nil.
    public var caPath: String?
    /// The certificate to present to the servers, if any.
    public var clientCertificate: ClientCertificate?

    /// Creates a TLS section.
    public init(caPath: String? = nil, clientCertificate: ClientCertificate? = nil) {
        self.caPath = caPath
        self.clientCertificate = clientCertificate
    }
}

/// One entry of `apps:`.
public struct AppConfig: Sendable, Hashable {
    /// Unique within the file; `[a-z0-9-]+`.
    public var name: String
    /// The default ``priority``: every node equal, and no node waits before taking a free lease.
    public static let defaultPriority = 100

    /// Higher wins a free lease (default 100). A node below 100 lets higher ones try first: it
    /// waits up to one renew interval longer (in proportion) before it takes a free lease.
    public var priority: Int
    /// A paused app never changes hands (default false).
    public var paused: Bool
    /// Lease timing; `renew`, `fence_budget` and `skew` default from `ttl` (see
    /// ``LeaseTiming/defaults(ttl:)``).
    public var lease: LeaseTiming
    /// What runs while this node is active.
    public var backend: BackendConfig
    /// How to tell that the backend works, if configured.
    public var health: HealthCheckConfig?
    /// The virtual IPs that follow the active node (`vip:`, one mapping or a list).
    public var vips: [VIPConfig]
    /// The SQLite database replicated to the passive nodes, if any.
    public var sqlite: SQLiteReplicaConfig?
    /// Where the app may, may not and would rather run (`placement:`).
    public var placement: AppPlacement
    /// The node the app would rather run on (`prefer_node`): it gets a head start on a free
    /// lease, and balancing never moves the app away from it.
    public var preferNode: String?
    /// Whether the app goes back to ``preferNode`` when that node is eligible again
    /// (`failback`, default manual).
    public var failback: Failback
    /// Never moved by balancing (`sticky`, default false); constraints and drains still move it.
    public var sticky: Bool
    /// How many nodes run the app at once (`instances`, default 1). The config reader replaces a
    /// pool by its instances (see ``instances(onNode:)``), so the apps of a loaded config are
    /// single-active apps, some of them instances of a pool (``pool``).
    public var instances: AppInstances
    /// The pool this app is an instance of, when it is one.
    public var pool: PoolMember?
    /// Commands run when the app changes hands on this node (`hooks:`); empty by default.
    public var hooks: HooksConfig

    /// Creates an app.
    public init(
        name: String, priority: Int = AppConfig.defaultPriority, paused: Bool = false, lease: LeaseTiming,
        backend: BackendConfig, health: HealthCheckConfig? = nil, vips: [VIPConfig] = [], sqlite: SQLiteReplicaConfig? = nil,
        placement: AppPlacement = AppPlacement(), preferNode: String? = nil, failback: Failback = .manual, sticky: Bool = false,
        instances: AppInstances = .one, pool: PoolMember? = nil, hooks: HooksConfig = HooksConfig()
    ) {
        self.hooks = hooks
        self.instances = instances
        self.pool = pool
        self.placement = placement
        self.preferNode = preferNode
        self.failback = failback
        self.sticky = sticky
        self.name = name
        self.priority = priority
        self.paused = paused
        self.lease = lease
        self.backend = backend
        self.health = health
        self.vips = vips
        self.sqlite = sqlite
    }
}

/// One entry of an app's `vip:`.
public struct VIPConfig: Sendable, Hashable {
    /// The address and prefix length, as written (`192.0.2.10/24`, `2001:db8::10/64`), normalized
    /// by the parser (`inet_ntop` form).
    public var address: String
    /// The prefix length.
    public var prefixLength: Int
    /// Whether the address is IPv6.
    public var isIPv6: Bool
    /// The interface the address goes on (`eth0`).
    public var interface: String
    /// An IPv4 address label (`eth0:web`); must start with the interface name.
    public var label: String?
    /// How the address is announced after it is added.
    public var announce: AnnounceConfig
    /// Whether to probe the link (ARP, IPv4 only) for another host that answers for the
    /// address while claiming it, and report one (`check_conflicts`, default false). The probe
    /// runs alongside the claim: it delays nothing, and it decides nothing (the fencing token does).
    public var checkConflicts: Bool

    /// Creates a VIP.
    public init(
        address: String, prefixLength: Int, isIPv6: Bool, interface: String, label: String? = nil, announce: AnnounceConfig = AnnounceConfig(),
        checkConflicts: Bool = false
    ) {
        self.address = address
        self.prefixLength = prefixLength
        self.isIPv6 = isIPv6
        self.interface = interface
        self.label = label
        self.announce = announce
        self.checkConflicts = checkConflicts
    }

    /// `address/prefix`.
    public var cidr: String { "\(address)/\(prefixLength)" }
}

/// `vip.announce:`: gratuitous ARP (IPv4) or unsolicited neighbor advertisements (IPv6).
public struct AnnounceConfig: Sendable, Hashable {
    /// Announcements in the burst after the address is added (`count`, default 5; 0 sends none).
    public var count: Int
    /// Time between two announcements of a burst (`interval`, default 200ms).
    public var interval: Duration
    /// Time between two refresh announcements while active (`refresh`, default 0s: none).
    public var refresh: Duration

    /// Creates announcement settings; the defaults are those of the config file.
    public init(count: Int = 5, interval: Duration = .milliseconds(200), refresh: Duration = .zero) {
        self.count = count
        self.interval = interval
        self.refresh = refresh
    }
}

/// An app's `sqlite:`: the database Baton replicates from the active node to the passive ones.
public struct SQLiteReplicaConfig: Sendable, Hashable {
    /// The database file the backend uses (absolute); its `-wal` must be in WAL mode.
    public var path: String
    /// Time between two full snapshots in the Object Store (`snapshot_interval`, default 1h).
    public var snapshotInterval: Duration
    /// Snapshots kept (`snapshots`, default 3).
    public var snapshotsKept: Int
    /// How long the replication stream keeps records (`retention`, default 24h); a passive node
    /// further behind restores a snapshot first.
    public var retention: Duration
    /// The most the replication stream holds (`stream_max_bytes`, default 1 GiB): the oldest
    /// records go first, and a snapshot is taken before half of it is written since the last
    /// one. JetStream reserves it on the server.
    public var streamMaxBytes: Int64
    /// The most the snapshot bucket holds (`snapshot_max_bytes`, default 4 GiB); old snapshots
    /// are pruned to make room for a new one. JetStream reserves it on the server.
    public var snapshotMaxBytes: Int64
    /// Whether the snapshot bucket grows past ``snapshotMaxBytes`` to twice a snapshot's size
    /// when the database outgrows it: when `snapshot_max_bytes` is not set, or `auto`. A
    /// configured size is a hard limit.
    public var snapshotMaxBytesGrows: Bool
    /// How long a graceful stepdown's final flush may take, retries included (`flush_timeout`,
    /// default 15s). Meanwhile the lease is kept and renewed and the backend stays stopped;
    /// past it the database is set aside and the loss reported.
    public var flushTimeout: Duration
    /// What a promotion checks before the replica becomes the app's database
    /// (`promotion_check`, default `checksums`).
    public var promotionCheck: PromotionCheck
    /// A snapshot is taken when a node starting over would spend this many times longer
    /// replaying the records since the last snapshot than restoring a new one
    /// (`snapshot_replay_ratio`, default 4; 0 turns this reason off).
    public var snapshotReplayRatio: Int

    /// What a promotion checks before the replica becomes the app's database.
    public enum PromotionCheck: String, Sendable, Hashable {
        /// The replica's page hashes, which the passive node verified against the active node's
        /// checksum of every transaction as it applied it: no read of the file, so a promotion
        /// costs the same at every database size.
        case checksums
        /// Also read the whole replica file again (its hashes against the position) and run
        /// `PRAGMA quick_check`: catches a replica file changed behind Baton's back, at a cost
        /// that grows with the database (about 0.5 s per GB measured).
        case full
    }

    /// `flush_timeout`'s default: 15 s.
    public static let defaultFlushTimeout: Duration = .seconds(15)
    /// `stream_max_bytes`'s default: 1 GiB.
    public static let defaultStreamMaxBytes: Int64 = 1 << 30
    /// `snapshot_replay_ratio`'s default: 4.
    public static let defaultSnapshotReplayRatio = 4
    /// `snapshot_max_bytes`'s default: 4 GiB.
    public static let defaultSnapshotMaxBytes: Int64 = 4 << 30

    /// Creates a replica config; the defaults are those of the config file.
    public init(
        path: String, snapshotInterval: Duration = .seconds(3600), snapshotsKept: Int = 3, retention: Duration = .seconds(86_400),
        streamMaxBytes: Int64 = defaultStreamMaxBytes, snapshotMaxBytes: Int64 = defaultSnapshotMaxBytes,
        flushTimeout: Duration = defaultFlushTimeout, promotionCheck: PromotionCheck = .checksums, snapshotMaxBytesGrows: Bool? = nil,
        snapshotReplayRatio: Int = defaultSnapshotReplayRatio
    ) {
        self.snapshotReplayRatio = snapshotReplayRatio
        self.path = path
        self.snapshotInterval = snapshotInterval
        self.snapshotsKept = snapshotsKept
        self.retention = retention
        self.streamMaxBytes = streamMaxBytes
        self.snapshotMaxBytes = snapshotMaxBytes
        self.flushTimeout = flushTimeout
        self.promotionCheck = promotionCheck
        self.snapshotMaxBytesGrows = snapshotMaxBytesGrows ?? (snapshotMaxBytes == Self.defaultSnapshotMaxBytes)
    }
}

/// The `backend:` of an app: exactly one of `process` or `systemd`.
public enum BackendConfig: Sendable, Hashable {
    /// A child process of Baton.
    case process(ProcessBackendConfig)
    /// A systemd unit, started and stopped over D-Bus.
    case systemd(SystemdBackendConfig)
}

/// `backend.process:`.
public struct ProcessBackendConfig: Sendable, Hashable {
    /// The default for ``stopTimeout``.
    public static let defaultStopTimeout: Duration = .seconds(10)

    /// The program and its arguments (argv, no shell); never empty, and the program is not an
    /// empty string. A program without a `/` is looked up in `PATH`.
    public var command: [String]
    /// Extra environment variables (`env`); names starting with `BATON_` are reserved.
    public var environment: [String: String]
    /// The working directory (`working_directory`, absolute), Baton's own when nil.
    public var workingDirectory: String?
    /// The user to run as (a name or a numeric id), Baton's own when nil.
    public var user: String?
    /// The group to run as (a name or a numeric id), the user's when nil.
    public var group: String?
    /// How long a graceful stop (SIGTERM) may take before SIGKILL (`stop_timeout`, default 10s).
    public var stopTimeout: Duration
    /// What happens when the process exits while the node is active.
    public var restart: RestartPolicy

    /// Creates a process backend.
    public init(
        command: [String], environment: [String: String] = [:], workingDirectory: String? = nil,
        user: String? = nil, group: String? = nil, stopTimeout: Duration = ProcessBackendConfig.defaultStopTimeout,
        restart: RestartPolicy = RestartPolicy()
    ) {
        self.command = command
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.user = user
        self.group = group
        self.stopTimeout = stopTimeout
        self.restart = restart
    }
}

/// `backend.process.restart:`: restart a process that exits while active, with a pause between
/// attempts; more than `maxRestarts` restarts within `window` make the node step down.
public struct RestartPolicy: Sendable, Hashable {
    /// Restarts allowed within ``window`` (`max_restarts`, default 5; 0 steps down at the first exit).
    public var maxRestarts: Int
    /// The sliding window restarts are counted in (`window`, default 60s).
    public var window: Duration
    /// The pause before each restart (`backoff`, default 1s).
    public var backoff: Duration

    /// Creates a policy; the defaults are those of the config file.
    public init(maxRestarts: Int = 5, window: Duration = .seconds(60), backoff: Duration = .seconds(1)) {
        self.maxRestarts = maxRestarts
        self.window = window
        self.backoff = backoff
    }
}

/// `backend.systemd:`.
public struct SystemdBackendConfig: Sendable, Hashable {
    /// Unit suffixes Baton can start and stop.
    public static let unitSuffixes = [".service", ".socket", ".target", ".mount", ".automount", ".swap", ".timer", ".path"]

    /// Which D-Bus the unit's systemd listens on.
    public enum Bus: String, Sendable, Hashable, CaseIterable {
        /// The system manager (production; batond runs as root).
        case system
        /// The calling user's manager (`systemctl --user`; tests and unprivileged setups).
        case user
    }

    /// The full unit name, such as `myapp.service`.
    public var unit: String
    /// The bus (`bus`, default `system`).
    public var bus: Bus
    /// What happens when the unit fails or stops behind Baton's back while active.
    public var restart: RestartPolicy

    /// Creates a systemd backend.
    public init(unit: String, bus: Bus = .system, restart: RestartPolicy = RestartPolicy()) {
        self.unit = unit
        self.bus = bus
        self.restart = restart
    }
}

/// `health:`: one probe plus its timing.
public struct HealthCheckConfig: Sendable, Hashable {
    /// What to check.
    public var probe: HealthProbe
    /// Time between the starts of two checks (default 2s).
    public var interval: Duration
    /// How long one check may take; never longer than ``interval`` (default 1s).
    public var timeout: Duration
    /// Consecutive failures that make the backend unhealthy (default 3).
    public var failures: Int
    /// Time after the backend starts during which failures do not count (default 0s).
    public var grace: Duration

    /// Creates a health check; the defaults are those of the config file.
    public init(
        probe: HealthProbe, interval: Duration = .seconds(2), timeout: Duration = .seconds(1),
        failures: Int = 3, grace: Duration = .zero
    ) {
        self.probe = probe
        self.interval = interval
        self.timeout = timeout
        self.failures = failures
        self.grace = grace
    }
}

/// A health probe: `http`, `tcp` or `exec`.
public enum HealthProbe: Sendable, Hashable {
    /// An HTTP GET that must answer 2xx.
    case http(HTTPEndpoint)
    /// A TCP connect that must succeed.
    case tcp(HostPort)
    /// A command (argv, no shell) that must exit 0.
    case exec([String])
}

/// An `http://` or `https://` URL, split for the checker.
public struct HTTPEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// The URL as written.
    public var url: String
    /// True for `https://`.
    public var isSecure: Bool
    /// Host name or IP address (IPv6 without brackets).
    public var host: String
    /// The port, 80 or 443 when the URL gives none.
    public var port: Int
    /// Path and query, `/` when the URL gives none; the fragment is dropped.
    public var target: String

    /// Creates an endpoint.
    public init(url: String, isSecure: Bool, host: String, port: Int, target: String) {
        self.url = url
        self.isSecure = isSecure
        self.host = host
        self.port = port
        self.target = target
    }

    /// The URL as written.
    public var description: String { url }
}

/// A host and a port, as in `127.0.0.1:8080` or `[::1]:8080`.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    /// Host name or IP address (IPv6 without brackets).
    public var host: String
    /// 1 to 65535.
    public var port: Int

    /// Creates an address.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `host:port`, with brackets around an IPv6 address.
    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}
