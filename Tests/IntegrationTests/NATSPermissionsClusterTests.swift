import Foundation
import NATS
import NATSTestSupport
import NetnsLab
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A NATS user of one Baton role, with the permissions `batonctl permissions` prints for it.
struct PermissionUser: Sendable {
    var role: String
    var cluster: String
    var user: String
    var password: String

    /// `--user U --password P`, for batonctl.
    var batonctlArguments: [String] { ["--user", user, "--password", password] }
    /// The `nats:` keys of a batond config that connect as this user.
    var configKeys: String { "user: \(user), password: \(password)" }

    /// A nats-server `authorization` block holding `users`, each entry made by the built
    /// `batonctl permissions --format user` for the user's role, cluster and `apps`.
    static func authorization(_ users: [PermissionUser], apps: [String]) async throws -> String {
        let batonctl = try BatondClusterTests.executable("batonctl")
        var entries: [String] = []
        for user in users {
            let result = try await runLabCommand(
                batonctl,
                ["permissions", "--format", "user", "--role", user.role, "--cluster", user.cluster, "--user", user.user, "--password", user.password]
                    + apps.flatMap { ["--app", $0] })
            guard result.status == 0 else { throw ClusterTestFailure(description: "batonctl permissions failed: \(result)") }
            entries.append(result.stdout)
        }
        return "authorization {\n  users = [\n\(entries.joined(separator: "\n"))\n  ]\n}\n"
    }
}

/// Baton under least privilege: every NATS user has only what `batonctl permissions` grants its role.
@Suite("NATS permissions: batond under the node role, batonctl under operator and observer", .serialized)
struct NATSPermissionsClusterTests {
    static let cluster = "perm"
    static let node = PermissionUser(role: "node", cluster: cluster, user: "perm-node", password: "node-secret")
    static let operatorUser = PermissionUser(role: "operator", cluster: cluster, user: "perm-operator", password: "operator-secret")
    static let observer = PermissionUser(role: "observer", cluster: cluster, user: "perm-observer", password: "observer-secret")
    /// The node role of another cluster on the same account.
    static let otherNode = PermissionUser(role: "node", cluster: "other", user: "other-node", password: "other-secret")

    private static func config(node: String, port: Int, directory: URL, backend: String, heartbeatLog: String, user: PermissionUser) -> String {
        """
        cluster: \(cluster)
        node: {id: \(node), state_dir: \(directory.appendingPathComponent(node).path)}
        nats: {servers: ["nats://127.0.0.1:\(port)"], \(user.configKeys)}
        apps:
          - name: beat
            priority: 100
            lease: \(BatondClusterTests.defaultLease)
            backend:
              process:
                command: ["/usr/bin/python3", "\(backend)"]
                env: {HEARTBEAT_LOG: "\(heartbeatLog)"}
                stop_timeout: 2s
        """
    }

    /// Waits until an epoch other than those in `excluding` writes heartbeats.
    private func waitForNewRun(_ path: String, excluding: Set<UInt64>, timeout: Duration = .seconds(20)) async throws -> Heartbeats.Run {
        var found: Heartbeats.Run?
        try await eventually("a new backend; heartbeats: \(Heartbeats(path: path).runs)", timeout: timeout, every: .milliseconds(20)) {
            found = Heartbeats(path: path).runs.last { !excluding.contains($0.epoch) && monotonicNow() - $0.last < 100_000_000 }
            return found != nil
        }
        guard let found else { throw ClusterTestFailure(description: "a new backend ran, then none was found; heartbeats: \(Heartbeats(path: path).runs)") }
        return found
    }

    @Test(arguments: NATSServerKind.allCases)
    func electionSwitchoverAndFailoverUnderTheNodeRoleAndBatonctlUnderOperatorAndObserver(kind: NATSServerKind) async throws {
        let batond = try BatondClusterTests.executable("batond")
        let keeper = try BatondClusterTests.executable("baton-fence-keeper")
        let batonctl = try BatondClusterTests.executable("batonctl")
        let directory = try makeTemporaryDirectory(prefix: "baton-permissions")
        defer { try? FileManager.default.removeItem(at: directory) }
        let backend = directory.appendingPathComponent("beat.py").path
        try heartbeatBackend.write(toFile: backend, atomically: true, encoding: .utf8)
        let heartbeatLog = directory.appendingPathComponent("heartbeats.log").path
        let authorization = try await PermissionUser.authorization([Self.node, Self.operatorUser, Self.observer, Self.otherNode], apps: ["beat"])

        try await withNATSServer(kind, config: NATSServerConfig(extraConfig: authorization)) { server in
            var nodes: [String: BatondProcess] = [:]
            defer {
                for node in nodes.values where node.process.isRunning { kill(node.pid, SIGCONT); kill(node.pid, SIGKILL) }
            }
            func start(_ name: String, as user: PermissionUser) throws -> BatondProcess {
                let configPath = directory.appendingPathComponent("\(name).yaml").path
                try Self.config(node: name, port: server.port, directory: directory, backend: backend, heartbeatLog: heartbeatLog, user: user)
                    .write(toFile: configPath, atomically: true, encoding: .utf8)
                return try BatondProcess(
                    node: name, binary: batond, config: configPath, logPath: directory.appendingPathComponent("\(name).log").path,
                    environment: ["BATON_FENCE_KEEPER": keeper])
            }
            func ctl(_ arguments: [String], as user: PermissionUser) async throws -> (result: LabCommandResult, took: Duration) {
                let started = ContinuousClock.now
                let result = try await runLabCommand(batonctl, arguments + ["--nats", server.url, "--cluster", Self.cluster] + user.batonctlArguments)
                return (result, ContinuousClock.now - started)
            }
            for name in ["node-1", "node-2", "node-3"] { nodes[name] = try start(name, as: Self.node) }

            // Election under the node role: exactly one node runs the app.
            let first = try await waitForNewRun(heartbeatLog, excluding: [])
            // The other two may still be starting (permission probe, registry) on a loaded machine.
            var status = try await ctl(["status"], as: Self.observer)
            try await eventually("all three nodes answering the status: \(status.result)", timeout: .seconds(20), every: .milliseconds(250)) {
                status = try await ctl(["status"], as: Self.observer)
                return status.result.stdout.contains("3 nodes answered")
            }
            #expect(status.result.status == 0, "\(status.result)")
            #expect(status.result.stdout.contains("beat: active on \(first.node)"), "\(status.result)")

            // The observer: every changing command is refused at once, naming the denied subject.
            let other = ["node-1", "node-2", "node-3"].first { $0 != first.node }!
            // (`snapshot` and `replica promote` are refused to it in SQLiteReplicationClusterTests.)
            for command in [["switchover", "beat", "--to", other], ["stepdown", "beat"], ["pause", "beat"], ["resume", "beat"]] {
                let refused = try await ctl(command, as: Self.observer)
                let output = refused.result.stdout + refused.result.stderr
                #expect(refused.result.status != 0, "observer \(command): \(refused.result)")
                #expect(output.contains("permission denied"), "observer \(command): \(refused.result)")
                #expect(output.contains("publish to \"baton.\(Self.cluster).node.node-"), "observer \(command): \(refused.result)")
                #expect(refused.took < .seconds(5), "observer \(command) took \(refused.took): a timeout, not a refusal")
            }
            // ... and nothing changed: the same backend still runs, nothing is paused.
            #expect(Heartbeats(path: heartbeatLog).runs.map(\.epoch) == [first.epoch])
            let json = try await ctl(["status", "--json"], as: Self.observer)
            #expect(json.result.status == 0, "\(json.result)")
            let compact = json.result.stdout.filter { !$0.isWhitespace }
            #expect(compact.contains("\"paused\":false") && !compact.contains("\"paused\":true"), "\(json.result.stdout)")

            // The operator: every command works.
            let pause = try await ctl(["pause", "beat"], as: Self.operatorUser)
            #expect(pause.result.status == 0, "\(pause.result)")
            let paused = try await ctl(["status", "--json"], as: Self.operatorUser)
            #expect(!paused.result.stdout.filter { !$0.isWhitespace }.contains("\"paused\":false"), "\(paused.result.stdout)")
            let resume = try await ctl(["resume", "beat"], as: Self.operatorUser)
            #expect(resume.result.status == 0, "\(resume.result)")
            let switchover = try await ctl(["switchover", "beat", "--to", other], as: Self.operatorUser)
            #expect(switchover.result.status == 0, "\(switchover.result)")
            let second = try await waitForNewRun(heartbeatLog, excluding: [first.epoch])
            #expect(second.node == other)
            // A node gives the lease back with a cooldown of 2 ttl.
            try await Task.sleep(for: .seconds(4))
            let stepdown = try await ctl(["stepdown", "beat"], as: Self.operatorUser)
            #expect(stepdown.result.status == 0, "\(stepdown.result)")
            let third = try await waitForNewRun(heartbeatLog, excluding: [first.epoch, second.epoch])
            #expect(third.node != second.node)
            let ownLog = (try? String(contentsOfFile: nodes[second.node]!.logPath, encoding: .utf8)) ?? ""
            #expect(ownLog.contains("control command stepdown beat requested by nats user \(Self.operatorUser.user) (batonctl"), "who asked is not in \(second.node)'s log")

            // The event history reads under both batonctl roles, and holds the command with who
            // asked; doctor runs under the observer (exit 0 or 1 by its findings, never a failure
            // to read what the role may read).
            for user in [Self.observer, Self.operatorUser] {
                var history: LabCommandResult?
                try await eventually(
                    "\(user.role): batonctl events showing the stepdown command with who asked: \(String(describing: history))",
                    timeout: .seconds(10), every: .milliseconds(200)
                ) {
                    history = try await ctl(["events", "beat", "--json"], as: user).result
                    return history?.status == 0 && history?.stdout.contains("stepdown requested by nats user \(Self.operatorUser.user)") == true
                }
            }
            let doctor = try await ctl(["doctor", "--json"], as: Self.observer)
            #expect(doctor.result.status == 0 || doctor.result.status == 1, "observer doctor: \(doctor.result)")
            // batonctl nodes lists the registry and the node directory, which batond wrote under
            // the node role: every node is there under the observer.
            let listed = try await ctl(["nodes", "--json"], as: Self.observer)
            #expect(listed.result.status == 0, "observer nodes: \(listed.result)")
            for node in nodes.keys { #expect(listed.result.stdout.contains("\"node\" : \"\(node)\""), "observer nodes: \(listed.result)") }
            #expect(!listed.result.stdout.contains("permission"), "observer nodes: \(listed.result)")
            // The directory was written under the node role too.
            for node in nodes.values {
                let log = (try? String(contentsOfFile: node.logPath, encoding: .utf8)) ?? ""
                #expect(!log.contains("could not write the node directory entry"), "\(node.node) could not write the node directory")
            }
            #expect(doctor.result.stdout.contains("\"severity\""), "observer doctor: \(doctor.result)")

            // Drain records: the operator writes and deletes one (of a node not running, so that
            // nothing moves here); the observer may not write one.
            let observerDrain = try await ctl(["drain", "node-9"], as: Self.observer)
            #expect(observerDrain.result.status != 0, "observer drain: \(observerDrain.result)")
            let drain = try await ctl(["drain", "node-9", "--for", "1h"], as: Self.operatorUser)
            #expect(drain.result.status == 0 && drain.result.stdout.contains("node node-9 is drained by"), "operator drain: \(drain.result)")
            let undrain = try await ctl(["undrain", "node-9"], as: Self.operatorUser)
            #expect(undrain.result.status == 0 && undrain.result.stdout.contains("node node-9 is no longer drained"), "operator undrain: \(undrain.result)")

            // VIP-less failover under the node role: kill -9 of the active batond.
            nodes[third.node]!.signal(SIGKILL)
            let fourth = try await waitForNewRun(heartbeatLog, excluding: [first.epoch, second.epoch, third.epoch], timeout: .seconds(10))
            #expect(fourth.node != third.node)

            // A node of another cluster on the same account cannot read or write this one's buckets,
            // nor reach its nodes; its own names are open to it.
            var options = NATSClientOptions(servers: [server.url])
            options.authentication = .userPassword(user: Self.otherNode.user, password: Self.otherNode.password)
            options.inboxPrefix = "_INBOX.baton.other.node"
            let stranger = try await NATSClient.connect(options: options)
            let jetStream = JetStream(client: stranger)
            let bucket = "baton_\(Self.cluster)_beat"
            func expectDenied(_ what: String, _ attempt: () async throws -> Void) async {
                do {
                    try await attempt()
                    Issue.record("a node of cluster other could \(what) of cluster \(Self.cluster)")
                } catch let error as NATSError {
                    #expect(error.code == .permissionViolation, "\(what): \(error)")
                } catch {
                    Issue.record("\(what): \(error), not a permission violation")
                }
            }
            await expectDenied("read the lease bucket") { _ = try await jetStream.keyValue(bucket) }
            await expectDenied("get the lease key") { _ = try await jetStream.getLastMessage(stream: "KV_\(bucket)", subject: "$KV.\(bucket).leader") }
            await expectDenied("write the lease key") { _ = try await jetStream.publish("$KV.\(bucket).leader") }
            await expectDenied("ask its nodes for status") { _ = try await stranger.request("baton.\(Self.cluster).status", timeout: .seconds(2)) }
            do {
                _ = try await jetStream.keyValue("baton_other_beat")
                Issue.record("cluster other has no lease bucket yet")
            } catch let error as NATSError {
                Issue.record("its own bucket is denied to a node of cluster other: \(error)")
            } catch {
                // Not found: allowed, and absent.
            }
            await stranger.close()

            // batond with too few permissions (the observer's) refuses to start, exit status 4,
            // naming the first subject it could not use.
            let thin = try start("node-4", as: Self.observer)
            try await eventually("batond with the observer's permissions exiting", timeout: .seconds(20)) { !thin.process.isRunning }
            #expect(thin.process.terminationStatus == 4)
            let log = (try? String(contentsOfFile: thin.logPath, encoding: .utf8)) ?? ""
            #expect(log.contains("lacks a permission batond needs: subscribe to \"_INBOX.baton.\(Self.cluster).node.>\""), "\(log.suffix(2000))")
            #expect(Heartbeats(path: heartbeatLog).runs.allSatisfy { $0.node != "node-4" })

            for node in nodes.values { await node.stop() }
            Heartbeats(path: heartbeatLog).checkSafety()
            let violations = (try? String(contentsOf: server.logFile, encoding: .utf8))?.split(separator: "\n").filter {
                $0.contains("Violation") && $0.contains(Self.node.user)
            } ?? []
            #expect(violations.isEmpty, "the node role was denied something: \(violations.prefix(5))")
        }
    }
}
