import Foundation
import NATSTestSupport
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Writes "monotonic-ns node epoch" to a shared log every 5 ms while it runs.
private let beatingBackend = """
    import os, time
    fd = os.open(os.environ["HEARTBEAT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    node, epoch = os.environ["BATON_NODE"], os.environ["BATON_EPOCH"]
    while True:
        os.write(fd, f"{time.monotonic_ns()} {node} {epoch}\\n".encode())
        time.sleep(0.005)
    """

/// The heartbeat log's lines: (monotonic ns, epoch), in order.
private func beats(_ path: String) -> [(time: Int64, epoch: UInt64)] {
    let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    return text.split(separator: "\n").compactMap { line in
        let fields = line.split(separator: " ")
        guard fields.count == 3, let time = Int64(fields[0]), let epoch = UInt64(fields[2]) else { return nil }
        return (time, epoch)
    }
}

/// Two batond processes with the same node id on one NATS (issue 11, item 7).
@Suite("batond: duplicate node ids", .serialized)
struct DuplicateNodeIDTests {
    private static func config(port: Int, directory: URL) -> String {
        """
        cluster: dupid
        node: {id: node-1, state_dir: \(directory.appendingPathComponent("state").path)}
        nats: {servers: ["nats://127.0.0.1:\(port)"]}
        apps:
          - name: beat
            lease: {ttl: 2s, renew: 500ms, fence_budget: 400ms, skew: 200ms}
            backend:
              process:
                command: ["/usr/bin/python3", "\(directory.appendingPathComponent("beat.py").path)"]
                env: {HEARTBEAT_LOG: "\(directory.appendingPathComponent("beats").path)"}
                stop_timeout: 2s
        """
    }

    private static func waitForExit(_ batond: BatondProcess, timeout: Duration) async -> Int32? {
        // Still running at the timeout is an answer here (nil), not a failure of the wait.
        try? await eventually("batond \(batond.pid) exited", timeout: timeout, every: .milliseconds(20)) { !batond.process.isRunning }
        return batond.process.isRunning ? nil : batond.process.terminationStatus
    }

    private static func log(_ batond: BatondProcess) -> String {
        (try? String(contentsOfFile: batond.logPath, encoding: .utf8)) ?? ""
    }

    /// Waits until an epoch not in `excluding` beats, and returns it.
    private static func waitForRun(_ path: String, excluding: Set<UInt64>, timeout: Duration) async throws -> UInt64 {
        var epoch: UInt64?
        try await eventually("a new backend run (epochs so far: \(Set(beats(path).map { $0.epoch }).sorted()))", timeout: timeout, every: .milliseconds(20)) {
            guard let last = beats(path).last, !excluding.contains(last.epoch), monotonicNow() - last.time < 100_000_000 else { return false }
            epoch = last.epoch
            return true
        }
        return try #require(epoch)
    }

    @Test(arguments: NATSServerKind.allCases)
    func aSecondBatondWithTheSameNodeIDRefusesToStartAndTheFirstRunsOn(kind: NATSServerKind) async throws {
        let binary = try BatondClusterTests.executable("batond")
        let keeper = try BatondClusterTests.executable("baton-fence-keeper")
        let directory = try makeTemporaryDirectory(prefix: "baton-dupid")
        defer { try? FileManager.default.removeItem(at: directory) }
        try beatingBackend.write(to: directory.appendingPathComponent("beat.py"), atomically: true, encoding: .utf8)
        let beatLog = directory.appendingPathComponent("beats").path

        try await withNATSServer(kind) { server in
            let configPath = directory.appendingPathComponent("baton.yaml").path
            try Self.config(port: server.port, directory: directory).write(toFile: configPath, atomically: true, encoding: .utf8)
            var processes: [BatondProcess] = []
            defer {
                for process in processes where process.process.isRunning { kill(process.pid, SIGKILL) }
            }
            func start(_ name: String) throws -> BatondProcess {
                let batond = try BatondProcess(
                    node: "node-1", binary: binary, config: configPath, logPath: directory.appendingPathComponent("\(name).log").path,
                    environment: ["BATON_FENCE_KEEPER": keeper])
                processes.append(batond)
                return batond
            }

            // The first batond runs the app.
            let first = try start("first")
            let epoch = try await Self.waitForRun(beatLog, excluding: [], timeout: .seconds(20))

            // The same config started a second time (the same node id): it refuses, names the
            // running instance and says what to do, and exits with status 3.
            let second = try start("second")
            let status = await Self.waitForExit(second, timeout: .seconds(15))
            let secondLog = Self.log(second)
            #expect(status == 3, "the second batond's exit status: \(String(describing: status)); log:\n\(secondLog)")
            #expect(secondLog.contains("node id \"node-1\" is already in use by a running batond"), "\(secondLog)")
            #expect(secondLog.contains("pid \(first.pid)"), "\(secondLog)")
            #expect(secondLog.contains("node.id must be unique per host"), "\(secondLog)")
            // It touched no app: never started the backend, never cleaned up — not even the
            // release of leftovers at start, which runs before NATS (the first one's claims are
            // not leftovers).
            #expect(!secondLog.contains("app="), "\(secondLog)")
            #expect(secondLog.contains("the release of leftovers at start is skipped"), "\(secondLog)")

            // The first batond's backend ran on, uninterrupted, as the only run.
            try await Task.sleep(for: .seconds(1))
            #expect(first.process.isRunning)
            let afterRefusal = beats(beatLog)
            #expect(Set(afterRefusal.map(\.epoch)) == [epoch])
            let longestGap = zip(afterRefusal, afterRefusal.dropFirst()).map { $1.time - $0.time }.max() ?? 0
            #expect(longestGap < 500_000_000, "the backend paused for \(Double(longestGap) / 1e9)s")
            #expect(monotonicNow() - (afterRefusal.last?.time ?? 0) < 200_000_000, "the backend stopped")
            #expect(!Self.log(first).contains("critical"), "\(Self.log(first))")

            // kill -9 of the first batond, then a restart on this host: the crashed
            // predecessor's entry is taken over at once (its pid is gone), no heartbeat wait.
            first.signal(SIGKILL)
            _ = await Self.waitForExit(first, timeout: .seconds(5))
            let restarted = try start("restarted")
            _ = try await Self.waitForRun(beatLog, excluding: [epoch], timeout: .seconds(20))
            let restartedLog = Self.log(restarted)
            #expect(restartedLog.contains("taking over the node registry entry of a stale instance"), "\(restartedLog)")
            #expect(!restartedLog.contains("waiting for its heartbeat"), "\(restartedLog)")

            // SIGTERM: it leaves the registry, so the next start registers at once.
            await restarted.stop()
            #expect(restarted.process.terminationStatus == 0, "\(Self.log(restarted))")
            #expect(Self.log(restarted).contains("left the node registry"), "\(Self.log(restarted))")
            let next = try start("next")
            try await Task.sleep(for: .seconds(1))
            let nextLog = Self.log(next)
            #expect(nextLog.contains("registered in the node registry"), "\(nextLog)")
            #expect(!nextLog.contains("waiting for its heartbeat") && !nextLog.contains("taking over"), "\(nextLog)")
            await next.stop()
        }
    }

    /// A batond frozen for longer than the registry's heartbeat wait: a second batond with its
    /// node id starts meanwhile, takes the silent entry over and runs the app. When the first
    /// thaws, its heartbeat loses the compare-and-set to the second: it logs a critical error,
    /// shows it in `batonctl status`, and never takes the lease again, not even when the second
    /// releases it.
    @Test(arguments: NATSServerKind.allCases)
    func aThawedDuplicateNeverTakesTheLeaseAgain(kind: NATSServerKind) async throws {
        let binary = try BatondClusterTests.executable("batond")
        let keeper = try BatondClusterTests.executable("baton-fence-keeper")
        let batonctl = try BatondClusterTests.executable("batonctl")
        let directory = try makeTemporaryDirectory(prefix: "baton-dupid-thaw")
        defer { try? FileManager.default.removeItem(at: directory) }
        try beatingBackend.write(to: directory.appendingPathComponent("beat.py"), atomically: true, encoding: .utf8)
        let beatLog = directory.appendingPathComponent("beats").path

        try await withNATSServer(kind) { server in
            let configPath = directory.appendingPathComponent("baton.yaml").path
            try Self.config(port: server.port, directory: directory).write(toFile: configPath, atomically: true, encoding: .utf8)
            var processes: [BatondProcess] = []
            defer {
                for process in processes where process.process.isRunning { kill(process.pid, SIGKILL) }
            }
            func start(_ name: String) throws -> BatondProcess {
                let batond = try BatondProcess(
                    node: "node-1", binary: binary, config: configPath, logPath: directory.appendingPathComponent("\(name).log").path,
                    environment: ["BATON_FENCE_KEEPER": keeper])
                processes.append(batond)
                return batond
            }

            let first = try start("first")
            let firstEpoch = try await Self.waitForRun(beatLog, excluding: [], timeout: .seconds(20))
            first.signal(SIGSTOP)
            let second = try start("second")
            let secondEpoch = try await Self.waitForRun(beatLog, excluding: [firstEpoch], timeout: .seconds(20))
            #expect(Self.log(second).contains("taking over the node registry entry of a stale instance"), "\(Self.log(second))")
            first.signal(SIGCONT)

            // The thawed one notices and says so.
            try await eventually("the thawed batond saying another took over its node id; its log: \(Self.log(first))", timeout: .seconds(10)) {
                Self.log(first).contains("another batond took over this node id")
            }
            let status = Process()
            status.executableURL = URL(fileURLWithPath: batonctl)
            status.arguments = ["status", "--json", "--nats", "nats://127.0.0.1:\(server.port)", "--cluster", "dupid"]
            let output = Pipe()
            status.standardOutput = output
            status.standardError = output
            try status.run()
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            status.waitUntilExit()
            #expect(text.contains("refusing to take the lease: another batond runs as node node-1"), "\(text)")

            // The second one leaves (releasing the lease): the first never takes it.
            await second.stop()
            try await Task.sleep(for: .seconds(4))
            let runs = Set(beats(beatLog).map(\.epoch))
            #expect(runs == [firstEpoch, secondEpoch], "runs: \(runs)")
            #expect(first.process.isRunning)
            await first.stop()
        }
    }
}
