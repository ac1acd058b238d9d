import BatonCore
import Foundation
import NATS
import NIOCore
import FaultProxy
import NATSTestSupport
@testable import Backends
@testable import Control
@testable import Supervisor
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The lease bucket against real nats-servers: idempotent renews, the holder's ttl in the
/// record, takeover over a stale revision, and a bucket TTL that never shrinks (issue 11).
@Suite("Lease store", .serialized, .timeLimit(.minutes(2)))
struct LeaseStoreTests {
    let a = LeaseHolder(node: "node-a", instance: "i-a")
    let b = LeaseHolder(node: "node-b", instance: "i-b")

    /// A renew whose answer never came (the connection stalled) but that the server applied
    /// once it resumed: the retry on the old revision is recognised as the holder's own write.
    @Test(arguments: NATSServerKind.allCases)
    func aRenewThatTimedOutDuringAStallIsRecognisedNotAConflict(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let proxy = try await StallProxy.start(targetPort: server.port)
            defer { Task { await proxy.close() } }
            var options = NATSClientOptions(servers: [proxy.url])
            options.requestTimeout = .seconds(2)
            let client = try await NATSClient.connect(options: options, logger: controlTestLogger())
            let store = try await LeaseStore.open(
                jetStream: JetStream(client: client), cluster: "test", app: "web", ttl: .seconds(30), replicas: 1)
            let token = try await store.acquire(as: a, ttl: .seconds(30))
            guard case .renewed(let renewed) = try await store.renew(as: a, token: token, ttl: .seconds(30), revision: token) else {
                Issue.record("the first renew was not a plain success")
                return
            }
            // A store whose writes time out after 300 ms, as batond's time out after a renew
            // interval.
            let impatient = try await LeaseStore.open(
                jetStream: JetStream(client: client, timeout: .milliseconds(300)), cluster: "test", app: "web", ttl: .seconds(30), replicas: 1)
            // NATS stalls; the renew times out here but is on its way.
            try await proxy.stall()
            var outcome: String
            do {
                _ = try await impatient.renew(as: a, token: token, ttl: .seconds(30), revision: renewed)
                outcome = "renewed"
            } catch {
                outcome = "\(error)"
            }
            try await proxy.resume()
            #expect(outcome.hasPrefix("unavailable"), "the renew during the stall: \(outcome)")

            // The stalled write lands after the resume: wait for it (bounded).
            let bound = try await JetStream(client: client).keyValue(LeaseStore.bucketName(cluster: "test", app: "web"))
            var landed: UInt64?
            for _ in 0..<100 {
                if let entry = try await bound.get(LeaseStore.key), entry.revision > renewed {
                    landed = entry.revision
                    break
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            let landedRevision = try #require(landed, "the stalled renew never reached the server")

            // The retry on the old revision: recognised as our own write, not a conflict.
            #expect(try await store.renew(as: a, token: token, ttl: .seconds(30), revision: renewed) == .recognized(landedRevision))
            // Another instance under the same node id, or another token, is a conflict.
            await #expect(throws: LeaseWriteError.conflict) {
                try await store.renew(as: LeaseHolder(node: "node-a", instance: "i-other"), token: token, revision: renewed)
            }
            await #expect(throws: LeaseWriteError.conflict) {
                try await store.renew(as: a, token: token + 1, revision: renewed)
            }
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func theHoldersTTLTravelsInTheRecordAndATakeoverReplacesTheStaleRevision(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectControlClient(server)
            let store = try await LeaseStore.open(jetStream: JetStream(client: client), cluster: "test", app: "web", ttl: .seconds(30), replicas: 1)
            let watch = try await store.watch()
            var events = watch.makeAsyncIterator()
            #expect(try await events.next() == .observed(.vanished))  // nothing stored yet

            let tokenA = try await store.acquire(as: a, ttl: .seconds(10))
            #expect(try await events.next() == .observed(.held(a, revision: tokenA, token: tokenA, ttl: .seconds(10))))

            // node-b waited out node-a's ttl: it takes the lease over the stale revision, with no
            // need for the key to expire; node-a's next renew loses.
            let tokenB = try await store.acquire(as: b, ttl: .seconds(2), replacing: tokenA)
            #expect(tokenB > tokenA)
            #expect(try await events.next() == .observed(.held(b, revision: tokenB, token: tokenB, ttl: .seconds(2))))
            await #expect(throws: LeaseWriteError.conflict) { try await store.renew(as: a, token: tokenA, revision: tokenA) }
            // A takeover over a revision that is no longer the latest loses.
            await #expect(throws: LeaseWriteError.conflict) { try await store.acquire(as: a, ttl: .seconds(10), replacing: tokenA) }

            // A released key: a takeover over the stale revision falls back to a create.
            try await store.release(as: b, token: tokenB, revision: tokenB, handoffTo: nil)
            _ = try await events.next()
            let tokenA2 = try await store.acquire(as: a, ttl: .seconds(10), replacing: tokenB)
            #expect(tokenA2 > tokenB)
            await watch.stop()
            await client.close()
        }
    }

    /// Opening the bucket with a shorter ttl (a node whose config changed) never shrinks its
    /// TTL: a lease held under the longer ttl would otherwise expire under its holder.
    @Test(arguments: NATSServerKind.allCases)
    func theBucketTTLNeverShrinks(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectControlClient(server)
            let jetStream = JetStream(client: client)
            let bucket = "KV_" + LeaseStore.bucketName(cluster: "test", app: "web")
            _ = try await LeaseStore.open(jetStream: jetStream, cluster: "test", app: "web", ttl: .seconds(10), replicas: 1)
            #expect(try await jetStream.streamInfo(bucket).config.maxAge == .seconds(10))
            _ = try await LeaseStore.open(jetStream: jetStream, cluster: "test", app: "web", ttl: .seconds(2), replicas: 1)
            #expect(try await jetStream.streamInfo(bucket).config.maxAge == .seconds(10))
            _ = try await LeaseStore.open(jetStream: jetStream, cluster: "test", app: "web", ttl: .seconds(20), replicas: 1)
            #expect(try await jetStream.streamInfo(bucket).config.maxAge == .seconds(20))
            await client.close()
        }
    }

    /// Two acquisitions conditioned on the same revision that both got stored (what a 2.9
    /// cluster did in the chaos runs, nats-server #4320; simulated here with an unconditioned
    /// put): the later writer finds the earlier write first after that revision and does not
    /// take the lease, the earlier one does.
    @Test(arguments: NATSServerKind.allCases)
    func aSecondAcquisitionThatTheServerLetPassIsRefused(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectControlClient(server)
            let jetStream = JetStream(client: client)
            let store = try await LeaseStore.open(jetStream: jetStream, cluster: "test", app: "web", ttl: .seconds(30), replicas: 1)
            let kv = try await jetStream.keyValue(LeaseStore.bucketName(cluster: "test", app: "web"))

            let tokenA = try await store.acquire(as: a, ttl: .seconds(10))
            // node-b's create, expecting the key to be empty as node-a's did, also stored.
            let bogus = try await kv.put(LeaseStore.key, value: ByteBuffer(string: #"{"node":"node-b","instance":"i-b","token":0}"#))
            try await store.verifyAcquisition(revision: tokenA, after: 0)
            await #expect(throws: LeaseWriteError.conflict) { try await store.verifyAcquisition(revision: bogus, after: 0) }

            // The same over a stale revision (a takeover) and over a delete marker.
            let marker = try await kv.delete(LeaseStore.key)
            let tokenB = try await store.acquire(as: b, ttl: .seconds(10))
            let second = try await kv.put(LeaseStore.key, value: ByteBuffer(string: #"{"node":"node-a","instance":"i-a","token":0}"#))
            try await store.verifyAcquisition(revision: tokenB, after: marker)
            await #expect(throws: LeaseWriteError.conflict) { try await store.verifyAcquisition(revision: second, after: marker) }
            await client.close()
        }
    }

    /// The bucket keeps several revisions (the acquisition check needs the earlier of two
    /// writes), also when it was created with history 1 by an older Baton, and never fewer than
    /// it has.
    @Test(arguments: NATSServerKind.allCases)
    func theBucketKeepsEnoughHistoryForTheAcquisitionCheck(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectControlClient(server)
            let jetStream = JetStream(client: client)
            let name = LeaseStore.bucketName(cluster: "test", app: "web")
            _ = try await jetStream.createKeyValue(KeyValueConfig(bucket: name, history: 1, ttl: .seconds(10)))
            _ = try await LeaseStore.open(jetStream: jetStream, cluster: "test", app: "web", ttl: .seconds(10), replicas: 1)
            #expect(try await jetStream.streamInfo("KV_" + name).config.maxMessagesPerSubject == Int64(LeaseStore.history))

            var more = try await jetStream.streamInfo("KV_" + name).config
            more.maxMessagesPerSubject = 10
            _ = try await jetStream.updateStream(more)
            _ = try await LeaseStore.open(jetStream: jetStream, cluster: "test", app: "web", ttl: .seconds(10), replicas: 1)
            #expect(try await jetStream.streamInfo("KV_" + name).config.maxMessagesPerSubject == 10)
            await client.close()
        }
    }
}
