import Foundation
import NATS
import NATSTestSupport
import TestSupport
import Testing

@testable import Replication

/// Replication lag is not set by the shipper's poll interval or the applier's fetch expiry.
extension ReplicationIntegrationTests {
    @Test(arguments: NATSServerKind.allCases)
    func aCommitIsShippedWithoutWaitingForThePollInterval(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: Self.maxPayload)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let app = try await App(path: directory.file("a/app.db"))
            var active = configuration(directory, node: "node-a", database: app.path)
            active.pollInterval = .seconds(60)
            let shipper = try await WALShipper.start(configuration: active, token: 1, jetStream: jetStream, logger: logger)
            let before = await shipper.status().lastTxid
            // Let the loop reach its wait.
            try await Task.sleep(for: .milliseconds(200))
            try await app.run("INSERT INTO items(note, body) VALUES ('one', 'x')")
            try await eventually("the insert shipped (txid past \(before))", timeout: .seconds(10), every: .milliseconds(10)) {
                await shipper.status().lastTxid != before
            }
            #expect(await shipper.status().lastTxid == before + 1)
            // Stopping does not wait for the poll interval either.
            let stopping = ContinuousClock.now
            await shipper.stop()
            #expect(ContinuousClock.now - stopping < .seconds(10))
            await app.close()
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func recordsAreAppliedAsTheyArrive(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: Self.maxPayload)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let app = try await App(path: directory.file("a/app.db"))
            let active = configuration(directory, node: "node-a", database: app.path)
            let passive = configuration(directory, node: "node-b", database: directory.file("b/app.db"))
            let shipper = try await WALShipper.start(configuration: active, token: 1, jetStream: jetStream, logger: logger)
            let applier = try await WALApplier.start(configuration: passive, jetStream: jetStream, logger: logger)
            _ = try await applier.waitForTxid(await shipper.status().lastTxid, timeout: .seconds(30))
            // One record at a time: before, each waited for the applier's fetch to expire (500 ms),
            // ~5 s for 20 records on average.
            let start = ContinuousClock.now
            for index in 0..<20 {
                let txid = await shipper.status().lastTxid + 1
                try await app.run("INSERT INTO items(note, body) VALUES ('n\(index)', 'x')")
                _ = try await applier.waitForTxid(txid, timeout: .seconds(30))
            }
            let elapsed = ContinuousClock.now - start
            #expect(elapsed < .milliseconds(2500), "20 records one at a time took \(elapsed)")
            await applier.stop()
            await shipper.stop()
            await app.close()
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func commitsInsideTheMinimumRecordIntervalShareARecord(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(maxPayload: Self.maxPayload)) { server in
            let directory = try TemporaryDirectory()
            let (client, jetStream) = try await connect(server)
            let app = try await App(path: directory.file("a/app.db"))
            var active = configuration(directory, node: "node-a", database: app.path)
            active.minimumRecordInterval = .milliseconds(400)
            let passive = configuration(directory, node: "node-b", database: directory.file("b/app.db"))
            let shipper = try await WALShipper.start(configuration: active, token: 1, jetStream: jetStream, logger: logger)
            let applier = try await WALApplier.start(configuration: passive, jetStream: jetStream, logger: logger)
            let before = await shipper.status().lastTxid
            // 10 commits over ~500 ms: records at most every 400 ms, so 2 or 3 of them (one each
            // without the interval: every commit wakes the shipper).
            for index in 0..<10 {
                try await app.run("INSERT INTO items(note, body) VALUES ('c\(index)', randomblob(500))")
                try await Task.sleep(for: .milliseconds(50))
            }
            // The last record is due 400 ms after the one before it.
            try await Task.sleep(for: .seconds(1))
            let applied = try await applier.waitForTxid(await shipper.status().lastTxid, timeout: .seconds(30))
            let records = applied.txid - before
            #expect(records >= 1 && records <= 4, "\(records) records for 10 commits")
            #expect(try logicalDigest(openImmutable(passive.replicaPath)) == (try await app.digest()))
            await applier.stop()
            await shipper.stop()
            await app.close()
            await client.close()
        }
    }
}
