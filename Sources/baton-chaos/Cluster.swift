import FaultProxy
import Foundation
import NATS

#if canImport(Glibc)
import Glibc
#endif

/// One nats-server of the 3-server JetStream cluster, on loopback.
final class NATSServerNode: @unchecked Sendable {
    let name: String
    let clientPort: Int
    let binary: String
    let configPath: String
    let logPath: String
    private(set) var child: Child?

    init(name: String, clientPort: Int, routePort: Int, peerRoutePorts: [Int], binary: String, directory: String, syncInterval: String?) throws {
        self.name = name
        self.clientPort = clientPort
        self.binary = binary
        self.configPath = "\(directory)/\(name).conf"
        self.logPath = "\(directory)/\(name).log"
        let storeDirectory = "\(directory)/\(name)-js"
        try FileManager.default.createDirectory(atPath: storeDirectory, withIntermediateDirectories: true)
        let routes = peerRoutePorts.map { "\"nats-route://127.0.0.1:\($0)\"" }.joined(separator: ", ")
        // no_advertise: clients must keep to the addresses they were given (the stall proxies),
        // not learn the servers' own ports from connect_urls.
        let text = """
            server_name: \(name)
            listen: "127.0.0.1:\(clientPort)"
            jetstream {
              store_dir: "\(storeDirectory)"
            \(syncInterval.map { "  sync_interval: \($0)" } ?? "")
            }
            cluster {
              name: chaos
              listen: "127.0.0.1:\(routePort)"
              routes: [\(routes)]
              no_advertise: true
            }

            """
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    func start() throws {
        child = try Child(name: name, executable: binary, arguments: ["-c", configPath], environment: [:], logPath: logPath)
    }

    var isRunning: Bool { child?.isRunning ?? false }
}

/// One batond node: its config, process and log.
final class BatondNode: @unchecked Sendable {
    let id: String
    let binary: String
    let keeper: String
    let configPath: String
    let logPath: String
    /// The stall proxies this node reaches NATS through, one per server.
    let proxies: [StallProxy]
    /// batond's `--log-level`.
    let logLevel: String
    private(set) var child: Child?
    private(set) var starts = 0

    init(id: String, binary: String, keeper: String, configPath: String, logPath: String, proxies: [StallProxy], logLevel: String) {
        self.logLevel = logLevel
        self.id = id
        self.binary = binary
        self.keeper = keeper
        self.configPath = configPath
        self.logPath = logPath
        self.proxies = proxies
    }

    func start() throws {
        starts += 1
        appendMarker("--- chaos: start #\(starts) at \(monotonicNow())")
        child = try Child(
            name: id, executable: binary, arguments: ["--config", configPath, "--log-level", logLevel],
            environment: ["BATON_FENCE_KEEPER": keeper, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp"],
            logPath: logPath)
    }

    func appendMarker(_ line: String) {
        if let handle = FileHandle(forWritingAtPath: logPath) {
            handle.seekToEndOfFile()
            handle.write(Data((line + "\n").utf8))
            try? handle.close()
        } else {
            _ = FileManager.default.createFile(atPath: logPath, contents: Data((line + "\n").utf8))
        }
    }

    var isRunning: Bool { child?.isRunning ?? false }

    func signal(_ signal: Int32) { child?.signal(signal) }
}

/// The heartbeat backend every app runs: it writes `start`, then a heartbeat every 5 ms, and
/// `stop` on SIGTERM, each line `monotonic-ns kind node epoch pid` to the app's evidence log
/// (O_APPEND: lines of concurrent writers never mix).
let heartbeatBackend = """
    import os, signal, time
    fd = os.open(os.environ["CHAOS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    node, epoch, pid = os.environ.get("BATON_NODE", "?"), os.environ.get("BATON_EPOCH", "0"), os.getpid()
    def w(kind):
        os.write(fd, f"{time.monotonic_ns()} {kind} {node} {epoch} {pid}\\n".encode())
    def term(*_):
        w("stop")
        os._exit(0)
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)
    w("start")
    while True:
        w("hb")
        time.sleep(0.005)

    """

/// Lease timing of every app, derived from the ttl.
struct LeaseSettings {
    var ttl: Duration

    var ttlMilliseconds: Int64 { ttl.components.seconds * 1000 + ttl.components.attoseconds / 1_000_000_000_000_000 }
    var yaml: String {
        let ttl = ttlMilliseconds
        let renew = max(ttl / 4, 50)
        let budget = max(ttl / 4, 50)
        let skew = max(ttl / 8, 0)
        return "{ttl: \(ttl)ms, renew: \(renew)ms, fence_budget: \(budget)ms, skew: \(skew)ms}"
    }
}

func batondConfig(
    node: String, cluster: String, servers: [String], stateDirectory: String, apps: [String], lease: LeaseSettings,
    backend: String, evidenceDirectory: String
) -> String {
    var text = """
        cluster: \(cluster)
        node: {id: \(node), state_dir: "\(stateDirectory)"}
        nats: {servers: [\(servers.map { "\"\($0)\"" }.joined(separator: ", "))], replicas: 3}
        apps:

        """
    for app in apps {
        text += """
              - name: \(app)
                priority: 100
                lease: \(lease.yaml)
                backend:
                  process:
                    command: ["/usr/bin/python3", "\(backend)"]
                    env: {CHAOS_LOG: "\(evidenceDirectory)/\(app).log"}
                    stop_timeout: 2s

            """
    }
    return text
}
