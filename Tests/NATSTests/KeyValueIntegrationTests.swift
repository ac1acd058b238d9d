import Foundation
import NATS
import NATSTestSupport
import NIOCore
import Testing

@Suite("KV against a real nats-server", .serialized)
struct KeyValueIntegrationTests {
    @Test(arguments: NATSServerKind.allCases)
    func compareAndSetSemantics(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)
            let kv = try await js.createKeyValue(KeyValueConfig(bucket: "leases", history: 1))

            let first = try await kv.create("leader", value: ByteBuffer(string: "node-1"))
            let exists = await #expect(throws: KeyValueError.self) { try await kv.create("leader", value: ByteBuffer(string: "node-2")) }
            #expect(exists?.code == .keyExists)
            #expect(exists?.revision == first)

            let second = try await kv.update("leader", value: ByteBuffer(string: "node-1"), revision: first)
            #expect(second > first)
            let stale = await #expect(throws: KeyValueError.self) { try await kv.update("leader", value: ByteBuffer(string: "node-2"), revision: first) }
            #expect(stale?.code == .wrongLastRevision)
            #expect(try await kv.get("leader")?.string == "node-1")
            #expect(try await kv.get("leader")?.revision == second)

            // Delete with a stale expected revision fails; with the right one it works, and a
            // create after a delete succeeds with a higher revision.
            let staleDelete = await #expect(throws: KeyValueError.self) { try await kv.delete("leader", lastRevision: first) }
            #expect(staleDelete?.code == .wrongLastRevision)
            try await kv.delete("leader", lastRevision: second)
            #expect(try await kv.get("leader") == nil)
            #expect(try await kv.entry("leader")?.operation == .delete)
            let third = try await kv.create("leader", value: ByteBuffer(string: "node-2"))
            #expect(third > second)

            try await kv.purge("leader")
            #expect(try await kv.get("leader") == nil)
            #expect(try await kv.entry("leader")?.operation == .purge)
            #expect(try await kv.create("leader", value: ByteBuffer(string: "node-3")) > third)

            let badKey = await #expect(throws: KeyValueError.self) { try await kv.put("bad key", value: ByteBuffer()) }
            #expect(badKey?.code == .invalidKey)
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func createSucceedsAfterTTLExpiry(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)
            let kv = try await js.createKeyValue(KeyValueConfig(bucket: "short", ttl: .seconds(5)))
            let first = try await kv.create("leader", value: ByteBuffer(string: "a"))
            let exists = await #expect(throws: KeyValueError.self) { try await kv.create("leader", value: ByteBuffer(string: "b")) }
            #expect(exists?.code == .keyExists)
            // Expiry is a server timer; poll the real state until the entry is gone.
            try await withTimeout(.seconds(30), "the entry to expire") {
                while try await kv.entry("leader") != nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            let second = try await kv.create("leader", value: ByteBuffer(string: "b"))
            #expect(second > first)
            #expect(try await kv.get("leader")?.string == "b")
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func bucketBindingAndConfigConflicts(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)
            var config = KeyValueConfig(bucket: "cfg", history: 5, ttl: .seconds(60))
            config.maxValueSize = 1024
            _ = try await js.createKeyValue(config)
            _ = try await js.createKeyValue(config)  // identical: binds
            var other = config
            other.history = 2
            let conflict = await #expect(throws: KeyValueError.self) { _ = try await js.createKeyValue(other) }
            #expect(conflict?.code == .bucketConfigConflict)
            #expect(conflict?.message.contains("history") == true)

            let bound = try await js.keyValue("cfg")
            let status = try await bound.status()
            #expect(status.history == 5)
            #expect(status.ttl == .seconds(60))
            let tooBig = await #expect(throws: JetStreamAPIError.self) { try await bound.put("k", value: ByteBuffer(repeating: 0, count: 2048)) }
            #expect(tooBig != nil)

            let missing = await #expect(throws: KeyValueError.self) { _ = try await js.keyValue("nope") }
            #expect(missing?.code == .bucketNotFound)
            let badName = await #expect(throws: KeyValueError.self) { _ = try await js.createKeyValue(KeyValueConfig(bucket: "has.dot")) }
            #expect(badName?.code == .invalidBucketName)
            let badHistory = await #expect(throws: KeyValueError.self) { _ = try await js.createKeyValue(KeyValueConfig(bucket: "h", history: 65)) }
            #expect(badHistory?.code == .invalidConfig)
            try await js.deleteKeyValue("cfg")
            await #expect(throws: KeyValueError.self) { _ = try await js.keyValue("cfg") }
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func keysHistoryAndRevisions(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)
            let kv = try await js.createKeyValue(KeyValueConfig(bucket: "hist", history: 10))
            #expect(try await kv.keys().isEmpty)
            let r1 = try await kv.put("a", value: ByteBuffer(string: "1"))
            try await kv.put("a", value: ByteBuffer(string: "2"))
            try await kv.put("b.c", value: ByteBuffer(string: "x"))
            try await kv.put("gone", value: ByteBuffer(string: "y"))
            try await kv.delete("gone")
            #expect(Set(try await kv.keys()) == ["a", "b.c"])
            let history = try await kv.history("a")
            #expect(history.map(\.string) == ["1", "2"])
            #expect(try await kv.get("a", revision: r1)?.string == "1")
            #expect(try await kv.get("b.c", revision: r1) == nil)
            #expect(try await kv.history("gone").map(\.operation) == [.put, .delete])
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func watchDeliversInitialValuesThenUpdates(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)
            let kv = try await js.createKeyValue(KeyValueConfig(bucket: "watched", history: 3))
            try await kv.put("app.web", value: ByteBuffer(string: "v1"))
            try await kv.put("app.web", value: ByteBuffer(string: "v2"))
            try await kv.put("app.db", value: ByteBuffer(string: "d1"))
            try await kv.put("other", value: ByteBuffer(string: "o"))

            let watcher = try await kv.watch("app.*")
            let (seenStream, seen) = AsyncStream.makeStream(of: String.self)
            let reader = Task {
                for try await event in watcher {
                    switch event {
                    case .initialValuesDone: seen.yield("--")
                    case .entry(let entry): seen.yield("\(entry.key)=\(entry.operation == .put ? entry.string : entry.operation.rawValue)")
                    }
                }
                seen.finish()
            }
            let observed = try await withTimeout(.seconds(15), "watch events") {
                var iterator = seenStream.makeAsyncIterator()
                var result: [String] = []
                while result.last != "--", let next = await iterator.next() { result.append(next) }
                // Updates made after the initial values arrive after the marker.
                try await kv.put("app.web", value: ByteBuffer(string: "v3"))
                try await kv.put("other", value: ByteBuffer(string: "ignored"))
                try await kv.delete("app.db")
                while result.count < 5, let next = await iterator.next() { result.append(next) }
                return result
            }
            #expect(observed == ["app.web=v2", "app.db=d1", "--", "app.web=v3", "app.db=DEL"])
            await watcher.stop()
            _ = await reader.result

            // An empty bucket reports the end of initial values at once.
            let empty = try await js.createKeyValue(KeyValueConfig(bucket: "empty"))
            let emptyWatcher = try await empty.watch()
            let first = try await withTimeout(.seconds(5), "initial values marker") {
                var iterator = emptyWatcher.makeAsyncIterator()
                return try await iterator.next()
            }
            #expect(first == .initialValuesDone)
            await emptyWatcher.stop()
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func watchSurvivesServerRestartWithoutMissingOrRepeating(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectedClient(server)
            let writer = try await connectedClient(server)
            let js = JetStream(client: client)
            let kv = try await js.createKeyValue(KeyValueConfig(bucket: "durable", history: 1))
            let writerKV = try await JetStream(client: writer).keyValue("durable")
            let watcher = try await kv.watch("counter", options: KeyValueWatchOptions(idleHeartbeat: .milliseconds(500)))
            let reader = Task {
                var values: [Int] = []
                for try await event in watcher {
                    if case .entry(let entry) = event {
                        values.append(Int(entry.string)!)
                        if values.last == 40 { break }
                    }
                }
                return values
            }
            for value in 1...20 { try await writerKV.put("counter", value: ByteBuffer(string: "\(value)")) }
            let events = writer.events()
            try await server.restart()
            try await waitForEvent(events, "writer reconnected") { if case .reconnected = $0 { return true } else { return false } }
            for value in 21...40 {
                try await withTimeout(.seconds(10), "put \(value)") {
                    while true {
                        do {
                            try await writerKV.put("counter", value: ByteBuffer(string: "\(value)"))
                            return
                        } catch let error as JetStreamError where error.code == .notEnabled {
                            try await Task.sleep(for: .milliseconds(50))  // JetStream still recovering
                        } catch let error as NATSError where error.code == .timeout || error.code == .noResponders {
                            try await Task.sleep(for: .milliseconds(50))
                        }
                    }
                }
            }
            let values = try await withTimeout(.seconds(30), "watch to reach 40") { try await reader.value }
            // With history 1 a watcher may skip values that were overwritten before it read them,
            // but it never repeats one, never goes backwards, and ends on the last value.
            #expect(values == values.sorted())
            #expect(Set(values).count == values.count)
            #expect(values.last == 40)
            #expect(values.contains { $0 > 20 })
            #expect(watcher.resets >= 1)  // the server-side consumer was lost and recreated
            await watcher.stop()
            await writer.close()
            await client.close()
        }
    }
}
