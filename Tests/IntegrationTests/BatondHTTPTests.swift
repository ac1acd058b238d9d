import Foundation
import Logging
import NATSTestSupport
import TestSupport
import Testing
import WSClient

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

/// An HTTP answer: status code and body.
struct HTTPAnswer: Sendable {
    var status: Int
    var body: String
}

/// One HTTP request (URLSession), without following redirects' surprises: a transport failure
/// throws.
func httpRequest(_ url: String, method: String = "GET", headers: [String: String] = [:], timeout: TimeInterval = 10) async throws -> HTTPAnswer {
    var request = URLRequest(url: URL(string: url)!, timeoutInterval: timeout)
    request.httpMethod = method
    for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
    return try await withCheckedThrowingContinuation { continuation in
        URLSession.shared.dataTask(with: request) { data, response, error in
            if let error {
                continuation.resume(throwing: error)
            } else {
                let status = (response as? HTTPURLResponse)?.statusCode ?? 0
                continuation.resume(returning: HTTPAnswer(status: status, body: String(decoding: data ?? Data(), as: UTF8.self)))
            }
        }.resume()
    }
}

/// Two batond nodes with the HTTP server on: node-1 with a control token file, node-2 without.
/// Apps: `beat` (a sleep), `db` (a writer into a replicated SQLite database, checked by an
/// `exec` health probe) and `vip`, paused from the start (it never acquires, so its VIP on `lo`
/// is never claimed: it gives `baton_vip_present` a series at 0).
struct HTTPCluster: Sendable {
    static let token = "t0ken-\(UInt64.random(in: 0...UInt64.max))"
    var directory: URL
    var nodes: [String: BatondProcess]
    var ports: [String: Int]

    func url(_ node: String, _ path: String) -> String { "http://127.0.0.1:\(ports[node]!)\(path)" }

    func get(_ node: String, _ path: String) async throws -> HTTPAnswer { try await httpRequest(url(node, path)) }

    func post(_ node: String, _ path: String, token: String? = nil) async throws -> HTTPAnswer {
        try await httpRequest(url(node, path), method: "POST", headers: token.map { ["Authorization": "Bearer \($0)"] } ?? [:])
    }

    /// The node where `/apps/beat/active` answers 200, once exactly one does.
    func activeNode(timeout: Duration = .seconds(30)) async throws -> String {
        var found: String?
        try await eventually("one node answering 200 on /apps/beat/active", timeout: timeout, every: .milliseconds(100), retryingErrors: true) {
            var active: [String] = []
            for name in nodes.keys.sorted() where try await get(name, "/apps/beat/active").status == 200 { active.append(name) }
            found = active.count == 1 ? active[0] : nil
            return found != nil
        }
        return found!
    }

    static func run(_ kind: NATSServerKind, prefix: String, _ body: (HTTPCluster) async throws -> Void) async throws {
        let batond = try BatondClusterTests.executable("batond")
        let keeper = try BatondClusterTests.executable("baton-fence-keeper")
        let directory = try makeTemporaryDirectory(prefix: prefix)
        defer { try? FileManager.default.removeItem(at: directory) }
        let tokenFile = directory.appendingPathComponent("http.token").path
        try (token + "\n").write(toFile: tokenFile, atomically: true, encoding: .utf8)
        // The replicated app's backend: a row every 100 ms into its SQLite database (WAL mode).
        let writer = directory.appendingPathComponent("writer.py").path
        try """
            import os, sqlite3, time
            db = sqlite3.connect(os.environ["DB_PATH"], isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS t(x INTEGER)")
            while True:
                db.execute("INSERT INTO t(x) VALUES (1)")
                time.sleep(0.1)
            """.write(toFile: writer, atomically: true, encoding: .utf8)
        try await withNATSServer(kind) { server in
            var cluster = HTTPCluster(directory: directory, nodes: [:], ports: [:])
            defer {
                for node in cluster.nodes.values where node.process.isRunning { kill(node.pid, SIGKILL) }
            }
            for name in ["node-1", "node-2"] {
                let port = try reserveLoopbackPort()
                cluster.ports[name] = port
                let configPath = directory.appendingPathComponent("\(name).yaml").path
                try """
                cluster: itest
                node: {id: \(name), state_dir: \(directory.appendingPathComponent(name).path)}
                nats: {servers: ["nats://127.0.0.1:\(server.port)"]}
                http: {listen: "127.0.0.1:\(port)"\(name == "node-1" ? ", control_token_file: \(tokenFile)" : "")}
                # The checks read once where each app runs: no balancing move under them.
                placement: {balance: false}
                apps:
                  - name: beat
                    lease: {ttl: 2s, renew: 500ms, fence_budget: 400ms, skew: 200ms}
                    backend:
                      process: {command: ["/bin/sleep", "600"], stop_timeout: 2s}
                  - name: db
                    lease: {ttl: 2s, renew: 500ms, fence_budget: 400ms, skew: 200ms}
                    backend:
                      process:
                        command: ["/usr/bin/python3", "\(writer)"]
                        env: {DB_PATH: "\(directory.appendingPathComponent(name).path)/db.sqlite"}
                        stop_timeout: 2s
                    health: {exec: ["/bin/true"], interval: 1s, timeout: 1s}
                    sqlite: {path: \(directory.appendingPathComponent(name).path)/db.sqlite}
                  - name: vip
                    paused: true
                    lease: {ttl: 2s, renew: 500ms, fence_budget: 400ms, skew: 200ms}
                    backend:
                      process: {command: ["/bin/sleep", "600"], stop_timeout: 2s}
                    vip: {address: 192.0.2.99/32, interface: lo}
                """.write(toFile: configPath, atomically: true, encoding: .utf8)
                cluster.nodes[name] = try BatondProcess(
                    node: name, binary: batond, config: configPath, logPath: directory.appendingPathComponent("\(name).log").path,
                    environment: ["BATON_FENCE_KEEPER": keeper])
            }
            do {
                try await body(cluster)
            } catch {
                for name in cluster.nodes.keys.sorted().map({ "\($0).log" }) + ["chromium.log"] {
                    guard let log = try? String(contentsOfFile: directory.appendingPathComponent(name).path, encoding: .utf8) else { continue }
                    FileHandle.standardError.write(Data("--- \(name) tail:\n\(log.split(separator: "\n").suffix(25).joined(separator: "\n"))\n".utf8))
                }
                throw error
            }
            for node in cluster.nodes.values { await node.stop() }
        }
    }
}

/// The repository's root (for examples/).
private let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

@Suite("batond HTTP server: checks, auth, switchover, metrics, live page", .serialized)
struct BatondHTTPTests {
    @Test(arguments: NATSServerKind.allCases)
    func endpointsAuthAndASwitchoverOverHTTP(kind: NATSServerKind) async throws {
        try await HTTPCluster.run(kind, prefix: "baton-http") { cluster in
            let active = try await cluster.activeNode()
            let passive = active == "node-1" ? "node-2" : "node-1"

            // Load-balancer checks: 200 where the role matches, 503 elsewhere, 404 for no app.
            try await eventually("\(passive) answering 200 on /apps/beat/passive", timeout: .seconds(10), every: .milliseconds(100), retryingErrors: true) {
                try await cluster.get(passive, "/apps/beat/passive").status == 200
            }
            #expect(try await cluster.get(passive, "/apps/beat/active").status == 503)
            #expect(try await cluster.get(active, "/apps/beat/passive").status == 503)
            #expect(try await cluster.get(active, "/apps/beat/replica").status == 503)
            let noReplica = try await cluster.get(passive, "/apps/beat/replica?max_lag=10")
            #expect(noReplica.status == 503 && noReplica.body.contains("no sqlite: section"), "\(noReplica)")
            // The replicated app: 200 on /replica only on the node that applies its WAL.
            var dbReplica = ""
            try await eventually("one node answering 200 on /apps/db/replica", timeout: .seconds(30), every: .milliseconds(100), retryingErrors: true) {
                let answers = [try await cluster.get("node-1", "/apps/db/replica?max_lag=1000"), try await cluster.get("node-2", "/apps/db/replica?max_lag=1000")]
                guard answers.map(\.status).sorted() == [200, 503] else { return false }
                dbReplica = answers[0].status == 200 ? "node-1" : "node-2"
                return true
            }
            let dbActive = dbReplica == "node-1" ? "node-2" : "node-1"
            #expect(try await cluster.get(dbActive, "/apps/db/active").status == 200)
            #expect(try await cluster.get(passive, "/apps/beat/replica?max_lag=ten").status == 400)
            #expect(try await cluster.get(active, "/apps/nope/active").status == 404)
            for node in [active, passive] {
                let health = try await cluster.get(node, "/healthz")
                #expect(health.status == 200 && health.body.hasPrefix("ok"), "\(node): \(health)")
            }

            // /status: the cluster's statuses, the schema of `batonctl status --json`.
            try await eventually("/status listing both nodes", timeout: .seconds(10), every: .milliseconds(100), retryingErrors: true) {
                let answer = try await cluster.get(passive, "/status")
                let list = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [[String: Any]]
                return answer.status == 200 && list?.compactMap { $0["node"] as? String } == ["node-1", "node-2"]
                    && list?.allSatisfy { ($0["apps"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == ["beat", "db", "vip"] } == true
            }

            // Control: 401 without a token, 403 with a wrong one, 403 where no token file is set.
            let missing = try await cluster.post("node-1", "/apps/beat/switchover?to=\(passive)")
            #expect(missing.status == 401, "\(missing)")
            let wrong = try await cluster.post("node-1", "/apps/beat/switchover?to=\(passive)", token: "not-the-token")
            #expect(wrong.status == 403, "\(wrong)")
            let off = try await cluster.post("node-2", "/apps/beat/switchover?to=\(passive)", token: HTTPCluster.token)
            #expect(off.status == 403 && off.body.contains("no http.control_token_file"), "\(off)")
            let noTarget = try await cluster.post("node-1", "/apps/beat/switchover", token: HTTPCluster.token)
            #expect(noTarget.status == 400, "\(noTarget)")
            #expect(try await cluster.get(active, "/apps/beat/active").status == 200, "a refused command changed nothing")

            // A switchover over HTTP (sent to node-1 whichever node is active: it goes over NATS
            // to the active node's control service, as batonctl's does).
            let accepted = try await cluster.post("node-1", "/apps/beat/switchover?to=\(passive)", token: HTTPCluster.token)
            #expect(accepted.status == 202 && accepted.body.contains("handing over"), "\(accepted)")
            try await eventually("\(passive) active after the switchover", timeout: .seconds(20), every: .milliseconds(100), retryingErrors: true) {
                try await cluster.get(passive, "/apps/beat/active").status == 200
            }
            #expect(try await cluster.get(active, "/apps/beat/active").status == 503)
            #expect(try await cluster.get(active, "/apps/beat/passive").status == 200)

            // Who asked: the node that carried the command out logs the HTTP client and records
            // the command in the event history.
            let asked = "switchover to \(passive) requested by HTTP client 127.0.0.1 with the control token"
            let activeLog = cluster.directory.appendingPathComponent("\(active).log").path
            try await eventually("the HTTP client in \(active)'s log", timeout: .seconds(10), every: .milliseconds(100), retryingErrors: true) {
                ((try? String(contentsOfFile: activeLog, encoding: .utf8)) ?? "").contains("control command switchover beat to \(passive) requested by HTTP client 127.0.0.1")
            }
            let batonctl = try BatondClusterTests.executable("batonctl")
            let configPath = cluster.directory.appendingPathComponent("node-1.yaml").path
            try await eventually("the command in the event history", timeout: .seconds(10), every: .milliseconds(100), retryingErrors: true) {
                let history = try runCommand(batonctl, ["events", "beat", "--json", "--config", configPath])
                return history.status == 0 && history.output.split(separator: "\n").contains { $0.contains("\"command\"") && $0.contains(asked) }
            }

            // Pause and resume go to every node running the app.
            let paused = try await cluster.post("node-1", "/apps/beat/pause", token: HTTPCluster.token)
            #expect(paused.status == 200 && paused.body.contains("node-1") && paused.body.contains("node-2"), "\(paused)")
            #expect(try await cluster.post("node-1", "/apps/beat/resume", token: HTTPCluster.token).status == 200)

            // Metrics: the handover counted on the old active node, labels app and node.
            try await eventually("the switchover in \(active)'s metrics", timeout: .seconds(10), every: .milliseconds(100), retryingErrors: true) {
                try await cluster.get(active, "/metrics").body.contains(
                    "baton_switchovers_total{app=\"beat\",node=\"\(active)\",kind=\"switchover\",outcome=\"released\"} 1")
            }
            try await eventually("\(passive)'s baton_role showing the app active", timeout: .seconds(10), every: .milliseconds(100), retryingErrors: true) {
                try await cluster.get(passive, "/metrics").body.contains("baton_role{app=\"beat\",node=\"\(passive)\",role=\"active\"} 1.0")
            }
            let metrics = try await cluster.get(passive, "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.body.contains("baton_nats_connected{node=\"\(passive)\",connection=\"main\"} 1"))
            #expect(metrics.body.contains("baton_lease_renew_duration_seconds_count{app=\"beat\",node=\"\(passive)\"}"))

            // Every metric the shipped alert rules and dashboard use is one batond exports.
            try await eventually("replication metrics on \(dbReplica)", timeout: .seconds(10), every: .milliseconds(100), retryingErrors: true) {
                let body = try await cluster.get(dbReplica, "/metrics").body
                return ["baton_replication_last_commit_age_seconds", "baton_replication_lag_seconds", "baton_replication_snapshot_age_seconds"].allSatisfy {
                    body.contains("\($0){app=\"db\",node=\"\(dbReplica)\"}")
                }
            }
            let exported = Self.metricNames(in: metrics.body).union(Self.metricNames(in: try await cluster.get(dbReplica, "/metrics").body))
            for file in ["examples/prometheus/baton-alerts.yml", "examples/prometheus/grafana-dashboard.json"] {
                let text = try String(contentsOf: repositoryRoot.appendingPathComponent(file), encoding: .utf8)
                if file.hasSuffix(".json") { _ = try JSONSerialization.jsonObject(with: Data(text.utf8)) }
                let used = Self.referencedMetrics(in: text)
                #expect(!used.isEmpty, "\(file) names no baton_ metric")
                for name in used { #expect(exported.contains(name), "\(file) uses \(name), which /metrics does not export") }
            }
        }
    }

    /// The live page shows the active node, and after a switchover the new one, without a reload:
    /// a real headless Chromium driven over the DevTools protocol reads the page's DOM while the
    /// test moves the app, and a marker set in the page before the move is still there after it.
    @Test
    func livePageFollowsASwitchoverWithoutAReload() async throws {
        let chromium = try Integration.requireExecutable("chromium", remedy: "`apt-get install chromium` (or run scripts/install-prerequisites)")
        try await HTTPCluster.run(.pypi, prefix: "baton-page") { cluster in
            let active = try await cluster.activeNode()
            let passive = active == "node-1" ? "node-2" : "node-1"
            let profile = cluster.directory.appendingPathComponent("chromium-profile")
            let browser = try Chromium(binary: chromium, profile: profile, url: cluster.url("node-1", "/"))
            defer { browser.stop() }
            let endpoint = try await browser.webSocketURL(timeout: .seconds(30))
            let shown = "document.querySelector('[data-app=\"beat\"] [data-field=\"active-node\"]')?.textContent ?? ''"
            try await CDPSession.run(url: endpoint) { cdp in
                try await cdp.attachToPage()
                try await eventually("the page showing \(active) active", timeout: .seconds(20), every: .milliseconds(100), retryingErrors: true) {
                    try await cdp.evaluate(shown) == active
                }
                #expect(try await cdp.evaluate("document.querySelectorAll('[data-app=\"beat\"] tr[data-node]').length.toString()") == "2")
                // The event history, read from the JetStream stream when the page opened: the
                // app became active before the page was opened.
                let activeEvent = "#events li[data-kind=\"active\"][data-event-app=\"beat\"][data-event-node=\"\(active)\"]"
                try await eventually("the page's history showing beat becoming active on \(active)", timeout: .seconds(20), every: .milliseconds(100), retryingErrors: true) {
                    try await cdp.evaluate("document.querySelectorAll('\(activeEvent)').length.toString()") == "1"
                }
                let switchovers = "document.querySelectorAll('#events li[data-kind=\"switchover\"][data-event-app=\"beat\"]').length.toString()"
                #expect(try await cdp.evaluate(switchovers) == "0")
                // The replicated app's rows carry the newest snapshot's age.
                try await eventually("the page showing db's snapshot age", timeout: .seconds(20), every: .milliseconds(200), retryingErrors: true) {
                    let rows = try await cdp.evaluate("document.querySelectorAll('[data-app=\"db\"] tr[data-node]').length.toString()")
                    let aged = try await cdp.evaluate("String(/snapshot \\d+ s ago/.test(document.querySelector('[data-app=\"db\"]').textContent))")
                    return rows == "2" && aged == "true"
                }
                _ = try await cdp.evaluate("window.batonMarker = 'kept'; 'set'")
                let requested = ContinuousClock.now
                let accepted = try await cluster.post("node-1", "/apps/beat/switchover?to=\(passive)", token: HTTPCluster.token)
                #expect(accepted.status == 202, "\(accepted)")
                try await eventually("the page showing \(passive) active", timeout: .seconds(20), every: .milliseconds(100), retryingErrors: true) {
                    try await cdp.evaluate(shown) == passive
                }
                print("live page: showed \(passive) active \(ContinuousClock.now - requested) after the switchover request (polled every 100 ms)")
                // The switchover's flight record arrives live in the history, once.
                try await eventually("the page's history showing the switchover record", timeout: .seconds(20), every: .milliseconds(100), retryingErrors: true) {
                    try await cdp.evaluate(switchovers) == "1"
                }
                #expect(try await cdp.evaluate("document.querySelectorAll('\(activeEvent)').length.toString()") == "1", "a history event shown twice")
                #expect(try await cdp.evaluate("window.batonMarker ?? 'reloaded'") == "kept", "the page was reloaded")
                #expect(try await cdp.evaluate("document.querySelector('[data-app=\"beat\"] tr[data-node=\"\(active)\"] [data-field=\"role\"]').textContent") == "passive")
            }
        }
    }

    /// `http.tls` serves HTTPS with the configured certificate; a token file that cannot be read
    /// stops batond at start with the file's name.
    @Test
    func httpsAndAnUnreadableTokenFile() async throws {
        let curl = try Integration.requireExecutable("curl", remedy: "`apt-get install curl` (or run scripts/install-prerequisites)")
        let batond = try BatondClusterTests.executable("batond")
        let keeper = try BatondClusterTests.executable("baton-fence-keeper")
        let directory = try makeTemporaryDirectory(prefix: "baton-https")
        defer { try? FileManager.default.removeItem(at: directory) }
        let tls = try TestTLSFiles.generate(in: directory)
        try await withNATSServer(.pypi) { server in
            func config(_ name: String, http: String) throws -> String {
                let path = directory.appendingPathComponent("\(name).yaml").path
                try """
                cluster: itest
                node: {id: \(name), state_dir: \(directory.appendingPathComponent(name).path)}
                nats: {servers: ["nats://127.0.0.1:\(server.port)"]}
                http: \(http)
                apps:
                  - name: beat
                    lease: {ttl: 2s}
                    backend: {process: {command: ["/bin/sleep", "600"]}}
                """.write(toFile: path, atomically: true, encoding: .utf8)
                return path
            }
            // A token file that does not exist: batond refuses to start and names it.
            let missing = directory.appendingPathComponent("no-such.token").path
            let refused = try BatondProcess(
                node: "node-x", binary: batond, config: try config("node-x", http: "{listen: \"127.0.0.1:\(try reserveLoopbackPort())\", control_token_file: \(missing)}"),
                logPath: directory.appendingPathComponent("node-x.log").path, environment: ["BATON_FENCE_KEEPER": keeper])
            try await eventually("batond exiting on an unreadable token file", timeout: .seconds(20), every: .milliseconds(100), retryingErrors: true) { !refused.process.isRunning }
            #expect(refused.process.terminationStatus == 1)
            let refusal = try String(contentsOfFile: refused.logPath, encoding: .utf8)
            #expect(refusal.contains("http.control_token_file: cannot read \(missing)"), "\(refusal.suffix(800))")

            // HTTPS with the test CA's server certificate (SANs 127.0.0.1, localhost).
            let port = try reserveLoopbackPort()
            let node = try BatondProcess(
                node: "node-1", binary: batond,
                config: try config("node-1", http: "{listen: \"127.0.0.1:\(port)\", tls: {cert: \(tls.serverCertificate.path), key: \(tls.serverKey.path)}}"),
                logPath: directory.appendingPathComponent("node-1.log").path, environment: ["BATON_FENCE_KEEPER": keeper])
            defer { if node.process.isRunning { kill(node.pid, SIGKILL) } }
            var answer = ""
            try await eventually("https://127.0.0.1:\(port)/apps/beat/active answering 200", timeout: .seconds(30), every: .milliseconds(100), retryingErrors: true) {
                answer = try runCommand(curl, ["-sS", "--cacert", tls.caCertificate.path, "-o", "/dev/null", "-w", "%{http_code}", "https://127.0.0.1:\(port)/apps/beat/active"]).output
                return answer == "200"
            }
            let plain = try runCommand(curl, ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/healthz"])
            #expect(plain.output != "200", "plain HTTP must not be served on a TLS listener: \(plain.output)")
            let untrusted = try runCommand(curl, ["-sS", "-o", "/dev/null", "https://127.0.0.1:\(port)/healthz"])
            #expect(untrusted.status != 0, "curl without the CA must not trust the certificate")
            await node.stop()
        }
    }

    /// The shipped alert rules pass Prometheus's own checker.
    @Test
    func alertRulesPassPromtool() throws {
        let promtool = try Integration.requireExecutable("promtool", remedy: "`apt-get install prometheus` (or run scripts/install-prerequisites)")
        let rules = repositoryRoot.appendingPathComponent("examples/prometheus/baton-alerts.yml").path
        let result = try runCommand(promtool, ["check", "rules", rules])
        #expect(result.status == 0 && result.output.contains("SUCCESS: 10 rules found"), "\(result.output)")
        // The rules' unit tests (the VIP, lag-seconds, snapshot and dropped-event alerts fire on
        // the series they are meant for, and not on a promoting node's VIP).
        let tests = try runCommand(promtool, ["test", "rules", "baton-alerts.test.yml"], in: repositoryRoot.appendingPathComponent("examples/prometheus"))
        #expect(tests.status == 0 && tests.output.contains("SUCCESS"), "\(tests.output)")
    }

    /// Metric names in a Prometheus text exposition.
    static func metricNames(in exposition: String) -> Set<String> {
        var names = Set<String>()
        for line in exposition.split(separator: "\n") where !line.hasPrefix("#") {
            let name = line.prefix { $0 != "{" && $0 != " " }
            names.insert(String(name))
            for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) { names.insert(String(name.dropLast(suffix.count))) }
        }
        return names
    }

    /// `baton_…` names used in a rules or dashboard file.
    static func referencedMetrics(in text: String) -> Set<String> {
        var names = Set<String>()
        var rest = Substring(text)
        while let range = rest.range(of: "baton_") {
            let before = range.lowerBound > rest.startIndex ? rest[rest.index(before: range.lowerBound)] : " "
            let name = rest[range.lowerBound...].prefix { $0.isLetter || $0.isNumber || $0 == "_" }
            if !(before.isLetter || before.isNumber || before == "_" || before == "-") { names.insert(String(name)) }
            rest = rest[name.endIndex...]
        }
        return names
    }
}

/// A headless Chromium (a phone-sized window) with the DevTools protocol on a loopback port it
/// picks, showing one URL.
final class Chromium: @unchecked Sendable {
    let process = Process()
    let log: URL

    init(binary: String, profile: URL, url: String) throws {
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0", "--remote-allow-origins=*", "--user-data-dir=\(profile.path)", "--window-size=390,844", url,
        ]
        process.standardOutput = FileHandle.nullDevice
        log = profile.deletingLastPathComponent().appendingPathComponent("chromium.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: log)
        try process.run()
    }

    /// The browser's DevTools WebSocket URL, from the `DevTools listening on ws://…` line it
    /// prints once it listens. (Its /json HTTP endpoints answer with a header line Foundation's
    /// URLSession on Linux fails on: "Failed writing header".)
    func webSocketURL(timeout: Duration) async throws -> String {
        var found: String?
        try await eventually("chromium printing its DevTools address", timeout: timeout, every: .milliseconds(100), retryingErrors: true) {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            guard let range = text.range(of: "DevTools listening on ") else { return false }
            found = String(text[range.upperBound...].prefix { !$0.isWhitespace })
            return true
        }
        return found!
    }

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

/// A DevTools protocol session over the browser's WebSocket, attached to its page (flat
/// session mode): requests one at a time.
struct CDPSession {
    let outbound: WebSocketOutboundWriter
    var inbound: WebSocketInboundMessageStream.AsyncIterator
    var nextID = 1
    var pageSession: String?

    /// Sends `method` (to the attached page when there is one) and returns its `result`.
    mutating func call(_ method: String, _ params: [String: Any] = [:]) async throws -> [String: Any] {
        let id = nextID
        nextID += 1
        var request: [String: Any] = ["id": id, "method": method, "params": params]
        if let pageSession { request["sessionId"] = pageSession }
        try await outbound.write(.text(String(decoding: try JSONSerialization.data(withJSONObject: request), as: UTF8.self)))
        while let message = try await inbound.next() {
            guard case .text(let text) = message,
                let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], object["id"] as? Int == id
            else { continue }
            if let error = object["error"] { throw ClusterTestFailure(description: "\(method) failed: \(error)") }
            return object["result"] as? [String: Any] ?? [:]
        }
        throw ClusterTestFailure(description: "the DevTools connection closed")
    }

    /// Attaches to the browser's page target.
    mutating func attachToPage() async throws {
        let targets = try await call("Target.getTargets")["targetInfos"] as? [[String: Any]] ?? []
        guard let page = targets.first(where: { $0["type"] as? String == "page" })?["targetId"] as? String else {
            throw ClusterTestFailure(description: "chromium has no page target: \(targets)")
        }
        let attached = try await call("Target.attachToTarget", ["targetId": page, "flatten": true])
        guard let session = attached["sessionId"] as? String else { throw ClusterTestFailure(description: "no session id in \(attached)") }
        pageSession = session
    }

    /// Evaluates `expression` in the page; its value as a string.
    mutating func evaluate(_ expression: String) async throws -> String {
        let answer = try await call("Runtime.evaluate", ["expression": expression, "returnByValue": true])
        if let exception = answer["exceptionDetails"] { throw ClusterTestFailure(description: "\(expression) threw in the page: \(exception)") }
        return (answer["result"] as? [String: Any])?["value"].map { "\($0)" } ?? ""
    }

    static func run(url: String, _ body: @escaping @Sendable (inout CDPSession) async throws -> Void) async throws {
        let logger = Logger(label: "cdp")
        try await WebSocketClient.connect(url: url, configuration: .init(maxFrameSize: 1 << 22), logger: logger) { inbound, outbound, _ in
            var session = CDPSession(outbound: outbound, inbound: inbound.messages(maxSize: 1 << 22).makeAsyncIterator())
            try await body(&session)
        }
    }
}
