// VIPFailoverBenchmark: how long a client cannot reach a service through its virtual IP when the
// VIP moves to another host, with Baton (batond, VIP claims over netlink + gratuitous ARP) and
// with keepalived (VRRPv3) side by side in the same lab and with the same probe.
//
// The lab (Tests/NetnsLab): a bridge in a namespace of its own, and three host namespaces
// attached with veth pairs: hosts `a` and `b` (10.88.0.1, .2) and a client `c` (.3); the VIP is
// 10.88.0.100/24 on the hosts' eth0, nats-server listens on the bridge (10.88.0.254). The
// service is this executable in `serve` mode: a native HTTP/1.0 responder on 0.0.0.0:8080 that
// answers with its node name (it starts in a few milliseconds).
//
// The client probe (python asyncio, in the client's namespace) starts a new TCP connection and
// GET to VIP:8080 every 10 ms (attempts run concurrently; one that takes over 200 ms counts as
// failed). The *gap* of a failover is the longest time between two consecutive successful
// answers, up to the first answer from the new host. Every instant is wall-clock µs.
//
// Scenarios, `--runs` each (default 20):
//   graceful: Baton: `batonctl switchover web --to OTHER` (from the client's namespace), with the
//     cluster at rest (the target is past its 2 × ttl cooldown) and at a random point of the
//     renew cycle. keepalived: SIGTERM of the master's keepalived (it sends a priority-0 advert
//     and drops the VIP; the backup takes over after its skew time); it is restarted afterwards.
//   host loss: the active host's link goes down (both ends of its veth): its batond can neither
//     renew nor be reached, its keeper/fencing drops the VIP locally; the other node takes over
//     after ttl + skew. keepalived: the backup misses adverts for its master-down interval
//     (3 × advert + skew). The link comes back up after the takeover and the cluster settles.
// Baton runs at lease ttl 3s, 1s and 300ms (renew, fence_budget and skew: the config defaults
// ttl/4, ttl/5, ttl/10 capped at 100ms; priority 100, so no priority holdback); keepalived at advert_int 1 and 0.1 (VRRPv3, nopreempt,
// both BACKUP at priority 100). `ip -ts monitor address` on both hosts also records when the old
// host removed the VIP and the new one added it: the benchmark counts runs where both held it.
//
// Build in release mode with batond, batonctl and baton-fence-keeper in the same directory:
//   swift build -c release --scratch-path .build-release --product VIPFailoverBenchmark (and
//   --product batond, batonctl, baton-fence-keeper); run as root:
//   .build-release/release/VIPFailoverBenchmark --help

import ArgumentParser
import BenchmarkSupport
import Foundation
import NetnsLab
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Serve mode (the service behind the VIP)

if CommandLine.arguments.count >= 3, CommandLine.arguments[1] == "serve" {
    let node = CommandLine.arguments.count >= 4 ? CommandLine.arguments[3] : (getenv("BATON_NODE").map { String(cString: $0) } ?? "?")
    serveMain(port: UInt16(CommandLine.arguments[2]) ?? 8080, node: node)
}

/// Answers every connection on 0.0.0.0:`port` with `HTTP/1.0 200` and `node`, then closes it.
func serveMain(port: UInt16, node: String) -> Never {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = 0
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard fd >= 0, bound == 0, listen(fd, 128) == 0 else {
        perror("serve")
        exit(71)
    }
    let body = "\(node)\n"
    let response = Array("HTTP/1.0 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let connection = accept(fd, nil, nil)
        guard connection >= 0 else { continue }
        _ = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
        _ = response.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        close(connection)
    }
}

// MARK: - Options

struct Options: Sendable {
    var runs = 20
    var ttls: [Duration] = [.seconds(3), .seconds(1), .milliseconds(300)]
    var adverts: [String] = ["1", "0.1"]
    var scenarios: [Scenario] = [.graceful, .hostLoss]
    var peers: [String] = ["baton", "keepalived"]
    var natsServer = "/usr/sbin/nats-server"
    var keepalived = "/usr/sbin/keepalived"
    var python = "/usr/bin/python3"
    var binDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
    var probeInterval: Duration = .milliseconds(10)
    var timeLimit = 3600
    var keep = false

}

/// The command line (every flag as before ArgumentParser; `--help` lists them).
struct Arguments: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "VIPFailoverBenchmark",
        abstract: "Client-observed outage of a VIP failover: batond against keepalived, in network namespaces.",
        discussion: "Runs as root; see the comment at the top of Benchmarks/VIPFailoverBenchmark/main.swift.")

    @Option(help: "Failovers per configuration and scenario.")
    var runs = 20
    @Option(help: "batond lease TTLs, comma-separated (default 3s,1s,300ms).", transform: commaSeparated("--ttls", "a duration", parseDuration))
    var ttls: [Duration] = [.seconds(3), .seconds(1), .milliseconds(300)]
    @Option(help: "keepalived advert intervals in seconds, comma-separated (default 1,0.1).", transform: commaSeparated("--adverts", "a number", { $0 }))
    var adverts: [String] = ["1", "0.1"]
    @Option(help: "Scenarios, comma-separated: graceful, host-loss (default both).", transform: commaSeparated("--scenarios", "a scenario", Scenario.init(rawValue:)))
    var scenarios: [Scenario] = [.graceful, .hostLoss]
    @Option(help: "What to measure, comma-separated: baton, keepalived (default both).", transform: commaSeparated("--peers", "a peer", { $0 }))
    var peers: [String] = ["baton", "keepalived"]
    @Option(name: .customLong("bin-dir"), help: "Where batond, batonctl and baton-fence-keeper are (default: next to this binary).")
    var binDirectory: String?
    @Option(name: .customLong("nats-server"), help: "The nats-server to run.")
    var natsServer = "/usr/sbin/nats-server"
    @Option(help: "The keepalived to run.")
    var keepalived = "/usr/sbin/keepalived"
    @Option(help: "The python3 for the probe.")
    var python = "/usr/bin/python3"
    @Option(name: .customLong("time-limit"), help: "Seconds until the benchmark deletes the lab and exits.")
    var timeLimit = 3600
    @Flag(help: "Keep the work directory.")
    var keep = false

    var options: Options {
        var options = Options()
        options.runs = runs
        options.ttls = ttls
        options.adverts = adverts
        options.scenarios = scenarios
        options.peers = peers
        if let binDirectory { options.binDirectory = binDirectory }
        options.natsServer = natsServer
        options.keepalived = keepalived
        options.python = python
        options.timeLimit = timeLimit
        options.keep = keep
        return options
    }
}

enum Scenario: String, Sendable, ExpressibleByArgument {
    case graceful
    case hostLoss = "host-loss"
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("VIPFailoverBenchmark: \(message)\n".utf8))
    exit(2)
}

func log(_ message: String) {
    let stamp = ISO8601DateFormatter().string(from: Date())
    FileHandle.standardError.write(Data("[\(stamp)] \(message)\n".utf8))
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
    var text: String { milliseconds % 1000 == 0 ? "\(milliseconds / 1000)s" : "\(milliseconds)ms" }
}

// MARK: - Clean-up on every exit path

/// The lab of the configuration being measured, destroyed on SIGINT/SIGTERM and at the time limit.
final class CurrentLab: @unchecked Sendable {
    static let shared = CurrentLab()
    private let lock = NSLock()
    private var lab: NetnsLab?

    func set(_ lab: NetnsLab?) { lock.withLock { self.lab = lab } }

    /// Kills everything inside the lab's namespaces and deletes them, from a plain thread.
    func abort() {
        guard let lab = lock.withLock({ self.lab }) else { return }
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            await lab.destroy()
            done.signal()
        }
        _ = done.wait(timeout: .now() + 10)
    }
}

/// SIGINT, SIGTERM and the time limit: deleting the lab and everything in it (BenchmarkSupport's killers).
func installKillers(timeLimit: Int) {
    installKillers(timeLimit: timeLimit, doing: "deleting the lab and everything in it", log: { log($0) }, abort: { CurrentLab.shared.abort() })
}

// MARK: - One configuration's lab

let vipAddress = "10.88.0.100"
let vip = "\(vipAddress)/24"
let servicePort = 8080

/// Results of one scenario in one configuration.
struct Row: Sendable {
    var peer: String
    var setting: String
    var scenario: Scenario
    var gaps: [Int64]  // µs
    var doubleHolds: Int
    var failures: Int
    var load: String
}

/// A lab with monitors and the probe, for one configuration.
final class Bench: @unchecked Sendable {
    let options: Options
    let lab: NetnsLab
    let directory: URL
    var monitors: [AddressMonitor] = []
    var probe: ClientProbe!
    var processes: [String: LabProcess] = [:]

    init(options: Options, lab: NetnsLab, directory: URL) {
        self.options = options
        self.lab = lab
        self.directory = directory
    }

    static func make(options: Options, name: String) async throws -> Bench {
        let ip = findIP()
        let lab = try await NetnsLab.create(hosts: ["a", "b", "c"], ipPath: ip)
        CurrentLab.shared.set(lab)
        let directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("vipbench-\(name)-\(lab.tag)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let bench = Bench(options: options, lab: lab, directory: directory)
        for host in ["a", "b"] {
            bench.monitors.append(try await AddressMonitor.start(lab: lab, host: lab.host(host), logPath: directory.appendingPathComponent("monitor-\(host).log").path))
        }
        bench.probe = try ClientProbe(
            lab: lab, host: lab.host("c"), address: vipAddress, port: servicePort, python: options.python,
            directory: directory.path, interval: options.probeInterval, timeout: .milliseconds(200))
        return bench
    }

    func start(_ name: String, in host: String, _ arguments: [String], environment: [String: String] = [:]) throws -> LabProcess {
        let count = processes.keys.filter { $0.hasPrefix(name) }.count
        let process = try LabProcess(
            name: name, ipPath: lab.ipPath, namespace: host == "br" ? lab.bridgeNamespace : lab.host(host).namespace,
            arguments: arguments, environment: environment, logPath: directory.appendingPathComponent("\(name).\(count).log").path)
        processes["\(name).\(count)"] = process
        return process
    }

    /// Waits until the client gets answers from `node` after `since`; returns the gap (µs).
    func waitForAnswer(from node: String, since: Int64, timeout: Duration = .seconds(30)) async throws -> Int64 {
        try await eventually("the client reaching \(node)", timeout: timeout, every: .milliseconds(10)) { probe.latestAnswer(after: since) == node }
        guard let outage = probe.outage(since: since, to: node) else { throw LabError("the client reached \(node) but its probe log shows no outage since \(since)") }
        return outage.gap
    }

    /// When (µs after `since`) `node`'s host added the VIP, per its monitor; nil when it has not.
    func vipAdded(on node: String, since: Int64) -> Int64? {
        monitors.first { $0.host.name == hostName(node) }?.events().first { $0.added && $0.cidr == vip && $0.time >= since }.map { $0.time - since }
    }

    /// The margin (µs) of the first handover after `since`: how long before the new host added
    /// the VIP the old host had removed it, per the monitors (each stamps an event when it reads
    /// it, so a few ms of scheduling delay blur the order of close events).
    func margin(since: Int64) -> Int64? {
        AddressTimeline(events: monitors.flatMap { $0.events() }, cidr: vip).handovers.first { $0.next.start >= since }?.margin
    }

    /// Handovers in the monitors' record where the new host added the VIP before the old one
    /// removed it.
    func doubleHolds() -> Int {
        AddressTimeline(events: monitors.flatMap { $0.events() }, cidr: vip).handovers.filter { $0.margin < 0 }.count
    }

    func tearDown() async {
        for process in processes.values { await process.stop(grace: .seconds(3)) }
        await probe?.stop()
        for monitor in monitors { await monitor.stop() }
        await lab.destroy()
        CurrentLab.shared.set(nil)
        if options.keep { log("logs kept in \(directory.path)") } else { try? FileManager.default.removeItem(at: directory) }
    }
}

func findIP() -> String {
    for path in ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"] where FileManager.default.isExecutableFile(atPath: path) { return path }
    fail("no ip (apt-get install iproute2)")
}

func other(_ node: String) -> String { node == "node-a" ? "node-b" : "node-a" }
func hostName(_ node: String) -> String { String(node.dropFirst("node-".count)) }

// MARK: - Baton

func runBaton(options: Options, ttl: Duration) async throws -> [Row] {
    let bench = try await Bench.make(options: options, name: "baton-\(ttl.text)")
    do {
        let rows = try await measureBaton(bench, ttl: ttl)
        await bench.tearDown()
        return rows
    } catch {
        log("baton ttl \(ttl.text) failed: \(error); logs in \(bench.directory.path)")
        for process in bench.processes.values { await process.stop(grace: .seconds(3)) }
        await bench.lab.destroy()
        CurrentLab.shared.set(nil)
        throw error
    }
}

func measureBaton(_ bench: Bench, ttl: Duration) async throws -> [Row] {
    let options = bench.options
    let lab = bench.lab
    let bin = options.binDirectory
    let nats = try bench.start(
        "nats", in: "br", [options.natsServer, "-js", "-sd", bench.directory.appendingPathComponent("store").path, "-a", lab.bridgeAddress, "-p", "4222"])
    try await eventually("nats-server ready: \(nats.log)", timeout: .seconds(10)) { nats.log.contains("Server is ready") }
    let url = "nats://\(lab.bridgeAddress):4222"
    for node in ["node-a", "node-b"] {
        let config = bench.directory.appendingPathComponent("\(node).yaml").path
        try """
            cluster: vipbench
            node: {id: \(node), state_dir: \(bench.directory.appendingPathComponent(node).path)}
            nats: {servers: ["\(url)"]}
            apps:
              - name: web
                priority: 100
                lease: {ttl: \(ttl.text)}
                backend:
                  process: {command: ["\(bin)/VIPFailoverBenchmark", "serve", "\(servicePort)"], stop_timeout: 2s}
                vip: {address: \(vip), interface: eth0}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        _ = try bench.start(node, in: hostName(node), ["\(bin)/batond", "--config", config], environment: ["BATON_FENCE_KEEPER": "\(bin)/baton-fence-keeper"])
    }
    func batonctl(_ arguments: [String]) async throws -> String {
        let result = try await runLabCommand(lab.ipPath, ["netns", "exec", lab.host("c").namespace, "\(bin)/batonctl"] + arguments + ["--nats", url, "--cluster", "vipbench"])
        guard result.status == 0 else { throw LabError("batonctl \(arguments) failed: \(result)") }
        return result.stdout
    }
    /// Waits until `batonctl status` shows one active and one passive node; returns the active.
    func settled() async throws -> String {
        var active: String?
        try await eventually("the cluster settling (one active, one passive)", timeout: .seconds(30), every: .milliseconds(200)) {
            guard let output = try? await batonctl(["status", "--json", "web"]),
                let nodes = try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]]
            else { return false }
            var roles: [String: String] = [:]
            for node in nodes {
                if let name = node["node"] as? String, let app = (node["apps"] as? [[String: Any]])?.first, let role = app["role"] as? String { roles[name] = role }
            }
            active = roles.first { $0.value == "active" }?.key
            return roles.count == 2 && active != nil && roles.values.filter({ $0 == "passive" }).count == 1
        }
        guard let active else { throw LabError("the cluster did not settle") }
        // The client reaches the active node (its backend is up, the VIP announced).
        _ = try await bench.waitForAnswer(from: active, since: 0)
        return active
    }
    let renew = ttl / 4
    let cooldown = ttl * 2 + .milliseconds(300)
    var rows: [Row] = []
    for scenario in options.scenarios {
        var gaps: [Int64] = []
        var failures = 0
        let holdsBefore = bench.doubleHolds()
        let load = loadAverage()
        for run in 1...options.runs {
            var active = try await settled()
            // At rest: the node that gave the app up last is past its cooldown (2 × ttl), and
            // a reconnected node past its holdoff (ttl); then a random point of the renew cycle.
            try await Task.sleep(for: cooldown + renew * Double.random(in: 0..<1))
            active = try await settled()
            let target = other(active)
            let since = wallMicros()
            do {
                switch scenario {
                case .graceful:
                    _ = try await batonctl(["switchover", "web", "--to", target, "--timeout", "10s"])
                    gaps.append(try await bench.waitForAnswer(from: target, since: since))
                case .hostLoss:
                    try await lab.setLink(of: lab.host(hostName(active)), up: false)
                    let gap = try await bench.waitForAnswer(from: target, since: since)
                    gaps.append(gap)
                    try await lab.setLink(of: lab.host(hostName(active)), up: true)
                }
                let added = bench.vipAdded(on: target, since: since).map { "\($0 / 1000) ms" } ?? "?"
                log("baton ttl \(ttl.text) \(scenario.rawValue) run \(run): \(active) → \(target): gap \(gaps.last! / 1000) ms; VIP added at +\(added); removed \(bench.margin(since: since).map { String(format: "%.1f", Double($0) / 1000) } ?? "?") ms before")
            } catch {
                failures += 1
                log("baton ttl \(ttl.text) \(scenario.rawValue) run \(run) failed: \(error)")
                if scenario == .hostLoss { try? await lab.setLink(of: lab.host(hostName(active)), up: true) }
            }
        }
        rows.append(Row(peer: "Baton", setting: "ttl \(ttl.text)", scenario: scenario, gaps: gaps, doubleHolds: bench.doubleHolds() - holdsBefore, failures: failures, load: load))
    }
    return rows
}

// MARK: - keepalived

func runKeepalived(options: Options, advert: String) async throws -> [Row] {
    let bench = try await Bench.make(options: options, name: "keepalived-\(advert)")
    do {
        let rows = try await measureKeepalived(bench, advert: advert)
        await bench.tearDown()
        return rows
    } catch {
        log("keepalived advert \(advert) failed: \(error); logs in \(bench.directory.path)")
        for process in bench.processes.values { await process.stop(grace: .seconds(3)) }
        await bench.lab.destroy()
        CurrentLab.shared.set(nil)
        throw error
    }
}

func measureKeepalived(_ bench: Bench, advert: String) async throws -> [Row] {
    let options = bench.options
    let lab = bench.lab
    var daemons: [String: LabProcess] = [:]
    for node in ["node-a", "node-b"] {
        _ = try bench.start("serve-\(node)", in: hostName(node), ["\(options.binDirectory)/VIPFailoverBenchmark", "serve", "\(servicePort)", node])
        let config = bench.directory.appendingPathComponent("keepalived-\(node).conf").path
        try """
            global_defs {
              router_id \(node)
              vrrp_version 3
              vrrp_garp_master_delay 0
            }
            vrrp_instance web {
              state BACKUP
              nopreempt
              interface eth0
              virtual_router_id 51
              priority 100
              advert_int \(advert)
              virtual_ipaddress {
                \(vip) dev eth0
              }
            }
            """.write(toFile: config, atomically: true, encoding: .utf8)
    }
    func startDaemon(_ node: String) throws {
        let base = bench.directory.appendingPathComponent("keepalived-\(node)").path
        daemons[node] = try bench.start(
            "keepalived-\(node)", in: hostName(node),
            [options.keepalived, "-n", "-l", "-D", "-P", "-G", "-f", "\(base).conf", "-p", "\(base).pid", "-r", "\(base)-vrrp.pid"])
    }
    func backups(_ node: String) -> Int { daemons[node]!.log.components(separatedBy: "Entering BACKUP STATE").count - 1 }
    try startDaemon("node-a")
    try startDaemon("node-b")
    let advertInterval = Duration.milliseconds(Int((Double(advert) ?? 1) * 1000))
    var rows: [Row] = []
    try await eventually("a keepalived master answering through the VIP", timeout: .seconds(30)) { bench.probe.latestAnswer() != nil }
    for scenario in options.scenarios {
        var gaps: [Int64] = []
        var failures = 0
        let holdsBefore = bench.doubleHolds()
        let load = loadAverage()
        for run in 1...options.runs {
            // At rest: the master is the node that answers, the other logged BACKUP; then a few
            // adverts and a random point of the advert cycle.
            try await Task.sleep(for: advertInterval * 3 + .milliseconds(300) + advertInterval * Double.random(in: 0..<1))
            var answering: String?
            do {
                try await eventually("an answer through the VIP", timeout: .seconds(10)) {
                    answering = bench.probe.latestAnswer(after: wallMicros() - 100_000)
                    return answering != nil
                }
            } catch is WaitTimedOut {
                // Counted as a failed run just below.
            }
            guard let active = answering else {
                // Seen once at advert 0.1 s after back-to-back transitions: the client got no
                // answer for over 30 s. Count it and try the next run.
                failures += 1
                log("keepalived advert \(advert) \(scenario.rawValue) run \(run): nobody answers through the VIP")
                continue
            }
            let target = other(active)
            let since = wallMicros()
            do {
                switch scenario {
                case .graceful:
                    daemons[active]!.signal(SIGTERM)
                    gaps.append(try await bench.waitForAnswer(from: target, since: since))
                    await daemons[active]!.stop(grace: .seconds(5))
                    try startDaemon(active)
                    try await eventually("\(active) coming back as BACKUP", timeout: .seconds(10)) { backups(active) > 0 }
                case .hostLoss:
                    let before = backups(active)
                    try await lab.setLink(of: lab.host(hostName(active)), up: false)
                    gaps.append(try await bench.waitForAnswer(from: target, since: since))
                    try await lab.setLink(of: lab.host(hostName(active)), up: true)
                    try await eventually("\(active) coming back as BACKUP", timeout: .seconds(10)) { backups(active) > before }
                }
                let added = bench.vipAdded(on: target, since: since).map { "\($0 / 1000) ms" } ?? "?"
                log("keepalived advert \(advert) \(scenario.rawValue) run \(run): \(active) → \(target): gap \(gaps.last! / 1000) ms; VIP added at +\(added); removed \(bench.margin(since: since).map { String(format: "%.1f", Double($0) / 1000) } ?? "?") ms before")
            } catch {
                failures += 1
                log("keepalived advert \(advert) \(scenario.rawValue) run \(run) failed: \(error)")
                if scenario == .hostLoss { try? await lab.setLink(of: lab.host(hostName(active)), up: true) }
            }
        }
        rows.append(Row(peer: "keepalived", setting: "advert \(advert)s", scenario: scenario, gaps: gaps, doubleHolds: bench.doubleHolds() - holdsBefore, failures: failures, load: load))
    }
    return rows
}

// MARK: - Main

let options = Arguments.parseOrExit().options
guard geteuid() == 0 else { fail("run as root: the lab creates network namespaces") }
for path in [options.python] + (options.peers.contains("baton") ? [options.natsServer, "\(options.binDirectory)/batond", "\(options.binDirectory)/batonctl", "\(options.binDirectory)/baton-fence-keeper"] : [])
    + (options.peers.contains("keepalived") ? [options.keepalived] : [])
where !FileManager.default.isExecutableFile(atPath: path) {
    fail("missing \(path) (scripts/install-prerequisites installs nats-server and keepalived; build batond, batonctl and baton-fence-keeper next to this binary)")
}
installKillers(timeLimit: options.timeLimit)
log("VIP failover benchmark: \(options.runs) runs per scenario; load \(loadAverage())")
var rows: [Row] = []
do {
    for peer in options.peers {
        if peer == "baton" {
            for ttl in options.ttls { rows += try await runBaton(options: options, ttl: ttl) }
        } else if peer == "keepalived" {
            for advert in options.adverts { rows += try await runKeepalived(options: options, advert: advert) }
        }
    }
} catch {
    log("aborted: \(error)")
}

print("| peer | setting | scenario | runs | p50 ms | p90 ms | p99 ms | max ms | mean ms | VIP on both | failed | load (1/5/15 min) |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for row in rows {
    let sorted = row.gaps.sorted()
    func ms(_ value: Int64) -> String { String(format: "%.0f", Double(value) / 1000) }
    let mean = sorted.isEmpty ? 0 : sorted.reduce(0, +) / Int64(sorted.count)
    print(
        "| \(row.peer) | \(row.setting) | \(row.scenario.rawValue) | \(sorted.count) | \(ms(percentile(sorted, 50))) | \(ms(percentile(sorted, 90))) | \(ms(percentile(sorted, 99))) | \(ms(sorted.last ?? 0)) | \(ms(mean)) | \(row.doubleHolds) | \(row.failures) | \(row.load) |")
}
exit(0)
