import Crypto
import Foundation
import NATS
import NATSTestSupport
import NIOCore
import Testing

/// `count` pseudo-random bytes from SplitMix64 seeded with `seed`: the same on every run.
func seededBytes(count: Int, seed: UInt64) -> ByteBuffer {
    var state = seed
    var buffer = ByteBuffer()
    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { pointer in
        var index = 0
        while index < count {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            for shift in stride(from: 0, to: 64, by: 8) where index < count {
                pointer[index] = UInt8(truncatingIfNeeded: z >> UInt64(shift))
                index += 1
            }
        }
        return count
    }
    return buffer
}

/// `SHA-256=<base64url, padded>` of `data`, computed independently of the client's code.
func objectDigest(_ data: ByteBuffer) -> String {
    let digest = Data(SHA256.hash(data: Data(data.readableBytesView)))
    let base64url = digest.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
    return "SHA-256=\(base64url)"
}

@Suite("Object Store against a real nats-server", .serialized)
struct ObjectStoreIntegrationTests {
    @Test(arguments: NATSServerKind.allCases)
    func multiMegabyteRoundTrip(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            try await withTimeout(.seconds(90), "the round trip") {
                let client = try await connectedClient(server)
                let js = JetStream(client: client)
                let store = try await js.createObjectStore(ObjectStoreConfig(bucket: "snapshots", description: "db snapshots"))
                let data = seededBytes(count: 5 * 1024 * 1024 + 321, seed: 42)
                let name = "db/app.sqlite"

                let put = try await store.put(name: name, data: data, description: "nightly", metadata: ["epoch": "7"])
                #expect(put.size == UInt64(data.readableBytes))
                #expect(put.chunks == 41)  // 40 full chunks of 128 KiB and 321 bytes
                #expect(put.digest == objectDigest(data))
                #expect(put.maxChunkSize == ObjectStore.defaultChunkSize)

                let (info, read) = try await store.get(name)
                #expect(read == data)
                #expect(info.nuid == put.nuid)
                #expect(info.description == "nightly")
                #expect(info.metadata == ["epoch": "7"])
                #expect(try await store.info(name).digest == objectDigest(data))
                #expect(try await js.streamInfo("OBJ_snapshots").state.messages == 42)
                let status = try await store.status()
                #expect(status.description == "db snapshots")
                #expect(status.size > UInt64(data.readableBytes))

                // Streaming put from odd-sized pieces gives the same bytes and digest; a streaming
                // get sees the chunks in order.
                let pieces = stride(from: 0, to: data.readableBytes, by: 100_003).map { offset in
                    data.getSlice(at: offset, length: min(100_003, data.readableBytes - offset))!
                }
                let stream = AsyncStream<ByteBuffer> { continuation in
                    for piece in pieces { continuation.yield(piece) }
                    continuation.finish()
                }
                let streamed = try await store.put(name: "streamed", chunks: stream, chunkSize: 256 * 1024)
                #expect(streamed.digest == put.digest)
                #expect(streamed.chunks == 21)
                var reassembled = ByteBuffer()
                var chunkSizes: [Int] = []
                try await store.get("streamed") { chunk in
                    chunkSizes.append(chunk.readableBytes)
                    var chunk = chunk
                    reassembled.writeBuffer(&chunk)
                }
                #expect(reassembled == data)
                #expect(chunkSizes.dropLast().allSatisfy { $0 == 256 * 1024 })

                // Files in and out.
                let directory = try makeTemporaryDirectory(prefix: "baton-objfile")
                defer { try? FileManager.default.removeItem(at: directory) }
                let source = directory.appendingPathComponent("source.bin").path
                try Data(data.readableBytesView).write(to: URL(fileURLWithPath: source))
                let fromFile = try await store.put(name: "from-file", fileAt: source, chunkSize: 64 * 1024)
                #expect(fromFile.digest == put.digest)
                #expect(fromFile.chunks == 81)
                let target = directory.appendingPathComponent("target.bin").path
                let written = try await store.get("from-file", toFile: target)
                #expect(written.size == UInt64(data.readableBytes))
                #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == Data(data.readableBytesView))
                #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() == ["source.bin", "target.bin"])
                await client.close()
            }
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func replacingAnObjectPurgesItsOldChunks(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            try await withTimeout(.seconds(60), "the replacements") {
                let client = try await connectedClient(server)
                let js = JetStream(client: client)
                let store = try await js.createObjectStore(ObjectStoreConfig(bucket: "replace"))
                let first = try await store.put(name: "blob", data: seededBytes(count: 1024 * 1024, seed: 1), chunkSize: 64 * 1024)
                #expect(first.chunks == 16)
                #expect(try await js.streamInfo("OBJ_replace").state.messages == 17)

                let secondData = seededBytes(count: 300_000, seed: 2)
                let second = try await store.put(name: "blob", data: secondData, chunkSize: 64 * 1024)
                #expect(second.nuid != first.nuid)
                #expect(second.chunks == 5)
                #expect(try await js.streamInfo("OBJ_replace").state.messages == 6)
                let oldChunks = await #expect(throws: JetStreamAPIError.self) {
                    try await js.getLastMessage(stream: "OBJ_replace", subject: store.chunkSubject(for: first.nuid))
                }
                #expect(oldChunks?.errorCode == .noMessageFound)
                #expect(try await store.get("blob").data == secondData)

                // A source that fails half-way: the put fails, its chunks are purged, and the
                // previous version is untouched.
                struct SourceFailure: Error {}
                let failing = AsyncThrowingStream<ByteBuffer, any Error> { continuation in
                    continuation.yield(seededBytes(count: 200_000, seed: 3))
                    continuation.finish(throwing: SourceFailure())
                }
                await #expect(throws: SourceFailure.self) { try await store.put(name: "blob", chunks: failing, chunkSize: 64 * 1024) }
                #expect(try await js.streamInfo("OBJ_replace").state.messages == 6)
                #expect(try await store.get("blob").data == secondData)

                // Racing writers of one name: exactly one version's chunks survive, whoever wins.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for seed in 10..<14 {
                        group.addTask {
                            _ = try await store.put(name: "blob", data: seededBytes(count: 100_000 * (seed - 9), seed: UInt64(seed)), chunkSize: 64 * 1024)
                        }
                    }
                    try await group.waitForAll()
                }
                let winner = try await store.info("blob")
                #expect(try await js.streamInfo("OBJ_replace").state.messages == UInt64(winner.chunks + 1))
                #expect(try await store.get("blob").data.readableBytes == Int(winner.size))
                await client.close()
            }
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func deleteListInfoAndBuckets(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            try await withTimeout(.seconds(60), "delete, list and info") {
                let client = try await connectedClient(server)
                let js = JetStream(client: client)
                let config = ObjectStoreConfig(bucket: "docs", description: "documents", ttl: .seconds(3600), maxBytes: 64 * 1024 * 1024)
                let store = try await js.createObjectStore(config)
                _ = try await js.createObjectStore(config)  // identical: binds
                var other = config
                other.maxBytes = 1024
                let conflict = await #expect(throws: ObjectStoreError.self) { _ = try await js.createObjectStore(other) }
                #expect(conflict?.code == .bucketConfigConflict)
                #expect(conflict?.message.contains("max bytes") == true)
                #expect(try await store.status().ttl == .seconds(3600))

                #expect(try await store.list().isEmpty)
                for name in ["a", "b", "c"] {
                    try await store.put(name: name, data: seededBytes(count: 200_000, seed: UInt64(name.utf8.first!)), headers: NATSHeaders(["Content-Type": "text/plain"]))
                }
                #expect(try await store.list().map(\.name) == ["a", "b", "c"])
                #expect(try await store.info("a").headers?["Content-Type"] == "text/plain")

                let before = try await js.streamInfo("OBJ_docs").state.messages
                try await store.delete("b")
                // b's two chunks are gone; its meta was replaced by a deleted marker.
                #expect(try await js.streamInfo("OBJ_docs").state.messages == before - 2)
                let missing = await #expect(throws: ObjectStoreError.self) { try await store.info("b") }
                #expect(missing?.code == .objectNotFound)
                let gone = await #expect(throws: ObjectStoreError.self) { try await store.get("b") }
                #expect(gone?.code == .objectNotFound)
                let marker = try await store.info("b", includeDeleted: true)
                #expect(marker.deleted)
                #expect(marker.size == 0)
                #expect(marker.digest == nil)
                #expect(try await store.list().map(\.name) == ["a", "c"])
                #expect(try await store.list(includeDeleted: true).count == 3)
                try await store.delete("b")  // deleting again does nothing
                let never = await #expect(throws: ObjectStoreError.self) { try await store.delete("never") }
                #expect(never?.code == .objectNotFound)

                // A deleted name can be put again.
                try await store.put(name: "b", data: ByteBuffer(string: "back"))
                #expect(try await store.get("b").data.text == "back")

                let badName = await #expect(throws: ObjectStoreError.self) { try await store.put(name: "", data: ByteBuffer()) }
                #expect(badName?.code == .invalidName)
                let zeroChunk = await #expect(throws: ObjectStoreError.self) { try await store.put(name: "x", data: ByteBuffer(), chunkSize: 0) }
                #expect(zeroChunk?.code == .invalidChunkSize)
                let hugeChunk = await #expect(throws: ObjectStoreError.self) { try await store.put(name: "x", data: ByteBuffer(), chunkSize: 2 * 1024 * 1024) }
                #expect(hugeChunk?.code == .invalidChunkSize)
                let badBucket = await #expect(throws: ObjectStoreError.self) { _ = try await js.objectStore("no.dots") }
                #expect(badBucket?.code == .invalidBucketName)

                let bound = try await js.objectStore("docs")
                #expect(try await bound.get("a").data == seededBytes(count: 200_000, seed: UInt64(UInt8(ascii: "a"))))
                try await js.deleteObjectStore("docs")
                let noBucket = await #expect(throws: ObjectStoreError.self) { _ = try await js.objectStore("docs") }
                #expect(noBucket?.code == .bucketNotFound)
                let putAfterDelete = await #expect(throws: ObjectStoreError.self) { try await store.put(name: "z", data: ByteBuffer(string: "z")) }
                #expect(putAfterDelete?.code == .bucketNotFound)
                let infoAfterDelete = await #expect(throws: ObjectStoreError.self) { try await store.info("a") }
                #expect(infoAfterDelete?.code == .bucketNotFound)
                let deleteMissing = await #expect(throws: ObjectStoreError.self) { try await js.deleteObjectStore("docs") }
                #expect(deleteMissing?.code == .bucketNotFound)
                await client.close()
            }
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func zeroByteObject(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            try await withTimeout(.seconds(30), "the empty object") {
                let client = try await connectedClient(server)
                let js = JetStream(client: client)
                let store = try await js.createObjectStore(ObjectStoreConfig(bucket: "empty", storage: .memory))
                let info = try await store.put(name: "nothing", data: ByteBuffer())
                #expect(info.size == 0)
                #expect(info.chunks == 0)
                #expect(info.digest == "SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=")
                #expect(try await js.streamInfo("OBJ_empty").state.messages == 1)
                let (read, data) = try await store.get("nothing")
                #expect(data.readableBytes == 0)
                #expect(read.digest == info.digest)

                let noPieces = AsyncStream<ByteBuffer> { $0.finish() }
                let streamed = try await store.put(name: "also nothing", chunks: noPieces)
                #expect(streamed.chunks == 0)
                #expect(try await store.get("also nothing").data.readableBytes == 0)

                // A sealed bucket refuses changes but still serves reads.
                try await store.seal()
                #expect(try await store.status().sealed)
                await #expect(throws: (any Error).self) { try await store.put(name: "late", data: ByteBuffer(string: "x")) }
                #expect(try await store.get("nothing").info.size == 0)
                await client.close()
            }
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func tamperedChunksFailVerification(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            try await withTimeout(.seconds(60), "the tampering checks") {
                let client = try await connectedClient(server)
                let js = JetStream(client: client)
                let store = try await js.createObjectStore(ObjectStoreConfig(bucket: "tamper"))
                let chunkSize = 64 * 1024
                let data = seededBytes(count: 300_000, seed: 99)
                let info = try await store.put(name: "victim", data: data, chunkSize: chunkSize)
                let subject = store.chunkSubject(for: info.nuid)
                func republish(_ bytes: ByteBuffer, skipping skipped: Int? = nil) async throws {
                    try await js.purgeStream("OBJ_tamper", subject: subject)
                    var index = 0
                    for offset in stride(from: 0, to: bytes.readableBytes, by: chunkSize) {
                        defer { index += 1 }
                        if index == skipped { continue }
                        try await js.publish(subject, payload: bytes.getSlice(at: offset, length: min(chunkSize, bytes.readableBytes - offset))!)
                    }
                }

                // One flipped bit: same size and chunk count, wrong digest.
                var flipped = data
                flipped.setInteger(flipped.getInteger(at: 150_000, as: UInt8.self)! ^ 0x01, at: 150_000)
                try await republish(flipped)
                let corrupt = await #expect(throws: ObjectStoreError.self) { _ = try await store.get("victim") }
                #expect(corrupt?.code == .digestMismatch)
                let directory = try makeTemporaryDirectory(prefix: "baton-objtamper")
                defer { try? FileManager.default.removeItem(at: directory) }
                let target = directory.appendingPathComponent("out.bin").path
                let toFile = await #expect(throws: ObjectStoreError.self) { try await store.get("victim", toFile: target) }
                #expect(toFile?.code == .digestMismatch)
                #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty)

                // A missing chunk.
                try await republish(data, skipping: 2)
                let short = await #expect(throws: ObjectStoreError.self) { _ = try await store.get("victim") }
                #expect(short?.code == .sizeMismatch)

                // An extra chunk.
                try await republish(data)
                #expect(try await store.get("victim").data == data)
                try await js.publish(subject, payload: ByteBuffer(string: "extra"))
                let long = await #expect(throws: ObjectStoreError.self) { _ = try await store.get("victim") }
                #expect(long?.code == .sizeMismatch)

                // No chunks at all.
                try await js.purgeStream("OBJ_tamper", subject: subject)
                let empty = await #expect(throws: ObjectStoreError.self) { _ = try await store.get("victim") }
                #expect(empty?.code == .sizeMismatch)

                // A meta that is not JSON.
                try await js.publish(store.metaSubject(for: "victim"), payload: ByteBuffer(string: "not json"), options: PublishOptions(rollup: .subject))
                let badMeta = await #expect(throws: ObjectStoreError.self) { _ = try await store.get("victim") }
                #expect(badMeta?.code == .invalidMeta)
                // ... does not stop the name from being replaced or the bucket from being listed.
                try await store.put(name: "victim", data: ByteBuffer(string: "fresh"))
                #expect(try await store.get("victim").data.text == "fresh")
                #expect(try await store.list().map(\.name) == ["victim"])
                await client.close()
            }
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func namesWithSpacesAndUnicode(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            try await withTimeout(.seconds(60), "the odd names") {
                let client = try await connectedClient(server)
                let js = JetStream(client: client)
                let store = try await js.createObjectStore(ObjectStoreConfig(bucket: "names"))
                #expect(store.metaSubject(for: "hello world") == "$O.names.M.aGVsbG8gd29ybGQ=")
                #expect(store.metaSubject(for: "??>") == "$O.names.M.Pz8-")  // url-safe alphabet
                let names = ["hello world", "naïve résumé ☃.txt", "emoji 🚀/rocket", "a.b.c", ">", "*", "x", "  leading", "日本語のファイル名"]
                for (index, name) in names.enumerated() {
                    try await store.put(name: name, data: ByteBuffer(string: "content \(index)"))
                }
                #expect(Set(try await store.list().map(\.name)) == Set(names))
                for (index, name) in names.enumerated() {
                    let (info, data) = try await store.get(name)
                    #expect(info.name == name)
                    #expect(data.text == "content \(index)")
                }
                try await store.delete("naïve résumé ☃.txt")
                #expect(try await store.list().count == names.count - 1)

                // Links as the Go client's AddLink and AddBucketLink write them (zero mtime).
                func link(_ name: String, _ target: String) -> String {
                    let to = target.isEmpty ? #"{"bucket":"names"}"# : #"{"bucket":"names","name":"\#(target)"}"#
                    return #"{"name":"\#(name)","bucket":"names","nuid":"\#(UUID().uuidString.prefix(8))","size":0,"mtime":"0001-01-01T00:00:00Z","chunks":0,"options":{"link":\#(to)}}"#
                }
                try await js.publish(store.metaSubject(for: "alias"), payload: ByteBuffer(string: link("alias", "hello world")), options: PublishOptions(rollup: .subject))
                try await js.publish(store.metaSubject(for: "whole"), payload: ByteBuffer(string: link("whole", "")), options: PublishOptions(rollup: .subject))
                #expect(try await store.info("alias").link == ObjectLink(bucket: "names", name: "hello world"))
                let (target, aliased) = try await store.get("alias")
                #expect(target.name == "hello world")
                #expect(aliased.text == "content 0")
                let whole = await #expect(throws: ObjectStoreError.self) { try await store.get("whole") }
                #expect(whole?.code == .bucketLink)
                await client.close()
            }
        }
    }
}
