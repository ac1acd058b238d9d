import BatonCore
import Testing

/// The four lines every app-level case starts with, so that its apps begin at line 5.
private let header = """
    cluster: demo
    node: {id: node-1}
    nats: {servers: ["nats://127.0.0.1:4222"]}
    apps:

    """

private func errors(_ yaml: String) -> [String] { configErrorLines(yaml) }

private func configErrors(_ yaml: String) -> ConfigErrors? {
    do {
        _ = try BatonConfig.parse(yaml: yaml, file: "test.yaml")
        return nil
    } catch {
        return error
    }
}

private func parse(_ yaml: String) throws -> BatonConfig {
    try BatonConfig.parse(yaml: yaml, file: "test.yaml")
}

@Suite("Config")
struct ConfigTests {
    // MARK: Valid configs

    @Test("a full config reads into the model, with defaults applied")
    func fullConfig() throws {
        let yaml = """
            cluster: prod-eu
            node:
              id: node-2
              labels: {zone: b, rack: "12"}
              state_dir: /srv/baton
            nats:
              servers: ["nats://10.0.0.1:4222", "tls://nats.example.com:4443", "10.0.0.3"]
              credentials: /etc/baton/node.creds
              tls: {ca: /etc/baton/ca.pem, cert: /etc/baton/node.pem, key: /etc/baton/node.key}
              replicas: 3
            apps:
              - name: web
                priority: 100
                paused: false
                lease: {ttl: 3s, renew: 1s, fence_budget: 500ms, skew: 250ms}
                backend:
                  process:
                    command: ["/usr/bin/myapp", "--port", "8080"]
                    env: {MODE: production, PORT: 8080}
                    working_directory: /srv
                    user: www-data
                    group: www-data
                    stop_timeout: 10s
                    restart: {max_restarts: 5, window: 60s, backoff: 1s}
                health:
                  http: "http://127.0.0.1:8080/healthz?full=1"
                  interval: 2s
                  timeout: 1s
                  failures: 3
                  grace: 5s
              - name: db
                priority: -5
                paused: true
                lease: {ttl: 10s}
                backend:
                  systemd: {unit: postgresql@16-main.service}
                health: {tcp: "[::1]:5432"}
              - name: batch
                lease: {ttl: 1m30s, renew: 20s}
                backend: {process: {command: [run-batch]}}
                health: {exec: [/usr/bin/check, --quick]}
            """
        let config = try parse(yaml)
        let expected = BatonConfig(
            cluster: "prod-eu",
            node: NodeConfig(id: "node-2", labels: ["zone": "b", "rack": "12"], stateDirectory: "/srv/baton"),
            nats: NATSConfig(
                servers: ["nats://10.0.0.1:4222", "tls://nats.example.com:4443", "10.0.0.3"],
                auth: .credentials(path: "/etc/baton/node.creds"),
                tls: TLSConfig(
                    caPath: "/etc/baton/ca.pem",
                    clientCertificate: .init(certificatePath: "/etc/baton/node.pem", keyPath: "/etc/baton/node.key")),
                replicas: 3),
            apps: [
                AppConfig(
                    name: "web", priority: 100, paused: false,
                    lease: LeaseTiming(
                        ttl: .seconds(3), renew: .seconds(1), fenceBudget: .milliseconds(500),
                        skew: .milliseconds(250)),
                    backend: .process(ProcessBackendConfig(
                        command: ["/usr/bin/myapp", "--port", "8080"],
                        environment: ["MODE": "production", "PORT": "8080"],
                        workingDirectory: "/srv", user: "www-data", group: "www-data", stopTimeout: .seconds(10),
                        restart: RestartPolicy(maxRestarts: 5, window: .seconds(60), backoff: .seconds(1)))),
                    health: HealthCheckConfig(
                        probe: .http(HTTPEndpoint(
                            url: "http://127.0.0.1:8080/healthz?full=1", isSecure: false, host: "127.0.0.1",
                            port: 8080, target: "/healthz?full=1")),
                        interval: .seconds(2), timeout: .seconds(1), failures: 3, grace: .seconds(5))),
                AppConfig(
                    name: "db", priority: -5, paused: true,
                    // Defaults from ttl 10s: renew ttl/4, fence_budget ttl/5, skew ttl/10 capped at 100ms.
                    lease: LeaseTiming(
                        ttl: .seconds(10), renew: .milliseconds(2500), fenceBudget: .seconds(2), skew: .milliseconds(100)),
                    backend: .systemd(SystemdBackendConfig(unit: "postgresql@16-main.service")),
                    health: HealthCheckConfig(
                        probe: .tcp(HostPort(host: "::1", port: 5432)),
                        interval: .seconds(2), timeout: .seconds(1), failures: 3, grace: .zero)),
                AppConfig(
                    name: "batch", priority: 100, paused: false,
                    lease: LeaseTiming(ttl: .seconds(90), renew: .seconds(20), fenceBudget: .seconds(18), skew: .milliseconds(100)),
                    backend: .process(ProcessBackendConfig(
                        command: ["run-batch"], environment: [:], workingDirectory: nil, user: nil, group: nil,
                        stopTimeout: .seconds(10), restart: RestartPolicy(maxRestarts: 5, window: .seconds(60), backoff: .seconds(1)))),
                    health: HealthCheckConfig(
                        probe: .exec(["/usr/bin/check", "--quick"]),
                        interval: .seconds(2), timeout: .seconds(1), failures: 3, grace: .zero)),
            ])
        #expect(config == expected)
        #expect(config.app(named: "db")?.paused == true)
    }

    @Test("a minimal config takes every default")
    func minimalConfig() throws {
        let config = try parse(header + """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
            """)
        #expect(config.node == NodeConfig(id: "node-1", labels: [:], stateDirectory: "/var/lib/baton"))
        #expect(config.nats == NATSConfig(servers: ["nats://127.0.0.1:4222"], auth: .none, tls: nil, replicas: 1))
        let app = try #require(config.apps.first)
        #expect(app.priority == 100)
        #expect(app.paused == false)
        #expect(app.lease == LeaseTiming(
            ttl: .seconds(3), renew: .milliseconds(750), fenceBudget: .milliseconds(600), skew: .milliseconds(100)))
        #expect(app.backend == .process(ProcessBackendConfig(command: ["/bin/true"])))
        #expect(app.health == nil)
    }

    @Test("an empty list of apps is valid")
    func noApps() throws {
        #expect(try parse(header + "  []\n").apps.isEmpty)
    }

    @Test(
        "each NATS authentication method maps to its case",
        arguments: [
            ("credentials: /etc/baton/node.creds", NATSAuth.credentials(path: "/etc/baton/node.creds")),
            ("{user: baton, password: s3cret}", .userPassword(user: "baton", password: "s3cret")),
            ("token: t0ken", .token("t0ken")),
            ("nkey_seed_file: /etc/baton/seed.nk", .nkeySeedFile(path: "/etc/baton/seed.nk")),
        ])
    func authMethods(line: String, auth: NATSAuth) throws {
        let fields = line.hasPrefix("{") ? String(line.dropFirst().dropLast()) : line
        let yaml = """
            cluster: demo
            node: {id: node-1}
            nats: {servers: ["nats://127.0.0.1:4222"], \(fields)}
            apps: []
            """
        #expect(try parse(yaml).nats.auth == auth)
    }

    @Test("vip, sqlite and a systemd backend read into the model")
    func vipSQLiteAndSystemd() throws {
        let config = try parse(header + """
              - name: db
                lease: {ttl: 3s}
                backend: {systemd: {unit: postgresql.service, bus: user, restart: {max_restarts: 1}}}
                vip:
                  - {address: 192.0.2.10/24, interface: eth0, label: "eth0:db", check_conflicts: true}
                  - address: 2001:DB8:0:0::10/64
                    interface: eth0
                    announce: {count: 3, interval: 100ms, refresh: 10s}
                sqlite: {path: /var/lib/db/app.db, snapshot_interval: 10m, flush_timeout: 40s, promotion_check: full, snapshot_replay_ratio: 16}
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                vip: {address: 10.0.0.5/32, interface: br-lan}
            """)
        let db = config.apps[0]
        #expect(db.backend == .systemd(SystemdBackendConfig(unit: "postgresql.service", bus: .user, restart: RestartPolicy(maxRestarts: 1))))
        #expect(db.vips == [
            VIPConfig(address: "192.0.2.10", prefixLength: 24, isIPv6: false, interface: "eth0", label: "eth0:db", checkConflicts: true),
            VIPConfig(
                address: "2001:db8::10", prefixLength: 64, isIPv6: true, interface: "eth0",
                announce: AnnounceConfig(count: 3, interval: .milliseconds(100), refresh: .seconds(10))),
        ])
        #expect(db.vips[1].cidr == "2001:db8::10/64")
        #expect(
            db.sqlite == SQLiteReplicaConfig(
                path: "/var/lib/db/app.db", snapshotInterval: .seconds(600), flushTimeout: .seconds(40), promotionCheck: .full, snapshotReplayRatio: 16))
        #expect(SQLiteReplicaConfig(path: "/x.db").snapshotReplayRatio == 4)
        #expect(SQLiteReplicaConfig(path: "/x.db").flushTimeout == .seconds(15))
        #expect(SQLiteReplicaConfig(path: "/x.db").promotionCheck == .checksums)
        #expect(db.sqlite?.snapshotMaxBytesGrows == true)
        #expect(SQLiteReplicaConfig(path: "/x.db", snapshotMaxBytes: 8 << 30).snapshotMaxBytesGrows == false)
        #expect(config.apps[1].vips == [VIPConfig(address: "10.0.0.5", prefixLength: 32, isIPv6: false, interface: "br-lan")])
        #expect(config.apps[1].sqlite == nil)
    }

    @Test("sqlite storage limits take sizes with units; mistakes name the key")
    func sqliteStorageLimits() throws {
        let config = try parse(header + """
              - name: db
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                sqlite: {path: /var/lib/db/app.db, stream_max_bytes: 512MiB, snapshot_max_bytes: 10 GB}
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                sqlite: {path: /var/lib/web/app.db, stream_max_bytes: 2G, snapshot_max_bytes: 1073741824}
              - name: plain
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                sqlite: {path: /var/lib/plain/app.db}
              - name: auto
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                sqlite: {path: /var/lib/auto/app.db, snapshot_max_bytes: auto}
            """)
        #expect(config.apps[0].sqlite?.snapshotMaxBytesGrows == false)
        #expect(config.apps[2].sqlite?.snapshotMaxBytesGrows == true)
        #expect(config.apps[3].sqlite?.snapshotMaxBytesGrows == true)
        #expect(config.apps[3].sqlite?.snapshotMaxBytes == SQLiteReplicaConfig.defaultSnapshotMaxBytes)
        #expect(config.apps[0].sqlite?.streamMaxBytes == 512 << 20)
        #expect(config.apps[0].sqlite?.snapshotMaxBytes == 10_000_000_000)
        #expect(config.apps[1].sqlite?.streamMaxBytes == 2 << 30)
        #expect(config.apps[1].sqlite?.snapshotMaxBytes == 1 << 30)
        #expect(config.apps[2].sqlite?.streamMaxBytes == SQLiteReplicaConfig.defaultStreamMaxBytes)
        #expect(config.apps[2].sqlite?.snapshotMaxBytes == SQLiteReplicaConfig.defaultSnapshotMaxBytes)

        #expect(errors(header + """
              - name: db
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                sqlite: {path: /var/lib/db/app.db, stream_max_bytes: 1 potato, snapshot_max_bytes: 4096}
            """) == [
            #"test.yaml:8:58: apps[0].sqlite.stream_max_bytes: expected a size like "512MiB" or "1GiB", got "1 potato" (units: K, M, G, T or KiB, MiB, GiB, TiB for powers of 1024; KB, MB, GB, TB for powers of 1000)"#,
            #"test.yaml:8:88: apps[0].sqlite.snapshot_max_bytes: must be at least 1MiB, got "4096""#,
        ])
    }

    @Test("VIP mistakes are all reported with their place")
    func vipMistakes() {
        #expect(errors(header + """
              - name: web
                lease: {ttl: 3s}
                backend: {systemd: {unit: web.service, bus: session}}
                vip:
                  - {address: 192.0.2.10, interface: eth0}
                  - {address: 192.0.2.300/24, interface: eth0}
                  - {address: "2001:db8::1/129", interface: "a very long interface"}
                  - {address: 192.0.2.11/24, interface: eth0, label: "wlan0:x"}
                  - {address: 2001:db8::2/64, interface: eth0, label: "eth0:x"}
                  - {address: 192.0.2.12/24, interface: eth0}
                  - {address: 192.0.2.12/24, interface: eth1}
                  - {address: 224.0.0.1/24, interface: eth0}
                sqlite: {path: db.sqlite}
            """) == [
            #"test.yaml:7:49: apps[0].backend.systemd.bus: unknown bus "session": use system or user"#,
            #"test.yaml:9:19: apps[0].vip[0].address: invalid VIP address "192.0.2.10": missing prefix length; write it like "192.0.2.10/24" or "2001:db8::10/64""#,
            #"test.yaml:10:19: apps[0].vip[1].address: invalid VIP address "192.0.2.300/24": "192.0.2.300" is not an IPv4 address"#,
            #"test.yaml:11:19: apps[0].vip[2].address: invalid VIP address "2001:db8::1/129": prefix length "129" is not a number from 1 to 128"#,
            #"test.yaml:11:49: apps[0].vip[2].interface: invalid interface name "a very long interface": longer than 15 bytes"#,
            #"test.yaml:12:58: apps[0].vip[3].label: label "wlan0:x" must start with the interface name "eth0" and be at most 15 bytes, like "eth0:vip""#,
            #"test.yaml:13:59: apps[0].vip[4].label: labels exist for IPv4 addresses only"#,
            #"test.yaml:15:9: apps[0].vip[6]: duplicate VIP "192.0.2.12"; first given at line 14"#,
            #"test.yaml:16:19: apps[0].vip[7].address: invalid VIP address "224.0.0.1/24": 224.0.0.1 is not a unicast address a host can own"#,
            #"test.yaml:17:20: apps[0].sqlite.path: expected an absolute path, got "db.sqlite""#,
        ])
    }

    @Test("examples/systemd/baton.yaml is valid and wraps its unit")
    func systemdExampleParses() throws {
        let root = #filePath.split(separator: "/", omittingEmptySubsequences: false).dropLast(3).joined(separator: "/")
        let config = try BatonConfig.load(path: root + "/examples/systemd/baton.yaml")
        let app = try #require(config.apps.first)
        #expect(app.backend == .systemd(SystemdBackendConfig(unit: "myapp.service", bus: .system, restart: RestartPolicy(maxRestarts: 3, window: .seconds(60), backoff: .seconds(1)))))
        #expect(app.vips.map(\.cidr) == ["10.0.0.100/24"])
    }

    @Test("an alias reuses a whole section")
    func aliases() throws {
        let config = try parse(header + """
              - name: a
                lease: &lease {ttl: 3s, renew: 1s}
                backend: {process: {command: [/bin/a]}}
              - name: b
                lease: *lease
                backend: {process: {command: [/bin/b]}}
            """)
        #expect(config.apps[0].lease == config.apps[1].lease)
    }

    @Test("examples/baton.yaml is valid")
    func exampleParses() throws {
        let root = #filePath.split(separator: "/", omittingEmptySubsequences: false).dropLast(3).joined(separator: "/")
        let config = try BatonConfig.load(path: root + "/examples/baton.yaml")
        #expect(config.cluster == "demo")
        #expect(config.apps.map(\.name) == ["web", "worker"])
        #expect(config.apps[1].hooks[.beforeActive].first?.timeout == .seconds(5))
        #expect(config.apps[1].hooks[.onFence].count == 1)
        for app in config.apps {
            guard case .process = app.backend else {
                Issue.record("\(app.name) should have a process backend")
                continue
            }
        }
    }

    @Test("load names a file it cannot read")
    func unreadableFile() {
        #expect(throws: ConfigErrors([ConfigError(
            file: "/nonexistent/baton.yaml", line: 0, column: 0, keyPath: "",
            message: "cannot read the file: No such file or directory")])) {
            try BatonConfig.load(path: "/nonexistent/baton.yaml")
        }
        let error = ConfigError(file: "/x.yaml", line: 0, column: 0, keyPath: "", message: "cannot read the file: boom")
        #expect(error.description == "/x.yaml: cannot read the file: boom")
    }

    // MARK: Broken configs

    struct Broken: Sendable, CustomTestStringConvertible {
        var name: String
        var yaml: String
        var errors: [String]
        var testDescription: String { name }

        init(_ name: String, _ yaml: String, _ errors: String...) {
            self.name = name
            self.yaml = yaml
            self.errors = errors
        }

        /// A case whose yaml is `header` followed by `apps` (so the apps start at line 5).
        static func app(_ name: String, _ apps: String, _ errors: String...) -> Broken {
            var broken = Broken(name, header + apps)
            broken.errors = errors
            return broken
        }
    }

    static let broken: [Broken] = [
        // Unknown keys.
        .app(
            "unknown key close to a known one", """
              - name: web
                prioirty: 5
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:6:5: apps[0].prioirty: unknown key "prioirty"; did you mean "priority"?"#),
        .app(
            "vips and sqlite3 are not keys", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                vips: {address: 192.0.2.10/24, interface: eth0}
                sqlite3: {path: /var/lib/app.db}
            """,
            #"test.yaml:8:5: apps[0].vips: unknown key "vips"; did you mean "vip"?"#,
            #"test.yaml:9:5: apps[0].sqlite3: unknown key "sqlite3"; did you mean "sqlite"?"#),
        Broken(
            "unknown top-level key, and the one it was meant to be is missing", """
            cluster: demo
            node: {id: node-1}
            nats: {servers: ["nats://127.0.0.1:4222"]}
            app: []
            """,
            #"test.yaml:1:1: missing required key "apps""#,
            #"test.yaml:4:1: app: unknown key "app"; did you mean "apps"?"#),
        Broken(
            "unknown key in another spelling", """
            cluster: demo
            node: {id: node-1, stateDir: /srv/baton}
            nats: {servers: ["nats://127.0.0.1:4222"]}
            apps: []
            """,
            #"test.yaml:2:20: node.stateDir: unknown key "stateDir"; did you mean "state_dir"?"#),
        .app(
            "merge keys", """
              - name: web
                lease:
                  <<: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:7:7: apps[0].lease["<<"]: merge keys ("<<") are not supported; write the keys out, or reuse a whole section with an alias (lease: *defaults)"#,
            #"test.yaml:7:7: apps[0].lease: missing required key "ttl""#),
        // Duplicate keys.
        .app(
            "duplicate key on one line", """
              - name: web
                lease: {ttl: 3s, ttl: 4s}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:6:22: apps[0].lease.ttl: duplicate key "ttl"; first given at line 6, column 13"#),
        Broken(
            "duplicate top-level key", """
            cluster: demo
            node: {id: node-1}
            nats: {servers: ["nats://127.0.0.1:4222"]}
            apps: []
            cluster: other
            """,
            #"test.yaml:5:1: cluster: duplicate key "cluster"; first given at line 1"#),
        // Wrong types.
        .app(
            "a list where a duration belongs", """
              - name: web
                lease: {ttl: [3s]}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:6:18: apps[0].lease.ttl: expected a duration like "3s", got a list"#),
        .app(
            "a word where an integer belongs", """
              - name: web
                priority: high
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:6:15: apps[0].priority: expected an integer, got "high""#),
        .app(
            "yes is not a boolean", """
              - name: web
                paused: yes
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:6:13: apps[0].paused: expected true or false, got "yes""#),
        .app(
            "a command line as one string", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: "/usr/bin/app --port 8080"}}
            """,
            #"test.yaml:7:34: apps[0].backend.process.command: expected a list of strings like ["/usr/bin/myapp", "--port", "8080"], got "/usr/bin/app --port 8080""#),
        Broken(
            "labels as a list", """
            cluster: demo
            node: {id: node-1, labels: [a]}
            nats: {servers: ["nats://127.0.0.1:4222"]}
            apps: []
            """,
            #"test.yaml:2:28: node.labels: expected a mapping of label names to strings, got a list"#),
        Broken(
            "empty sections", """
            cluster:
            node:
            nats: ~
            apps:
            """,
            #"test.yaml:1:9: cluster: expected a name like "demo", got an empty value"#,
            #"test.yaml:2:6: node: expected a mapping with id, labels, state_dir and capacity, got an empty value"#,
            #"test.yaml:3:7: nats: expected a mapping with servers, credentials, user, password, token, nkey_seed_file, tls and replicas, got an empty value"#,
            #"test.yaml:4:6: apps: expected a list of apps, got an empty value"#),
        Broken(
            "a list at the top", "- cluster: demo\n",
            #"test.yaml:1:1: expected a mapping with cluster, node, nats, apps, http, events and placement, got a list"#),
        Broken(
            "an empty file", "# nothing here\n",
            #"test.yaml:1:1: the file is empty; expected a mapping with cluster, node, nats, apps, http, events and placement"#),
        // Bad durations.
        .app(
            "duration without a unit", """
              - name: web
                lease: {ttl: 3}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:6:18: apps[0].lease.ttl: invalid duration "3": missing unit after "3" (use h, m, s, ms, us or ns)"#),
        .app(
            "duration with an unknown unit", """
              - name: web
                lease: {ttl: 3s, renew: 1sec}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:6:29: apps[0].lease.renew: invalid duration "1sec": unknown unit "sec" (use h, m, s, ms, us or ns)"#),
        .app(
            "zero stop timeout", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true], stop_timeout: 0s}}
            """,
            #"test.yaml:7:61: apps[0].backend.process.stop_timeout: must be positive, got 0s"#),
        .app(
            "zero flush timeout", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                sqlite: {path: /var/lib/web/app.db, flush_timeout: 0s}
            """,
            #"test.yaml:8:56: apps[0].sqlite.flush_timeout: must be positive, got 0s"#),
        .app(
            "unknown promotion check", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                sqlite: {path: /var/lib/web/app.db, promotion_check: quick}
            """,
            #"test.yaml:8:58: apps[0].sqlite.promotion_check: unknown promotion check "quick": use checksums or full"#),
        .app(
            "negative snapshot replay ratio", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                sqlite: {path: /var/lib/web/app.db, snapshot_replay_ratio: -1}
            """,
            #"test.yaml:8:64: apps[0].sqlite.snapshot_replay_ratio: must be between 0 and 1000, got -1"#),
        // Missing keys.
        .app(
            "lease without ttl", """
              - name: web
                lease: {renew: 1s}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:6:12: apps[0].lease: missing required key "ttl""#),
        .app(
            "app without name, lease and backend", """
              - priority: 1
            """,
            #"test.yaml:5:5: apps[0]: missing required key "name""#,
            #"test.yaml:5:5: apps[0]: missing required key "lease""#,
            #"test.yaml:5:5: apps[0]: missing required key "backend""#),
        Broken(
            "nats without servers", """
            cluster: demo
            node: {id: node-1}
            nats: {replicas: 3}
            apps: []
            """,
            #"test.yaml:3:7: nats: missing required key "servers""#),
        // Names.
        .app(
            "duplicate app names", """
              - name: web
                lease: {ttl: 3s}
                backend: {systemd: {unit: web.service}}
              - name: web
                lease: {ttl: 3s}
                backend: {systemd: {unit: web.service}}
            """,
            #"test.yaml:8:11: apps[1].name: duplicate app name "web"; first defined at line 5"#),
        .app(
            "app name outside [a-z0-9-]", """
              - name: Web_1
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:5:11: apps[0].name: invalid app name "Web_1": use one or more of a-z, 0-9 and "-""#),
        Broken(
            "cluster and node names outside [a-z0-9-]", """
            cluster: Demo
            node: {id: node 1}
            nats: {servers: ["nats://127.0.0.1:4222"]}
            apps: []
            """,
            #"test.yaml:1:10: cluster: invalid cluster name "Demo": use one or more of a-z, 0-9 and "-""#,
            #"test.yaml:2:12: node.id: invalid node id "node 1": use one or more of a-z, 0-9 and "-""#),
        // Backends.
        .app(
            "empty command", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: []}}
            """,
            #"test.yaml:7:34: apps[0].backend.process.command: must not be empty: give the program and its arguments, like ["/usr/bin/myapp", "--port", "8080"]"#),
        .app(
            "empty program", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: ["", "-x"]}}
            """,
            #"test.yaml:7:35: apps[0].backend.process.command[0]: the program must not be empty"#),
        .app(
            "process and systemd", """
              - name: web
                lease: {ttl: 3s}
                backend:
                  process: {command: [/bin/true]}
                  systemd: {unit: web.service}
            """,
            #"test.yaml:9:7: apps[0].backend.systemd: "systemd" conflicts with "process" at line 8; give exactly one of process or systemd"#),
        .app(
            "no backend", """
              - name: web
                lease: {ttl: 3s}
                backend: {}
            """,
            #"test.yaml:7:14: apps[0].backend: missing a backend: give exactly one of process or systemd"#),
        .app(
            "unit without a suffix", """
              - name: web
                lease: {ttl: 3s}
                backend: {systemd: {unit: myapp}}
            """,
            #"test.yaml:7:31: apps[0].backend.systemd.unit: unit "myapp" has no known suffix; use a full unit name like "myapp.service" (one of .service, .socket, .target, .mount, .automount, .swap, .timer, .path)"#),
        .app(
            "template unit without an instance", """
              - name: web
                lease: {ttl: 3s}
                backend: {systemd: {unit: "web@.service"}}
            """,
            #"test.yaml:7:31: apps[0].backend.systemd.unit: unit "web@.service" is a template; name an instance, like "web@1.service", or run the app on several nodes with instances:"#),
        .app(
            "reserved environment variable", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true], env: {BATON_EPOCH: "7"}}}
            """,
            #"test.yaml:7:53: apps[0].backend.process.env.BATON_EPOCH: "BATON_EPOCH" is reserved: Baton sets BATON_APP, BATON_NODE and BATON_EPOCH itself, and names starting with BATON_ are Baton's"#),
        .app(
            "relative working directory", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true], working_directory: srv}}
            """,
            #"test.yaml:7:66: apps[0].backend.process.working_directory: expected an absolute path, got "srv""#),
        // Health checks.
        .app(
            "http URL without a scheme", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                health: {http: "localhost:8080/healthz"}
            """,
            #"test.yaml:8:20: apps[0].health.http: invalid http URL "localhost:8080/healthz": use http:// or https://"#),
        .app(
            "http URL without a host", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                health: {http: "http:///healthz"}
            """,
            #"test.yaml:8:20: apps[0].health.http: invalid http URL "http:///healthz": missing host"#),
        .app(
            "http URL with a bad port", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                health: {http: "http://127.0.0.1:80a/"}
            """,
            #"test.yaml:8:20: apps[0].health.http: invalid http URL "http://127.0.0.1:80a/": port "80a" is not a number from 1 to 65535"#),
        .app(
            "tcp without a port", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                health: {tcp: "127.0.0.1"}
            """,
            #"test.yaml:8:19: apps[0].health.tcp: invalid tcp address "127.0.0.1": missing port; use host:port like "127.0.0.1:8080""#),
        .app(
            "two health probes", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                health:
                  http: "http://127.0.0.1:8080/healthz"
                  tcp: "127.0.0.1:8080"
            """,
            #"test.yaml:10:7: apps[0].health.tcp: "tcp" conflicts with "http" at line 9; give exactly one of http, tcp or exec"#),
        .app(
            "no health probe", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                health: {interval: 1s}
            """,
            #"test.yaml:8:13: apps[0].health: missing a check: give exactly one of http, tcp or exec"#),
        .app(
            "health timeout longer than the interval", """
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/true]}}
                health: {tcp: "127.0.0.1:80", interval: 1s, timeout: 2s}
            """,
            #"test.yaml:8:58: apps[0].health.timeout: timeout (2s) is longer than interval (1s); a check must end before the next one starts"#),
        // NATS.
        Broken(
            "cert without key", """
            cluster: demo
            node: {id: node-1}
            nats:
              servers: ["tls://127.0.0.1:4222"]
              tls: {ca: /etc/baton/ca.pem, cert: /etc/baton/node.pem}
            apps: []
            """,
            #"test.yaml:5:32: nats.tls.cert: cert is given without key; give both or neither"#),
        Broken(
            "two authentication methods", """
            cluster: demo
            node: {id: node-1}
            nats:
              servers: ["nats://127.0.0.1:4222"]
              credentials: /etc/baton/node.creds
              token: s3cret
            apps: []
            """,
            #"test.yaml:6:3: nats.token: "token" conflicts with "credentials" at line 5; give at most one of credentials, user/password, token or nkey_seed_file"#),
        Broken(
            "user without password", """
            cluster: demo
            node: {id: node-1}
            nats:
              servers: ["nats://127.0.0.1:4222"]
              user: baton
            apps: []
            """,
            #"test.yaml:5:3: nats.user: user is given without password; give both or neither"#),
        Broken(
            "too many replicas", """
            cluster: demo
            node: {id: node-1}
            nats:
              servers: ["nats://127.0.0.1:4222"]
              replicas: 7
            apps: []
            """,
            #"test.yaml:5:13: nats.replicas: must be between 1 and 5, got 7"#),
        Broken(
            "no servers", """
            cluster: demo
            node: {id: node-1}
            nats: {servers: []}
            apps: []
            """,
            #"test.yaml:3:17: nats.servers: must list at least one server, like ["nats://127.0.0.1:4222"]"#),
        Broken(
            "server URL with another scheme", """
            cluster: demo
            node: {id: node-1}
            nats: {servers: ["http://127.0.0.1:4222"]}
            apps: []
            """,
            #"test.yaml:3:18: nats.servers[0]: invalid server URL "http://127.0.0.1:4222": scheme "http" is not supported (use nats:// or tls://)"#),
        // Lease timing.
        .app(
            "renew longer than ttl/3", """
              - name: web
                lease: {ttl: 3s, renew: 1.1s}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:6:29: apps[0].lease.renew: unsafe lease timing: renew 1.1s is more than a third of ttl (3s); the active node must send at least three renews per ttl"#),
        .app(
            "fence budget that does not fit", """
              - name: web
                lease: {ttl: 3s, renew: 1s, fence_budget: 1.2s}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:6:47: apps[0].lease.fence_budget: unsafe lease timing: 2 * renew (1s) + fence_budget (1.2s) = 3.2s is more than ttl (3s); fencing would start 1.8s after the last renew was sent, before the retry of one failed renew at 2s"#),
        .app(
            "fence budget below 50ms", """
              - name: web
                lease: {ttl: 3s, fence_budget: 40ms}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:6:36: apps[0].lease.fence_budget: fence_budget 40ms is below 50ms, too little time to kill the backend before the lease expires"#),
        .app(
            "negative skew", """
              - name: web
                lease: {ttl: 3s, skew: -100ms}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:6:28: apps[0].lease.skew: skew must not be negative, got -100ms"#),
        .app(
            "skew as long as ttl", """
              - name: web
                lease: {ttl: 3s, skew: 3s}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:6:28: apps[0].lease.skew: skew 3s must be shorter than ttl (3s)"#),
        .app(
            "ttl below nats-server's minimum max_age", """
              - name: web
                lease: {ttl: 80ms}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:6:18: apps[0].lease.ttl: ttl 80ms is below 100ms, the smallest max_age nats-server accepts for the lease's bucket"#),
        .app(
            "zero renew", """
              - name: web
                lease: {ttl: 3s, renew: 0s}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:6:29: apps[0].lease.renew: renew must be positive, got 0s"#),
        .app(
            "a short ttl whose default fence budget cannot fit the renew given", """
              - name: web
                lease: {ttl: 120ms, renew: 40ms}
                backend: {process: {command: [/bin/true]}}
            """,
            #"test.yaml:6:32: apps[0].lease.renew: unsafe lease timing: 2 * renew (40ms) + fence_budget (50ms, the default) = 130ms is more than ttl (120ms); fencing would start 70ms after the last renew was sent, before the retry of one failed renew at 80ms"#),
        // YAML syntax.
        Broken(
            "bad indentation", """
            cluster: demo
            node:
              id: node-1
             labels: {}
            """,
            #"test.yaml:4:2: invalid YAML: did not find expected key (while parsing a block mapping at line 1, column 1)"#),
        Broken(
            "unclosed flow mapping", """
            cluster: demo
            node: {id: node-1
            nats: x
            """,
            #"test.yaml:3:5: invalid YAML: did not find expected ',' or '}' (while parsing a flow mapping at line 2, column 7)"#),
        Broken(
            "two documents", "cluster: demo\n---\ncluster: other\n",
            #"test.yaml:2:1: invalid YAML: a second document starts here; a config is one document"#),
    ]

    @Test("each broken config produces exactly its errors", arguments: broken)
    func brokenConfig(_ broken: Broken) {
        #expect(errors(broken.yaml) == broken.errors)
    }

    @Test("the table covers many cases")
    func tableSize() {
        #expect(Self.broken.count >= 25)
    }

    @Test("several mistakes are all reported, in file order")
    func severalMistakes() {
        let yaml = """
            cluster: Demo
            node: {id: node-1, zone: a}
            nats:
              servers: ["nats://127.0.0.1:4222"]
              replicas: 0
            apps:
              - name: web
                lease: {ttl: 3s, renew: 2s}
                backend: {process: {command: []}}
              - name: web
                lease: {ttl: 3}
                backend: {systemd: {unit: web}}
                health: {tcp: "127.0.0.1"}
            """
        #expect(errors(yaml) == [
            #"test.yaml:1:10: cluster: invalid cluster name "Demo": use one or more of a-z, 0-9 and "-""#,
            #"test.yaml:2:20: node.zone: unknown key "zone"; expected one of id, labels, state_dir, capacity"#,
            #"test.yaml:5:13: nats.replicas: must be between 1 and 5, got 0"#,
            #"test.yaml:8:29: apps[0].lease.renew: unsafe lease timing: renew 2s is more than a third of ttl (3s); the active node must send at least three renews per ttl"#,
            #"test.yaml:8:29: apps[0].lease.renew: unsafe lease timing: 2 * renew (2s) + fence_budget (600ms, the default) = 4.6s is more than ttl (3s); fencing would start 2.4s after the last renew was sent, before the retry of one failed renew at 4s"#,
            #"test.yaml:9:34: apps[0].backend.process.command: must not be empty: give the program and its arguments, like ["/usr/bin/myapp", "--port", "8080"]"#,
            #"test.yaml:10:11: apps[1].name: duplicate app name "web"; first defined at line 7"#,
            #"test.yaml:11:18: apps[1].lease.ttl: invalid duration "3": missing unit after "3" (use h, m, s, ms, us or ns)"#,
            #"test.yaml:12:31: apps[1].backend.systemd.unit: unit "web" has no known suffix; use a full unit name like "myapp.service" (one of .service, .socket, .target, .mount, .automount, .swap, .timer, .path)"#,
            #"test.yaml:13:19: apps[1].health.tcp: invalid tcp address "127.0.0.1": missing port; use host:port like "127.0.0.1:8080""#,
        ])
    }

    @Test("errors carry their parts separately")
    func errorParts() throws {
        let yaml = header + """
              - name: web
                lease: {ttl: 3s, renew: 2s, fence_budget: 10ms}
                backend: {process: {command: [/bin/true]}}
            """
        let error = try #require(configErrors(yaml))
        let first = try #require(error.errors.first)
        #expect(first.file == "test.yaml")
        #expect(first.line == 6)
        #expect(first.column == 29)
        #expect(first.keyPath == "apps[0].lease.renew")
        #expect(error.errors.count == 3)
        #expect(error.description == error.errors.map(\.description).joined(separator: "\n"))
    }

    // MARK: Lease timing at its boundaries

    @Test(
        "lease timing rules hold exactly at their boundaries",
        arguments: [
            // ttl, renew, fence_budget, skew, the parameters blamed by each broken rule
            (3_000, 1_000, 1_000, 0, [[LeaseTimingViolation.Parameter]]()),  // renew = ttl/3, 2r + f = ttl
            (3_000, 1_000, 1_000, 2_999, []),  // skew just under ttl
            (3_000, 1_001, 500, 0, [[.renew, .ttl]]),  // renew just over ttl/3
            (3_000, 1_000, 1_001, 0, [[.fenceBudget, .renew, .ttl]]),  // 2r + f just over ttl
            (3_000, 500, 50, 0, []),  // smallest fence budget
            (3_000, 500, 49, 0, [[.fenceBudget]]),
            (3_000, 500, 500, -1, [[.skew]]),
            (3_000, 500, 500, 3_000, [[.skew, .ttl]]),
            (100, 25, 50, 0, []),  // smallest ttl
            (99, 24, 50, 0, [[.ttl]]),
        ] as [(Int64, Int64, Int64, Int64, [[LeaseTimingViolation.Parameter]])])
    func timingBoundaries(ttl: Int64, renew: Int64, fence: Int64, skew: Int64, broken: [[LeaseTimingViolation.Parameter]]) {
        let timing = LeaseTiming(
            ttl: .milliseconds(ttl), renew: .milliseconds(renew), fenceBudget: .milliseconds(fence),
            skew: .milliseconds(skew))
        #expect(timing.violations().map(\.parameters) == broken)
    }

    @Test("the same boundaries through the config file")
    func timingBoundariesInConfig() {
        func lease(_ text: String) -> [String] {
            errors(header + """
                  - name: web
                    lease: {\(text)}
                    backend: {process: {command: [/bin/true]}}
                """)
        }
        #expect(lease("ttl: 3s, renew: 1s, fence_budget: 1s, skew: 2.999s") == [])
        #expect(lease("ttl: 100ms") == [])
        #expect(lease("ttl: 99.999ms").count == 1)
        #expect(lease("ttl: 3s, renew: 1.000001s, fence_budget: 50ms").count == 1)
        #expect(lease("ttl: 3s, renew: 1s, fence_budget: 1.000001s").count == 1)
        #expect(lease("ttl: 3s, fence_budget: 49.999ms").count == 1)
        #expect(lease("ttl: 3s, skew: -1ns").count == 1)
        #expect(lease("ttl: 3s, skew: 0s") == [])
    }

    @Test("the defaults are safe for every ttl from the minimum up")
    func defaultsAreSafe() {
        var ttl: Duration = LeaseTiming.minimumTTL
        while ttl < .seconds(3600) {
            let timing = LeaseTiming.defaults(ttl: ttl)
            #expect(timing.violations().isEmpty, "ttl \(ttl.configString)")
            ttl = ttl * 1.37 + .microseconds(13)
        }
        #expect(LeaseTiming.defaults(ttl: .seconds(3)) == LeaseTiming(
            ttl: .seconds(3), renew: .milliseconds(750), fenceBudget: .milliseconds(600), skew: .milliseconds(100)))
        #expect(LeaseTiming.defaults(ttl: .milliseconds(100)).fenceBudget == .milliseconds(50))
    }

    // MARK: Reload

    private static let base = """
        cluster: demo
        node: {id: node-1}
        nats: {servers: ["nats://127.0.0.1:4222"]}
        apps:
          - name: a
            lease: {ttl: 3s}
            backend: {process: {command: [/bin/a]}}
          - name: b
            lease: {ttl: 3s}
            backend: {process: {command: [/bin/b]}}
          - name: c
            lease: {ttl: 3s}
            backend: {process: {command: [/bin/c]}}
        """

    @Test("changedApps sorts apps into added, removed, changed and unchanged")
    func changes() throws {
        let old = try parse(Self.base)
        let new = try parse("""
            cluster: demo
            node: {id: node-1}
            nats: {servers: ["nats://127.0.0.1:4222"]}
            apps:
              - name: d
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/d]}}
              - name: c
                lease: {ttl: 3s}
                backend: {process: {command: [/bin/c]}}
              - name: b
                lease: {ttl: 3s}
                paused: true
                backend: {process: {command: [/bin/b]}}
            """)
        let changes = changedApps(from: old, to: new)
        #expect(changes == ConfigChanges(added: ["d"], removed: ["a"], changed: ["b"], unchanged: ["c"]))
        #expect(!changes.isEmpty)
        #expect(changedApps(from: old, to: old).isEmpty)
        #expect(changedApps(from: old, to: old).unchanged == ["a", "b", "c"])
    }

    @Test("a change that only restates a default is no change")
    func restatedDefaults() throws {
        let old = try parse(Self.base)
        let new = try parse(Self.base.replacingFirst(
            "lease: {ttl: 3s}", with: "lease: {ttl: 3s, renew: 750ms, fence_budget: 600ms, skew: 100ms}\n    priority: 100"))
        #expect(changedApps(from: old, to: new).changed == [])
    }

    @Test("node, nats and cluster changes are reported as needing a restart")
    func restartRequired() throws {
        let old = try parse(Self.base)
        let new = try parse(Self.base
            .replacingFirst("cluster: demo", with: "cluster: other")
            .replacingFirst("node: {id: node-1}", with: "node: {id: node-1, labels: {zone: b}}"))
        let changes = changedApps(from: old, to: new)
        #expect(changes.restartRequired == ["cluster", "node"])
        #expect(changes.unchanged == ["a", "b", "c"])
        let natsChanged = try parse(Self.base.replacingFirst("4222", with: "4223"))
        #expect(changedApps(from: old, to: natsChanged).restartRequired == ["nats"])
    }
}

extension String {
    fileprivate func replacingFirst(_ target: String, with replacement: String) -> String {
        replacing(target, with: replacement, maxReplacements: 1)
    }
}

@Suite("Config: events")
struct EventsConfigTests {
    @Test("events: retention is optional with defaults, and read with sizes")
    func retention() throws {
        let base = """
            cluster: demo
            node: {id: node-1}
            nats: {servers: ["nats://127.0.0.1:4222"]}
            apps: []
            """
        let defaults = try BatonConfig.parse(yaml: base, file: "test.yaml")
        #expect(defaults.events == EventsConfig())
        #expect(defaults.events.maxBytes == 64 * 1_048_576)
        let set = try BatonConfig.parse(yaml: base + "\nevents: {max_age: 24h, max_bytes: 8MiB}", file: "test.yaml")
        #expect(set.events.maxAge == .seconds(86_400))
        #expect(set.events.maxBytes == 8 * 1_048_576)
        do {
            _ = try BatonConfig.parse(yaml: base + "\nevents: {max_bytes: lots, max_age: -1s}", file: "test.yaml")
            Issue.record("a bad events section was accepted")
        } catch {
            let text = error.errors.map(\.description)
            #expect(text.contains { $0.contains("events.max_bytes") && $0.contains("\"lots\"") })
            #expect(text.contains { $0.contains("events.max_age") })
        }
        #expect(EventsConfig.parseSize("512KiB") == 524_288)
        #expect(EventsConfig.parseSize("4096") == 4096)
        #expect(EventsConfig.parseSize("1.5MiB") == nil)
    }
}
