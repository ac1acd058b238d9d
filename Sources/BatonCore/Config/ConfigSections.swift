import Yams

// How each section of baton.yaml is read and checked. Every reader reads all of its keys before
// it gives up, so that every mistake is reported at once.

extension BatonConfig: ConfigSection {
    static let keys = ["cluster", "node", "nats", "apps", "http", "events", "placement"]

    init?(fields: ConfigFields) {
        let cluster = fields.required("cluster")?.name(kind: "cluster name", example: "demo")
        let node = fields.required("node")?.section(NodeConfig.self)
        let nats = fields.required("nats")?.section(NATSConfig.self)
        let apps = fields.required("apps").flatMap(Self.readApps)
        let http = fields.optional("http").map { $0.section(HTTPConfig.self) }
        let events = fields.optional("events", default: EventsConfig()) { $0.section(EventsConfig.self) }
        let placement = fields.optional("placement", default: ClusterPlacementConfig()) { $0.section(ClusterPlacementConfig.self) }
        guard let cluster, let node, let nats, let declaredApps = apps, !http.failed, let events, let placement,
            let apps = Self.expandPools(declaredApps, onNode: node.id, value: fields.optional("apps"))
        else { return nil }
        self.init(cluster: cluster, node: node, nats: nats, apps: apps, http: http ?? nil, events: events, placement: placement)
    }

    private static func readApps(_ value: ConfigValue) -> [AppConfig]? {
        guard let items = value.list(expected: "a list of apps") else { return nil }
        var apps: [AppConfig] = []
        var ok = true
        var firstLines: [String: Int] = [:]
        for item in items {
            if case .mapping(let mapping) = item.node,
               let nameNode = mapping.first(where: { $0.key.scalar?.string == "name" })?.value,
               case .scalar(let scalar) = nameNode, isValidName(scalar.string) {
                let name = ConfigValue(
                    nameNode, path: item.path.appending(key: "name"), fallback: item.position,
                    diagnostics: item.diagnostics)
                if let line = firstLines[scalar.string] {
                    name.error("duplicate app name \(quoted(scalar.string)); first defined at line \(line)")
                    ok = false
                } else {
                    firstLines[scalar.string] = name.position.line
                }
            }
            if let app = item.section(AppConfig.self) {
                apps.append(app)
            } else {
                ok = false
            }
        }
        guard ok else { return nil }
        let placementOK = checkPlacementReferences(apps, items: items)
        return checkPools(apps, items: items) && placementOK ? apps : nil
    }
}

extension NodeConfig: ConfigSection {
    static let keys = ["id", "labels", "state_dir", "capacity"]

    init?(fields: ConfigFields) {
        let id = fields.required("id")?.name(kind: "node id", example: "node-1")
        let labels = fields.optional("labels", default: [:]) {
            $0.stringMap(expected: "a mapping of label names to strings")
        }
        let stateDirectory = fields.optional("state_dir", default: Self.defaultStateDirectory) { $0.absolutePath() }
        let capacity = fields.optional("capacity", default: 1) { $0.integer(in: 1...10_000) }
        guard let id, let labels, let stateDirectory, let capacity else { return nil }
        self.init(id: id, labels: labels, stateDirectory: stateDirectory, capacity: capacity)
    }
}

extension NATSConfig: ConfigSection {
    static let keys = ["servers", "credentials", "user", "password", "token", "nkey_seed_file", "tls", "replicas"]

    init?(fields: ConfigFields) {
        let servers = fields.required("servers").flatMap(Self.readServers)
        let auth = Self.readAuth(fields)
        let tls = fields.optional("tls").map { $0.section(TLSConfig.self) }
        let replicas = fields.optional("replicas", default: 1) { $0.integer(in: 1...5) }
        guard let servers, let auth, !tls.failed, let replicas else { return nil }
        self.init(servers: servers, auth: auth, tls: tls ?? nil, replicas: replicas)
    }

    private static func readServers(_ value: ConfigValue) -> [String]? {
        guard let items = value.list(expected: "a list of server URLs like [\"nats://127.0.0.1:4222\"]") else {
            return nil
        }
        if items.isEmpty {
            value.error("must list at least one server, like [\"nats://127.0.0.1:4222\"]")
            return nil
        }
        var servers: [String] = []
        for item in items {
            guard let text = item.scalarText(expected: "a server URL like \"nats://127.0.0.1:4222\"") else { continue }
            if let reason = AddressSyntax.checkServerURL(text) {
                item.error("invalid server URL \(quoted(text)): \(reason)")
                continue
            }
            servers.append(text)
        }
        return servers.count == items.count ? servers : nil
    }

    /// The authentication method; `.some(nil)` is never returned: nil means an error was reported.
    private static func readAuth(_ fields: ConfigFields) -> NATSAuth? {
        let credentials = fields.optional("credentials").map { $0.absolutePath() }
        let user = fields.optional("user").map { $0.string() }
        let password = fields.optional("password").map { $0.string() }
        let token = fields.optional("token").map { $0.string() }
        let nkeySeedFile = fields.optional("nkey_seed_file").map { $0.absolutePath() }
        var ok = ![credentials, user, password, token, nkeySeedFile].contains { $0.failed }

        for (present, absent) in [("user", "password"), ("password", "user")] {
            if let entry = fields.entry(present), !fields.has(absent) {
                entry.key.error("\(present) is given without \(absent); give both or neither")
                ok = false
            }
        }

        // One entry per method, in file order; user and password are one method.
        var methods: [ConfigFields.Entry] = []
        var sawUserPassword = false
        for entry in fields.entries {
            switch entry.key.pathKey {
            case "credentials", "token", "nkey_seed_file":
                methods.append(entry)
            case "user", "password":
                if !sawUserPassword { methods.append(entry) }
                sawUserPassword = true
            default:
                break
            }
        }
        if let first = methods.first {
            for other in methods.dropFirst() {
                other.key.error("\(quoted(other.key.pathKey)) conflicts with \(quoted(first.key.pathKey)) at \(first.key.position.reference(from: other.key.position)); give at most one of credentials, user/password, token or nkey_seed_file")
                ok = false
            }
        }
        guard ok else { return nil }

        if let path = credentials ?? nil { return .credentials(path: path) }
        if let user = user ?? nil, let password = password ?? nil { return .userPassword(user: user, password: password) }
        if let token = token ?? nil { return .token(token) }
        if let path = nkeySeedFile ?? nil { return .nkeySeedFile(path: path) }
        return NATSAuth.none
    }
}

extension TLSConfig: ConfigSection {
    static let keys = ["ca", "cert", "key"]

    init?(fields: ConfigFields) {
        let ca = fields.optional("ca").map { $0.absolutePath() }
        let cert = fields.optional("cert").map { $0.absolutePath() }
        let key = fields.optional("key").map { $0.absolutePath() }
        var ok = ![ca, cert, key].contains { $0.failed }
        for (present, absent) in [("cert", "key"), ("key", "cert")] {
            if let entry = fields.entry(present), !fields.has(absent) {
                entry.key.error("\(present) is given without \(absent); give both or neither")
                ok = false
            }
        }
        guard ok else { return nil }
        var client: ClientCertificate?
        if let cert = cert ?? nil, let key = key ?? nil {
            client = ClientCertificate(certificatePath: cert, keyPath: key)
        }
        self.init(caPath: ca ?? nil, clientCertificate: client)
    }
}

extension AppConfig: ConfigSection {
    static let keys = [
        "name", "priority", "paused", "lease", "backend", "health", "vip", "sqlite", "placement", "prefer_node", "failback", "sticky",
        "instances", "hooks",
    ]

    init?(fields: ConfigFields) {
        let name = fields.required("name")?.name(kind: "app name", example: "web")
        let priority = fields.optional("priority", default: AppConfig.defaultPriority) { $0.integer() }
        let paused = fields.optional("paused", default: false) { $0.bool() }
        let lease = fields.required("lease")?.section(LeaseTiming.self)
        let backend = fields.required("backend")?.section(BackendConfig.self)
        let health = fields.optional("health").map { $0.section(HealthCheckConfig.self) }
        let vips = fields.optional("vip", default: []) { Self.readVIPs($0) }
        let sqlite = fields.optional("sqlite").map { $0.section(SQLiteReplicaConfig.self) }
        let placement = fields.optional("placement", default: AppPlacement()) { $0.section(AppPlacement.self) }
        let preferNode = fields.optional("prefer_node").map { $0.name(kind: "node id", example: "node-1") }
        let failback = fields.optional("failback", default: Failback.manual) { Failback.read($0) }
        let sticky = fields.optional("sticky", default: false) { $0.bool() }
        let instances = fields.optional("instances", default: AppInstances.one) { AppInstances.read($0) }
        let hooks = fields.optional("hooks", default: HooksConfig()) { $0.section(HooksConfig.self) }
        var placementOK = true
        if let entry = fields.entry("failback"), !fields.has("prefer_node") {
            entry.key.error("failback is given without prefer_node: it says whether the app goes back to its prefer_node")
            placementOK = false
        }
        guard let name, let priority, let paused, let lease, let backend, !health.failed, let vips, !sqlite.failed, let placement,
            !preferNode.failed, let failback, let sticky, placementOK, let instances, let hooks
        else { return nil }
        if !instances.isPool, case .systemd(let systemd) = backend, let problem = systemdUnitProblem(systemd.unit),
            let value = fields.optional("backend")?.child("systemd")?.child("unit")
        {
            value.error(problem)
            return nil
        }
        self.init(
            name: name, priority: priority, paused: paused, lease: lease, backend: backend, health: health ?? nil,
            vips: vips, sqlite: sqlite ?? nil, placement: placement, preferNode: preferNode ?? nil, failback: failback, sticky: sticky,
            instances: instances, hooks: hooks)
    }

    /// One VIP mapping or a list of them; the same address twice is an error.
    private static func readVIPs(_ value: ConfigValue) -> [VIPConfig]? {
        let items: [ConfigValue]
        if case .mapping = value.node {
            items = [value]
        } else if let list = value.list(expected: "a VIP mapping like {address: 192.0.2.10/24, interface: eth0}, or a list of them") {
            items = list
        } else {
            return nil
        }
        var vips: [VIPConfig] = []
        var ok = true
        var firstLines: [String: Int] = [:]
        for item in items {
            guard let vip = item.section(VIPConfig.self) else {
                ok = false
                continue
            }
            if let line = firstLines[vip.address] {
                item.error("duplicate VIP \(quoted(vip.address)); first given at line \(line)")
                ok = false
            } else {
                firstLines[vip.address] = item.position.line
            }
            vips.append(vip)
        }
        return ok ? vips : nil
    }
}

extension VIPConfig: ConfigSection {
    static let keys = ["address", "interface", "label", "announce", "check_conflicts"]

    init?(fields: ConfigFields) {
        var parsed: (address: String, prefix: Int, isIPv6: Bool)?
        if let value = fields.required("address"), let text = value.scalarText(expected: "an address with a prefix length like \"192.0.2.10/24\"") {
            switch AddressSyntax.addressPrefix(text) {
            case .success(let result): parsed = result
            case .failure(let reason): value.error("invalid VIP address \(quoted(text)): \(reason)")
            }
        }
        var interface: String?
        if let value = fields.required("interface"), let text = value.string(expected: "an interface name like \"eth0\"") {
            if let reason = AddressSyntax.interfaceNameProblem(text) {
                value.error("invalid interface name \(quoted(text)): \(reason)")
            } else {
                interface = text
            }
        }
        let label = fields.optional("label").map { $0.string(expected: "a label like \"eth0:web\"") }
        let announce = fields.optional("announce", default: AnnounceConfig()) { $0.section(AnnounceConfig.self) }
        let checkConflicts = fields.optional("check_conflicts", default: false) { $0.bool() }
        guard let parsed, let interface, !label.failed, let announce, let checkConflicts else { return nil }
        if let label = label ?? nil {
            let value = fields.optional("label")!
            if parsed.isIPv6 {
                value.error("labels exist for IPv4 addresses only")
                return nil
            }
            if !label.hasPrefix(interface) || label.utf8.count > 15 {
                value.error("label \(quoted(label)) must start with the interface name \(quoted(interface)) and be at most 15 bytes, like \"\(interface):vip\"")
                return nil
            }
        }
        self.init(
            address: parsed.address, prefixLength: parsed.prefix, isIPv6: parsed.isIPv6, interface: interface, label: label ?? nil, announce: announce,
            checkConflicts: checkConflicts)
    }
}

extension AnnounceConfig: ConfigSection {
    static let keys = ["count", "interval", "refresh"]

    init?(fields: ConfigFields) {
        let defaults = AnnounceConfig()
        let count = fields.optional("count", default: defaults.count) { $0.integer(in: 0...100) }
        let interval = fields.optional("interval", default: defaults.interval) { $0.duration(.positive) }
        let refresh = fields.optional("refresh", default: defaults.refresh) { $0.duration(.nonNegative) }
        guard let count, let interval, let refresh else { return nil }
        self.init(count: count, interval: interval, refresh: refresh)
    }
}

extension SQLiteReplicaConfig: ConfigSection {
    static let keys = ["path", "snapshot_interval", "snapshots", "retention", "stream_max_bytes", "snapshot_max_bytes", "flush_timeout", "promotion_check", "snapshot_replay_ratio"]

    init?(fields: ConfigFields) {
        let defaults = SQLiteReplicaConfig(path: "/")
        let path = fields.required("path")?.absolutePath()
        let snapshotInterval = fields.optional("snapshot_interval", default: defaults.snapshotInterval) { $0.duration(.positive) }
        let snapshotsKept = fields.optional("snapshots", default: defaults.snapshotsKept) { $0.integer(in: 1...100) }
        let retention = fields.optional("retention", default: defaults.retention) { $0.duration(.positive) }
        let streamMaxBytes = fields.optional("stream_max_bytes", default: defaults.streamMaxBytes) { $0.byteSize(atLeast: 1 << 20) }
        var snapshotMaxBytes: Int64? = defaults.snapshotMaxBytes
        var snapshotMaxBytesGrows = true
        if let value = fields.optional("snapshot_max_bytes") {
            if case .scalar(let scalar) = value.node, scalar.string == "auto" {
                snapshotMaxBytes = defaults.snapshotMaxBytes
            } else {
                snapshotMaxBytes = value.byteSize(atLeast: 1 << 20)
                snapshotMaxBytesGrows = false
            }
        }
        let flushTimeout = fields.optional("flush_timeout", default: defaults.flushTimeout) { $0.duration(.positive) }
        let snapshotReplayRatio = fields.optional("snapshot_replay_ratio", default: defaults.snapshotReplayRatio) { $0.integer(in: 0...1000) }
        var promotionCheck: PromotionCheck? = defaults.promotionCheck
        if let value = fields.optional("promotion_check") {
            promotionCheck = value.string(expected: "checksums or full").flatMap { text in
                let check = PromotionCheck(rawValue: text)
                if check == nil { value.error("unknown promotion check \(quoted(text)): use checksums or full") }
                return check
            }
        }
        guard let path, let snapshotInterval, let snapshotsKept, let retention, let streamMaxBytes, let snapshotMaxBytes, let flushTimeout,
            let promotionCheck, let snapshotReplayRatio
        else {
            return nil
        }
        if path.hasSuffix("/") {
            fields.optional("path")?.error("\(quoted(path)) names a directory; give the database file, like \"/var/lib/myapp/app.db\"")
            return nil
        }
        self.init(
            path: path, snapshotInterval: snapshotInterval, snapshotsKept: snapshotsKept, retention: retention,
            streamMaxBytes: streamMaxBytes, snapshotMaxBytes: snapshotMaxBytes, flushTimeout: flushTimeout, promotionCheck: promotionCheck,
            snapshotMaxBytesGrows: snapshotMaxBytesGrows, snapshotReplayRatio: snapshotReplayRatio)
    }
}

extension LeaseTiming: ConfigSection {
    static let keys = ["ttl", "renew", "fence_budget", "skew"]

    init?(fields: ConfigFields) {
        let ttl = fields.required("ttl")?.duration(.any)
        let renew = fields.optional("renew").map { $0.duration(.any) }
        let fenceBudget = fields.optional("fence_budget").map { $0.duration(.any) }
        let skew = fields.optional("skew").map { $0.duration(.any) }
        guard let ttl, !renew.failed, !fenceBudget.failed, !skew.failed else { return nil }

        let defaults = LeaseTiming.defaults(ttl: ttl)
        var defaulted: Set<LeaseTimingViolation.Parameter> = []
        for parameter in LeaseTimingViolation.Parameter.allCases where !fields.has(parameter.rawValue) {
            defaulted.insert(parameter)
        }
        let timing = LeaseTiming(
            ttl: ttl,
            renew: (renew ?? nil) ?? defaults.renew,
            fenceBudget: (fenceBudget ?? nil) ?? defaults.fenceBudget,
            skew: (skew ?? nil) ?? defaults.skew
        )
        let violations = timing.violations(defaulted: defaulted)
        let ttlTooShort = violations.contains { $0.parameters == [.ttl] }
        var ok = true
        for violation in violations {
            let written = violation.parameters.filter { !defaulted.contains($0) }
            // A rule broken only by defaults of a ttl that is itself too short adds nothing.
            if ttlTooShort, violation.parameters != [.ttl], written == [.ttl] { continue }
            let blamed = written.first ?? .ttl
            fields.optional(blamed.rawValue)?.error(violation.message)
            ok = false
        }
        guard ok else { return nil }
        self = timing
    }
}

extension BackendConfig: ConfigSection {
    static let keys = ["process", "systemd"]
    static var expectation: String { "a mapping with process or systemd" }

    init?(fields: ConfigFields) {
        let given = fields.exactlyOne(of: Self.keys, missing: "a backend")
        let process = fields.optional("process")?.section(ProcessBackendConfig.self)
        let systemd = fields.optional("systemd")?.section(SystemdBackendConfig.self)
        guard given.count == 1 else { return nil }
        if let process {
            self = .process(process)
        } else if let systemd {
            self = .systemd(systemd)
        } else {
            return nil
        }
    }
}

extension ProcessBackendConfig: ConfigSection {
    static let keys = ["command", "env", "working_directory", "user", "group", "stop_timeout", "restart"]

    init?(fields: ConfigFields) {
        let command = fields.required("command")?.argv()
        let environment = fields.optional("env", default: [:]) {
            $0.stringMap(expected: "a mapping of variable names to strings", checkKey: Self.checkVariableName)
        }
        let workingDirectory = fields.optional("working_directory").map { $0.absolutePath() }
        let user = fields.optional("user").map { $0.string() }
        let group = fields.optional("group").map { $0.string() }
        let stopTimeout = fields.optional("stop_timeout", default: Self.defaultStopTimeout) { $0.duration(.positive) }
        let restart = fields.optional("restart", default: RestartPolicy()) { $0.section(RestartPolicy.self) }
        guard let command, let environment, !workingDirectory.failed, !user.failed, !group.failed, let stopTimeout,
              let restart
        else { return nil }
        self.init(
            command: command, environment: environment, workingDirectory: workingDirectory ?? nil, user: user ?? nil,
            group: group ?? nil, stopTimeout: stopTimeout, restart: restart)
    }

    private static func checkVariableName(_ name: String, _ key: ConfigValue) -> Bool {
        if name.hasPrefix("BATON_") {
            key.error("\(quoted(name)) is reserved: Baton sets BATON_APP, BATON_NODE and BATON_EPOCH itself, and names starting with BATON_ are Baton's")
            return false
        }
        let valid = !name.isEmpty && name.unicodeScalars.enumerated().allSatisfy { index, scalar in
            ("A"..."Z").contains(scalar) || ("a"..."z").contains(scalar) || scalar == "_"
                || (index > 0 && ("0"..."9").contains(scalar))
        }
        if !valid {
            key.error("invalid environment variable name \(quoted(name)): use letters, digits and \"_\", not starting with a digit")
        }
        return valid
    }
}

extension RestartPolicy: ConfigSection {
    static let keys = ["max_restarts", "window", "backoff"]

    init?(fields: ConfigFields) {
        let defaults = RestartPolicy()
        let maxRestarts = fields.optional("max_restarts", default: defaults.maxRestarts) { $0.integer(atLeast: 0) }
        let window = fields.optional("window", default: defaults.window) { $0.duration(.positive) }
        let backoff = fields.optional("backoff", default: defaults.backoff) { $0.duration(.nonNegative) }
        guard let maxRestarts, let window, let backoff else { return nil }
        self.init(maxRestarts: maxRestarts, window: window, backoff: backoff)
    }
}

extension SystemdBackendConfig: ConfigSection {
    static let keys = ["unit", "bus", "restart"]

    init?(fields: ConfigFields) {
        var unit: String?
        if let value = fields.required("unit"), let text = value.string(expected: "a unit name like \"myapp.service\"") {
            if let problem = systemdUnitProblem(text, templateAllowed: true) {
                value.error(problem)
            } else {
                unit = text
            }
        }
        var bus: Bus? = .system
        if let value = fields.optional("bus"), let text = value.string(expected: "system or user") {
            bus = Bus(rawValue: text)
            if bus == nil { value.error("unknown bus \(quoted(text)): use system or user") }
        } else if fields.has("bus") {
            bus = nil
        }
        let restart = fields.optional("restart", default: RestartPolicy()) { $0.section(RestartPolicy.self) }
        guard let unit, let bus, let restart else { return nil }
        self.init(unit: unit, bus: bus, restart: restart)
    }
}

extension HealthCheckConfig: ConfigSection {
    static let keys = ["http", "tcp", "exec", "interval", "timeout", "failures", "grace"]
    static var expectation: String { "a mapping with one of http, tcp or exec" }

    init?(fields: ConfigFields) {
        let given = fields.exactlyOne(of: ["http", "tcp", "exec"], missing: "a check")
        var probes: [String: HealthProbe] = [:]
        if let value = fields.optional("http"),
           let text = value.scalarText(expected: "a URL like \"http://127.0.0.1:8080/healthz\"") {
            switch AddressSyntax.httpEndpoint(text) {
            case .success(let endpoint): probes["http"] = .http(endpoint)
            case .failure(let reason): value.error("invalid http URL \(quoted(text)): \(reason)")
            }
        }
        if let value = fields.optional("tcp"), let text = value.scalarText(expected: "an address like \"127.0.0.1:8080\"") {
            switch AddressSyntax.tcpAddress(text) {
            case .success(let address): probes["tcp"] = .tcp(address)
            case .failure(let reason):
                let hint = reason.description == "missing port" ? "; use host:port like \"127.0.0.1:8080\"" : ""
                value.error("invalid tcp address \(quoted(text)): \(reason)\(hint)")
            }
        }
        if let value = fields.optional("exec"), let argv = value.argv() {
            probes["exec"] = .exec(argv)
        }

        let defaults = HealthCheckConfig(probe: .exec([]))
        let interval = fields.optional("interval", default: defaults.interval) { $0.duration(.positive) }
        let timeout = fields.optional("timeout", default: defaults.timeout) { $0.duration(.positive) }
        let failures = fields.optional("failures", default: defaults.failures) { $0.integer(atLeast: 1) }
        let grace = fields.optional("grace", default: defaults.grace) { $0.duration(.nonNegative) }
        var ok = true
        if let interval, let timeout, timeout > interval {
            let timeoutText = fields.has("timeout") ? timeout.configString : "\(timeout.configString), the default"
            let intervalText = fields.has("interval") ? interval.configString : "\(interval.configString), the default"
            let blamed = fields.optional("timeout") ?? fields.optional("interval")
            blamed?.error("timeout (\(timeoutText)) is longer than interval (\(intervalText)); a check must end before the next one starts")
            ok = false
        }
        guard ok, given.count == 1, let probe = probes[given[0]], let interval, let timeout, let failures, let grace
        else { return nil }
        self.init(probe: probe, interval: interval, timeout: timeout, failures: failures, grace: grace)
    }
}

protocol OptionalValue {
    var isNone: Bool { get }
}

extension Optional: OptionalValue {
    var isNone: Bool { self == nil }
}

extension Optional where Wrapped: OptionalValue {
    /// For the `T??` of an optional key read with `fields.optional(key).map { read($0) }`: true
    /// when the key was given but could not be read (nil means absent).
    var failed: Bool {
        guard case .some(let inner) = self else { return false }
        return inner.isNone
    }
}

// MARK: - Entry points

extension BatonConfig {
    /// Parses and validates a config.
    ///
    /// - Parameters:
    ///   - yaml: the file's contents.
    ///   - file: the name to put in errors (usually the path).
    /// - Throws: ``ConfigErrors`` with every mistake found, in file order, each with its line,
    ///   column, key path and a message; YAML syntax errors stop at the first one, since nothing
    ///   after it can be trusted.
    public static func parse(yaml: String, file: String) throws(ConfigErrors) -> BatonConfig {
        let diagnostics = Diagnostics(file: file)
        let root: Node?
        do {
            // Scalars are read as text by ConfigValue; Yams' default resolver would tag them with
            // NSRegularExpression rules, which load ICU into batond for nothing.
            root = try Yams.compose(yaml: yaml, .basic)
        } catch {
            let (position, message) = describeYAMLError(error, in: yaml)
            diagnostics.report(at: position, ConfigPath(), message)
            throw ConfigErrors(diagnostics.sortedErrors)
        }
        guard let root else {
            diagnostics.report(at: .start, ConfigPath(), "the file is empty; expected \(expectation)")
            throw ConfigErrors(diagnostics.sortedErrors)
        }
        let value = ConfigValue(root, path: ConfigPath(), fallback: .start, diagnostics: diagnostics)
        let config = value.section(BatonConfig.self)
        guard let config, diagnostics.isEmpty else { throw ConfigErrors(diagnostics.sortedErrors) }
        return config
    }

    /// Reads the file at `path` and parses it with ``parse(yaml:file:)``, naming it `path` in
    /// errors.
    ///
    /// - Throws: ``ConfigErrors``: one error without a line when the file cannot be read, at the
    ///   first bad byte when it is not UTF-8, otherwise those of ``parse(yaml:file:)``.
    public static func load(path: String) throws(ConfigErrors) -> BatonConfig {
        let bytes: [UInt8]
        switch ConfigFile.contents(of: path) {
        case .success(let read): bytes = read
        case .failure(let reason):
            throw ConfigErrors([ConfigError(
                file: path, line: 0, column: 0, keyPath: "", message: "cannot read the file: \(reason)")])
        }
        switch ConfigFile.decodeUTF8(bytes) {
        case .success(let text):
            return try parse(yaml: text, file: path)
        case .failure(let failure):
            throw ConfigErrors([ConfigError(
                file: path, line: failure.position.line, column: failure.position.column, keyPath: "",
                message: "the file is not valid UTF-8")])
        }
    }

    private static func describeYAMLError(_ error: any Error, in yaml: String) -> (SourcePosition, String) {
        guard let error = error as? YamlError else { return (.start, "invalid YAML: \(error)") }
        switch error {
        case .scanner(let context, let problem, let mark, _),
             .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            var message = "invalid YAML: \(problem)"
            if problem == "but found another document" {
                message = "invalid YAML: a second document starts here; a config is one document"
            } else if let context {
                message += " (\(context.text) at line \(context.mark.line), column \(context.mark.column))"
            }
            return (SourcePosition(line: mark.line, column: mark.column), message)
        case .reader(let problem, let offset, _, _):
            var position = SourcePosition.start
            if let offset {
                let prefix = yaml.prefix(offset)
                let lineStart = prefix.lastIndex { $0 == "\n" || $0 == "\r\n" }.map { prefix.index(after: $0) }
                position.line = prefix.filter { $0 == "\n" || $0 == "\r\n" }.count + 1
                position.column = prefix[(lineStart ?? prefix.startIndex)...].unicodeScalars.count + 1
            }
            return (position, "invalid YAML: \(problem)")
        default:
            return (.start, "invalid YAML: \(error)")
        }
    }
}
