import Foundation
import NATSTestSupport
import SystemdTestSupport
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The test app: writes "monotonic-ns node epoch" to a shared log every 5 ms while it runs.
private let heartbeatApp = """
    import os, time
    fd = os.open(os.environ["HEARTBEAT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    node, epoch = os.environ["BATON_NODE"], os.environ.get("BATON_EPOCH", "none")
    while True:
        os.write(fd, f"{time.monotonic_ns()} {node} {epoch}\\n".encode())
        time.sleep(0.005)
    """

/// Per epoch: the node and its first and last heartbeat.
private struct Beats {
    struct Run: CustomStringConvertible {
        var node: String
        var epoch: String
        var first: Int64
        var last: Int64
        var description: String { "\(node)#\(epoch) [\(first)…\(last)]" }
    }

    var runs: [Run]

    init(path: String) {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        var byEpoch: [String: Run] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count == 3, let time = Int64(fields[0]) else { continue }
            let epoch = String(fields[2])
            if var run = byEpoch[epoch] {
                run.first = min(run.first, time)
                run.last = max(run.last, time)
                byEpoch[epoch] = run
            } else {
                byEpoch[epoch] = Run(node: String(fields[1]), epoch: epoch, first: time, last: time)
            }
        }
        runs = byEpoch.values.sorted { $0.first < $1.first }
    }

    /// A run that wrote within the last 100 ms, other than `excluding`.
    func live(excluding: Set<String>) -> Run? {
        runs.last { !excluding.contains($0.epoch) && monotonicNow() - $0.last < 100_000_000 }
    }

    func checkSafety(sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!runs.contains { $0.epoch == "none" }, "a unit ran without an epoch: \(runs)", sourceLocation: sourceLocation)
        for (earlier, later) in zip(runs, runs.dropFirst()) {
            #expect(earlier.last < later.first, "units overlapped: \(earlier) and \(later)", sourceLocation: sourceLocation)
        }
    }
}

private struct SystemdTestFailure: Error, CustomStringConvertible {
    var description: String
}

/// batond run by a real `systemd --user` (Type=notify, watchdog), managing a unit of that
/// same manager.
@Suite("batond under systemd", .serialized, .timeLimit(.minutes(3)))
struct BatondSystemdTests {
    private static func executable(_ name: String) throws -> String {
        var directory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        try Integration.missingPrerequisite(
            MissingPrerequisite(name: name, reason: "not built next to the test binary", remedy: "run `swift build` before `swift test`"))
    }

    private static func requirePython() throws {
        if !FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") {
            try Integration.missingPrerequisite(MissingPrerequisite(name: "python3", reason: "no /usr/bin/python3", remedy: "`apt-get install python3`"))
        }
    }

    /// Writes web.service, batond.service and batond's config into `systemd`'s unit directory
    /// and reloads the manager. Returns batond's log path.
    private static func install(
        _ systemd: SystemdUserInstance, node: String, natsPort: Int, heartbeatLog: String, app: String
    ) async throws -> String {
        let batond = try executable("batond")
        let keeper = try executable("baton-fence-keeper")
        let directory = systemd.directory
        let config = "\(directory)/baton.yaml"
        let log = "\(directory)/batond.log"
        try """
            cluster: sdtest
            node: {id: \(node), state_dir: \(directory)/state}
            nats: {servers: ["nats://127.0.0.1:\(natsPort)"]}
            apps:
              - name: web
                priority: 100
                lease: {ttl: 2s, renew: 500ms, fence_budget: 400ms, skew: 200ms}
                backend:
                  systemd: {unit: web.service, bus: user, restart: {max_restarts: 1, window: 60s, backoff: 200ms}}

            """.write(toFile: config, atomically: true, encoding: .utf8)
        try systemd.writeUnit(
            "web.service",
            """
            [Unit]
            Description=test app of \(node)

            [Service]
            ExecStart=/usr/bin/python3 \(app)
            Environment=HEARTBEAT_LOG=\(heartbeatLog) BATON_NODE=\(node)
            Restart=no

            """)
        // The shipped unit's [Service] essentials; no hardening (a user manager cannot apply
        // most of it) and output to a file (no journald in the test namespace).
        try systemd.writeUnit(
            "batond.service",
            """
            [Unit]
            Description=batond \(node)

            [Service]
            Type=notify
            NotifyAccess=main
            ExecStart=\(batond) --config \(config) --log-level debug
            ExecReload=/bin/kill -HUP $MAINPID
            Restart=no
            WatchdogSec=2s
            WatchdogSignal=SIGKILL
            KillMode=control-group
            TimeoutStopSec=30s
            RuntimeDirectory=baton
            Environment=BATON_FENCE_KEEPER=\(keeper) DBUS_SESSION_BUS_ADDRESS=\(systemd.busAddress)
            StandardOutput=append:\(log)
            StandardError=append:\(log)

            """)
        let reload = try await systemd.systemctl(["daemon-reload"])
        guard reload.status == 0 else { throw SystemdTestFailure(description: "daemon-reload: \(reload)") }
        return log
    }

    private static func show(_ systemd: SystemdUserInstance, _ unit: String, _ property: String) async throws -> String {
        let result = try await systemd.systemctl(["show", unit, "-p", property, "--value"])
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }


    private static func logTail(_ path: String) -> String {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(30).joined(separator: "\n")
    }

    @Test func statusReloadAndWatchdog() async throws {
        try Self.requirePython()
        let directory = try makeTemporaryDirectory(prefix: "baton-sd")
        defer { try? FileManager.default.removeItem(at: directory) }
        let app = directory.appendingPathComponent("beat.py").path
        try heartbeatApp.write(toFile: app, atomically: true, encoding: .utf8)
        let beats = directory.appendingPathComponent("beats.log").path

        try await withNATSServer(.pypi) { server in
            try await withSystemdUserInstance { systemd in
                let log = try await Self.install(systemd, node: "node-1", natsPort: server.port, heartbeatLog: beats, app: app)

                // Type=notify: `systemctl start` returns once batond sent READY=1.
                let start = try await systemd.systemctl(["start", "batond.service"])
                #expect(start.status == 0, "\(start)\n\(Self.logTail(log))")
                #expect(try await Self.show(systemd, "batond.service", "ActiveState") == "active")

                // batond takes the lease and starts the unit, bound to batond.service.
                try await eventually("web.service running\n\(Self.logTail(log))", timeout: .seconds(15)) { Beats(path: beats).live(excluding: []) != nil }
                #expect(try await Self.show(systemd, "web.service", "BindsTo").contains("batond.service"))
                try await eventually("batond.service StatusText \"active: web; NATS ok\"", timeout: .seconds(5)) {
                    try await Self.show(systemd, "batond.service", "StatusText") == "active: web; NATS ok"
                }
                let status = try await systemd.systemctl(["status", "batond.service", "--no-pager"])
                #expect(status.output.contains("active (running)") && status.output.contains("Status: \"active: web; NATS ok\""), "\(status)")

                // systemctl reload: RELOADING=1 ... READY=1; the app keeps running.
                let epoch = try #require(Beats(path: beats).live(excluding: [])).epoch
                let reload = try await systemd.systemctl(["reload", "batond.service"])
                #expect(reload.status == 0, "\(reload)")
                try await eventually("\"config reloaded\" in batond's log\n\(Self.logTail(log))", timeout: .seconds(5)) {
                    (try? String(contentsOfFile: log, encoding: .utf8))?.contains("config reloaded") == true
                }
                #expect(try await Self.show(systemd, "batond.service", "ActiveState") == "active")
                #expect(Beats(path: beats).live(excluding: [])?.epoch == epoch)

                // A batond whose loops hang (SIGSTOP) sends no WATCHDOG=1: systemd kills it
                // (SIGKILL, whole cgroup) and the bound unit goes down with it.
                let mainPID = try #require(pid_t(try await Self.show(systemd, "batond.service", "MainPID")))
                let stoppedAt = ContinuousClock.now
                kill(mainPID, SIGSTOP)
                try await eventually("batond killed by the watchdog (ActiveState failed)", timeout: .seconds(10)) {
                    try await Self.show(systemd, "batond.service", "ActiveState") == "failed"
                }
                #expect(try await Self.show(systemd, "batond.service", "Result") == "watchdog")
                try await eventually("web.service no longer active", timeout: .seconds(5)) {
                    try await Self.show(systemd, "web.service", "ActiveState") != "active"
                }
                try await eventually("the app no longer running", timeout: .seconds(5)) { Beats(path: beats).live(excluding: []) == nil }
                #expect(ContinuousClock.now - stoppedAt < .seconds(8))
                Beats(path: beats).checkSafety()
            }
        }
    }

    @Test func failoverBetweenTwoNodesWithSystemdUnits() async throws {
        try Self.requirePython()
        let directory = try makeTemporaryDirectory(prefix: "baton-sd-failover")
        defer { try? FileManager.default.removeItem(at: directory) }
        let app = directory.appendingPathComponent("beat.py").path
        try heartbeatApp.write(toFile: app, atomically: true, encoding: .utf8)
        let beats = directory.appendingPathComponent("beats.log").path

        try await withNATSServer(.pypi) { server in
            try await withSystemdUserInstance { first in
                try await withSystemdUserInstance { second in
                    let nodes = [("node-1", first), ("node-2", second)]
                    var logs: [String: String] = [:]
                    for (name, systemd) in nodes {
                        logs[name] = try await Self.install(systemd, node: name, natsPort: server.port, heartbeatLog: beats, app: app)
                        let start = try await systemd.systemctl(["start", "batond.service"])
                        #expect(start.status == 0, "\(start)")
                    }
                    let instance = { (node: String) in nodes.first { $0.0 == node }!.1 }

                    // Exactly one node runs the unit.
                    try await eventually("someone running the app\n\(logs.values.map(Self.logTail))", timeout: .seconds(15)) { Beats(path: beats).live(excluding: []) != nil }
                    let active = try #require(Beats(path: beats).live(excluding: []), "nobody runs the app\n\(logs.values.map(Self.logTail))")
                    try await Task.sleep(for: .seconds(1))
                    #expect(Beats(path: beats).runs.count == 1, "\(Beats(path: beats).runs)")
                    let passive = active.node == "node-1" ? "node-2" : "node-1"
                    #expect(try await Self.show(instance(passive), "web.service", "ActiveState") != "active")

                    // kill -9 of the active batond: systemd stops its bound unit (and the fence
                    // keeper does too); the other node starts its own unit within ttl + 1 s.
                    let victim = instance(active.node)
                    let mainPID = try #require(pid_t(try await Self.show(victim, "batond.service", "MainPID")))
                    let killedAt = monotonicNow()
                    kill(mainPID, SIGKILL)
                    try await eventually("a takeover: a run other than epoch \(active.epoch)\n\(logs.values.map(Self.logTail))", timeout: .seconds(10)) { Beats(path: beats).live(excluding: [active.epoch]) != nil }
                    let next = try #require(Beats(path: beats).live(excluding: [active.epoch]), "no takeover\n\(logs.values.map(Self.logTail))")
                    #expect(next.node == passive)
                    let old = try #require(Beats(path: beats).runs.first { $0.epoch == active.epoch })
                    #expect(old.last - killedAt < 1_000_000_000, "the unit outlived its batond: \(old)")
                    #expect(next.first - killedAt < 3_000_000_000, "takeover took \(Double(next.first - killedAt) / 1e9)s")
                    #expect(try await Self.show(victim, "web.service", "ActiveState") != "active")
                    Beats(path: beats).checkSafety()

                    // Graceful stop of the new active node: its unit stops, the lease is released.
                    let stop = try await instance(passive).systemctl(["stop", "batond.service"])
                    #expect(stop.status == 0, "\(stop)")
                    #expect(try await Self.show(instance(passive), "web.service", "ActiveState") != "active")
                    Beats(path: beats).checkSafety()
                }
            }
        }
    }
}
