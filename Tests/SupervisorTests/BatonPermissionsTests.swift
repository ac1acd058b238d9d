import BatonCore
import Control
import Foundation
import Logging
import NATS
import NATSTestSupport
import NIOCore
import Permissions
import Replication
import Supervisor
import Testing

/// Whether NATS subject `subject` (no wildcards) is matched by the permission `pattern`.
private func matches(_ pattern: String, _ subject: String) -> Bool {
    let p = pattern.split(separator: ".", omittingEmptySubsequences: false)
    let s = subject.split(separator: ".", omittingEmptySubsequences: false)
    for (index, token) in p.enumerated() {
        if token == ">" { return s.count > index }
        guard index < s.count else { return false }
        if token != "*" && token != s[index] { return false }
    }
    return p.count == s.count
}

private func allows(_ rules: [NATSPermissionRule], _ subject: String) -> Bool {
    rules.contains { matches($0.subject, subject) }
}

@Suite("NATS permission roles: the sets, their rendering and the probe plan")
struct BatonPermissionsTests {
    let apps = ["web", "db"]

    @Test func theNodeRoleAllowsEveryNameTheCodeUses() throws {
        let set = try BatonPermissions(role: .node, cluster: "prod", apps: apps)
        #expect(set.apps == ["db", "web"])
        #expect(set.allowResponses)
        for app in apps {
            let lease = LeaseStore.bucketName(cluster: "prod", app: app)
            let names = ReplicationNames(cluster: "prod", app: app, nodeID: "node-1")
            for subject in [
                "$KV.\(lease).leader", "$JS.API.STREAM.CREATE.KV_\(lease)", "$JS.API.STREAM.PURGE.KV_\(lease)",
                "$JS.API.DIRECT.GET.KV_\(lease).$KV.\(lease).leader", "$JS.API.CONSUMER.CREATE.KV_\(lease)", "$JS.FC.KV_\(lease).c.1.2.3",
                names.transactionSubject, names.snapshotSubject, "$JS.API.STREAM.CREATE.\(names.stream)",
                "$JS.API.CONSUMER.DURABLE.CREATE.\(names.stream).\(names.consumer)", "$JS.API.CONSUMER.MSG.NEXT.\(names.stream).\(names.consumer)",
                "$JS.ACK.\(names.stream).\(names.consumer).1.2.3.4.5", "$O.\(names.snapshotBucket).C.abc", "$O.\(names.snapshotBucket).M.abc",
                "$JS.API.STREAM.PURGE.OBJ_\(names.snapshotBucket)",
            ] {
                #expect(allows(set.publish, subject), "node may not publish to \(subject)")
            }
        }
        for subject in [
            "$KV.\(NodeRegistry.bucketName(cluster: "prod")).node-1", "$KV.\(ReplicationHistoryBucket.name(cluster: "prod")).web.node.node-1",
        ] {
            #expect(allows(set.publish, subject), "node may not publish to \(subject)")
        }
        let control = ControlSubjects(cluster: "prod")
        for subject in [
            control.status, control.command(.switchover, node: "node-1"), "$SRV.PING", "$SRV.INFO.baton", "$SRV.STATS.baton.abc",
            "\(BatonPermissions.inboxPrefix(cluster: "prod", role: .node)).abc.1",
        ] {
            #expect(allows(set.subscribe, subject), "node may not subscribe to \(subject)")
        }
        // It never deletes a stream, and it sends no commands.
        #expect(!set.publish.contains { $0.subject.contains(".STREAM.DELETE.") })
        #expect(!allows(set.publish, control.command(.stepdown, node: "node-1")))
    }

    @Test(arguments: BatonRole.allCases)
    func noRoleReachesAnotherClustersNames(role: BatonRole) throws {
        let mine = try BatonPermissions(role: role, cluster: "a", apps: ["web", "x"])
        for otherRole in BatonRole.allCases {
            // Cluster names that share a prefix with "a", and an app named like a bucket suffix.
            for otherCluster in ["b", "a_x", "aa"] {
                let theirs = try BatonPermissions(role: otherRole, cluster: otherCluster, apps: ["web", "x"])
                for rule in theirs.publish + theirs.subscribe where !rule.subject.hasPrefix("$SRV") {
                    let concrete = PermissionProbe.plan(theirs).first { $0.rule == rule }!.subject
                    #expect(!allows(mine.publish, concrete), "\(role) of a may publish to \(otherRole) of \(otherCluster)'s \(concrete)")
                    #expect(!allows(mine.subscribe, concrete), "\(role) of a may subscribe to \(otherRole) of \(otherCluster)'s \(concrete)")
                }
            }
        }
    }

    @Test func theObserverChangesNothingAndTheOperatorOnlyWhatItsCommandsNeed() throws {
        let observer = try BatonPermissions(role: .observer, cluster: "prod", apps: apps)
        let operatorSet = try BatonPermissions(role: .operator, cluster: "prod", apps: apps)
        let control = ControlSubjects(cluster: "prod")
        #expect(!observer.allowResponses && !operatorSet.allowResponses)
        // On the event history (no node reads it through a consumer) batonctl events makes and
        // removes a durable of its own; on every other stream deleting consumers is the nodes'.
        let eventHistory = EventSubjects.stream(cluster: "prod")
        for rule in observer.publish where !rule.subject.hasSuffix(".\(eventHistory).>") {
            for forbidden in [
                "$KV.", "$O.", "$JS.ACK.", "baton.prod.node.", ".STREAM.CREATE.", ".STREAM.UPDATE.", ".STREAM.PURGE.", ".STREAM.DELETE.", ".wal.",
                ".CONSUMER.DELETE.", ".CONSUMER.DURABLE.",
            ] {
                #expect(!rule.subject.contains(forbidden), "observer may publish to \(rule.subject)")
            }
        }
        #expect(allows(observer.publish, control.status))
        for command in ControlCommand.allCases {
            #expect(!allows(observer.publish, control.command(command, node: "node-1")))
            #expect(allows(operatorSet.publish, control.command(command, node: "node-1")))
        }
        // The operator's writes: a node's drain record (`drain`, `undrain`) and the newest record of
        // an app (`replica promote --force`).
        let writes = operatorSet.publish.filter { $0.subject.hasPrefix("$KV.") || $0.subject.hasPrefix("$O.") || $0.subject.contains(".STREAM.") && !$0.subject.contains(".STREAM.INFO.") && !$0.subject.contains(".STREAM.MSG.GET.") }
        #expect(writes.map(\.subject) == ["$KV.\(DrainRecord.bucket(cluster: "prod")).*", "$KV.\(ReplicationHistoryBucket.name(cluster: "prod")).*.newest"])
        #expect(allows(operatorSet.publish, "$KV.\(DrainRecord.bucket(cluster: "prod")).node-1"))
        #expect(!allows(observer.publish, "$KV.\(DrainRecord.bucket(cluster: "prod")).node-1"))
        #expect(
            !operatorSet.publish.contains { $0.subject.contains(".CONSUMER.DELETE.") && !$0.subject.hasSuffix(".\(eventHistory).>") },
            "batonctl could delete the nodes' consumers")
        #expect(allows(operatorSet.publish, "$KV.\(ReplicationHistoryBucket.name(cluster: "prod")).\(ReplicationHistoryBucket.newestKey(app: "web"))"))
        #expect(!allows(operatorSet.publish, "$KV.\(ReplicationHistoryBucket.name(cluster: "prod")).\(ReplicationHistoryBucket.nodeKey(app: "web", node: "n"))"))
        // batonctl's replies come to its inbox prefix, which both batonctl roles may read.
        for set in [observer, operatorSet] {
            #expect(allows(set.subscribe, "\(BatonPermissions.inboxPrefix(cluster: "prod", role: .operator)).abc.1"))
            #expect(!allows(set.subscribe, "\(BatonPermissions.inboxPrefix(cluster: "prod", role: .node)).abc.1"))
        }
    }

    @Test func badNamesAreRefusedWithTheName() {
        #expect(throws: BatonPermissionsError.self) { try BatonPermissions(role: .node, cluster: "a.b", apps: ["web"]) }
        do {
            _ = try BatonPermissions(role: .node, cluster: "prod", apps: ["we b"])
            Issue.record("an app name with a space was accepted")
        } catch {
            #expect("\(error)".contains("\"we b\""))
        }
    }

    @Test func renderingAsConfAndAsJWTJSON() throws {
        let set = try BatonPermissions(role: .node, cluster: "prod", apps: ["web"])
        let entry = set.confUserEntry(user: "baton-node", password: "$BATON_NODE_PASSWORD")
        #expect(entry.contains("user: \"baton-node\""))
        #expect(entry.contains("password: $BATON_NODE_PASSWORD"))
        #expect(entry.contains("allow_responses: true"))
        for rule in set.publish + set.subscribe { #expect(entry.contains("\"\(rule.subject)\"")) }
        let block = BatonPermissions.confAuthorizationBlock([(set, "u", "\"p\"")])
        #expect(block.hasPrefix("# NATS permissions of Baton"))
        #expect(block.contains("authorization {\n  users = [\n"))

        struct Claim: Decodable {
            struct List: Decodable { var allow: [String] }
            struct Responses: Decodable { var max: Int }
            var pub: List
            var sub: List
            var resp: Responses?
        }
        let claim = try JSONDecoder().decode(Claim.self, from: Data(try set.jwtPermissionsJSON().utf8))
        #expect(claim.pub.allow == set.publish.map(\.subject))
        #expect(claim.sub.allow == set.subscribe.map(\.subject))
        #expect(claim.resp?.max == 1)
        let observer = try JSONDecoder().decode(Claim.self, from: Data(try BatonPermissions(role: .observer, cluster: "prod", apps: ["web"]).jwtPermissionsJSON().utf8))
        #expect(observer.resp == nil)
    }

    @Test func everyProbeIsConcreteUnderItsRuleAndCannotChangeAnything() throws {
        let set = try BatonPermissions(role: .node, cluster: "prod", apps: apps)
        let plan = PermissionProbe.plan(set)
        #expect(plan.count == set.publish.count + set.subscribe.count)
        #expect(plan.first?.operation == .subscribe)
        #expect(plan.first?.subject == "\(BatonPermissions.inboxPrefix(cluster: "prod", role: .node)).>")
        for probe in plan where probe.operation == .publish {
            let tokens = probe.subject.split(separator: ".")
            #expect(!tokens.contains("*") && !tokens.contains(">"), "\(probe.subject)")
            #expect(matches(probe.rule.subject, probe.subject), "\(probe.subject) is not under \(probe.rule.subject)")
            if probe.subject.hasPrefix("$JS.API.") {
                if probe.subject.contains(".CREATE.") || probe.subject.contains(".UPDATE.") {
                    #expect(probe.payload.contains("name\":\"\(PermissionProbe.probeToken)\""), "\(probe.subject): \(probe.payload)")
                }
                if probe.subject.contains(".STREAM.PURGE.") {
                    #expect(probe.payload.contains("\"filter\":\""), "\(probe.subject): \(probe.payload)")
                    #expect(probe.payload.contains(PermissionProbe.probeToken))
                }
            } else {
                #expect(probe.headers["Nats-Expected-Stream"] == PermissionProbe.probeToken, "\(probe.subject)")
            }
        }
    }
}

@Suite("NATS permission probe against a real nats-server", .serialized)
struct PermissionProbeIntegrationTests {
    @Test(arguments: NATSServerKind.allCases)
    func theProbePassesTheNodeRoleChangesNothingAndNamesAMissingRule(kind: NATSServerKind) async throws {
        let full = try BatonPermissions(role: .node, cluster: "probe", apps: ["web"])
        var lacking = full
        let missing = "$JS.API.STREAM.PURGE.KV_\(LeaseStore.bucketName(cluster: "probe", app: "web"))"
        lacking.publish.removeAll { $0.subject == missing }
        #expect(lacking.publish.count == full.publish.count - 1)
        var deaf = full
        deaf.subscribe.removeAll { $0.subject.hasPrefix("_INBOX.") }
        let authorization = """
            authorization {
              users = [
                { user: "admin", password: "admin-pw" }
            \(full.confUserEntry(user: "full", password: "\"full-pw\""))
            \(lacking.confUserEntry(user: "lacking", password: "\"lacking-pw\""))
            \(deaf.confUserEntry(user: "deaf", password: "\"deaf-pw\""))
              ]
            }
            """
        try await withNATSServer(kind, config: NATSServerConfig(extraConfig: authorization)) { server in
            func connect(_ user: String) async throws -> NATSClient {
                var options = NATSClientOptions(servers: [server.url])
                options.authentication = .userPassword(user: user, password: "\(user)-pw")
                options.inboxPrefix = BatonPermissions.inboxPrefix(cluster: "probe", role: .node)
                return try await NATSClient.connect(options: options)
            }
            let logger = Logger(label: "probe-test")
            let client = try await connect("full")
            let jetStream = JetStream(client: client)
            // What a running node has: a lease key and a WAL stream with a record.
            let kv = try await jetStream.createKeyValue(KeyValueConfig(bucket: LeaseStore.bucketName(cluster: "probe", app: "web"), history: 4))
            let revision = try await kv.create("leader", value: ByteBuffer(string: "node-1"))
            let names = ReplicationNames(cluster: "probe", app: "web", nodeID: "node-1")
            _ = try await jetStream.createStream(StreamConfig(name: names.stream, subjects: [names.subjects]))
            _ = try await jetStream.publish(names.transactionSubject, payload: ByteBuffer(string: "record"))

            let denied = try await PermissionProber.firstDenied(PermissionProbe.plan(full), client: client, logger: logger)
            #expect(denied == nil, "\(String(describing: denied))")
            // Nothing changed: the key, the stream, no stream or consumer named after the probe.
            #expect(try await kv.get("leader")?.revision == revision)
            let kvInfo = try await jetStream.streamInfo("KV_\(LeaseStore.bucketName(cluster: "probe", app: "web"))")
            #expect(kvInfo.state.messages == 1 && kvInfo.state.lastSequence == revision)
            let walInfo = try await jetStream.streamInfo(names.stream)
            #expect(walInfo.state.messages == 1 && walInfo.state.lastSequence == 1)
            #expect(kvInfo.state.consumerCount == 0 && walInfo.state.consumerCount == 0)
            await client.close()
            let admin = try await connect("admin")
            do {
                _ = try await JetStream(client: admin).streamInfo(PermissionProbe.probeToken)
                Issue.record("the probe created a stream")
            } catch let error as JetStreamAPIError {
                #expect(error.errorCode == .streamNotFound, "\(error)")
            }
            await admin.close()

            // batond probes the whole node role whatever the server grants.
            let thin = try await connect("lacking")
            let refused = try await PermissionProber.firstDenied(PermissionProbe.plan(full), client: thin, logger: logger)
            #expect(refused?.probe.rule.subject == missing, "\(String(describing: refused))")
            #expect(refused?.description.contains(missing) == true)
            await thin.close()

            // Without its reply inbox, the inbox is what is named (not the first request).
            let deaf = try await connect("deaf")
            let unheard = try await PermissionProber.firstDenied(PermissionProbe.plan(full), client: deaf, logger: logger)
            #expect(unheard?.probe.operation == .subscribe)
            #expect(unheard?.probe.rule.subject == "\(BatonPermissions.inboxPrefix(cluster: "probe", role: .node)).>", "\(String(describing: unheard))")
            await deaf.close()
        }
    }
}

@Suite("batonctl permissions: the built binary", .serialized)
struct BatonctlPermissionsCommandTests {
    @Test(arguments: NATSServerKind.allCases)
    func printsABlockNATSServerAcceptsForTheConfigsApps(kind: NATSServerKind) async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-permissions-cli")
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("baton.yaml")
        try """
            cluster: shop
            node: {id: node-1, state_dir: \(directory.path)}
            nats: {servers: ["nats://127.0.0.1:4222"]}
            apps:
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: ["/bin/true"]}}
              - name: orders
                lease: {ttl: 3s}
                backend: {process: {command: ["/bin/true"]}}
            """.write(to: config, atomically: true, encoding: .utf8)
        let printed = try await runBatonctl(["permissions", "--config", config.path, "--role", "node", "--role", "operator", "--role", "observer"])
        try #require(printed.status == 0, "\(printed)")
        let text = printed.stdout
        for expected in [
            "user: \"baton-node\"", "password: $BATON_NODE_PASSWORD", "user: \"baton-operator\"", "user: \"baton-observer\"",
            "\"$KV.baton_shop_web.>\"", "\"$KV.baton_shop_orders.>\"", "\"baton.shop.node.*.switchover\"", "allow_responses: true",
        ] {
            #expect(text.contains(expected), "\(expected) missing")
        }
        #expect(text.components(separatedBy: "allow_responses").count == 2, "only the node answers requests")
        // A real nats-server runs with the block as printed (the password variables defined
        // in the file here; in production they come from its environment), and enforces it.
        let variables = "BATON_NODE_PASSWORD: \"n\"\nBATON_OPERATOR_PASSWORD: \"o\"\nBATON_OBSERVER_PASSWORD: \"b\"\n"
        try await withNATSServer(kind, config: NATSServerConfig(extraConfig: variables + text)) { server in
            var options = NATSClientOptions(servers: [server.url])
            options.authentication = .userPassword(user: "baton-observer", password: "b")
            options.inboxPrefix = BatonPermissions.inboxPrefix(cluster: "shop", role: .observer)
            let client = try await NATSClient.connect(options: options)
            do {
                _ = try await client.request(ControlSubjects(cluster: "shop").status, timeout: .seconds(2))
                Issue.record("nobody answers status here")
            } catch let error as NATSError {
                #expect(error.code == .noResponders, "the observer may ask for status: \(error)")
            }
            do {
                _ = try await client.request(ControlSubjects(cluster: "shop").command(.pause, node: "node-1"), timeout: .seconds(2))
                Issue.record("the observer could send pause")
            } catch let error as NATSError {
                #expect(error.code == .permissionViolation && error.message.contains("baton.shop.node.node-1.pause"), "\(error)")
            }
            await client.close()
        }

        // One role with a literal password, and the JWT claim.
        let literal = try await runBatonctl(["permissions", "--cluster", "shop", "--app", "web", "--role", "observer", "--user", "eve", "--password", "s3cret"])
        #expect(literal.stdout.contains("user: \"eve\"") && literal.stdout.contains("password: \"s3cret\""), "\(literal)")
        let json = try await runBatonctl(["permissions", "--cluster", "shop", "--app", "web", "--role", "node", "--format", "json"])
        #expect(json.status == 0 && json.stdout.contains("\"pub\"") && json.stdout.contains("\"resp\""), "\(json)")

        // What is missing is named.
        let noApps = try await runBatonctl(["permissions", "--cluster", "shop", "--role", "node"], environment: ["BATON_CONFIG": ""])
        #expect(noApps.status == 1 && noApps.stderr.contains("no apps"), "\(noApps)")
        let noRole = try await runBatonctl(["permissions", "--cluster", "shop", "--app", "web"])
        #expect(noRole.status == 64 && noRole.stderr.contains("name a role"), "\(noRole)")
        let twoJSON = try await runBatonctl(["permissions", "--cluster", "shop", "--app", "web", "--role", "node", "--role", "observer", "--format", "json"])
        #expect(twoJSON.status == 64, "\(twoJSON)")
    }
}

@Suite("NATS permission roles in a user JWT (operator mode)", .serialized)
struct BatonPermissionsJWTTests {
    /// A user of `setup`'s account whose JWT carries `role`'s permissions as
    /// `batonctl permissions --format json` prints them.
    private static func user(_ role: BatonRole, of setup: OperatorModeSetup) throws -> NATSCredentials {
        let json = try BatonPermissions(role: role, cluster: "jwt", apps: ["web"]).jwtPermissionsJSON()
        let claim = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        var members: [(String, String)] = []
        for key in ["pub", "sub", "resp"] {
            guard let value = claim[key] else { continue }
            members.append((key, String(decoding: try JSONSerialization.data(withJSONObject: value, options: [.withoutEscapingSlashes]), as: UTF8.self)))
        }
        members += [("subs", "-1"), ("data", "-1"), ("payload", "-1"), ("type", JWTMinter.json("user")), ("version", "2")]
        let key = NKeyPair.generate(.user)
        let jwt = JWTMinter.encode(subject: key.publicKey, name: "baton-\(role.rawValue)", nats: members, signer: setup.accountKey)
        return NATSCredentials(jwt: jwt, nkey: key)
    }

    @Test(arguments: NATSServerKind.allCases)
    func theJSONClaimGrantsTheRoleAndNoMore(kind: NATSServerKind) async throws {
        let setup = OperatorModeSetup(jetStream: true)
        let node = try Self.user(.node, of: setup)
        let observer = try Self.user(.observer, of: setup)
        let nodePlan = PermissionProbe.plan(try BatonPermissions(role: .node, cluster: "jwt", apps: ["web"]))
        let logger = Logger(label: "jwt-test")
        // The node role's JWT is about 6 KiB per app: more than the default 4 KiB control line
        // its CONNECT must fit in (the README says so).
        try await withNATSServer(kind, config: NATSServerConfig(extraConfig: setup.serverConfig() + "max_control_line: 65536\n")) { server in
            func connect(_ credentials: NATSCredentials, _ role: BatonRole) async throws -> NATSClient {
                var options = NATSClientOptions(servers: [server.url])
                options.authentication = .credentials(credentials)
                options.inboxPrefix = BatonPermissions.inboxPrefix(cluster: "jwt", role: role)
                return try await NATSClient.connect(options: options)
            }
            let nodeClient = try await connect(node, .node)
            let denied = try await PermissionProber.firstDenied(nodePlan, client: nodeClient, logger: logger)
            #expect(denied == nil, "\(String(describing: denied))")
            // It works for real: the node creates its lease bucket and writes the key.
            let kv = try await JetStream(client: nodeClient).createKeyValue(KeyValueConfig(bucket: LeaseStore.bucketName(cluster: "jwt", app: "web")))
            _ = try await kv.create("leader", value: ByteBuffer(string: "node-1"))
            await nodeClient.close()

            let observerClient = try await connect(observer, .observer)
            let refused = try await PermissionProber.firstDenied(nodePlan, client: observerClient, logger: logger)
            #expect(refused?.probe.rule.subject == "\(BatonPermissions.inboxPrefix(cluster: "jwt", role: .node)).>", "\(String(describing: refused))")
            // The observer reads the lease but cannot write it or send a command.
            let seen = try await JetStream(client: observerClient).keyValue(LeaseStore.bucketName(cluster: "jwt", app: "web")).get("leader")
            #expect(seen.map { String(buffer: $0.value) } == "node-1")
            do {
                _ = try await JetStream(client: observerClient).publish("$KV.\(LeaseStore.bucketName(cluster: "jwt", app: "web")).leader")
                Issue.record("the observer wrote the lease key")
            } catch let error as NATSError {
                #expect(error.code == .permissionViolation, "\(error)")
            }
            do {
                _ = try await observerClient.request(ControlSubjects(cluster: "jwt").command(.stepdown, node: "node-1"), timeout: .seconds(2))
                Issue.record("the observer sent stepdown")
            } catch let error as NATSError {
                #expect(error.code == .permissionViolation, "\(error)")
            }
            await observerClient.close()
        }
    }
}

@Suite("Who asked: the requester in control commands")
struct ControlRequesterTests {
    @Test func describesWhatIsKnownAndTravelsInTheRequest() throws {
        let full = ControlRequester(natsUser: "alice", client: "batonctl", host: "ops-1", localUser: "root", pid: 42)
        #expect(full.description == "nats user alice (batonctl, root@ops-1, pid 42)")
        #expect(ControlRequester(credentials: "/etc/baton/ops.creds", host: "ops-2").description == "credentials /etc/baton/ops.creds (ops-2)")
        #expect(ControlRequester().description == "unauthenticated or unnamed NATS user")
        let overHTTP = ControlRequester(client: "batond's HTTP API on node-1", httpClient: "10.0.0.7")
        #expect(overHTTP.description == "HTTP client 10.0.0.7 with the control token (through batond's HTTP API on node-1)")
        let decoded = try JSONDecoder().decode(ControlRequester.self, from: JSONEncoder().encode(overHTTP))
        #expect(decoded == overHTTP)

        let request = ControlRequest(app: "web", to: "node-2", requester: full)
        let json = String(decoding: try JSONEncoder().encode(request), as: UTF8.self)
        #expect(json.contains("\"nats_user\":\"alice\"") && json.contains("\"local_user\":\"root\""), "\(json)")
        #expect(try JSONDecoder().decode(ControlRequest.self, from: Data(json.utf8)) == request)
        // A request of an older batonctl has no requester.
        let old = try JSONDecoder().decode(ControlRequest.self, from: Data(#"{"app":"web"}"#.utf8))
        #expect(old.requester == nil && old.app == "web")
    }
}

extension BatonctlPermissionsCommandTests {
    @Test func aConfigOfAnotherClusterIsNeverMixedIn() async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-permissions-other")
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("baton.yaml")
        try """
            cluster: shop
            node: {id: node-1, state_dir: \(directory.path)}
            nats: {servers: ["nats://127.0.0.1:4222"]}
            apps:
              - name: web
                lease: {ttl: 3s}
                backend: {process: {command: ["/bin/true"]}}
            """.write(to: config, atomically: true, encoding: .utf8)
        let mismatch = try await runBatonctl(["permissions", "--config", config.path, "--cluster", "bank", "--role", "node"])
        #expect(mismatch.status == 1 && mismatch.stderr.contains("--cluster bank is not the cluster of \(config.path) (shop)"), "\(mismatch)")
        let fromEnvironment = try await runBatonctl(["permissions", "--role", "observer"], environment: ["BATON_CONFIG": config.path])
        #expect(fromEnvironment.status == 0 && fromEnvironment.stdout.contains("\"$JS.API.STREAM.INFO.KV_baton_shop_web\""), "\(fromEnvironment)")
    }
}
