import BatonCore
import Foundation
import NATS
import NATSTestSupport
import Backends
import Control
import Supervisor
import Testing

/// Fencing tokens never go backwards (issue 11, item 6): a durable floor per app, a bucket moved
/// past it when it was deleted and recreated, and deletes that free the lease only when their
/// note names the holder and token — against both real nats-servers.
@Suite("Token floor", .serialized, .timeLimit(.minutes(2)))
struct TokenFloorTests {
    let a = LeaseHolder(node: "node-a", instance: "i-a")
    let b = LeaseHolder(node: "node-b", instance: "i-b")

    private func temporaryFloorPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("floor-\(UUID().uuidString)/web.lease-floor").path
    }

    @Test func theFloorSurvivesARestartAndOnlyGrows() async throws {
        let path = temporaryFloorPath()
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        let floor = try await TokenFloor.load(path: path)
        #expect(floor.token == 0)
        try await floor.raise(to: 41)
        try await floor.raise(to: 12)  // lower: ignored
        floor.noteRevision(57)
        #expect(floor.token == 41)
        #expect(floor.highest == 57)
        let reloaded = try await TokenFloor.load(path: path)
        #expect(reloaded.token == 41)  // revisions are kept in memory only
        #expect(String(decoding: try #require(FileManager.default.contents(atPath: path)), as: UTF8.self) == "41\n")
        #expect(!FileManager.default.fileExists(atPath: path + ".tmp"))
        // A file that does not hold a token is an error, not a floor of 0.
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: path))
        await #expect(throws: TokenFloorError.self) { _ = try await TokenFloor.load(path: path) }
    }

    /// The bucket's stream is deleted and created again (revisions restart at 1): the next
    /// acquire is above every token and revision handed out before — through a running node's
    /// watch, a restarted node's open, and an acquire that lands on a bucket recreated by
    /// someone who knows no floor.
    @Test(arguments: NATSServerKind.allCases)
    func aRecreatedBucketNeverGivesALowerToken(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let path = temporaryFloorPath()
            defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
            let client = try await connectControlClient(server)
            let jetStream = JetStream(client: client)
            let bucket = LeaseStore.bucketName(cluster: "test", app: "web")
            let store = try await LeaseStore.open(
                jetStream: jetStream, cluster: "test", app: "web", ttl: .seconds(30), replicas: 1, floor: try await TokenFloor.load(path: path))
            let first = try await store.acquire(as: a, ttl: .seconds(30))
            var revision = first
            for _ in 0..<5 {
                guard case .renewed(let next) = try await store.renew(as: a, token: first, ttl: .seconds(30), revision: revision) else {
                    Issue.record("renew not a plain success")
                    return
                }
                revision = next
            }
            try await store.release(as: a, token: first, revision: revision, handoffTo: nil)
            let highestBefore = revision + 1  // the release marker
            #expect(store.floor.token == first)

            // 1. Deleted under a running node: its watch creates the bucket again, floor first.
            try await jetStream.deleteKeyValue(bucket)
            let watch = try await store.watch()
            var events = watch.makeAsyncIterator()
            #expect(try await events.next() == .observed(.vanished))
            let second = try await store.acquire(as: b, ttl: .seconds(30))
            #expect(second > highestBefore, "token \(second) after a recreated bucket, \(highestBefore) before")
            #expect(try await events.next() == .observed(.held(b, revision: second, token: second, ttl: .seconds(30))))
            await watch.stop()

            // 2. Deleted while the node was down: the restarted node loads its floor from disk and
            //    moves the bucket past it when it opens it.
            try await store.release(as: b, token: second, revision: second, handoffTo: nil)
            try await jetStream.deleteKeyValue(bucket)
            let restarted = try await LeaseStore.open(
                jetStream: jetStream, cluster: "test", app: "web", ttl: .seconds(30), replicas: 1, floor: try await TokenFloor.load(path: path))
            #expect(restarted.floor.token == second)
            let third = try await restarted.acquire(as: a, ttl: .seconds(30))
            #expect(third > second)

            // 3. Recreated by someone who knows no floor, between two looks of this node: the
            //    acquire lands low; the bucket is moved past the floor and the acquisition gives
            //    up for now (another node may hold a lease in the recreated bucket, below the
            //    floor: it must fence first); the next one lands above the floor.
            try await restarted.release(as: a, token: third, revision: third, handoffTo: nil)
            try await jetStream.deleteKeyValue(bucket)
            _ = try await jetStream.createKeyValue(KeyValueConfig(bucket: bucket, history: 1, ttl: .seconds(30), replicas: 1))
            await #expect(throws: LeaseWriteError.self) { _ = try await restarted.acquire(as: b, ttl: .seconds(30)) }
            #expect(try await restarted.kv.entry(LeaseStore.key) == nil)
            let fourth = try await restarted.acquire(as: b, ttl: .seconds(30))
            #expect(fourth > third)
            let entry = try #require(try await restarted.kv.entry(LeaseStore.key))
            #expect(entry.revision == fourth && entry.operation == .put)
            #expect(try await TokenFloor.load(path: path).token == fourth)
            await client.close()
        }
    }

    /// A write that lands at or below a revision seen before while the bucket is *not* behind
    /// the floor was superseded, not sent to a recreated bucket: a conflict, and nothing is
    /// purged (a purge there would delete another node's lease under it — the chaos suite saw
    /// that give two actives on nats-server 2.9.10).
    @Test(arguments: NATSServerKind.allCases)
    func aSupersededWriteNeverPurges(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let path = temporaryFloorPath()
            defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
            let client = try await connectControlClient(server)
            let store = try await LeaseStore.open(
                jetStream: JetStream(client: client), cluster: "test", app: "web", ttl: .seconds(30), replicas: 1,
                floor: try await TokenFloor.load(path: path))
            let token = try await store.acquire(as: a, ttl: .seconds(30))
            let next = token + 1
            store.floor.noteRevision(next)  // as if the watch had already seen the next write
            await #expect(throws: LeaseWriteError.conflict) { _ = try await store.acquire(as: b, ttl: .seconds(30), replacing: token) }
            let state = try await store.kv.jetStream.streamInfo(store.kv.streamName).state
            #expect(state.firstSequence == 1, "the bucket was purged: \(state)")
            #expect(try await store.kv.entry(LeaseStore.key)?.revision == next)
            await client.close()
        }
    }

    /// `nats kv del` (no note) is reported as vanished, not free; Baton's release names the
    /// holder and token it releases.
    @Test(arguments: NATSServerKind.allCases)
    func aForeignDeleteIsVanishedAndAReleaseNamesItsLease(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectControlClient(server)
            let store = try await LeaseStore.open(jetStream: JetStream(client: client), cluster: "test", app: "web", ttl: .seconds(30), replicas: 1)
            let watch = try await store.watch()
            var events = watch.makeAsyncIterator()
            #expect(try await events.next() == .observed(.vanished))  // nothing stored yet

            let token = try await store.acquire(as: a, ttl: .seconds(10))
            #expect(try await events.next() == .observed(.held(a, revision: token, token: token, ttl: .seconds(10))))
            // An operator's delete and purge: no note.
            try await store.kv.delete(LeaseStore.key)
            #expect(try await events.next() == .observed(.vanished))
            let again = try await store.acquire(as: a, ttl: .seconds(10))
            _ = try await events.next()
            try await store.kv.purge(LeaseStore.key)
            #expect(try await events.next() == .observed(.vanished))

            let last = try await store.acquire(as: b, ttl: .seconds(10))
            #expect(last > again)
            _ = try await events.next()
            try await store.release(as: b, token: last, revision: last, handoffTo: "node-a")
            #expect(try await events.next() == .observed(.released(b, token: last, handoffTo: "node-a")))
            await watch.stop()
            await client.close()
        }
    }
}
