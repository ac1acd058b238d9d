import BatonCore
import Foundation
import NATS
import NATSTestSupport
import Backends
import Control
import Supervisor
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The node registry against real nats-servers (issue 11, item 7): a second live instance with
/// the same node id is refused, a stale entry is taken over, a graceful exit frees the id at
/// once, and a running instance notices when another one took its id over.
@Suite("Node registry", .serialized, .timeLimit(.minutes(2)))
struct NodeRegistryTests {
    /// Short intervals keep the tests fast: heartbeat 400 ms, wait 1 s, bucket TTL 2 s (long enough
    /// that a test process starved by a busy machine for a second does not see its entry expire).
    let interval: Duration = .milliseconds(400)

    func record(instance: String, hostname: String = "host-\(UUID().uuidString.prefix(6))", pid: Int32 = 4242) -> NodeRecord {
        NodeRecord(node: "node-1", instance: instance, hostname: hostname, pid: pid, started: "2026-01-01T00:00:00Z", version: "0.1.0")
    }

    func register(_ client: NATSClient, _ me: NodeRecord) async throws -> NodeRegistry {
        try await NodeRegistry.register(
            jetStream: JetStream(client: client), cluster: "test", me: me, heartbeatInterval: interval, replicas: 1, logger: controlTestLogger())
    }

    func stored(_ client: NATSClient) async throws -> (NodeRecord, UInt64)? {
        let kv = try await JetStream(client: client).keyValue(NodeRegistry.bucketName(cluster: "test"))
        guard let entry = try await kv.get("node-1") else { return nil }
        var record = try JSONDecoder().decode(NodeRecord.self, from: Data(entry.value.readableBytesView))
        // Every write carries the writer's clock (for `batonctl doctor`); compared without it.
        #expect(record.written != nil, "a registry write without its time")
        record.written = nil
        return (record, entry.revision)
    }

    @Test(arguments: NATSServerKind.allCases)
    func aSecondLiveInstanceIsRefusedWithItsHostAndPid(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectControlClient(server)
            let first = try await register(client, record(instance: "i-first", hostname: "host-a", pid: 111))
            let (written, revision) = try #require(try await stored(client))
            #expect(written == first.me)
            #expect(try await JetStream(client: client).streamInfo("KV_" + NodeRegistry.bucketName(cluster: "test")).config.maxAge == interval * 5)

            let heartbeats = Task { await first.runHeartbeats { _ in Issue.record("the first instance saw a duplicate") } }
            defer { heartbeats.cancel() }
            // Heartbeats rewrite the entry.
            try await Task.sleep(for: interval * 3)
            let (_, later) = try #require(try await stored(client))
            #expect(later > revision)

            let started = ContinuousClock.now
            do {
                _ = try await register(client, record(instance: "i-second", hostname: "host-b", pid: 222))
                Issue.record("the second instance registered")
            } catch let refusal as NodeRegistrationRefused {
                var other = refusal.other
                other.written = nil
                #expect(other == first.me)
                #expect(refusal.description.contains("node-1") && refusal.description.contains("host-a") && refusal.description.contains("pid 111"))
                #expect(refusal.description.contains("node.id must be unique per host"))
            }
            // It watched for a heartbeat, at most about the wait.
            #expect(ContinuousClock.now - started < NodeRegistry.heartbeatWait(interval: interval) + .seconds(1))
            // The first instance's entry is untouched.
            #expect(try await stored(client)?.0 == first.me)
            heartbeats.cancel()
            await heartbeats.value
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func aSilentEntryIsTakenOverAndItsInstanceLearnsOfTheDuplicate(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectControlClient(server)
            // A frozen (or partitioned) instance: registered, then no heartbeat.
            let frozen = try await register(client, record(instance: "i-frozen", hostname: "host-a"))
            let frozenRevision = try #require(await frozen.currentRevision)
            let started = ContinuousClock.now
            let newcomer = try await register(client, record(instance: "i-new", hostname: "host-b"))
            // It waited for a heartbeat that never came.
            #expect(ContinuousClock.now - started >= NodeRegistry.heartbeatWait(interval: interval))
            let newRevision = try #require(await newcomer.currentRevision)
            #expect(newRevision > frozenRevision)
            #expect(try await stored(client)?.0 == newcomer.me)

            // The frozen instance thaws: its next heartbeat loses the compare-and-set to the
            // newcomer, it reports the duplicate once and stops writing.
            let seen = Mutex<[NodeRecord?]>([])
            await frozen.runHeartbeats { other in seen.withLock { $0.append(other) } }
            #expect(seen.withLock { $0 }.map { record in record.map { var record = $0; record.written = nil; return record } } == [newcomer.me])
            #expect(await frozen.currentRevision == nil)
            #expect(try await stored(client)?.0 == newcomer.me)
            // Its graceful exit leaves the newcomer's entry alone.
            await frozen.deregister()
            #expect(try await stored(client)?.0 == newcomer.me)
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func aCrashedPredecessorOnThisHostIsTakenOverAtOnce(kind: NATSServerKind) async throws {
        // A pid that surely runs no more: a child that exited and was reaped.
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try child.run()
        child.waitUntilExit()
        let deadPid = child.processIdentifier

        try await withNATSServer(kind) { server in
            let client = try await connectControlClient(server)
            let local = NodeRecord.local(node: "node-1", instance: "i-crashed")
            #expect(local.bootID != nil && local.pidNamespace != nil)
            var crashed = local
            crashed.pid = deadPid
            _ = try await register(client, crashed)

            let started = ContinuousClock.now
            let restarted = try await register(client, NodeRecord.local(node: "node-1", instance: "i-restarted"))
            #expect(ContinuousClock.now - started < NodeRegistry.heartbeatWait(interval: interval), "it waited for a heartbeat")
            #expect(try await stored(client)?.0.instance == "i-restarted")

            // A predecessor on this host whose pid still runs (this test process) is waited for
            // like any other, and refused when it heartbeats.
            let live = try await register(client, NodeRecord.local(node: "node-1", instance: "i-live"))
            _ = restarted
            let heartbeats = Task { await live.runHeartbeats { _ in } }
            defer { heartbeats.cancel() }
            await #expect(throws: NodeRegistrationRefused.self) {
                _ = try await register(client, NodeRecord.local(node: "node-1", instance: "i-twin"))
            }
            heartbeats.cancel()
            await heartbeats.value
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func aGracefulExitFreesTheIdAtOnceAndAnExpiredEntryIsWrittenAgain(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectControlClient(server)
            let first = try await register(client, record(instance: "i-first"))
            await first.deregister()
            #expect(try await stored(client) == nil)
            let started = ContinuousClock.now
            let second = try await register(client, record(instance: "i-second"))
            #expect(ContinuousClock.now - started < NodeRegistry.heartbeatWait(interval: interval))

            // No heartbeat for longer than the bucket TTL (a long NATS outage): the entry
            // expires (silently on 2.9); the next heartbeat registers again.
            try await Task.sleep(for: interval * 5 + .milliseconds(1500))
            #expect(try await stored(client) == nil, "the entry outlived the bucket TTL")
            let heartbeats = Task { await second.runHeartbeats { _ in Issue.record("no duplicate here") } }
            defer { heartbeats.cancel() }
            var back = false
            for _ in 0..<50 where !back {
                try await Task.sleep(for: .milliseconds(50))
                back = try await stored(client)?.0 == second.me
            }
            #expect(back, "the heartbeat did not register again")
            heartbeats.cancel()
            await heartbeats.value
            await second.deregister()
            #expect(try await stored(client) == nil)
            await client.close()
        }
    }
}
