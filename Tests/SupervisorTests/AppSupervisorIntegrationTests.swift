import BatonCore
import Foundation
import Logging
import NATS
import NATSTestSupport
import NIOConcurrencyHelpers
import Backends
import Control
import Supervisor
import TestSupport
import Testing

/// Who ran the backend when, on one shared monotonic clock (all nodes live in this process).
final class ActivityLog: Sendable {
    struct Interval: Sendable, CustomStringConvertible {
        var node: String
        var token: UInt64
        var start: MonotonicInstant
        var end: MonotonicInstant?
        var fenced = false
        var description: String { "\(node)#\(token) [\(start) – \(end.map { "\($0)" } ?? "running")\(fenced ? " fenced" : "")]" }
    }

    private let intervals = NIOLockedValueBox<[Interval]>([])

    func started(_ node: String, token: UInt64) {
        intervals.withLockedValue { $0.append(Interval(node: node, token: token, start: MonotonicClock.now())) }
    }

    func stopped(_ node: String, fenced: Bool) {
        intervals.withLockedValue { list in
            if let index = list.lastIndex(where: { $0.node == node && $0.end == nil }) {
                list[index].end = MonotonicClock.now()
                list[index].fenced = fenced
            }
        }
    }

    var all: [Interval] { intervals.withLockedValue { $0 } }

    /// Active intervals never overlap and tokens only grow.
    func checkSafety(sourceLocation: SourceLocation = #_sourceLocation) {
        let list = all.sorted { $0.start < $1.start }
        for (earlier, later) in zip(list, list.dropFirst()) {
            #expect(later.token > earlier.token, "tokens must grow: \(list)", sourceLocation: sourceLocation)
            if let end = earlier.end {
                #expect(end <= later.start, "overlap: \(earlier) and \(later)", sourceLocation: sourceLocation)
            } else {
                Issue.record("\(earlier) still running when \(later) started", sourceLocation: sourceLocation)
            }
        }
    }
}

/// A backend that only records, with an in-process stand-in for the fence keeper: when an armed
/// deadline passes without a re-arm, it "kills" the backend.
final class RecordingBackend: AppBackend {
    let node: String
    let log: ActivityLog
    private let running = NIOLockedValueBox<Bool>(false)
    /// When set, stop and fence leave the backend running and say it may still run (a unit
    /// whose stop hangs): only the keeper stand-in ends it, at the armed deadline.
    let stubborn = NIOLockedValueBox<Bool>(false)
    private let keeper = NIOLockedValueBox<Task<Void, Never>?>(nil)
    private let failureStream: AsyncStream<AppBackendFailure>
    let failureContinuation: AsyncStream<AppBackendFailure>.Continuation
    /// When set, ``waitUntilHealthy(token:)`` waits until its task is cancelled.
    let hangsInHealthWait: Bool
    /// `entered` and `cancelled` of each health wait, when ``hangsInHealthWait``.
    let healthWaits: AsyncStream<String>
    private let healthWaitsContinuation: AsyncStream<String>.Continuation

    init(node: String, log: ActivityLog, hangsInHealthWait: Bool = false) {
        self.node = node
        self.log = log
        self.hangsInHealthWait = hangsInHealthWait
        (failureStream, failureContinuation) = AsyncStream.makeStream(of: AppBackendFailure.self)
        (healthWaits, healthWaitsContinuation) = AsyncStream.makeStream(of: String.self)
    }

    func start(token: UInt64) async throws {
        running.withLockedValue { $0 = true }
        log.started(node, token: token)
    }

    func waitUntilHealthy(token: UInt64) async throws {
        guard hangsInHealthWait else { return }
        healthWaitsContinuation.yield("entered")
        // Ends only when cancelled (Task.sleep throws then).
        do {
            try await Task.sleep(for: .seconds(3600))
        } catch {
            healthWaitsContinuation.yield("cancelled")
            throw error
        }
    }

    func armFence(token: UInt64, deadline: MonotonicInstant) async {
        let task = Task { [weak self] in
            let wait = deadline - MonotonicClock.now()
            if wait > .zero { try? await Task.sleep(for: wait) }
            if Task.isCancelled { return }
            self?.kill(fenced: true)
        }
        keeper.withLockedValue { $0?.cancel(); $0 = task }
    }

    func disarmFence() async {
        keeper.withLockedValue { $0?.cancel(); $0 = nil }
    }

    func stop() async -> StopOutcome {
        if stubborn.withLockedValue({ $0 }) { return .unconfirmed("the backend did not stop (test)") }
        kill(fenced: false)
        return .confirmed
    }

    func fence() async -> StopOutcome {
        if stubborn.withLockedValue({ $0 }) { return .unconfirmed("the backend did not die (test)") }
        kill(fenced: true)
        return .confirmed
    }

    private func kill(fenced: Bool) {
        let wasRunning = running.withLockedValue { value in
            defer { value = false }
            return value
        }
        if wasRunning { log.stopped(node, fenced: fenced) }
    }

    func failures() -> AsyncStream<AppBackendFailure> { failureStream }

    func dispose() async { failureContinuation.finish() }
}

/// One simulated node: its own NATS connection, lease store, backend and supervisor.
struct TestNode {
    var name: String
    var client: NATSClient
    var supervisor: AppSupervisor
    var backend: RecordingBackend
    var task: Task<Void, Never>
}

let fastTiming = LeaseTiming(ttl: .seconds(2), renew: .milliseconds(500), fenceBudget: .milliseconds(400), skew: .milliseconds(200))

func startNode(
    _ name: String, server: NATSServerProcess, log: ActivityLog, priorityHoldback: Duration = .zero, hangsInHealthWait: Bool = false
) async throws -> TestNode {
    var options = NATSClientOptions(servers: [server.url])
    options.reconnectWait = .milliseconds(20)
    options.maxReconnectWait = .milliseconds(200)
    options.requestTimeout = .seconds(2)
    options.connectTimeout = .seconds(10)
    var logger = Logger(label: "baton.\(name)")
    logger.logLevel = ProcessInfo.processInfo.environment["BATON_TEST_LOG"] != nil ? .debug : .critical
    let client = try await NATSClient.connect(options: options, logger: logger)
    let store = try await LeaseStore.open(jetStream: JetStream(client: client, timeout: .seconds(2)), cluster: "test", app: "web", ttl: fastTiming.ttl, replicas: 1)
    let backend = RecordingBackend(node: name, log: log, hangsInHealthWait: hangsInHealthWait)
    let configuration = AppLifecycle.Configuration(
        node: name, instance: NUID.next(), timing: fastTiming, hasHealthCheck: hangsInHealthWait,
        stepTimeout: hangsInHealthWait ? .seconds(600) : .seconds(2), stopTimeout: .seconds(2), priorityHoldback: priorityHoldback)
    let supervisor = AppSupervisor(app: "web", configuration: configuration, store: store, backend: backend, client: client, logger: logger)
    let task = Task { await supervisor.run() }
    return TestNode(name: name, client: client, supervisor: supervisor, backend: backend, task: task)
}

/// Waits until exactly one node is active and returns it.
func waitForSingleActive(_ nodes: [TestNode], excluding: Set<String> = [], timeout: Duration = .seconds(10)) async throws -> TestNode {
    var single: TestNode?
    try await eventually("a single active node", timeout: timeout, every: .milliseconds(20)) {
        var active: [TestNode] = []
        for node in nodes where !excluding.contains(node.name) {
            if await node.supervisor.phase == .active { active.append(node) }
        }
        // Checked at every look, not only at the end: two active nodes at any moment is the
        // failure these tests exist to catch.
        #expect(active.count <= 1, "several active: \(active.map(\.name))")
        single = active.count == 1 ? active[0] : nil
        return single != nil
    }
    return try #require(single)
}

func shutDown(_ nodes: [TestNode]) async {
    for node in nodes { node.task.cancel() }
    for node in nodes {
        await node.task.value
        await node.client.close()
    }
}

@Suite("App supervisor: election over a real NATS KV", .serialized, .timeLimit(.minutes(3)))
struct AppSupervisorIntegrationTests {
    /// issue 13, item 8: an action still in flight when run() ends (here a health wait that
    /// never ends on its own) is cancelled, not left running.
    @Test(arguments: NATSServerKind.allCases)
    func anActionStillInFlightWhenRunEndsIsCancelled(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let log = ActivityLog()
            let node = try await startNode("node-a", server: server, log: log, hangsInHealthWait: true)
            var waits = node.backend.healthWaits.makeAsyncIterator()
            #expect(await waits.next() == "entered")
            #expect(await node.supervisor.phase == .promoting(.awaitHealthy))
            #expect(await node.supervisor.actionsInFlight >= 1)
            node.task.cancel()
            await node.task.value
            // The shutdown stepped the app down; the health wait is cancelled with run()'s end.
            #expect(await waits.next() == "cancelled")
            #expect(await node.supervisor.actionsInFlight == 0)
            #expect(log.all.count == 1 && log.all.allSatisfy { $0.end != nil })
            await node.client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func exactlyOneNodeRunsTheAppAndStepdownHandsItOver(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let log = ActivityLog()
            var nodes: [TestNode] = []
            for name in ["node-a", "node-b", "node-c"] { nodes.append(try await startNode(name, server: server, log: log)) }
            let first = try await waitForSingleActive(nodes)
            // For two lease lifetimes nobody else starts.
            try await Task.sleep(for: .seconds(2))
            #expect(log.all.count == 1)
            #expect(await first.supervisor.phase == .active)

            await first.supervisor.send(.stepdownRequested)
            let second = try await waitForSingleActive(nodes, excluding: [first.name])
            #expect(second.name != first.name)
            #expect(log.all.count == 2)
            log.checkSafety()
            await shutDown(nodes)
            // A graceful shutdown stops every backend.
            #expect(log.all.allSatisfy { $0.end != nil })
            log.checkSafety()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func switchoverGoesToTheNamedNode(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let log = ActivityLog()
            var nodes: [TestNode] = []
            for name in ["node-a", "node-b", "node-c"] { nodes.append(try await startNode(name, server: server, log: log)) }
            let first = try await waitForSingleActive(nodes)
            let target = nodes.first { $0.name != first.name }!
            await first.supervisor.send(.switchoverRequested(to: target.name))
            let next = try await waitForSingleActive(nodes, excluding: [first.name])
            #expect(next.name == target.name)
            log.checkSafety()
            await shutDown(nodes)
        }
    }

    /// Issue 11 item 4: a stepdown whose stop (and then fence) cannot be confirmed never
    /// releases the lease: the keeper ends the backend at its deadline, and the other node takes
    /// over only once the lease ran out.
    @Test(arguments: NATSServerKind.allCases)
    func aStepdownThatCannotConfirmTheStopNeverReleasesTheLease(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let log = ActivityLog()
            var nodes: [TestNode] = []
            for name in ["node-a", "node-b"] { nodes.append(try await startNode(name, server: server, log: log)) }
            let first = try await waitForSingleActive(nodes)
            let notifications = await first.supervisor.notifications()
            first.backend.stubborn.withLockedValue { $0 = true }
            let stepdownAt = MonotonicClock.now()
            await first.supervisor.send(.stepdownRequested)
            let second = try await waitForSingleActive(nodes, excluding: [first.name], timeout: .seconds(15))
            #expect(second.name != first.name)
            let intervals = log.all.sorted { $0.start < $1.start }
            #expect(intervals.count == 2, "\(intervals)")
            // No release: the takeover waited for the lease to run out.
            #expect(intervals[1].start - stepdownAt >= fastTiming.ttl - fastTiming.renew, "\(intervals)")
            // The keeper stand-in ended the first backend at its deadline, before the takeover.
            #expect(intervals[0].fenced)
            log.checkSafety()
            var sawUnconfirmed = false
            for await notification in notifications {
                if case .fenceUnconfirmed = notification {
                    sawUnconfirmed = true
                    break
                }
                if case .released = notification { Issue.record("the lease was released") }
            }
            #expect(sawUnconfirmed)
            await shutDown(nodes)
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func aNodeThatLosesNATSFencesItselfBeforeAnotherTakesOver(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let log = ActivityLog()
            var nodes: [TestNode] = []
            for name in ["node-a", "node-b"] { nodes.append(try await startNode(name, server: server, log: log)) }
            let first = try await waitForSingleActive(nodes)
            let cutAt = MonotonicClock.now()
            await first.client.close()  // this node can no longer renew
            let second = try await waitForSingleActive(nodes, excluding: [first.name])
            let intervals = log.all.sorted { $0.start < $1.start }
            #expect(intervals.count == 2)
            #expect(intervals[0].fenced)
            #expect(intervals[0].end! - cutAt <= fastTiming.ttl)  // fenced within the ttl
            // Takeover waits for the lease to expire: at least ttl - renew after the cut.
            #expect(intervals[1].start - cutAt >= fastTiming.ttl - fastTiming.renew)
            #expect(second.name != first.name)
            log.checkSafety()
            await shutDown(nodes)
        }
    }
}
