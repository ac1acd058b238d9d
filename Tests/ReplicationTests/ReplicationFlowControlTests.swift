import Foundation
import Logging
import NATS
import NATSTestSupport
import NIOCore
import TestSupport
import Testing

@testable import Replication

/// Flow control of the applier (issue 10, item 1): bounded pull requests on a large backlog, and
/// records re-read from their first chunk after a redelivery or a lost delivery. Part of the
/// serialized "Replication over JetStream" suite.
extension ReplicationIntegrationTests {
    /// A passive node far behind: ~220 MB of 1 MiB blobs shipped while its applier was stopped
    /// (so the records wait in the stream), then the applier catches up. The old applier asked
    /// for 256 messages of up to 1 MiB per pull request, more than the server queues for a
    /// client before it drops it as a slow consumer (64 MiB): the server log must show no slow
    /// consumer, and the replica must equal the primary.
    @Test(.timeLimit(.minutes(3)), arguments: NATSServerKind.allCases)
    func aLargeBacklogCatchesUpWithoutASlowConsumer(kind: NATSServerKind) async throws {
        // The server's default max_payload (1 MiB), as in production.
        try await withNATSServer(kind, config: NATSServerConfig()) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let app = try await App(path: directory.file("a/app.db"))
            var active = configuration(directory, node: "node-a", database: app.path)
            active.checkpointAfterFrames = 4000
            let passive = configuration(directory, node: "node-b", database: directory.file("b/app.db"))

            let shipper = try await WALShipper.start(configuration: active, token: 7, jetStream: jetStream, logger: logger)
            // The passive node takes the opening snapshot, then is down while the app writes.
            let applier = try await WALApplier.start(configuration: passive, jetStream: jetStream, logger: logger)
            _ = try await applier.waitForTxid(await shipper.status().lastTxid, timeout: .seconds(30))
            await applier.stop()
            let before = try #require(await applier.status().position)

            let blobs = 210
            for index in 0..<blobs {
                try await app.run("INSERT INTO items(note, body) VALUES ('blob \(index)', randomblob(1048576))")
            }
            let handoff = try await shipper.stepDown()
            let info = try await jetStream.streamInfo(active.names.stream)
            let backlogBytes = info.state.bytes
            let backlogMessages = info.state.lastSequence - before.streamSequence
            #expect(backlogBytes > 200_000_000, "the stream holds \(backlogBytes) bytes")

            let started = ContinuousClock.now
            let resumed = try await WALApplier.start(configuration: passive, jetStream: jetStream, logger: logger)
            let position = try await resumed.waitForFinalMarker(token: 7, timeout: .seconds(120))
            let elapsed = ContinuousClock.now - started
            let status = await resumed.status()
            await resumed.stop()
            #expect(position.txid == handoff.txid)
            #expect(position.checksum == handoff.checksum)
            // Caught up through the stream, without a resynchronisation or a restart.
            #expect(status.snapshotsRestored == 0, "\(status)")
            #expect(status.resynchronisations == 0, "\(status)")
            #expect(status.recordRestarts == 0, "\(status)")
            #expect(status.repositionsAfterReconnect == 0, "\(status)")
            // Every pull request stayed within its byte budget (4 MiB), far below 64 MiB.
            #expect(status.largestBatchBytes > 1_000_000 && status.largestBatchBytes <= passive.fetchMaxBytes, "\(status)")
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            print(
                "flow control [\(kind)]: \(backlogMessages) messages, \(backlogBytes / 1_000_000) MB caught up in "
                    + String(format: "%.1f s (%.1f MB/s), largest pull batch %d bytes", seconds, Double(backlogBytes) / 1e6 / seconds, status.largestBatchBytes))

            let log = (try? String(contentsOf: server.logFile, encoding: .utf8)) ?? ""
            #expect(!log.contains("Slow Consumer"), "\(server.logTail(lines: 20))")
            #expect(client.isConnected)

            try await app.checkpointTruncate()
            #expect(try fileChecksum(passive.replicaPath, pageSize: 4096) == handoff.checksum)
            #expect(try fileChecksum(app.path, pageSize: 4096) == handoff.checksum)
            let replica = try openImmutable(passive.replicaPath)
            #expect(try logicalDigest(replica) == (try await app.digest()))
            #expect(try replica.scalar("PRAGMA quick_check") == "ok")
            await app.close()
            await client.close()
        }
    }

    /// The stream holds chunked records delivered again from chunk 0 part-way through (chunks
    /// 0...k, then 0...n: a writer's publish retried, or a redelivery): the applier reassembles
    /// them and applies everything without a resynchronisation.
    @Test(arguments: NATSServerKind.allCases)
    func restartedChunkSequencesApplyWithoutAResync(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: Self.maxPayload)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let app = try await App(path: directory.file("a/app.db"))
            let active = configuration(directory, node: "node-a", database: app.path)
            let passive = configuration(directory, node: "node-b", database: directory.file("b/app.db"))
            let shipper = try await WALShipper.start(configuration: active, token: 4, jetStream: jetStream, logger: logger)
            try await app.workload(transactions: 12, bigEvery: 4)
            let handoff = try await shipper.stepDown()

            // Replay the stream with every chunked record restarted part-way.
            let stream = active.names.stream
            let info = try await jetStream.streamInfo(stream)
            var messages: [StoredMessage] = []
            for sequence in info.state.firstSequence...info.state.lastSequence {
                messages.append(try await jetStream.getMessage(stream: stream, sequence: sequence))
            }
            _ = try await jetStream.purgeStream(stream)
            var current: [StoredMessage] = []
            var restarted = 0
            for message in messages {
                let chunk = try RecordChunk(decoding: Array(message.payload.readableBytesView))
                guard chunk.count >= 2 else {
                    _ = try await jetStream.publish(message.subject, payload: message.payload)
                    continue
                }
                if chunk.index == 0 { current = [] }
                current.append(message)
                if chunk.index == chunk.count - 1 {
                    // Chunks 0...k, then the whole record 0...n, with k changing from record to record.
                    let k = restarted % (Int(chunk.count) - 1)
                    for again in current[0...k] + current { _ = try await jetStream.publish(again.subject, payload: again.payload) }
                    restarted += 1
                    current = []
                }
            }
            #expect(restarted >= 3)

            let applier = try await WALApplier.start(configuration: passive, jetStream: jetStream, logger: logger)
            let position = try await applier.waitForFinalMarker(token: 4, timeout: .seconds(30))
            let status = await applier.status()
            await applier.stop()
            #expect(position.txid == handoff.txid)
            #expect(position.checksum == handoff.checksum)
            #expect(status.resynchronisations == 0, "\(status)")
            #expect(status.discardedIncompleteRecords == 0, "\(status)")
            #expect(status.snapshotsRestored == 1, "\(status)")  // the opening snapshot only
            try await app.checkpointTruncate()
            #expect(try logicalDigest(openImmutable(passive.replicaPath)) == (try await app.digest()))
            await app.close()
            await client.close()
        }
    }

    /// A chunk delivered to nobody (the connection dropped with it in flight, or another reader
    /// took it: it waits for redelivery after the ack wait) leaves a hole in the delivered
    /// sequence: the applier reads the record again from its first chunk, without a resync.
    @Test(arguments: NATSServerKind.allCases)
    func aLostDeliveryRestartsTheRecordNotTheReplica(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: Self.maxPayload)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let app = try await App(path: directory.file("a/app.db"))
            let active = configuration(directory, node: "node-a", database: app.path)
            var passive = configuration(directory, node: "node-b", database: directory.file("b/app.db"))
            passive.fetchMaxMessages = 1  // one message per step, to lose exactly one
            let shipper = try await WALShipper.start(configuration: active, token: 6, jetStream: jetStream, logger: logger)
            try await app.workload(transactions: 8, bigEvery: 4)
            let handoff = try await shipper.stepDown()
            let stream = active.names.stream
            let info = try await jetStream.streamInfo(stream)
            // The second chunk of the first chunked record after the opening snapshot.
            var victim: UInt64?
            for sequence in info.state.firstSequence...info.state.lastSequence {
                let chunk = try RecordChunk(decoding: Array(try await jetStream.getMessage(stream: stream, sequence: sequence).payload.readableBytesView))
                if chunk.kind == .transaction, chunk.index == 1 {
                    victim = sequence
                    break
                }
            }
            let lost = try #require(victim)

            let core = ApplierCore(configuration: passive, jetStream: jetStream, logger: logger)
            try await core.load()
            try await core.position()
            var start = try #require(await core.status.position).streamSequence
            #expect(start < lost - 1)
            while start < lost - 1 {
                #expect(try await core.step(expires: .milliseconds(200), noWait: true) == 1)
                start += 1
            }
            // Someone else takes chunk 1 off the applier's consumer and never acknowledges it.
            let thief = try await jetStream.pullConsumer(stream: stream, name: passive.names.consumer)
            let taken = try await thief.fetch(batch: 1, noWait: true)
            #expect(taken.map(\.metadata.streamSequence) == [lost])
            var steps = 0
            while await core.status.position?.finalMarkerToken != 6, steps < 1000 {
                _ = try await core.step(expires: .milliseconds(200), noWait: true)
                steps += 1
            }
            let status = await core.status
            #expect(status.position?.txid == handoff.txid)
            #expect(status.position?.checksum == handoff.checksum)
            #expect(status.recordRestarts == 1, "\(status)")
            #expect(status.resynchronisations == 0, "\(status)")
            await core.shutdown()
            await app.close()
            await client.close()
        }
    }
    /// The connection drops while the applier catches up (the server restarts, as after a slow
    /// consumer disconnect): the applier logs it, reads again from its applied position once
    /// reconnected, and ends equal to the primary.
    @Test(arguments: NATSServerKind.allCases)
    func aReconnectDuringCatchUpReadsAgainFromThePosition(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: Self.maxPayload)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let app = try await App(path: directory.file("a/app.db"))
            let active = configuration(directory, node: "node-a", database: app.path)
            var passive = configuration(directory, node: "node-b", database: directory.file("b/app.db"))
            passive.fetchMaxMessages = 1  // slow catch-up, so the restart lands in the middle
            let shipper = try await WALShipper.start(configuration: active, token: 9, jetStream: jetStream, logger: logger)
            try await app.workload(transactions: 30, bigEvery: 4)
            let handoff = try await shipper.stepDown()

            let applier = try await WALApplier.start(configuration: passive, jetStream: jetStream, logger: logger)
            let restored = try await applier.waitForStreamSequence(1, timeout: .seconds(30))
            _ = try await applier.waitForStreamSequence(restored.streamSequence + 2, timeout: .seconds(30))
            try await server.restart()
            let position = try await applier.waitForFinalMarker(token: 9, timeout: .seconds(60))
            do {
                var seen: ApplierStatus?
                try await eventually("a reposition after the reconnect (\(seen.map { "\($0)" } ?? "no status"))", timeout: .seconds(20)) {
                    seen = await applier.status()
                    return seen?.repositionsAfterReconnect != 0
                }
            } catch {
                await applier.stop()
                throw error
            }
            let status = await applier.status()
            await applier.stop()
            #expect(status.repositionsAfterReconnect >= 1, "\(status)")
            #expect(position.txid == handoff.txid)
            #expect(position.checksum == handoff.checksum)
            try await app.checkpointTruncate()
            #expect(try fileChecksum(passive.replicaPath, pageSize: 4096) == handoff.checksum)
            #expect(try logicalDigest(openImmutable(passive.replicaPath)) == (try await app.digest()))
            await app.close()
            await client.close()
        }
    }
}
