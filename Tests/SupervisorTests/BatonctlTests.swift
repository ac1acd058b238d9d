import BatonCore
import Foundation
import NATS
import NATSTestSupport
import Backends
import Control
import Supervisor
import Synchronization
import Testing

/// What one run of the built `batonctl` printed and how it exited.
struct CommandResult: Sendable, CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String

    var description: String { "exit \(status)\n--- stdout:\n\(stdout)--- stderr:\n\(stderr)---" }
}

/// The `batonctl` built next to this test executable (`<build dir>/debug/batonctl`), or
/// `BATONCTL` when set.
func batonctlPath() throws -> String {
    if let explicit = ProcessInfo.processInfo.environment["BATONCTL"] { return explicit }
    let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    var directory = executable.deletingLastPathComponent()
    // On macOS the tests run inside an .xctest bundle; step out of it.
    while directory.path.contains(".xctest") { directory.deleteLastPathComponent() }
    let candidate = directory.appendingPathComponent("batonctl").path
    if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    try Integration.missingPrerequisite(
        MissingPrerequisite(
            name: "batonctl", reason: "no built batonctl at \(candidate)",
            remedy: "build it first: swift build --build-tests (the same --scratch-path as the tests)"))
}

/// Runs batonctl with `arguments`.
///
/// The blocking reads and the wait run on threads of their own: neither the Swift concurrency
/// pool nor Dispatch's global queues (which back that pool on Linux and are only as wide as the
/// machine has cores) may be blocked, since they serve the in-process nodes batonctl talks to.
func runBatonctl(_ arguments: [String], environment: [String: String] = [:]) async throws -> CommandResult {
    try await runProgram(try batonctlPath(), arguments, environment: environment)
}

/// Runs the program at `path` with `arguments` (as ``runBatonctl(_:environment:)`` does).
func runProgram(_ path: String, _ arguments: [String], environment: [String: String] = [:]) async throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    if !environment.isEmpty {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    process.standardInput = FileHandle.nullDevice
    try process.run()
    async let outputData = readToEnd(output.fileHandleForReading)
    async let errorData = readToEnd(errors.fileHandleForReading)
    let (stdout, stderr) = await (outputData, errorData)
    let status: Int32 = await withCheckedContinuation { continuation in
        Thread.detachNewThread {
            process.waitUntilExit()
            continuation.resume(returning: process.terminationStatus)
        }
    }
    return CommandResult(status: status, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
}

/// Reads `handle` to its end on a thread of its own.
private func readToEnd(_ handle: FileHandle) async -> Data {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(returning: handle.readDataToEndOfFile())
        }
    }
}

/// A fencing token set from another task.
final class TokenBox: Sendable {
    private let token = Mutex<UInt64>(0)
    var value: UInt64 { token.withLock { $0 } }
    func set(_ value: UInt64) { token.withLock { $0 = value } }
}

@Suite("Batonctl: the built binary", .serialized)
struct BatonctlTests {
    @Test func validateAcceptsAGoodConfig() async throws {
        let directory = try makeTemporaryDirectory(prefix: "batonctl-validate")
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("good.yaml").path
        try """
            cluster: demo
            node: {id: node-1}
            nats: {servers: ["nats://127.0.0.1:4222"]}
            apps:
              - name: web
                lease: {ttl: 3s, renew: 1s}
                backend:
                  process: {command: ["/bin/true"]}
            """.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try await runBatonctl(["validate", file])
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout == "\(file): OK (1 app)\n")
        #expect(result.stderr == "")
    }

    @Test func validatePrintsEveryErrorWithItsPlace() async throws {
        let directory = try makeTemporaryDirectory(prefix: "batonctl-validate")
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("broken.yaml").path
        try """
            cluster: demo
            node:
              id: Node_1
            nats:
              servers: ["nats://127.0.0.1:4222"]
            apps:
              - name: web
                lease: {ttl: 3x}
                backend:
                  process: {command: []}
                colour: blue
            """.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try await runBatonctl(["validate", file])
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout == "")
        #expect(result.stderr == """
            \(file):3:7: node.id: invalid node id "Node_1": use one or more of a-z, 0-9 and "-"
            \(file):8:18: apps[0].lease.ttl: invalid duration "3x": unknown unit "x" (use h, m, s, ms, us or ns)
            \(file):10:26: apps[0].backend.process.command: must not be empty: give the program and its arguments, like ["/usr/bin/myapp", "--port", "8080"]
            \(file):11:5: apps[0].colour: unknown key "colour"; expected one of name, priority, paused, lease, backend, health, vip, sqlite, placement, prefer_node, failback, sticky, instances, hooks
            \(file): 4 errors

            """)

        let missing = try await runBatonctl(["validate", directory.appendingPathComponent("nope.yaml").path])
        #expect(missing.status == 1)
        #expect(missing.stderr.hasSuffix("nope.yaml: 1 error\n"), "\(missing)")
    }

    @Test func helpListsEveryCommandAndUsageErrorsAreRefused() async throws {
        let help = try await runBatonctl(["--help"])
        #expect(help.status == 0)
        for command in ["status", "stepdown", "switchover", "pause", "resume", "snapshot", "replica", "validate", "permissions", "events", "doctor", "drain", "undrain"] {
            let listed = help.stdout.components(separatedBy: "\n").filter { $0.hasPrefix("  \(command) ") }
            #expect(listed.count == 1, "\(command) listed \(listed.count) times in:\n\(help.stdout)")
        }
        let replicaHelp = try await runBatonctl(["replica", "--help"])
        #expect(replicaHelp.stdout.contains("  status ") && replicaHelp.stdout.contains("  promote "), "\(replicaHelp.stdout)")
        let promoteHelp = try await runBatonctl(["replica", "promote", "--help"])
        #expect(promoteHelp.stdout.contains("--force"), "\(promoteHelp.stdout)")
        let noNode = try await runBatonctl(["replica", "promote", "web"])
        #expect(noNode.status == 64, "\(noNode)")
        let version = try await runBatonctl(["--version"])
        #expect(version.stdout == "\(BatonVersion.current)\n")
        let noTarget = try await runBatonctl(["switchover", "web"])
        #expect(noTarget.status == 64)
        #expect(noTarget.stderr.contains("Missing expected argument '--to <node>'"), "\(noTarget)")
        let badWait = try await runBatonctl(["status", "--wait", "soon"])
        #expect(badWait.status == 64)
        let twoAuths = try await runBatonctl(["status", "--token", "t", "--creds", "/x.creds"])
        #expect(twoAuths.stderr.contains("--creds, --user/--password and --token are alternatives"), "\(twoAuths)")
    }

    @Test(arguments: NATSServerKind.allCases)
    func statusPrintsOneTablePerAppAndJSON(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let nodes = try await TwoNodes.start(server)
            let common = ["--nats", server.url, "--cluster", "test", "--wait", "3s"]
            let table = try await runBatonctl(["status"] + common)
            #expect(table.status == 0, "\(table)")
            #expect(table.stdout == """
                cluster test: 2 nodes answered (node-a, node-b)

                api: active on node-a (epoch 3)
                  NODE    ROLE    PAUSED  BACKEND  PRIORITY  LAST EVENT
                  node-a  active  no      running  100       -

                web: active on node-a (epoch 7)
                  vip: 192.0.2.10/24 on eth0
                  NODE    ROLE     PAUSED  BACKEND  PRIORITY  REPLICA                                                       LAST EVENT
                  node-a  active   no      running  100       shipping txid 120                                             became active (epoch 7)
                  node-b  passive  no      stopped  100       applied txid 118, 2 behind (24.0 KiB, 1.3s), snapshot 3h ago  watching node-a

                note: batond does not run under systemd on node-b: units it manages there are not bound to it

                """)

            // The same, with the servers and the cluster taken from a batond config.
            let directory = try makeTemporaryDirectory(prefix: "batonctl-status")
            defer { try? FileManager.default.removeItem(at: directory) }
            let config = directory.appendingPathComponent("baton.yaml").path
            try """
                cluster: test
                node: {id: node-x}
                nats: {servers: ["\(server.url)"]}
                apps: []
                """.write(toFile: config, atomically: true, encoding: .utf8)
            let fromConfig = try await runBatonctl(["status", "--config", config, "--wait", "3s"])
            #expect(fromConfig.status == 0, "\(fromConfig)")
            #expect(fromConfig.stdout == table.stdout)

            let json = try await runBatonctl(["status", "--json", "web"] + common)
            #expect(json.status == 0, "\(json)")
            let statuses = try JSONDecoder().decode([NodeStatus].self, from: Data(json.stdout.utf8))
            #expect(statuses.map(\.node) == ["node-a", "node-b"])
            #expect(statuses.allSatisfy { $0.apps.map(\.name) == ["web"] })

            let unknown = try await runBatonctl(["status", "db"] + common)
            #expect(unknown.status == 1)
            #expect(unknown.stderr == """
                Error: no node runs app "db" in cluster test (nodes that answered: node-a, node-b; their apps: api, web)

                """)
            await nodes.stop()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func saysSoWhenNoNodeAnswers(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            for command in [["status"], ["stepdown", "web"], ["pause", "web"], ["switchover", "web", "--to", "node-b"]] {
                let result = try await runBatonctl(command + ["--nats", server.url, "--cluster", "test", "--wait", "300ms"])
                #expect(result.status == 1)
                #expect(result.stdout == "")
                #expect(result.stderr == """
                    Error: no baton node answered on baton.test.status (is batond running and connected to \(server.url)?)

                    """)
            }
        }
        // No server at all.
        let port = try reserveLoopbackPort()
        let unreachable = try await runBatonctl(["status", "--nats", "nats://127.0.0.1:\(port)"])
        #expect(unreachable.status == 1)
        #expect(unreachable.stderr.hasPrefix("Error: cannot connect to NATS at nats://127.0.0.1:\(port): "), "\(unreachable)")
    }

    /// Without --config, batonctl takes the servers and the cluster from $BATON_CONFIG (as an
    /// operator on a node expects), says so with -v, and options still override it.
    @Test func theConfigComesFromBatonConfigWhenNoneIsGiven() async throws {
        try await withNATSServer(.pypi) { server in
            let directory = try makeTemporaryDirectory(prefix: "batonctl-env-config")
            defer { try? FileManager.default.removeItem(at: directory) }
            let file = directory.appendingPathComponent("baton.yaml").path
            try """
                cluster: fromenv
                node: {id: node-1}
                nats: {servers: ["\(server.url)"]}
                apps:
                  - name: web
                    lease: {ttl: 3s, renew: 1s}
                    backend:
                      process: {command: ["/bin/true"]}
                """.write(toFile: file, atomically: true, encoding: .utf8)
            let status = try await runBatonctl(["status", "--wait", "300ms", "-v"], environment: ["BATON_CONFIG": file])
            #expect(status.status == 1)
            #expect(status.stderr.contains("batonctl: config \(file) ($BATON_CONFIG); servers \(server.url); cluster fromenv\n"), "\(status)")
            #expect(status.stderr.contains("Error: no baton node answered on baton.fromenv.status (is batond running and connected to \(server.url)?)"), "\(status)")
            let overridden = try await runBatonctl(["status", "--wait", "300ms", "--cluster", "other"], environment: ["BATON_CONFIG": file])
            #expect(overridden.stderr == "Error: no baton node answered on baton.other.status (is batond running and connected to \(server.url)?)\n", "\(overridden)")
            let broken = try await runBatonctl(["status"], environment: ["BATON_CONFIG": directory.appendingPathComponent("missing.yaml").path])
            #expect(broken.status == 1)
            #expect(broken.stderr.hasPrefix("Error: cannot use $BATON_CONFIG \(directory.appendingPathComponent("missing.yaml").path):"), "\(broken)")
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func snapshotGoesToTheActiveNodeAndPrintsIdTxidAndSize(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let nodes = try await TwoNodes.start(server)
            let common = ["--nats", server.url, "--cluster", "test", "--wait", "2s"]
            let taken = try await runBatonctl(["snapshot", "web"] + common)
            #expect(taken.status == 0, "\(taken)")
            #expect(taken.stdout == """
                snapshot snapshot-00000000000000000120-7 of web on node-a (epoch 7)
                  txid:   120
                  size:   3670016 bytes (3.5 MiB)
                  bucket: BATON_test_web_SNAPSHOTS

                """)
            #expect(nodes.a.calls == [.snapshot("web")])
            #expect(nodes.b.calls.isEmpty)

            let json = try await runBatonctl(["snapshot", "web", "--json"] + common)
            #expect(json.status == 0, "\(json)")
            let report = try JSONDecoder().decode(SnapshotReport.self, from: Data(json.stdout.utf8))
            #expect(report.id == "snapshot-00000000000000000120-7" && report.txid == 120 && report.bytes == 3_670_016 && report.node == "node-a")

            // No sqlite section: said before any node is asked.
            let noDatabase = try await runBatonctl(["snapshot", "api"] + common)
            #expect(noDatabase.status == 1)
            #expect(noDatabase.stderr == "Error: api has no sqlite section on any node (node-a): there is no database to snapshot\n")
            // The active node refuses (the snapshot failed there): its reason is shown.
            nodes.a.refuse("snapshot of web on node-a failed: the app's writer kept the write lock; cannot take a snapshot")
            let refused = try await runBatonctl(["snapshot", "web"] + common)
            #expect(refused.status == 1)
            #expect(
                refused.stderr
                    == "Error: node-a did not take a snapshot of web: snapshot of web on node-a failed: the app's writer kept the write lock; cannot take a snapshot\n")
            nodes.a.refuse(nil)
            // No active node.
            nodes.a.update("web") { $0.role = .passive }
            let noActive = try await runBatonctl(["snapshot", "web"] + common)
            #expect(noActive.status == 1)
            #expect(noActive.stderr == "Error: no node reports web active (node-a passive, node-b passive)\n", "\(noActive)")
            #expect(nodes.a.calls.count == 3 && nodes.b.calls.isEmpty)
            await nodes.stop()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func pauseAndResumeGoToEveryNodeOfTheApp(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let nodes = try await TwoNodes.start(server)
            let common = ["--nats", server.url, "--cluster", "test", "--wait", "2s"]
            let pause = try await runBatonctl(["pause", "web"] + common)
            #expect(pause.status == 0, "\(pause)")
            #expect(pause.stdout == "node-a: paused web\nnode-b: paused web\n")
            let api = try await runBatonctl(["resume", "api"] + common)
            #expect(api.stdout == "node-a: resumed api\n", "\(api)")
            #expect(nodes.a.calls == [.pause("web"), .resume("api")])
            #expect(nodes.b.calls == [.pause("web")])

            nodes.b.refuse("cannot pause web while demoting")
            let refused = try await runBatonctl(["pause", "web"] + common)
            #expect(refused.status == 1)
            #expect(refused.stdout == "node-a: paused web\nnode-b: FAILED: cannot pause web while demoting\n")
            #expect(refused.stderr == "Error: pause of web failed on node-b (1 of 2 nodes succeeded)\n")
            await nodes.stop()
        }
    }

    /// The fake active node hands its lease over the way batond does (handoff write, delete),
    /// the target takes it and reports active; batonctl must report exactly that.
    @Test(arguments: NATSServerKind.allCases)
    func switchoverAndStepdownWaitForTheDefiniteOutcome(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let nodes = try await TwoNodes.start(server)
            let client = try await connectControlClient(server)
            let store = try await LeaseStore.open(jetStream: JetStream(client: client), cluster: "test", app: "web", ttl: .seconds(30), replicas: 1)
            let a = LeaseHolder(node: "node-a", instance: "i-node-a")
            let b = LeaseHolder(node: "node-b", instance: "i-node-b")
            let first = try await store.acquire(as: a)
            nodes.a.update("web") { $0.token = first }
            let newToken = TokenBox()
            nodes.a.whenCommanded { call in
                // Like batond: answer first, then act.
                Task {
                    try await Task.sleep(for: .milliseconds(100))
                    let handoff: String? = if case .switchover(_, let target) = call { target } else { nil }
                    try await store.release(as: a, token: first, revision: first, handoffTo: handoff)
                    nodes.a.update("web") { $0.role = .passive; $0.backendRunning = false }
                    let token = try await store.acquire(as: b)
                    newToken.set(token)
                    try await Task.sleep(for: .milliseconds(200))
                    nodes.b.update("web") { $0.role = .active; $0.token = token; $0.backendRunning = true }
                }
            }
            let common = ["--nats", server.url, "--cluster", "test", "--timeout", "10s", "--wait", "2s"]

            let unknownTarget = try await runBatonctl(["switchover", "web", "--to", "node-z"] + common)
            #expect(unknownTarget.status == 1)
            #expect(unknownTarget.stderr == "Error: node-z is not a node of app web (nodes that run it: node-a, node-b)\n")

            nodes.a.refuse("web is paused")
            let refused = try await runBatonctl(["switchover", "web", "--to", "node-b"] + common)
            #expect(refused.status == 1)
            #expect(refused.stdout == "node-a: web is paused\n")
            #expect(refused.stderr == "Error: node-a refused to switch over web: web is paused\n")
            nodes.a.refuse(nil)

            let switchover = try await runBatonctl(["switchover", "web", "--to", "node-b"] + common)
            let token = newToken.value
            #expect(switchover.status == 0, "\(switchover)")
            #expect(switchover.stdout == "node-a: handing web over to node-b\nweb is now active on node-b (epoch \(token))\n")
            #expect(token > first)

            let again = try await runBatonctl(["switchover", "web", "--to", "node-b"] + common)
            #expect(again.stdout == "web is already active on node-b (epoch \(token))\n", "\(again)")

            // Stepdown: node-b is active now; make it give up without anyone taking over.
            let stepdown = try await runBatonctl(["stepdown", "web", "--nats", server.url, "--cluster", "test", "--timeout", "1s"])
            #expect(stepdown.status == 1)
            #expect(stepdown.stdout == "node-b: stepping down web\n")
            #expect(stepdown.stderr == "Error: node-b still holds web (epoch \(token)) after 1s\n")
            #expect(nodes.b.calls == [.stepdown("web")])

            // Now node-b releases and node-a takes over again.
            let last = TokenBox()
            nodes.b.whenCommanded { _ in
                Task {
                    try await store.release(as: b, token: token, revision: token, handoffTo: nil)
                    nodes.b.update("web") { $0.role = .passive; $0.backendRunning = false }
                    let again = try await store.acquire(as: a)
                    last.set(again)
                    nodes.a.update("web") { $0.role = .active; $0.token = again; $0.backendRunning = true }
                }
            }
            let handedBack = try await runBatonctl(["stepdown", "web"] + common)
            #expect(handedBack.status == 0, "\(handedBack)")
            #expect(handedBack.stdout == "node-b: stepping down web\nweb is now active on node-a (epoch \(last.value))\n")

            await client.close()
            await nodes.stop()
        }
    }
}
