import BatonCore
import Foundation
import Logging
import NATS
import NATSTestSupport
import NIOCore
import Backends
import Control
import Supervisor
import Synchronization
import Testing

/// A node controller that records the commands it gets and reports a status the test sets.
final class FakeNodeController: NodeController {
    enum Call: Hashable, Sendable {
        case stepdown(String)
        case switchover(String, to: String)
        case pause(String)
        case pauseFor(String, Duration)
        case resume(String)
        case snapshot(String)
    }

    let node: String
    private let state: Mutex<(status: NodeStatus, calls: [Call], refuse: String?)>
    /// Runs after a command is recorded (the test's stand-in for what batond would do).
    private let onCommand: Mutex<(@Sendable (Call) async -> Void)?> = Mutex(nil)

    init(node: String, cluster: String = "test", apps: [AppStatus], systemdUnit: String? = "batond.service") {
        self.node = node
        state = Mutex((
            NodeStatus(
                node: node, instance: "i-\(node)", cluster: cluster, version: BatonVersion.current, natsConnected: true, apps: apps,
                systemdUnit: systemdUnit),
            [], nil))
    }

    var calls: [Call] { state.withLock { $0.calls } }

    /// Makes every command answer `ok: false` with `message`.
    func refuse(_ message: String?) { state.withLock { $0.refuse = message } }

    func whenCommanded(_ action: @escaping @Sendable (Call) async -> Void) { onCommand.withLock { $0 = action } }

    /// Changes what the node reports for `app`.
    func update(_ app: String, _ change: (inout AppStatus) -> Void) {
        state.withLock { state in
            if let index = state.status.apps.firstIndex(where: { $0.name == app }) { change(&state.status.apps[index]) }
        }
    }

    func status() async -> NodeStatus { state.withLock { $0.status } }

    private func record(_ call: Call, _ message: String) async -> ControlReply {
        let refusal = state.withLock { state in
            state.calls.append(call)
            return state.refuse
        }
        if let refusal { return ControlReply(ok: false, message: refusal) }
        if let action = onCommand.withLock({ $0 }) { await action(call) }
        return ControlReply(ok: true, message: message)
    }

    func stepdown(app: String) async -> ControlReply { await record(.stepdown(app), "stepping down \(app)") }
    func switchover(app: String, to target: String) async -> ControlReply {
        await record(.switchover(app, to: target), "handing \(app) over to \(target)")
    }
    func pause(app: String) async -> ControlReply { await record(.pause(app), "paused \(app)") }
    func pause(app: String, for duration: Duration) async -> ControlReply {
        var reply = await record(.pauseFor(app, duration), "paused \(app) for \(duration.configString)")
        if reply.ok { reply.pausedUntil = "2026-12-05T10:30:00Z" }
        return reply
    }
    func resume(app: String) async -> ControlReply { await record(.resume(app), "resumed \(app)") }
    func snapshot(app: String) async -> ControlReply {
        var reply = await record(.snapshot(app), "snapshot of \(app) taken")
        if reply.ok {
            reply.snapshot = SnapshotReport(
                id: "snapshot-00000000000000000120-7", bucket: "BATON_test_\(app)_SNAPSHOTS", txid: 120, epoch: 7, bytes: 3 * 1024 * 1024 + 512 * 1024,
                node: node)
        }
        return reply
    }
}

func appStatus(_ name: String, role: AppStatus.Role = .passive, leader: String? = nil, token: UInt64? = nil, event: String? = nil) -> AppStatus {
    AppStatus(
        name: name, role: role, paused: false, priority: 100, leader: leader, token: token, backendRunning: role == .active,
        lastEvent: event)
}

func controlTestLogger() -> Logger {
    var logger = Logger(label: "baton.control-test")
    logger.logLevel = ProcessInfo.processInfo.environment["BATON_TEST_LOG"] != nil ? .debug : .critical
    return logger
}

func connectControlClient(_ server: NATSServerProcess) async throws -> NATSClient {
    var options = NATSClientOptions(servers: [server.url])
    options.requestTimeout = .seconds(2)
    return try await NATSClient.connect(options: options, logger: controlTestLogger())
}

/// Two nodes of cluster `test`, each with its own connection and control service: node-a runs
/// web (active, epoch 7) and api, node-b runs web (passive).
struct TwoNodes: Sendable {
    var a: FakeNodeController
    var b: FakeNodeController
    var clients: [NATSClient]
    var services: [ControlService]

    static func start(_ server: NATSServerProcess) async throws -> TwoNodes {
        var activeWeb = appStatus("web", role: .active, leader: "node-a", token: 7, event: "became active (epoch 7)")
        activeWeb.vips = ["192.0.2.10/24 on eth0"]
        activeWeb.replication = ReplicationStatus(role: .shipping, txid: 120)
        var passiveWeb = appStatus("web", leader: "node-a", token: 7, event: "watching node-a")
        passiveWeb.vips = ["192.0.2.10/24 on eth0"]
        passiveWeb.replication = ReplicationStatus(role: .applying, txid: 118, lagTransactions: 2)
        passiveWeb.replication?.lagBytes = 24_576
        passiveWeb.replication?.lagSeconds = 1.3
        // Three hours and a minute: `snapshot 3h ago` however long the test takes.
        passiveWeb.replication?.lastSnapshotTime = Date().timeIntervalSince1970 - 10_860
        let a = FakeNodeController(node: "node-a", apps: [appStatus("api", role: .active, leader: "node-a", token: 3), activeWeb])
        let b = FakeNodeController(node: "node-b", apps: [passiveWeb], systemdUnit: nil)
        var clients: [NATSClient] = []
        var services: [ControlService] = []
        for controller in [a, b] {
            let client = try await connectControlClient(server)
            clients.append(client)
            services.append(
                try await ControlService.start(client: client, cluster: "test", node: controller.node, controller: controller, logger: controlTestLogger()))
        }
        return TwoNodes(a: a, b: b, clients: clients, services: services)
    }

    func stop() async {
        for service in services { await service.stop() }
        for client in clients { await client.close() }
    }
}

@Suite("Control service: per-node micro service over a real NATS", .serialized)
struct ControlServiceTests {
    @Test(arguments: NATSServerKind.allCases)
    func everyNodeAnswersStatus(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let nodes = try await TwoNodes.start(server)
            let client = try await connectControlClient(server)
            let control = ControlClient(client: client, cluster: "test")
            let replies = try await control.statuses(window: .seconds(3)) { $0.count == 2 }
            #expect(replies.problems.isEmpty)
            #expect(replies.statuses.map(\.node) == ["node-a", "node-b"])
            #expect(replies.statuses == [await nodes.a.status(), await nodes.b.status()])

            // The wire format, as other tools would read it.
            let raw = try await client.request("baton.test.status", timeout: .seconds(2))
            let json = try #require(try JSONSerialization.jsonObject(with: Data(raw.payload.readableBytesView)) as? [String: Any])
            #expect(Set(json.keys).subtracting(["systemd_unit"]) == ["node", "instance", "cluster", "version", "nats_connected", "apps"])
            let apps = try #require(json["apps"] as? [[String: Any]])
            #expect(Set(apps[0].keys).isSuperset(of: ["name", "role", "paused", "priority", "backend_running"]))

            // Discovery: one `baton` instance per node, with the cluster and node in its metadata.
            let infos = try await MicroServiceDiscovery(client: client, replyWindow: .seconds(2)).info(name: "baton", maxReplies: 2)
            #expect(infos.map(\.metadata).sorted { $0["node"]! < $1["node"]! } == [
                ["cluster": "test", "node": "node-a"], ["cluster": "test", "node": "node-b"],
            ])
            #expect(infos.allSatisfy { $0.version == BatonVersion.current })
            let endpoints = try #require(infos.first { $0.metadata["node"] == "node-b" }?.endpoints)
            #expect(endpoints.map(\.subject).sorted() == [
                "baton.test.node.node-b.pause", "baton.test.node.node-b.resume", "baton.test.node.node-b.snapshot", "baton.test.node.node-b.stepdown",
                "baton.test.node.node-b.switchover", "baton.test.status",
            ])
            #expect(endpoints.first { $0.name == "status" }?.queueGroup == "")

            // Nobody in another cluster answers.
            let other = try await ControlClient(client: client, cluster: "other").statuses(window: .milliseconds(300))
            #expect(other.isEmpty)

            await client.close()
            await nodes.stop()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func commandsReachTheNamedNode(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let nodes = try await TwoNodes.start(server)
            let client = try await connectControlClient(server)
            let control = ControlClient(client: client, cluster: "test")

            let stepdown = try await control.send(.stepdown, app: "web", node: "node-a", timeout: .seconds(2))
            #expect(stepdown == ControlReply(ok: true, message: "stepping down web"))
            let switchover = try await control.send(.switchover, app: "web", to: "node-a", node: "node-b", timeout: .seconds(2))
            #expect(switchover == ControlReply(ok: true, message: "handing web over to node-a"))
            _ = try await control.send(.pause, app: "api", node: "node-a", timeout: .seconds(2))
            _ = try await control.send(.resume, app: "web", node: "node-b", timeout: .seconds(2))
            let expiring = try await control.send(.pause, app: "web", pauseFor: .seconds(90), node: "node-a", timeout: .seconds(2))
            #expect(expiring == ControlReply(ok: true, message: "paused web for 90s", pausedUntil: "2026-12-05T10:30:00Z"))
            #expect(nodes.a.calls == [.stepdown("web"), .pause("api"), .pauseFor("web", .seconds(90))])
            #expect(nodes.b.calls == [.switchover("web", to: "node-a"), .resume("web")])

            // The controller's refusal comes back as it is.
            nodes.b.refuse("web is paused")
            #expect(try await control.send(.stepdown, app: "web", node: "node-b", timeout: .seconds(2)) == ControlReply(ok: false, message: "web is paused"))

            // The request body on the wire.
            let raw = try await client.request(
                "baton.test.node.node-a.pause", payload: ByteBuffer(string: #"{"app":"web"}"#), timeout: .seconds(2))
            #expect(String(decoding: raw.payload.readableBytesView, as: UTF8.self).contains(#""ok":true"#))
            let timed = try await client.request(
                "baton.test.node.node-a.pause", payload: ByteBuffer(string: #"{"app":"web","for":"30m"}"#), timeout: .seconds(2))
            #expect(String(decoding: timed.payload.readableBytesView, as: UTF8.self).contains(#""paused_until":"2026-12-05T10:30:00Z""#))
            // A bad "for", or "for" on another command, is refused before the controller sees it.
            let calls = nodes.a.calls.count
            for (command, body, reason) in [
                ("pause", #"{"app":"web","for":"soon"}"#, "pause web: \"for\": invalid duration \"soon\""),
                ("pause", #"{"app":"web","for":"0s"}"#, "pause web: \"for\" must be positive, not 0s"),
                ("resume", #"{"app":"web","for":"1m"}"#, "resume: \"for\" only applies to pause"),
            ] {
                let answer = try await client.request("baton.test.node.node-a.\(command)", payload: ByteBuffer(string: body), timeout: .seconds(2))
                let error = try #require(MicroServiceError(reply: answer), "\(body) was accepted")
                #expect(error.code == 400 && error.description.contains(reason), "\(error)")
            }
            #expect(nodes.a.calls.count == calls)

            // A node that does not exist.
            await #expect(throws: ControlClientError.nodeNotListening(node: "node-z", subject: "baton.test.node.node-z.stepdown")) {
                try await control.send(.stepdown, app: "web", node: "node-z", timeout: .seconds(2))
            }
            await client.close()
            await nodes.stop()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func badRequestsAreMicroErrorsThatSayWhy(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let nodes = try await TwoNodes.start(server)
            let client = try await connectControlClient(server)
            let control = ControlClient(client: client, cluster: "test")

            await #expect(throws: ControlClientError.refused(node: "node-a", code: 404, message: #"node node-a has no app "db" (it runs api, web)"#)) {
                try await control.send(.stepdown, app: "db", node: "node-a", timeout: .seconds(2))
            }
            await #expect(throws: ControlClientError.refused(node: "node-b", code: 404, message: #"node node-b has no app "api" (it runs web)"#)) {
                try await control.send(.pause, app: "api", node: "node-b", timeout: .seconds(2))
            }
            await #expect(throws: ControlClientError.refused(node: "node-a", code: 400, message: #"switchover: "to" is missing: name the node to hand web to"#)) {
                try await control.send(.switchover, app: "web", node: "node-a", timeout: .seconds(2))
            }
            await #expect(throws: ControlClientError.refused(node: "node-a", code: 400, message: #"stepdown: "to" only applies to switchover"#)) {
                try await control.send(.stepdown, app: "web", to: "node-b", node: "node-a", timeout: .seconds(2))
            }
            let cases: [(String, Int, String)] = [
                ("not json", 400, #"stepdown: the request must be JSON such as {"app": "web"}, got "not json""#),
                ("", 400, #"stepdown: the request must be JSON such as {"app": "web"}, got an empty body"#),
                (#"{"app":""}"#, 400, #"stepdown: "app" is empty"#),
            ]
            for (body, code, message) in cases {
                let reply = try await client.request("baton.test.node.node-a.stepdown", payload: ByteBuffer(string: body), timeout: .seconds(2))
                let error = try #require(MicroServiceError(reply: reply))
                #expect(error.code == code)
                #expect(error.description == message)
            }
            #expect(nodes.a.calls.isEmpty)
            #expect(nodes.b.calls.isEmpty)
            await client.close()
            await nodes.stop()
        }
    }

    @Test func invalidNamesAreRefusedBeforeRegistering() async throws {
        let client = try NATSClient(options: NATSClientOptions(servers: ["nats://127.0.0.1:1"]))
        let controller = FakeNodeController(node: "a.b", apps: [])
        await #expect(throws: ControlServiceError.invalidName(kind: "node", "a.b")) {
            try await ControlService.start(client: client, cluster: "test", node: "a.b", controller: controller, logger: controlTestLogger())
        }
        await #expect(throws: ControlServiceError.invalidName(kind: "cluster", "")) {
            try await ControlService.start(client: client, cluster: "", node: "n", controller: controller, logger: controlTestLogger())
        }
        #expect(ControlSubjects(cluster: "demo").command(.switchover, node: "node-1") == "baton.demo.node.node-1.switchover")
        #expect(ControlSubjects(cluster: "demo").status == "baton.demo.status")
    }

    /// Follows a real lease through a switchover done by hand, as batonctl does.
    @Test(arguments: NATSServerKind.allCases)
    func awaitHandoverReportsTheDefiniteOutcome(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let nodes = try await TwoNodes.start(server)
            let client = try await connectControlClient(server)
            let jetStream = JetStream(client: client)
            let store = try await LeaseStore.open(jetStream: jetStream, cluster: "test", app: "web", ttl: .seconds(30), replicas: 1)
            let a = LeaseHolder(node: "node-a", instance: "i-node-a")
            let b = LeaseHolder(node: "node-b", instance: "i-node-b")
            let first = try await store.acquire(as: a)
            let control = ControlClient(client: client, cluster: "test")
            let bound = try await control.leaseStore(app: "web", jetStream: jetStream)
            #expect(try await control.currentHolder(of: bound) == LeaseHolderSnapshot(node: "node-a", token: first))

            // Success: node-a hands over, node-b takes the lease and reports active.
            let watch = try await bound.watch()
            let waiting = Task {
                await control.awaitHandover(app: "web", from: LeaseHolderSnapshot(node: "node-a", token: first), to: "node-b", lease: watch, timeout: .seconds(10))
            }
            try await Task.sleep(for: .milliseconds(200))
            try await store.release(as: a, token: first, revision: first, handoffTo: "node-b")
            let second = try await store.acquire(as: b)
            try await Task.sleep(for: .milliseconds(300))
            nodes.b.update("web") { $0.role = .active; $0.token = second }
            #expect(await waiting.value == .active(app: "web", node: "node-b", token: second))
            #expect(await waiting.value.description == "web is now active on node-b (epoch \(second))")

            // Failure: the lease goes to a third node instead of the target.
            let c = LeaseHolder(node: "node-c", instance: "i-node-c")
            let watch2 = try await bound.watch()
            let waiting2 = Task {
                await control.awaitHandover(app: "web", from: LeaseHolderSnapshot(node: "node-b", token: second), to: "node-a", lease: watch2, timeout: .seconds(10))
            }
            try await Task.sleep(for: .milliseconds(200))
            try await store.release(as: b, token: second, revision: second, handoffTo: "node-a")
            let third = try await store.acquire(as: c)
            #expect(await waiting2.value == .failed("switchover failed: node-c took web (epoch \(third)) instead of node-a"))

            // Timeout: nobody releases.
            let watch3 = try await bound.watch()
            let outcome = await control.awaitHandover(
                app: "web", from: LeaseHolderSnapshot(node: "node-c", token: third), to: nil, lease: watch3, timeout: .milliseconds(400))
            #expect(outcome == .failed("node-c still holds web (epoch \(third)) after 400ms"))

            await #expect(throws: ControlClientError.noLeaseBucket(app: "db", bucket: "baton_test_db")) {
                try await control.leaseStore(app: "db", jetStream: jetStream)
            }
            await client.close()
            await nodes.stop()
        }
    }
}

@Suite("Control service: handover tracking (pure)")
struct ControlServiceHandoverTrackerTests {
    let a = LeaseHolder(node: "node-a", instance: "1")
    let b = LeaseHolder(node: "node-b", instance: "2")
    let c = LeaseHolder(node: "node-c", instance: "3")

    func tracker(to target: String?) -> HandoverTracker {
        HandoverTracker(app: "web", previous: LeaseHolderSnapshot(node: "node-a", token: 10), target: target)
    }

    @Test func renewalsAndTheHandoffWriteOfTheOldLeaseChangeNothing() {
        var tracker = tracker(to: "node-b")
        tracker.observe(.held(a, revision: 10, token: 10))
        tracker.observe(.held(a, revision: 11, token: 10))
        #expect(tracker.verdict == .waiting)
        #expect(!tracker.released)
        tracker.observe(.free(handoffTo: "node-b"))
        #expect(tracker.released)
        #expect(tracker.verdict == .waiting)
        #expect(tracker.timedOut(after: .seconds(5)) == .failed("node-a released web but node-b has not taken it after 5s"))
    }

    @Test func switchoverSucceedsOnceTheTargetReportsActiveWithTheNewToken() {
        var tracker = tracker(to: "node-b")
        tracker.observe(.free(handoffTo: "node-b"))
        tracker.observe(.held(b, revision: 13, token: 13))
        #expect(tracker.verdict == .confirmWith(node: "node-b", token: 13))
        tracker.holderReported(nil, node: "node-b", token: 13)
        tracker.holderReported(appStatus("web", role: .promoting, token: 13, event: "starting backend"), node: "node-b", token: 13)
        #expect(tracker.verdict == .confirmWith(node: "node-b", token: 13))
        #expect(tracker.timedOut(after: .seconds(2))
            == .failed("node-b holds the lease of web (epoch 13) but is not active after 2s: it reports promoting (last event: starting backend)"))
        // A stale report (an older token) does not count.
        tracker.holderReported(appStatus("web", role: .active, token: 10), node: "node-b", token: 13)
        #expect(tracker.verdict == .confirmWith(node: "node-b", token: 13))
        tracker.holderReported(appStatus("web", role: .active, token: 13), node: "node-b", token: 13)
        #expect(tracker.verdict == .finished(.active(app: "web", node: "node-b", token: 13)))
        // Later observations do not change a finished outcome.
        tracker.observe(.free(handoffTo: nil))
        #expect(tracker.verdict == .finished(.active(app: "web", node: "node-b", token: 13)))
    }

    @Test func switchoverFailsWhenAnotherNodeTakesTheAppOrTheTargetGivesItUp() {
        var other = tracker(to: "node-b")
        other.observe(.free(handoffTo: "node-b"))
        other.observe(.held(c, revision: 12, token: 12))
        #expect(other.verdict == .finished(.failed("switchover failed: node-c took web (epoch 12) instead of node-b")))

        var back = tracker(to: "node-b")
        back.observe(.free(handoffTo: "node-b"))
        back.observe(.held(a, revision: 12, token: 12))
        #expect(back.verdict == .finished(.failed("node-a released web and took it back (epoch 12): no other node took it")))

        var gaveUp = tracker(to: "node-b")
        gaveUp.observe(.held(b, revision: 12, token: 12))
        gaveUp.holderReported(appStatus("web", role: .promoting, token: 12, event: "backend failed to start"), node: "node-b", token: 12)
        gaveUp.observe(.free(handoffTo: nil))
        #expect(gaveUp.verdict == .finished(.failed(
            "switchover failed: node-b took the lease of web (epoch 12) but gave it up again (last event: backend failed to start)")))
    }

    @Test func stepdownAcceptsAnyOtherNodeAndKeepsWaitingWhenOneGivesUp() {
        var tracker = tracker(to: nil)
        tracker.observe(.free(handoffTo: nil))
        tracker.observe(.held(b, revision: 12, token: 12))
        #expect(tracker.verdict == .confirmWith(node: "node-b", token: 12))
        tracker.observe(.free(handoffTo: nil))
        #expect(tracker.verdict == .waiting)
        #expect(tracker.timedOut(after: .seconds(3)) == .failed("node-b took the lease of web (epoch 12) but gave it up; no node holds it after 3s"))
        tracker.observe(.held(c, revision: 14, token: 14))
        tracker.holderReported(appStatus("web", role: .active, token: 14), node: "node-c", token: 14)
        #expect(tracker.verdict == .finished(.active(app: "web", node: "node-c", token: 14)))

        var untouched = self.tracker(to: nil)
        untouched.watchFailed("connection closed")
        #expect(untouched.timedOut(after: .seconds(1)) == .failed("node-a still holds web (epoch 10) after 1s (the lease watch failed: connection closed)"))
    }
}
