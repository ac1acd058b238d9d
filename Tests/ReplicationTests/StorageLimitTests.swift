import Foundation
import Logging
import NATS
import NATSTestSupport
import NIOCore
import TestSupport
import Testing

@testable import Replication

/// Storage limits (issue 10 item 7) against real nats-servers whose JetStream storage is small:
/// the stream and snapshot bucket carry `max_bytes`, JetStream reserves it, a full stream drops
/// its oldest records instead of filling the server, and every refusal names the limit.
@Suite("Replication storage limits", .serialized, .timeLimit(.minutes(3)))
struct StorageLimitTests {
    typealias App = ReplicationIntegrationTests.App

    var logger: Logger {
        var logger = Logger(label: "storage-limit-test")
        logger.logLevel = .warning
        return logger
    }

    /// A server whose JetStream may use `megabytes` of disk.
    func server(megabytes: Int) -> NATSServerConfig {
        NATSServerConfig(extraConfig: "jetstream { max_file_store: \(megabytes)MB }", maxPayload: ReplicationIntegrationTests.maxPayload)
    }

    func configuration(_ directory: TemporaryDirectory, database: String) -> ReplicationConfiguration {
        var configuration = ReplicationConfiguration(
            cluster: "test", app: "web", nodeID: "node-a", databasePath: database, stateDirectory: directory.file("state"))
        configuration.pollInterval = .milliseconds(20)
        return configuration
    }

    /// An app whose database holds about 4 MB (13 rows of 300 kB).
    func appWithFourMegabytes(_ directory: TemporaryDirectory) async throws -> App {
        let app = try await App(path: directory.file("a/app.db"))
        for index in 0..<13 {
            try await app.run("INSERT INTO items(note, body) VALUES ('big \(index)', randomblob(300000))")
        }
        return app
    }

    @Test(arguments: NATSServerKind.allCases)
    func theConfiguredLimitsAreReservedAndFollowConfigChanges(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: server(megabytes: 64)) { server in
            let directory = try TemporaryDirectory()
            let client = try await NATSClient.connect(options: NATSClientOptions(servers: [server.url]))
            let jetStream = JetStream(client: client, timeout: .seconds(10))
            var configuration = configuration(directory, database: directory.file("app.db"))
            configuration.streamMaxBytes = 8 << 20
            configuration.snapshotBucketMaxBytes = 16 << 20
            try await ensureStreamAndBucket(jetStream: jetStream, configuration: configuration)
            #expect(try await jetStream.streamInfo(configuration.names.stream).config.maxBytes == 8 << 20)
            #expect(try await jetStream.streamInfo("OBJ_" + configuration.names.snapshotBucket).config.maxBytes == 16 << 20)

            // A changed config is applied to the existing stream and bucket.
            configuration.streamMaxBytes = 4 << 20
            configuration.snapshotBucketMaxBytes = 12 << 20
            try await ensureStreamAndBucket(jetStream: jetStream, configuration: configuration)
            #expect(try await jetStream.streamInfo(configuration.names.stream).config.maxBytes == 4 << 20)
            #expect(try await jetStream.streamInfo("OBJ_" + configuration.names.snapshotBucket).config.maxBytes == 12 << 20)

            // More than the server can reserve: refused, and the error names the setting.
            var greedy = configuration
            greedy.app = "big"
            greedy.streamMaxBytes = 100 << 20
            let error = await #expect(throws: ReplicationError.self) {
                try await ensureStreamAndBucket(jetStream: jetStream, configuration: greedy)
            }
            #expect(error?.code == .storageLimit)
            #expect(error?.message.contains("sqlite.stream_max_bytes") == true)
            #expect(error?.message.contains("max_file_store") == true)
            await client.close()
        }
    }

    /// A stream at its max_bytes drops its oldest records (the shipper snapshots before that
    /// matters) and the server keeps room for everything else: another stream's writes, a KV
    /// lease's renews. A stream *without* max_bytes that fills the server is what takes
    /// JetStream down — shown at the end, because it is why every Baton stream carries one.
    @Test(arguments: NATSServerKind.allCases)
    func aFullStreamDropsItsOldestRecordsAndLeavesRoomForOthers(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: server(megabytes: 24)) { server in
            let directory = try TemporaryDirectory()
            let client = try await NATSClient.connect(options: NATSClientOptions(servers: [server.url]))
            let jetStream = JetStream(client: client, timeout: .seconds(10))
            var kvConfig = KeyValueConfig(bucket: "lease", history: 4, ttl: .seconds(30))
            kvConfig.maxBytes = 1 << 20
            let lease = try await jetStream.createKeyValue(kvConfig)
            var revision = try await lease.create("leader", value: ByteBuffer(string: "node-a"))

            var configuration = configuration(directory, database: directory.file("app.db"))
            configuration.streamMaxBytes = 8 << 20
            configuration.snapshotBucketMaxBytes = 8 << 20
            try await ensureStreamAndBucket(jetStream: jetStream, configuration: configuration)
            let blob = ByteBuffer(bytes: [UInt8](repeating: 0x5a, count: 150_000))
            for _ in 0..<200 {  // 30 MB into an 8 MiB stream on a 24 MB server
                _ = try await jetStream.publish(configuration.names.transactionSubject, payload: blob)
            }
            let state = try await jetStream.streamInfo(configuration.names.stream).state
            #expect(state.bytes <= 8 << 20)
            #expect(state.firstSequence > 1)
            revision = try await lease.update("leader", value: ByteBuffer(string: "node-a"), revision: revision)

            // Without max_bytes, a stream takes what is left and the server stops JetStream
            // writes for everyone, the lease included.
            var unlimited = StreamConfig(name: "UNLIMITED", subjects: ["unlimited"])
            unlimited.storage = .file
            _ = try await jetStream.createStream(unlimited)
            var filled = false
            for _ in 0..<200 {
                do {
                    _ = try await jetStream.publish("unlimited", payload: blob)
                } catch {
                    filled = true
                    break
                }
            }
            #expect(filled)
            await #expect(throws: (any Error).self) {
                try await lease.update("leader", value: ByteBuffer(string: "node-a"), revision: revision)
            }
            await client.close()
        }
    }

    /// A snapshot bucket too small for the database: the shipper says so, naming the setting;
    /// one with room for two snapshots but not `snapshots` of them: old ones are pruned first.
    @Test(arguments: NATSServerKind.allCases)
    func snapshotsStayWithinTheBucketsMaxBytes(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: server(megabytes: 200)) { server in
            let directory = try TemporaryDirectory()
            let client = try await NATSClient.connect(options: NATSClientOptions(servers: [server.url]))
            let jetStream = JetStream(client: client, timeout: .seconds(10))
            let app = try await appWithFourMegabytes(directory)
            var tight = configuration(directory, database: app.path)
            tight.app = "tight"
            tight.snapshotBucketMaxBytes = 2 << 20
            let refused = await #expect(throws: ReplicationError.self) {
                _ = try await WALShipper.start(configuration: tight, token: 1, jetStream: jetStream, logger: logger)
            }
            #expect(refused?.code == .storageLimit)
            #expect(refused?.message.contains("sqlite.snapshot_max_bytes") == true)

            // A growing bucket (`snapshot_max_bytes` not set) would grow to 1 GiB, more than
            // this server can reserve: refused, and the error says what to raise.
            var growing = tight
            growing.app = "growing"
            growing.snapshotBucketGrows = true
            let notGrown = await #expect(throws: ReplicationError.self) {
                _ = try await WALShipper.start(configuration: growing, token: 1, jetStream: jetStream, logger: logger)
            }
            #expect(notGrown?.code == .storageLimit)
            #expect(notGrown?.message.contains("to grow from 2.0 MiB to 1.0 GiB") == true, "\(String(describing: notGrown))")
            #expect(notGrown?.message.contains("max_file_store") == true)

            var roomy = configuration(directory, database: app.path)
            roomy.snapshotBucketMaxBytes = 11 << 20  // two snapshots of ~4 MB, not three
            roomy.snapshotsToKeep = 3
            roomy.snapshotAfterMessages = 1
            let shipper = try await WALShipper.start(configuration: roomy, token: 1, jetStream: jetStream, logger: logger)
            for round in 0..<4 {
                let before = await shipper.status().snapshots
                for index in 0..<3 {
                    try await app.run("INSERT INTO items(note, body) VALUES ('r\(round)-\(index)', randomblob(2000))")
                }
                try await eventually("round \(round): a snapshot", timeout: .seconds(30), every: .milliseconds(20)) {
                    await shipper.status().snapshots != before
                }
                let status = await shipper.status()
                #expect(status.snapshots > before, "round \(round): no snapshot; \(status)")
            }
            let bucket = try await jetStream.streamInfo("OBJ_" + roomy.names.snapshotBucket).state
            #expect(bucket.bytes <= 11 << 20)
            let kept = try await jetStream.objectStore(roomy.names.snapshotBucket).list()
            #expect(kept.count == 2)
            #expect(await shipper.status().lastError == nil)
            _ = try await shipper.stepDown()
            await app.close()
            await client.close()
        }
    }

    /// Without `snapshot_max_bytes` the bucket grows to twice a snapshot (in whole GiB) when the
    /// database outgrows it, and keeps that size when batond starts again.
    @Test(arguments: NATSServerKind.allCases)
    func aGrowingSnapshotBucketMakesRoomForALargerDatabase(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: server(megabytes: 3000)) { server in
            let directory = try TemporaryDirectory()
            let client = try await NATSClient.connect(options: NATSClientOptions(servers: [server.url]))
            let jetStream = JetStream(client: client, timeout: .seconds(10))
            let app = try await appWithFourMegabytes(directory)
            var growing = configuration(directory, database: app.path)
            growing.snapshotBucketMaxBytes = 2 << 20
            growing.snapshotBucketGrows = true
            let shipper = try await WALShipper.start(configuration: growing, token: 1, jetStream: jetStream, logger: logger)
            #expect(await shipper.status().snapshots == 1)
            let bucket = "OBJ_" + growing.names.snapshotBucket
            #expect(try await jetStream.streamInfo(bucket).config.maxBytes == 1 << 30)
            _ = try await shipper.stepDown()
            // Starting again with the configured 2 MiB does not shrink it.
            try await ensureStreamAndBucket(jetStream: jetStream, configuration: growing)
            #expect(try await jetStream.streamInfo(bucket).config.maxBytes == 1 << 30)
            #expect(ReplicationConfiguration.grownSnapshotBucketLimit(forSnapshotOf: 4 << 30) == 9 << 30)
            await app.close()
            await client.close()
        }
    }
}
