import FaultProxy
import Foundation
import NATS

#if canImport(Glibc)
import Glibc
#endif

/// One nats-server of the 3-server JetStream cluster: on loopback, or in a namespace of its own
/// (`launcher` = `ip netns exec NS`, listening on `host`).
final class NATSServerNode: @unchecked Sendable {
    let name: String
    /// The address clients reach it on (127.0.0.1, or its namespace's address).
    let host: String
    let clientPort: Int
    let binary: String
    let configPath: String
    let logPath: String
    /// Prefix of the command line (empty on loopback).
    let launcher: [String]
    /// Its namespace (nil on loopback).
    let namespace: String?
    private(set) var child: Child?

    init(
        name: String, host: String = "127.0.0.1", clientPort: Int, routePort: Int, peerRoutes: [String], binary: String, directory: String,
        syncInterval: String?, launcher: [String] = [], namespace: String? = nil
    ) throws {
        self.name = name
        self.host = host
        self.launcher = launcher
        self.namespace = namespace
        self.clientPort = clientPort
        self.binary = binary
        self.configPath = "\(directory)/\(name).conf"
        self.logPath = "\(directory)/\(name).log"
        let storeDirectory = "\(directory)/\(name)-js"
        try FileManager.default.createDirectory(atPath: storeDirectory, withIntermediateDirectories: true)
        let routes = peerRoutes.map { "\"nats-route://\($0)\"" }.joined(separator: ", ")
        // no_advertise: clients must keep to the addresses they were given (the stall proxies),
        // not learn the servers' own ports from connect_urls.
        let text = """
            server_name: \(name)
            listen: "\(host):\(clientPort)"
            jetstream {
              store_dir: "\(storeDirectory)"
            \(syncInterval.map { "  sync_interval: \($0)" } ?? "")
            }
            cluster {
              name: chaos
              listen: "\(host):\(routePort)"
              routes: [\(routes)]
              no_advertise: true
            }

            """
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    func start() throws {
        let command = launcher + [binary, "-c", configPath]
        child = try Child(name: name, executable: command[0], arguments: Array(command.dropFirst()), environment: [:], logPath: logPath)
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
    /// Prefix of the command line (empty on loopback; `ip netns exec NS` in a namespace).
    let launcher: [String]
    /// Its namespace (nil on loopback).
    let namespace: String?
    private(set) var child: Child?
    private(set) var starts = 0

    init(
        id: String, binary: String, keeper: String, configPath: String, logPath: String, proxies: [StallProxy], logLevel: String,
        launcher: [String] = [], namespace: String? = nil
    ) {
        self.logLevel = logLevel
        self.launcher = launcher
        self.namespace = namespace
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
        let command = launcher + [binary, "--config", configPath, "--log-level", logLevel]
        child = try Child(
            name: id, executable: command[0], arguments: Array(command.dropFirst()),
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

/// One app of a node's config: a heartbeat backend, or the SQLite writer with its database at
/// `sqlitePath` (per node); `vip` adds a VIP on `eth0` (netns runs).
struct AppSpec {
    var name: String
    var script: String
    var env: [String: String]
    var vip: String?
    var sqlitePath: String?
}

func batondConfig(node: String, cluster: String, servers: [String], stateDirectory: String, apps: [AppSpec], lease: LeaseSettings) -> String {
    var text = """
        cluster: \(cluster)
        node: {id: \(node), state_dir: "\(stateDirectory)"}
        nats: {servers: [\(servers.map { "\"\($0)\"" }.joined(separator: ", "))], replicas: 3}
        apps:

        """
    for app in apps {
        let env = app.env.sorted { $0.key < $1.key }.map { "\($0.key): \"\($0.value)\"" }.joined(separator: ", ")
        text += """
              - name: \(app.name)
                priority: 100
                lease: \(lease.yaml)
                backend:
                  process:
                    command: ["/usr/bin/python3", "\(app.script)"]
                    env: {\(env)}
                    stop_timeout: 2s

            """
        if let vip = app.vip { text += "    vip: {address: \(vip)/24, interface: eth0}\n" }
        if let path = app.sqlitePath { text += "    sqlite: {path: \"\(path)\"}\n" }
    }
    return text
}

/// The SQLite app's backend: opens its database (WAL mode, as Baton requires), runs `PRAGMA
/// integrity_check` and writes one inventory line (`mono-ns pid node epoch integrity
/// epoch:pid:count:max,...` — rows present per writer), then commits a row `(epoch, pid, seq)`
/// every other heartbeat (10 ms) and appends each acknowledged commit (`mono-ns epoch node seq
/// pid`, after the commit returned) to the ack log; heartbeats and `start`/`stop` go to the app's
/// evidence log as for the other apps. SIGTERM: finish the current commit, close, `stop`.
let sqliteBackend = """
    import os, signal, sqlite3, time
    fd = os.open(os.environ["CHAOS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    acks = os.open(os.environ["CHAOS_ACKS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    node, epoch, pid = os.environ.get("BATON_NODE", "?"), os.environ.get("BATON_EPOCH", "0"), os.getpid()
    stopping = False
    def w(kind):
        os.write(fd, f"{time.monotonic_ns()} {kind} {node} {epoch} {pid}\\n".encode())
    def term(*_):
        global stopping
        stopping = True
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)
    db = sqlite3.connect(os.environ["CHAOS_DB"], timeout=10, isolation_level=None)
    db.execute("PRAGMA busy_timeout=10000")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, epoch INTEGER, pid INTEGER, seq INTEGER, node TEXT)")
    try:
        integrity = ";".join(r[0] for r in db.execute("PRAGMA integrity_check")).replace(" ", "_") or "empty"
    except sqlite3.Error as error:
        integrity = "error:" + str(error).replace(" ", "_")
    rows = db.execute("SELECT epoch, pid, count(*), max(seq) FROM t GROUP BY epoch, pid").fetchall()
    inventory = ",".join(f"{e}:{p}:{c}:{m}" for e, p, c, m in rows) or "-"
    with open(os.environ["CHAOS_INVENTORY"], "a") as f:
        f.write(f"{time.monotonic_ns()} {pid} {node} {epoch} {integrity} {inventory}\\n")
    w("start")
    seq, beat = 0, 0
    while not stopping:
        beat += 1
        if beat % 2 == 0:
            try:
                db.execute("INSERT INTO t(epoch, pid, seq, node) VALUES (?, ?, ?, ?)", (int(epoch), pid, seq + 1, node))
                seq += 1
                os.write(acks, f"{time.monotonic_ns()} {epoch} {node} {seq} {pid}\\n".encode())
            except sqlite3.Error as error:
                os.write(acks, f"{time.monotonic_ns()} error {node} {str(error).replace(' ', '_')} {pid}\\n".encode())
        w("hb")
        time.sleep(0.005)
    db.close()
    w("stop")
    os._exit(0)

    """
