import Foundation
import NATSTestSupport
import SystemdTestSupport
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 14 item 6: `batonctl doctor` against real nats-servers and real batond nodes.
@Suite("batonctl doctor", .serialized)
struct DoctorTests {
    /// A node's config: one process app; `backend` lets two nodes disagree.
    static func config(node: String, port: Int, directory: URL, replicas: Int = 1, backend: String = "/bin/sleep") -> String {
        """
        cluster: doc
        node: {id: \(node), state_dir: \(directory.appendingPathComponent(node).path)}
        nats: {servers: ["nats://127.0.0.1:\(port)"], replicas: \(replicas)}
        apps:
          - name: web
            lease: {ttl: 2s, renew: 500ms, fence_budget: 400ms, skew: 200ms}
            backend:
              process:
                command: ["\(backend)", "1000"]
                stop_timeout: 2s
        """
    }

    /// Runs two batond nodes (node-2 with `node2Backend`) on `server`, waits until both answer,
    /// and returns `batonctl doctor` run with `doctorConfig` (written to a file) and `--monitor`.
    static func doctor(
        server: NATSServerProcess, monitorPort: Int, directory: URL, node2Backend: String, doctorConfig: String
    ) async throws -> SystemdCommandResult {
        let batond = try BatondClusterTests.executable("batond")
        let keeper = try BatondClusterTests.executable("baton-fence-keeper")
        let batonctl = try BatondClusterTests.executable("batonctl")
        var nodes: [BatondProcess] = []
        defer { for node in nodes where node.process.isRunning { kill(node.pid, SIGKILL) } }
        for (name, backend) in [("node-1", "/bin/sleep"), ("node-2", node2Backend)] {
            let path = directory.appendingPathComponent("\(name).yaml").path
            try config(node: name, port: server.port, directory: directory, backend: backend).write(toFile: path, atomically: true, encoding: .utf8)
            nodes.append(
                try BatondProcess(
                    node: name, binary: batond, config: path, logPath: directory.appendingPathComponent("\(name).log").path,
                    environment: ["BATON_FENCE_KEEPER": keeper]))
        }
        let connection = ["--nats", "nats://127.0.0.1:\(server.port)", "--cluster", "doc"]
        var lastOutput = ""
        try await eventually("both nodes answering batonctl status, one active (last: \(lastOutput))", timeout: .seconds(20), every: .milliseconds(200)) {
            let status = try await runOnThread(batonctl, ["status", "--json"] + connection)
            lastOutput = status.output
            return status.status == 0 && status.output.contains("\"node-1\"") && status.output.contains("\"node-2\"") && status.output.contains("\"active\"")
        }
        // One registry heartbeat with a time has been written at registration; the second
        // shows the nodes keep writing it.
        let configPath = directory.appendingPathComponent("doctor.yaml").path
        try doctorConfig.write(toFile: configPath, atomically: true, encoding: .utf8)
        let result = try await runOnThread(
            batonctl, ["doctor", "--config", configPath, "--monitor", "http://127.0.0.1:\(monitorPort)", "--wait", "1s"] + connection)
        for node in nodes { await node.stop() }
        return result
    }

    @Test("a bad setting on a single R1 server is an error finding and a non-zero exit", arguments: NATSServerKind.allCases)
    func badSetting(kind: NATSServerKind) async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-doctor-bad")
        defer { try? FileManager.default.removeItem(at: directory) }
        let monitorPort = try reserveLoopbackPort()
        try await withNATSServer(kind, config: NATSServerConfig(extraConfig: "http_port: \(monitorPort)")) { server in
            // The operator's config says 3 replicas on a single server; node-2 runs another backend.
            let result = try await Self.doctor(
                server: server, monitorPort: monitorPort, directory: directory, node2Backend: "/usr/bin/sleep",
                doctorConfig: Self.config(node: "node-1", port: server.port, directory: directory, replicas: 3))
            print("batonctl doctor (\(kind)):\n\(result.output)")
            #expect(result.status == 1, "\(result)")
            #expect(result.output.contains("ERROR     bucket-replicas [config nats.replicas]: nats.replicas is 3 but the JetStream cluster has 1 server"), "\(result.output)")
            // The default fsync timer, read from the server's VARZ.
            // (2.9 does not report it: the default; 2.11+ reports the 2m default.)
            #expect(
                result.output.contains("WARNING   sync-interval")
                    && (result.output.contains("default 2-minute timer") || result.output.contains("fsyncs every 2m")), "\(result.output)")
            #expect(result.output.contains("WARNING   config-agreement [app web]: the backend section differs between nodes: [node-1] vs [node-2]"), "\(result.output)")
            #expect(result.output.contains("WARNING   systemd [node node-1]"), "\(result.output)")
            #expect(result.output.contains("info") || result.output.contains("INFO"))
        }
    }

    @Test("a clean setup (sync_interval: always, matching configs) has no error finding and exits 0")
    func cleanSetup() async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-doctor-clean")
        defer { try? FileManager.default.removeItem(at: directory) }
        let monitorPort = try reserveLoopbackPort()
        // sync_interval exists from nats-server 2.10 on: the venv's 2.11+ server.
        let config = NATSServerConfig(extraConfig: "http_port: \(monitorPort)\njetstream { sync_interval: always }")
        try await withNATSServer(.pypi, config: config) { server in
            let result = try await Self.doctor(
                server: server, monitorPort: monitorPort, directory: directory, node2Backend: "/bin/sleep",
                doctorConfig: Self.config(node: "node-1", port: server.port, directory: directory))
            print("batonctl doctor (clean):\n\(result.output)")
            #expect(result.status == 0, "\(result)")
            #expect(!result.output.contains("ERROR "), "\(result.output)")
            #expect(result.output.contains("INFO      sync-interval") && result.output.contains("sync_interval: always"), "\(result.output)")
            #expect(!result.output.contains("config-agreement"), "\(result.output)")
            #expect(result.output.contains("clock-offset [nodes]: clocks differ by up to"), "\(result.output)")
            #expect(result.output.contains("0 error(s)"), "\(result.output)")
        }
    }
}
