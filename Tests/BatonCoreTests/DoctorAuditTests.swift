import BatonCore
import Testing

@Suite("Doctor audit rules")
struct DoctorAuditTests {
    func server(_ version: String, clustered: Bool = false, syncAlways: Bool? = true, interval: Duration? = nil, varz: Bool = true) -> DoctorFacts.Server {
        DoctorFacts.Server(name: "s1", version: version, clustered: clustered, syncAlways: syncAlways, syncInterval: interval, varzRead: varz)
    }

    func findings(_ facts: DoctorFacts, _ check: String) -> [DoctorFinding] { Doctor.audit(facts).filter { $0.check == check } }

    @Test("nats-server versions: clustered 2.9/2.10 with replicated buckets and 2.10.20-22 are errors")
    func versions() {
        let bucket = DoctorFacts.Bucket(stream: "KV_baton_c_web", replicas: 3, leaseOf: "web", maxAge: .seconds(12))
        let clustered29 = DoctorFacts(servers: [server("2.9.10", clustered: true)], clusterSize: 3, configuredReplicas: 3, buckets: [bucket], nodes: [])
        #expect(findings(clustered29, "nats-version").map(\.severity) == [.error])
        #expect(findings(clustered29, "nats-version").first?.message.contains("#4320") == true)
        let single29 = DoctorFacts(servers: [server("2.9.10")], clusterSize: 1, configuredReplicas: 1, buckets: [], nodes: [])
        #expect(findings(single29, "nats-version").map(\.severity) == [.info])
        let crashy = DoctorFacts(servers: [server("v2.10.22")], clusterSize: 1, configuredReplicas: 1, buckets: [], nodes: [])
        #expect(findings(crashy, "nats-version").first?.message.contains("#6888") == true)
        let fixed = DoctorFacts(servers: [server("2.10.23", clustered: true)], clusterSize: 3, configuredReplicas: 3, buckets: [bucket], nodes: [])
        #expect(findings(fixed, "nats-version").map(\.severity) == [.error])  // still below 2.11 for the compare-and-set
        let new = DoctorFacts(servers: [server("2.11.0", clustered: true)], clusterSize: 3, configuredReplicas: 3, buckets: [bucket], nodes: [])
        #expect(findings(new, "nats-version").map(\.severity) == [.info])
    }

    @Test("sync_interval: always is info, the default a warning, an unreadable VARZ unchecked")
    func sync() {
        func facts(_ server: DoctorFacts.Server) -> DoctorFacts {
            DoctorFacts(servers: [server], clusterSize: 1, configuredReplicas: nil, buckets: [], nodes: [])
        }
        #expect(findings(facts(server("2.11.0", syncAlways: true)), "sync-interval").map(\.severity) == [.info])
        #expect(findings(facts(server("2.11.0", syncAlways: false, interval: .seconds(120))), "sync-interval").map(\.severity) == [.warning])
        #expect(findings(facts(server("2.9.10", syncAlways: false, interval: nil)), "sync-interval").first?.message.contains("2-minute") == true)
        #expect(findings(facts(server("2.11.0", syncAlways: false, interval: .milliseconds(100))), "sync-interval").map(\.severity) == [.info])
        let unreadable = findings(facts(server("2.11.0", syncAlways: nil, varz: false)), "sync-interval")
        #expect(unreadable.map(\.severity) == [.unchecked])
        #expect(unreadable.first?.message.hasPrefix("could not check") == true)
    }

    @Test("replicas against the cluster size, and lease ttl against the election window on replicated buckets")
    func replicasAndTTL() {
        let short = DoctorFacts.Bucket(stream: "KV_baton_c_web", replicas: 3, leaseOf: "web", maxAge: .seconds(3))
        let long = DoctorFacts.Bucket(stream: "KV_baton_c_db", replicas: 3, leaseOf: "db", maxAge: .seconds(12))
        let r1 = DoctorFacts.Bucket(stream: "KV_baton_c__nodes", replicas: 1)
        let facts = DoctorFacts(servers: [], clusterSize: 3, configuredReplicas: 3, buckets: [short, long, r1], nodes: [])
        #expect(findings(facts, "lease-ttl").map(\.subject) == ["app web"])
        let replicas = findings(facts, "bucket-replicas")
        #expect(replicas.contains { $0.subject == "KV_baton_c__nodes" && $0.severity == .warning })
        let tooMany = DoctorFacts(servers: [], clusterSize: 1, configuredReplicas: 3, buckets: [], nodes: [])
        #expect(findings(tooMany, "bucket-replicas").map(\.severity) == [.error])
        let single = DoctorFacts(servers: [], clusterSize: 1, configuredReplicas: 1, buckets: [DoctorFacts.Bucket(stream: "x", replicas: 1, leaseOf: "web", maxAge: .seconds(2))], nodes: [])
        #expect(findings(single, "lease-ttl").isEmpty && findings(single, "bucket-replicas").isEmpty)
    }

    @Test("clock offsets, systemd, capabilities and config agreement per node")
    func nodes() {
        let digests = ConfigDigest.sections(of: AppConfig(name: "web", lease: .defaults(ttl: .seconds(3)), backend: .process(ProcessBackendConfig(command: ["/bin/true"]))))
        var other = digests
        other["vip"] = "0000000000000001"
        let facts = DoctorFacts(
            servers: [], clusterSize: 1, configuredReplicas: 1, buckets: [],
            nodes: [
                DoctorFacts.Node(
                    node: "a", systemdUnit: "batond.service", clockOffset: .milliseconds(10), hasVIPs: true,
                    capabilities: DoctorFacts.Capabilities(netAdmin: true, netRaw: false), configDigests: ["web": digests]),
                DoctorFacts.Node(
                    node: "b", systemdUnit: nil, clockOffset: .milliseconds(-900), hasVIPs: true, capabilitiesUnreadable: "another host",
                    configDigests: ["web": other]),
            ])
        let all = Doctor.audit(facts)
        #expect(all.first?.severity == .error, "worst first")
        #expect(all.contains { $0.check == "vip-capabilities" && $0.subject == "node a" && $0.severity == .error && $0.message.contains("CAP_NET_RAW") })
        #expect(all.contains { $0.check == "vip-capabilities" && $0.subject == "node b" && $0.severity == .unchecked })
        #expect(all.contains { $0.check == "clock-offset" && $0.subject == "node b" && $0.severity == .warning })
        #expect(!all.contains { $0.check == "clock-offset" && $0.subject == "node a" })
        #expect(all.contains { $0.check == "systemd" && $0.subject == "node b" })
        #expect(!all.contains { $0.check == "systemd" && $0.subject == "node a" })
        #expect(all.contains { $0.check == "config-agreement" && $0.severity == .error && $0.message.contains("vip section differs") && $0.message.contains("[a] vs [b]") })
        #expect(DoctorFacts.Capabilities(procStatus: "Name:\tbatond\nCapEff:\t0000000000003000\n") == DoctorFacts.Capabilities(netAdmin: true, netRaw: true))
        #expect(DoctorFacts.Capabilities(procStatus: "CapEff:\t0000000000001000") == DoctorFacts.Capabilities(netAdmin: true, netRaw: false))
    }

    @Test("config digests do not depend on dictionary order, and ignore priority")
    func digests() {
        var env: [String: String] = [:]
        for index in 0..<50 { env["K\(index)"] = "v\(index)" }
        let one = AppConfig(name: "web", priority: 10, lease: .defaults(ttl: .seconds(3)), backend: .process(ProcessBackendConfig(command: ["/x"], environment: env)))
        var two = one
        two.priority = 90
        #expect(ConfigDigest.sections(of: one) == ConfigDigest.sections(of: two))
        #expect(ConfigDigest.canonical(["b": 1, "a": 2]) == ConfigDigest.canonical(["a": 2, "b": 1]))
        var three = one
        three.lease = .defaults(ttl: .seconds(4))
        #expect(ConfigDigest.sections(of: one)["lease"] != ConfigDigest.sections(of: three)["lease"])
    }
}
