import FaultProxy
import Foundation
import NATS
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// What a run is asked to do.
struct RunPlan: Sendable {
    var seed: UInt64
    var faults: Int
    var maximum: Duration?
    var ttl: Duration
    var liveness: Duration
    var appCount: Int
    var binaries: Binaries
    var runDirectory: String
    var syncInterval: String?
    var continueAfterViolation: Bool
    /// The fault kinds to draw from (all by default).
    var kinds: [FaultKind]
    /// batond's log level.
    var batondLogLevel: String
    /// Where the nodes and servers live.
    var network: NetworkMode
    /// Whether app-1 writes SQLite.
    var sqliteApp: Bool
}

/// `--network`: every process on loopback, or nodes, servers and the VIP prober in network
/// namespaces on one bridge (partitions, one-way cuts and packet loss with nftables, the VIP app).
enum NetworkMode: String, Sendable {
    case loopback
    case netns
}

struct RunOutcome {
    var table: String
    var violations: [Violation]
}

/// SplitMix64: a small seeded generator, the same schedule for the same seed on every machine.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The fault kinds, with their weights in the schedule.
enum FaultKind: String, CaseIterable, Sendable {
    case batondKill = "batond kill -9"
    case batondStopShort = "batond SIGSTOP < ttl"
    case batondStopLong = "batond SIGSTOP > ttl"
    case natsKill = "nats kill -9"
    case natsStop = "nats SIGSTOP"
    case natsRolling = "nats rolling restart"
    /// Two servers killed at once (the cluster loses its quorum), both restarted: not in the
    /// default set (it exceeds what a 3-server cluster tolerates), but every app must run again
    /// once the quorum is back.
    case natsQuorumLoss = "nats 2 servers kill -9"
    case stall = "node-NATS stall (proxy)"
    case switchover = "switchover"
    case stepdown = "stepdown"
    case reload = "SIGHUP reload"
    case restart = "SIGTERM restart"
    /// netns only: every packet between a node and NATS dropped, both ways.
    case nodeCut = "node cut from NATS (nft)"
    /// netns only: only the packets from NATS to the node, or only those from the node, dropped.
    case nodeCutOneWay = "node cut one way (nft)"
    /// netns only: a server's traffic with its peers dropped (both ways, or one way).
    case natsCut = "nats cut from peers (nft)"
    /// netns only: 10–60 % of a node's or a server's packets dropped at random, both ways.
    case loss = "packet loss (nft)"

    /// Kinds that need `--network netns`.
    var needsNamespaces: Bool { [.nodeCut, .nodeCutOneWay, .natsCut, .loss].contains(self) }

    /// Graceful operations: a handover during one of these must lose no acknowledged SQLite row.
    var isGraceful: Bool { [.switchover, .stepdown, .restart].contains(self) }

    /// A short name for `--kinds`.
    var shortName: String {
        switch self {
        case .batondKill: "batond-kill"
        case .batondStopShort: "batond-stop-short"
        case .batondStopLong: "batond-stop-long"
        case .natsKill: "nats-kill"
        case .natsStop: "nats-stop"
        case .natsRolling: "nats-rolling"
        case .natsQuorumLoss: "nats-quorum-loss"
        case .stall: "stall"
        case .switchover: "switchover"
        case .stepdown: "stepdown"
        case .reload: "reload"
        case .restart: "restart"
        case .nodeCut: "node-cut"
        case .nodeCutOneWay: "node-cut-oneway"
        case .natsCut: "nats-cut"
        case .loss: "loss"
        }
    }

    var weight: Int {
        switch self {
        case .batondKill, .batondStopShort, .batondStopLong, .natsKill, .natsStop, .stall: 3
        case .switchover, .stepdown, .reload, .restart, .natsRolling, .natsQuorumLoss: 1
        case .nodeCut, .nodeCutOneWay, .natsCut, .loss: 2
        }
    }
}

/// Sets up the cluster, runs the fault schedule, tears everything down and checks.
final class ChaosRun: @unchecked Sendable {
    let plan: RunPlan
    let appNames: [String]
    let evidenceDirectory: String
    var servers: [NATSServerNode] = []
    var nodes: [BatondNode] = []
    var records: [FaultRecord] = []
    var incidents: [String] = []
    var random: SeededGenerator
    var client: NATSClient?
    let faultLog: FileHandle
    /// The namespaces of a netns run.
    var lab: NetLab?
    /// The VIP prober (netns runs).
    var prober: Child?

    init(plan: RunPlan) throws {
        self.plan = plan
        self.appNames = (0..<plan.appCount).map { "app-\($0)" }
        self.evidenceDirectory = "\(plan.runDirectory)/evidence"
        self.random = SeededGenerator(seed: plan.seed)
        try FileManager.default.createDirectory(atPath: evidenceDirectory, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: "\(plan.runDirectory)/faults.log", contents: nil)
        faultLog = FileHandle(forWritingAtPath: "\(plan.runDirectory)/faults.log")!
    }

    private func log(_ line: String) {
        let stamped = "\(monotonicNow()) \(line)"
        faultLog.write(Data((stamped + "\n").utf8))
        say("  \(line)")
    }

    func run() async throws -> RunOutcome {
        try await setUp()
        let started = ContinuousClock.now
        var stoppedEarly = false
        for index in 1...max(plan.faults, 1) where plan.faults > 0 {
            if let maximum = plan.maximum, ContinuousClock.now - started > maximum { break }
            try await checkNodesAlive()
            let kind = pickKind()
            var record = try await inject(kind, index: index)
            record.recovered = await waitForAllApps(after: record.end, bound: plan.liveness)
            let outage = record.recovered.map { "apps back \(($0 - record.end) / 1_000_000) ms after the end" } ?? "NOT ALL APPS BACK"
            log("fault #\(index) \(kind.rawValue) \(record.target) \(record.note): \((record.end - record.start) / 1_000_000) ms; \(outage)")
            records.append(record)
            if record.recovered == nil { await saveStatus(name: "status-after-fault-\(index).json") }
            if record.recovered == nil && !plan.continueAfterViolation {
                stoppedEarly = true
                break
            }
            // Settle before the next fault, 200–800 ms.
            try await Task.sleep(for: .milliseconds(Int.random(in: 200...800, using: &random)))
        }
        await client?.close()
        for node in nodes { if let child = node.child { kill(child.pid, SIGKILL) } }
        ProcessTable.killAll(runDirectory: plan.runDirectory)
        for proxy in nodes.flatMap(\.proxies) { await proxy.close() }
        try? await Task.sleep(for: .milliseconds(200))
        if lab != nil { await NetLab.destroy(runDirectory: plan.runDirectory) }

        let checker = Checker(evidenceDirectory: evidenceDirectory, apps: appNames)
        var violations = checker.safetyViolations(faults: records)
        var summaries: [String] = []
        if let sqliteApp {
            let sqlite = SQLiteCheck(evidenceDirectory: evidenceDirectory, app: sqliteApp, runs: checker.runs[sqliteApp] ?? [], faults: records)
            violations += sqlite.violations
            summaries.append(sqlite.summary)
        }
        if let vipApp, let lab {
            let names = Dictionary(uniqueKeysWithValues: (1...3).map { (NetLab.nodeMAC($0), "node-\($0)") })
            let vip = VIPCheck(path: "\(evidenceDirectory)/vip.log", app: vipApp, address: lab.vipAddress, macNames: names, faults: records)
            violations += vip.violations
            summaries.append(vip.summary)
        }
        for record in records where record.recovered == nil {
            violations.append(
                Violation(
                    kind: "liveness",
                    detail: "after \(record.kind) (\(record.target)) ended, not every app ran again within \(plan.liveness)",
                    fault: record.index))
        }
        var table = report(faults: records, checker: checker, apps: appNames, violations: violations)
        if stoppedEarly { table += "\n(stopped injecting at the first liveness violation)" }
        if !incidents.isEmpty { table += "\nincidents (not violations): " + incidents.joined(separator: "; ") }
        for summary in summaries { table += "\n" + summary }
        for (app, runs) in checker.runs.sorted(by: { $0.key < $1.key }) {
            table += "\n\(app): \(runs.count) backend runs, epochs \(runs.first?.epoch ?? 0)…\(runs.map(\.epoch).max() ?? 0)"
        }
        return RunOutcome(table: table, violations: violations)
    }

    // MARK: - Set-up

    /// The app whose backend writes SQLite under load (app-1; app-0 when there is only one).
    var sqliteApp: String? { plan.sqliteApp ? (appNames.count > 1 ? appNames[1] : appNames.first) : nil }
    /// The app with a VIP (app-0, netns runs only).
    var vipApp: String? { plan.network == .netns ? appNames.first : nil }

    /// The apps of `node`'s config.
    private func appSpecs(node: String, heartbeat: String, sqlite: String) throws -> [AppSpec] {
        try appNames.map { app in
            var spec = AppSpec(name: app, script: heartbeat, env: ["CHAOS_LOG": "\(evidenceDirectory)/\(app).log"])
            if app == vipApp, let lab { spec.vip = lab.vipAddress }
            if app == sqliteApp {
                let directory = "\(plan.runDirectory)/\(node)-db"
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                spec.script = sqlite
                spec.sqlitePath = "\(directory)/\(app).db"
                spec.env["CHAOS_DB"] = "\(directory)/\(app).db"
                spec.env["CHAOS_ACKS"] = "\(evidenceDirectory)/\(app).acks"
                spec.env["CHAOS_INVENTORY"] = "\(evidenceDirectory)/\(app).inventory"
            }
            return spec
        }
    }

    private func setUp() async throws {
        let directory = plan.runDirectory
        let backend = "\(directory)/backend.py"
        try heartbeatBackend.write(toFile: backend, atomically: true, encoding: .utf8)
        let sqlite = "\(directory)/sqlite_backend.py"
        try sqliteBackend.write(toFile: sqlite, atomically: true, encoding: .utf8)
        if plan.network == .netns {
            let lab = try NetLab.plan(runDirectory: directory)
            self.lab = lab
            try await lab.setUp()
            log("network: namespaces \(lab.namespaces.joined(separator: " ")) on \(lab.subnet).0/24 (bridge in \(lab.bridgeNamespace)); proxies and this process on \(lab.rootAddress) (\(lab.rootInterface)); VIP \(lab.vipAddress)")
            for index in 1...3 {
                servers.append(
                    try NATSServerNode(
                        name: "nats-\(index)", host: lab.serverAddress(index), clientPort: 4222, routePort: 6222,
                        peerRoutes: (1...3).filter { $0 != index }.map { "\(lab.serverAddress($0)):6222" }, binary: plan.binaries.nats,
                        directory: directory, syncInterval: plan.syncInterval, launcher: lab.launcher(lab.serverNamespace(index)),
                        namespace: lab.serverNamespace(index)))
            }
        } else {
            let clientPorts = try (0..<3).map { _ in try reserveLoopbackPort() }
            let routePorts = try (0..<3).map { _ in try reserveLoopbackPort() }
            for index in 0..<3 {
                servers.append(
                    try NATSServerNode(
                        name: "nats-\(index + 1)", clientPort: clientPorts[index], routePort: routePorts[index],
                        peerRoutes: routePorts.enumerated().filter { $0.offset != index }.map { "127.0.0.1:\($0.element)" },
                        binary: plan.binaries.nats, directory: directory, syncInterval: plan.syncInterval))
            }
        }
        for server in servers { try server.start() }
        for server in servers {
            guard await waitUntil(.seconds(20), { portAccepts(server.clientPort, host: server.host) }) else {
                throw ChaosError("\(server.name) did not listen on \(server.host):\(server.clientPort); see \(server.logPath)")
            }
        }
        var options = NATSClientOptions(servers: servers.map { "nats://\($0.host):\($0.clientPort)" })
        options.retryOnFailedInitialConnect = true
        options.maxReconnectRounds = nil
        options.requestTimeout = .seconds(1)
        client = try await NATSClient.connect(options: options)

        for index in 1...3 {
            let id = "node-\(index)"
            var proxies: [StallProxy] = []
            for server in servers {
                proxies.append(try await StallProxy.start(targetPort: server.clientPort, targetHost: server.host, listenHost: lab?.rootAddress ?? "127.0.0.1"))
            }
            let configPath = "\(directory)/\(id).yaml"
            try batondConfig(
                node: id, cluster: "chaos", servers: proxies.map(\.url), stateDirectory: "\(directory)/\(id)-state",
                apps: try appSpecs(node: id, heartbeat: backend, sqlite: sqlite), lease: LeaseSettings(ttl: plan.ttl)
            ).write(toFile: configPath, atomically: true, encoding: .utf8)
            let namespace = lab?.nodeNamespace(index)
            let node = BatondNode(
                id: id, binary: plan.binaries.batond, keeper: plan.binaries.keeper, configPath: configPath, logPath: "\(directory)/\(id).log",
                proxies: proxies, logLevel: plan.batondLogLevel, launcher: namespace.map { lab!.launcher($0) } ?? [], namespace: namespace)
            try node.start()
            nodes.append(node)
        }
        for node in nodes {
            log("\(node.id) reaches " + zip(node.proxies, servers).map { "\($0.1.name) through \($0.0.host):\($0.0.port)" }.joined(separator: ", "))
        }
        if let lab {
            try startProber(lab)
            log("VIP prober: ARP requests for \(lab.vipAddress) every 5 ms from \(lab.clientNamespace); node MACs " + (1...3).map { "node-\($0)=\(NetLab.nodeMAC($0))" }.joined(separator: " "))
        }
        log("cluster up: nats \(servers.map { "\($0.name)=\($0.host):\($0.clientPort)" }.joined(separator: " ")); nodes node-1..3; apps \(appNames.joined(separator: " "))"
            + (vipApp.map { " (\($0) with the VIP)" } ?? "") + (sqliteApp.map { " (\($0) writes SQLite)" } ?? ""))
        guard await waitForAllApps(after: monotonicNow(), bound: .seconds(90)) != nil else {
            throw ChaosError("not every app started within 90 s of the cluster's start; see the node logs in \(directory)")
        }
        log("every app runs")
    }

    private func startProber(_ lab: NetLab) throws {
        let script = "\(plan.runDirectory)/vip_prober.py"
        try vipProber.write(toFile: script, atomically: true, encoding: .utf8)
        prober = try Child(
            name: "vip-prober", executable: lab.ipPath,
            arguments: ["netns", "exec", lab.clientNamespace, "/usr/bin/python3", script, "eth0", lab.vipAddress, "\(evidenceDirectory)/vip.log"],
            environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"], logPath: "\(plan.runDirectory)/vip-prober.log")
    }

    // MARK: - Observation

    /// The last evidence line of an app: (time, kind, node, epoch).
    func lastLine(app: String) -> (time: Int64, kind: String, node: String, epoch: UInt64)? {
        guard let handle = FileHandle(forReadingAtPath: "\(evidenceDirectory)/\(app).log") else { return nil }
        defer { try? handle.close() }
        let size = handle.seekToEndOfFile()
        handle.seek(toFileOffset: size > 4096 ? size - 4096 : 0)
        let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        guard let line = text.split(separator: "\n").last else { return nil }
        let fields = line.split(separator: " ")
        guard fields.count == 5, let time = Int64(fields[0]), let epoch = UInt64(fields[3]) else { return nil }
        return (time, String(fields[1]), String(fields[2]), epoch)
    }

    /// Waits until every app has run without a break for `stableFor` (2 ttl, at least 1 s)
    /// after `after`: a backend still running right after a fault may be fenced a moment later,
    /// so a single fresh heartbeat does not count as recovered. Returns when the last app's
    /// unbroken stretch began (at least `after`), or nil if `bound` passed first.
    func waitForAllApps(after: Int64, bound: Duration) async -> Int64? {
        let deadline = ContinuousClock.now + bound
        let stableFor = max(plan.ttl * 2, .seconds(1))
        let stableNanoseconds = stableFor.components.seconds * 1_000_000_000 + stableFor.components.attoseconds / 1_000_000_000
        /// Per app: the first heartbeat of its current unbroken stretch, and the last one seen.
        var upSince: [String: Int64] = [:]
        var lastSeen: [String: Int64] = [:]
        while ContinuousClock.now < deadline {
            let now = monotonicNow()
            for app in appNames {
                guard let line = lastLine(app: app), line.kind == "hb", now - line.time < 100_000_000 else {
                    upSince[app] = nil
                    continue
                }
                if let previous = lastSeen[app], line.time - previous > Checker.downGap * 4 || upSince[app] == nil {
                    upSince[app] = line.time
                } else if upSince[app] == nil {
                    upSince[app] = line.time
                }
                lastSeen[app] = line.time
            }
            if upSince.count == appNames.count, now - after >= stableNanoseconds,
                let latest = upSince.values.max(), now - latest >= stableNanoseconds
            {
                return max(latest, after)
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    /// Saves every node's view (`batonctl status --json`) next to the evidence: what the nodes
    /// believed while an app was down.
    private func saveStatus(name: String) async {
        guard let first = nodes.first,
            let child = try? Child(
                name: "batonctl", executable: plan.binaries.batonctl,
                arguments: ["status", "--config", first.configPath, "--json", "--wait", "1s"], environment: ["HOME": "/tmp"],
                logPath: "\(plan.runDirectory)/\(name)")
        else { return }
        if !(await child.waitForExit(timeout: .seconds(15))) { await child.killHard() }
        log("saved every node's status in \(name)")
        for node in nodes {
            let links = zip(node.proxies, servers).map { "\($0.0.port)→\($0.1.name):\($0.0.openChannels) open" }
            log("\(node.id) proxies: \(links.joined(separator: ", "))")
        }
    }

    private func waitUntil(_ bound: Duration, _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + bound
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    /// A batond that exited by itself is restarted (and noted).
    private func checkNodesAlive() async throws {
        for node in nodes where !node.isRunning {
            incidents.append("\(node.id) exited on its own before fault #\(records.count + 1)")
            log("\(node.id) was not running; restarting it")
            try node.start()
        }
        if let prober, !prober.isRunning, let lab {
            incidents.append("the VIP prober exited before fault #\(records.count + 1) (see vip-prober.log); restarted")
            try startProber(lab)
        }
    }

    /// The node running `app` now (by its latest heartbeat).
    private func activeNode(of app: String) -> BatondNode? {
        guard let line = lastLine(app: app) else { return nil }
        return nodes.first { $0.id == line.node }
    }

    /// The server leading the app's lease stream, per JetStream.
    private func streamLeader(app: String) async -> NATSServerNode? {
        guard let client else { return nil }
        do {
            let reply = try await client.request("$JS.API.STREAM.INFO.KV_baton_chaos_\(app)", timeout: .seconds(1))
            let data = Data(reply.payload.readableBytesView)
            guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any],
                let cluster = object["cluster"] as? [String: Any], let leader = cluster["leader"] as? String
            else { return nil }
            return servers.first { $0.name == leader }
        } catch {
            return nil
        }
    }

    // MARK: - Faults

    private func pickKind() -> FaultKind {
        let total = plan.kinds.map(\.weight).reduce(0, +)
        var pick = Int.random(in: 0..<total, using: &random)
        for kind in plan.kinds {
            if pick < kind.weight { return kind }
            pick -= kind.weight
        }
        return .batondKill
    }

    private func milliseconds(_ range: ClosedRange<Double>) -> Duration {
        .milliseconds(Int64(Double.random(in: range, using: &random)))
    }

    /// Picks a node for a node fault: the active node of a random app, or one that is not.
    private func pickNode() -> (BatondNode, String) {
        let app = appNames[Int.random(in: 0..<appNames.count, using: &random)]
        let wantActive = Bool.random(using: &random)
        let offset = Int.random(in: 0..<3, using: &random)
        let active = activeNode(of: app)
        if wantActive, let active { return (active, "\(active.id) (active for \(app))") }
        let others = nodes.filter { $0 !== active }
        let node = others[offset % others.count]
        return (node, "\(node.id) (passive for \(app))")
    }

    /// Picks a server for a server fault: half the time the leader of a random app's lease
    /// stream (asked from JetStream), otherwise a random one.
    private func pickServer() async -> (NATSServerNode, String) {
        let leaderWanted = Bool.random(using: &random)
        let app = appNames[Int.random(in: 0..<appNames.count, using: &random)]
        let server = servers[Int.random(in: 0..<servers.count, using: &random)]
        if leaderWanted, let leader = await streamLeader(app: app) {
            return (leader, "\(leader.name) (leader of KV_baton_chaos_\(app))")
        }
        return (server, leaderWanted ? "\(server.name) (the leader lookup failed; a random server)" : server.name)
    }

    /// The namespace of a node or server (netns runs; every netns kind is refused in loopback runs).
    private func namespace(_ namespace: String?) throws -> (NetLab, String) {
        guard let lab, let namespace else { throw ChaosError("an nftables fault needs --network netns") }
        return (lab, namespace)
    }

    private func inject(_ kind: FaultKind, index: Int) async throws -> FaultRecord {
        let ttlMilliseconds = Double(plan.ttl.components.seconds) * 1000 + Double(plan.ttl.components.attoseconds) / 1e15
        var record = FaultRecord(index: index, kind: kind.rawValue, target: "", start: monotonicNow(), end: 0, recovered: nil, note: "")
        switch kind {
        case .batondKill:
            let (node, target) = pickNode()
            record.target = target
            let downFor = milliseconds(0...ttlMilliseconds * 2)
            record.start = monotonicNow()
            node.signal(SIGKILL)
            _ = await node.child?.waitForExit(timeout: .seconds(10))
            try await Task.sleep(for: downFor)
            try node.start()
            record.note = "down \(downFor)"
        case .batondStopShort, .batondStopLong:
            let (node, target) = pickNode()
            record.target = target
            let pause = kind == .batondStopShort ? milliseconds(ttlMilliseconds * 0.2...ttlMilliseconds * 0.7) : milliseconds(ttlMilliseconds * 1.5...ttlMilliseconds * 4)
            record.start = monotonicNow()
            node.signal(SIGSTOP)
            try await Task.sleep(for: pause)
            node.signal(SIGCONT)
            record.note = "stopped \(pause)"
        case .natsKill, .natsStop:
            let (server, target) = await pickServer()
            record.target = target
            if kind == .natsKill {
                let downFor = milliseconds(200...2000)
                record.start = monotonicNow()
                await server.child?.killHard()
                try await Task.sleep(for: downFor)
                try server.start()
                record.note = "down \(downFor)"
            } else {
                let pause = milliseconds(300...3000)
                record.start = monotonicNow()
                server.child?.signal(SIGSTOP)
                try await Task.sleep(for: pause)
                server.child?.signal(SIGCONT)
                record.note = "stopped \(pause)"
            }
        case .natsQuorumLoss:
            let spared = Int.random(in: 0..<servers.count, using: &random)
            let victims = servers.enumerated().filter { $0.offset != spared }.map(\.element)
            let downFor = milliseconds(200...2000)
            record.target = victims.map(\.name).joined(separator: ", ")
            record.start = monotonicNow()
            for server in victims { await server.child?.killHard() }
            try await Task.sleep(for: downFor)
            for server in victims { try server.start() }
            record.note = "down \(downFor)"
        case .natsRolling:
            // Every server in turn: SIGTERM, wait for its exit, start it, wait until it listens
            // and give it a moment to catch up with its peers before the next goes down.
            record.target = "nats-1, nats-2, nats-3"
            record.start = monotonicNow()
            for server in servers {
                server.child?.signal(SIGTERM)
                if !(await server.child?.waitForExit(timeout: .seconds(15)) ?? true) { await server.child?.killHard() }
                try server.start()
                _ = await waitUntil(.seconds(15)) { portAccepts(server.clientPort) }
                try await Task.sleep(for: .seconds(1))
            }
            record.note = "each server restarted in turn"
        case .stall:
            let (node, target) = pickNode()
            record.target = target
            let pause = milliseconds(ttlMilliseconds * 0.2...ttlMilliseconds * 3)
            record.start = monotonicNow()
            for proxy in node.proxies { try await proxy.stall() }
            try await Task.sleep(for: pause)
            for proxy in node.proxies { try await proxy.resume() }
            record.note = "stalled \(pause)"
        case .switchover, .stepdown:
            let app = appNames[Int.random(in: 0..<appNames.count, using: &random)]
            let offset = Int.random(in: 0..<2, using: &random)
            let active = activeNode(of: app)
            let others = nodes.filter { $0 !== active }
            let target = others[offset % others.count]
            var arguments = [kind == .switchover ? "switchover" : "stepdown", "--config", nodes[0].configPath, "--timeout", "10s"]
            if kind == .switchover { arguments += ["--to", target.id] }
            arguments.append(app)
            record.target = kind == .switchover ? "\(app) → \(target.id)" : "\(app) from \(active?.id ?? "?")"
            record.start = monotonicNow()
            let child = try Child(
                name: "batonctl", executable: plan.binaries.batonctl, arguments: arguments, environment: ["HOME": "/tmp"],
                logPath: "\(plan.runDirectory)/batonctl.log")
            if !(await child.waitForExit(timeout: .seconds(20))) { await child.killHard() }
            record.note = "batonctl \(arguments.joined(separator: " "))"
        case .reload:
            let (node, target) = pickNode()
            record.target = target
            record.start = monotonicNow()
            node.signal(SIGHUP)
        case .restart:
            let (node, target) = pickNode()
            record.target = target
            record.start = monotonicNow()
            node.signal(SIGTERM)
            if !(await node.child?.waitForExit(timeout: .seconds(30)) ?? true) {
                incidents.append("\(node.id) did not exit within 30 s of SIGTERM (fault #\(index)); killed")
                await node.child?.killHard()
            }
            try node.start()
        case .nodeCut, .nodeCutOneWay:
            let (node, target) = pickNode()
            let (lab, namespace) = try self.namespace(node.namespace)
            let direction = kind == .nodeCut ? "both ways" : (Bool.random(using: &random) ? "NATS→node dropped" : "node→NATS dropped")
            let pause = milliseconds(ttlMilliseconds * 0.5...ttlMilliseconds * 3)
            record.target = target
            record.start = monotonicNow()
            try await lab.drop(
                in: namespace, input: direction != "node→NATS dropped" ? "ip saddr \(lab.rootAddress) drop" : nil,
                output: direction != "NATS→node dropped" ? "ip daddr \(lab.rootAddress) drop" : nil)
            try await Task.sleep(for: pause)
            try await lab.heal(namespace)
            record.note = "\(direction) for \(pause)"
        case .natsCut:
            let (server, target) = await pickServer()
            let (lab, namespace) = try self.namespace(server.namespace)
            let peers = servers.filter { $0 !== server }.map(\.host).joined(separator: ", ")
            let direction = ["both ways", "from peers dropped", "to peers dropped"][Int.random(in: 0..<3, using: &random)]
            let pause = milliseconds(500...4000)
            record.target = target
            record.start = monotonicNow()
            try await lab.drop(
                in: namespace, input: direction != "to peers dropped" ? "ip saddr { \(peers) } drop" : nil,
                output: direction != "from peers dropped" ? "ip daddr { \(peers) } drop" : nil)
            try await Task.sleep(for: pause)
            try await lab.heal(namespace)
            record.note = "\(direction) for \(pause)"
        case .loss:
            let percent = Int.random(in: 10...60, using: &random)
            let pause = milliseconds(1000...4000)
            let namespaceOf: String?
            if Bool.random(using: &random) {
                let (node, target) = pickNode()
                record.target = target
                namespaceOf = node.namespace
            } else {
                let (server, target) = await pickServer()
                record.target = target
                namespaceOf = server.namespace
            }
            let (lab, namespace) = try self.namespace(namespaceOf)
            record.start = monotonicNow()
            let rule = "meta l4proto tcp numgen random mod 100 < \(percent) drop"
            try await lab.drop(in: namespace, input: rule, output: rule)
            try await Task.sleep(for: pause)
            try await lab.heal(namespace)
            record.note = "\(percent) % of TCP packets dropped both ways for \(pause)"
        }
        record.end = monotonicNow()
        return record
    }
}
