import Foundation
import NATSTestSupport
import NIOCore
import Testing

@testable import NATS

@Suite("JetStream against a real nats-server", .serialized)
struct JetStreamIntegrationTests {
    @Test(arguments: NATSServerKind.allCases)
    func streamLifecycleAndAccountInfo(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)
            var config = StreamConfig(name: "ORDERS", subjects: ["orders.>"])
            config.maxMessagesPerSubject = 5
            let created = try await js.createStream(config)
            #expect(created.config.name == "ORDERS")
            #expect(created.state.messages == 0)
            // Creating it again with the same config is fine; with another config it is refused.
            _ = try await js.createStream(config)
            var changed = config
            changed.maxMessagesPerSubject = 7
            let conflict = await #expect(throws: JetStreamAPIError.self) { try await js.createStream(changed) }
            #expect(conflict?.errorCode == .streamNameInUse)
            let updated = try await js.updateStream(changed)
            #expect(updated.config.maxMessagesPerSubject == 7)

            for index in 0..<10 { try await js.publish("orders.\(index % 2)", payload: ByteBuffer(string: "\(index)")) }
            let info = try await js.streamInfo("ORDERS")
            #expect(info.state.messages == 10)
            #expect(info.state.lastSequence == 10)
            // Keep-purge first: nats-server 2.9.10 miscounts a keep-purge after a subject purge
            // has left holes in the stream.
            #expect(try await js.purgeStream("ORDERS", keep: 6) == 4)
            #expect(try await js.purgeStream("ORDERS", subject: "orders.0") == 3)
            #expect(try await js.streamInfo("ORDERS").state.messages == 3)
            #expect(try await js.accountInfo().streams == 1)

            try await js.deleteStream("ORDERS")
            let missing = await #expect(throws: JetStreamAPIError.self) { try await js.streamInfo("ORDERS") }
            #expect(missing?.errorCode == .streamNotFound)
            let badName = await #expect(throws: JetStreamError.self) { try await js.streamInfo("a.b") }
            #expect(badName?.code == .invalidName)
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func publishExpectationsAreEnforced(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)
            var config = StreamConfig(name: "EVENTS", subjects: ["events.>"])
            config.allowRollup = true
            try await js.createStream(config)

            let first = try await js.publish("events.a", payload: ByteBuffer(string: "1"), options: PublishOptions(messageID: "m-1"))
            #expect(first.sequence == 1)
            let duplicate = try await js.publish("events.a", payload: ByteBuffer(string: "1"), options: PublishOptions(messageID: "m-1"))
            #expect(duplicate.duplicate == true)
            #expect(duplicate.sequence == 1)

            try await js.publish("events.a", options: PublishOptions(expectedLastSequence: 1))
            let stale = await #expect(throws: JetStreamAPIError.self) {
                try await js.publish("events.a", options: PublishOptions(expectedLastSequence: 1))
            }
            #expect(stale?.errorCode == .wrongLastSequence)
            #expect(stale?.isWrongLastSequence == true)

            try await js.publish("events.b", options: PublishOptions(expectedLastSubjectSequence: 0))
            let staleSubject = await #expect(throws: JetStreamAPIError.self) {
                try await js.publish("events.b", options: PublishOptions(expectedLastSubjectSequence: 0))
            }
            #expect(staleSubject?.errorCode == .wrongLastSequence)

            let wrongStream = await #expect(throws: JetStreamAPIError.self) {
                try await js.publish("events.c", options: PublishOptions(expectedStream: "OTHER"))
            }
            #expect(wrongStream?.errorCode == .streamNotMatch)

            let noStream = await #expect(throws: JetStreamError.self) { try await js.publish("nowhere.x") }
            #expect(noStream?.code == .noStreamForSubject)

            try await js.publish("events.a", payload: ByteBuffer(string: "latest"), options: PublishOptions(rollup: .subject))
            #expect(try await js.streamInfo("EVENTS").state.messages == 2)  // events.b and the rollup
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func getMessagesBySequenceSubjectAndDirect(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)
            var config = StreamConfig(name: "DOCS", subjects: ["docs.>"])
            config.allowDirect = true
            try await js.createStream(config)
            var headers = NATSHeaders()
            headers["Author"] = "ann"
            try await js.publish("docs.one", payload: ByteBuffer(string: "first"), headers: headers)
            try await js.publish("docs.two", payload: ByteBuffer(string: "second"))
            try await js.publish("docs.one", payload: ByteBuffer(string: "third"))

            let bySequence = try await js.getMessage(stream: "DOCS", sequence: 1)
            #expect(bySequence.subject == "docs.one")
            #expect(bySequence.payload.text == "first")
            #expect(bySequence.headers?["Author"] == "ann")
            #expect(abs(bySequence.time.timeIntervalSinceNow) < 60)
            let last = try await js.getLastMessage(stream: "DOCS", subject: "docs.one")
            #expect(last.sequence == 3)
            #expect(last.payload.text == "third")

            let direct = try await js.directGet(stream: "DOCS", sequence: 1)
            #expect(direct.payload.text == "first")
            #expect(direct.headers?["Author"] == "ann")
            #expect(abs(direct.time.timeIntervalSinceNow) < 60)
            let directLast = try await js.directGetLast(stream: "DOCS", subject: "docs.two")
            #expect(directLast.sequence == 2)

            let missing = await #expect(throws: JetStreamAPIError.self) { try await js.getMessage(stream: "DOCS", sequence: 99) }
            #expect(missing?.errorCode == .noMessageFound)
            let directMissing = await #expect(throws: JetStreamAPIError.self) { try await js.directGetLast(stream: "DOCS", subject: "docs.none") }
            #expect(directMissing?.errorCode == .noMessageFound)
            await client.close()
        }
    }

    /// `max_bytes` bounds what one pull request brings: never more than the budget plus one
    /// message (the server stops before the message that would overflow it), whatever the
    /// batch size; a budget smaller than the next message is an error, not a hang.
    @Test(arguments: NATSServerKind.allCases)
    func pullFetchesAreBoundedByBytes(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)
            try await js.createStream(StreamConfig(name: "BLOBS", subjects: ["blobs.>"]))
            let count = 60
            let size = 100_000
            for index in 0..<count {
                try await js.publish("blobs.\(index)", payload: ByteBuffer(bytes: [UInt8](repeating: UInt8(index), count: size)))
            }
            var config = ConsumerConfig(durableName: "bounded", ackPolicy: .explicit)
            config.ackWait = .seconds(30)
            let consumer = try await js.createPullConsumer(stream: "BLOBS", config: config)
            let maxBytes = 350_000
            var received: [UInt64] = []
            var fetches = 0
            while received.count < count, fetches < 100 {
                fetches += 1
                let batch = try await consumer.fetch(batch: 1000, maxBytes: maxBytes, expires: .seconds(2), noWait: fetches % 2 == 0)
                let bytes = batch.reduce(0) { $0 + PullConsumer.deliveredSize(of: $1.message) }
                let largest = batch.map { PullConsumer.deliveredSize(of: $0.message) }.max() ?? 0
                #expect(bytes <= maxBytes + largest, "fetch \(fetches): \(batch.count) messages, \(bytes) bytes")
                // The server's own accounting: strictly within the budget.
                #expect(bytes <= maxBytes, "fetch \(fetches): \(batch.count) messages, \(bytes) bytes")
                #expect(batch.count <= 3)
                if received.count + batch.count < count { #expect(batch.count == 3) }
                for message in batch {
                    #expect(message.payload.readableBytes == size)
                    received.append(message.metadata.streamSequence)
                    try await message.ack()
                }
            }
            #expect(received == Array(1...UInt64(count)))
            // The count bound still applies under a large byte budget.
            for index in 0..<5 { try await js.publish("blobs.small.\(index)", payload: ByteBuffer(string: "\(index)")) }
            let small = try await consumer.fetch(batch: 2, maxBytes: 1 << 20, expires: .seconds(2))
            #expect(small.count == 2)
            for message in small { try await message.ackSync() }
            // A budget below the next message's size cannot deliver anything.
            try await js.publish("blobs.big", payload: ByteBuffer(bytes: [UInt8](repeating: 7, count: size)))
            let rest = try await consumer.fetch(batch: 10, maxBytes: 1 << 20, noWait: true)
            #expect(rest.count == 4)
            for message in rest { try await message.ackSync() }
            try await js.publish("blobs.big2", payload: ByteBuffer(bytes: [UInt8](repeating: 8, count: size)))
            let refused = await #expect(throws: JetStreamError.self) {
                _ = try await consumer.fetch(batch: 10, maxBytes: 10_000, expires: .seconds(2))
            }
            #expect(refused?.code == .invalidArgument)
            await client.close()
        }
    }

    /// A 409 that ends one pull request ("Batch Completed", which a clustered nats-server 2.11+
    /// sends, "Leadership Change", "Exceeded MaxWaiting") is ``JetStreamError/Code/pullRequestEnded``
    /// (the consumer is still there); only a deleted (or push) consumer is
    /// ``JetStreamError/Code/consumerGone`` — which a fetch waiting on a consumer deleted under
    /// it gets from a real server.
    @Test(arguments: NATSServerKind.allCases)
    func onlyAGoneConsumerFailsAFetch(kind: NATSServerKind) async throws {
        for ending in ["Batch Completed", "Leadership Change", "Exceeded MaxWaiting", "Exceeded MaxRequestExpires of 1s"] {
            #expect(!PullConsumer.meansConsumerGone(ending), "\(ending)")
        }
        #expect(PullConsumer.meansConsumerGone("Consumer Deleted"))
        #expect(PullConsumer.meansConsumerGone("Consumer is push based"))
        try await withNATSServer(kind) { server in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)
            try await js.createStream(StreamConfig(name: "GONE", subjects: ["gone.>"]))
            let consumer = try await js.createPullConsumer(stream: "GONE", config: ConsumerConfig(durableName: "doomed", ackPolicy: .explicit))
            let waiting = Task { try await consumer.fetch(batch: 10, maxBytes: 1 << 20, expires: .seconds(10)) }
            try await Task.sleep(for: .milliseconds(300))  // the pull request is at the server
            try await js.deleteConsumer(stream: "GONE", name: "doomed")
            let error = await #expect(throws: JetStreamError.self) { _ = try await waiting.value }
            #expect(error?.code == .consumerGone, "\(String(describing: error))")
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func durablePullConsumerFetchesAndAcks(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)
            try await js.createStream(StreamConfig(name: "JOBS", subjects: ["jobs.>"]))
            for index in 0..<10 { try await js.publish("jobs.\(index)", payload: ByteBuffer(string: "\(index)")) }

            var config = ConsumerConfig(durableName: "worker", ackPolicy: .explicit)
            config.ackWait = .seconds(30)
            let consumer = try await js.createPullConsumer(stream: "JOBS", config: config)
            let first = try await consumer.fetch(batch: 4, expires: .seconds(2))
            #expect(first.map(\.payload.text) == ["0", "1", "2", "3"])
            #expect(first.map(\.metadata.streamSequence) == [1, 2, 3, 4])
            #expect(first.first?.metadata.pending == 9)
            for message in first { try await message.ackSync() }

            let rest = try await consumer.fetch(batch: 100, expires: .milliseconds(500))
            #expect(rest.count == 6)
            for message in rest.dropLast() { try await message.ack() }
            try await rest.last!.ackSync()
            let info = try await consumer.info()
            #expect(info.ackFloor.streamSequence == 10)
            #expect(info.numAckPending == 0)

            let empty = try await consumer.fetch(batch: 5, expires: .milliseconds(300))
            #expect(empty.isEmpty)
            let emptyNoWait = try await consumer.fetch(batch: 5, noWait: true)
            #expect(emptyNoWait.isEmpty)

            // A nak makes the message come back; the durable survives a rebind.
            try await js.publish("jobs.extra", payload: ByteBuffer(string: "retry me"))
            let once = try await consumer.fetch(batch: 1)
            try await once[0].nak()
            let rebound = try await js.pullConsumer(stream: "JOBS", name: "worker")
            let again = try await rebound.fetch(batch: 1)
            #expect(again.first?.payload.text == "retry me")
            #expect(again.first?.metadata.deliveries == 2)
            try await again[0].ackSync()

            let unknown = await #expect(throws: JetStreamAPIError.self) { _ = try await js.pullConsumer(stream: "JOBS", name: "nobody") }
            #expect(unknown?.errorCode == .consumerNotFound)
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func orderedConsumerDeliversInOrderAcrossAServerRestart(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)
            try await js.createStream(StreamConfig(name: "LOG", subjects: ["log.>"]))
            for index in 1...50 { try await js.publish("log.entry", payload: ByteBuffer(string: "\(index)")) }

            let consumer = try await js.orderedConsumer(stream: "LOG", options: OrderedConsumerOptions(idleHeartbeat: .milliseconds(500)))
            let reader = Task {
                var seen: [Int] = []
                for try await message in consumer {
                    seen.append(Int(message.payload.text)!)
                    if seen.count == 100 { break }
                }
                return seen
            }
            // Wait for the first half to be read, restart the server (the ephemeral consumer is
            // lost), then publish the second half.
            let events = client.events()
            while try await js.streamInfo("LOG").state.consumerCount == 0 { try await Task.sleep(for: .milliseconds(20)) }
            try await server.restart()
            try await waitForEvent(events, "reconnected") { if case .reconnected = $0 { return true } else { return false } }
            for index in 51...100 { try await js.publish("log.entry", payload: ByteBuffer(string: "\(index)")) }
            let seen = try await withTimeout(.seconds(30), "100 ordered messages") { try await reader.value }
            #expect(seen == Array(1...100))
            #expect(consumer.resets >= 1)
            await consumer.stop()
            await client.close()
        }
    }

    /// A server-side consumer that vanishes without a reconnect (deleted, or lost by a server)
    /// sends no more heartbeats: the client's shared heartbeat check notices within three or
    /// four intervals and the consumer is recreated where it left off. Two consumers share the
    /// check; a stopped one leaves it.
    @Test(arguments: NATSServerKind.allCases)
    func anOrderedConsumerWhoseServerSideConsumerVanishedResetsAfterMissedHeartbeats(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)
            try await js.createStream(StreamConfig(name: "BEATS", subjects: ["beats.>"]))
            try await js.publish("beats.a", payload: ByteBuffer(string: "1"))
            let options = OrderedConsumerOptions(idleHeartbeat: .milliseconds(200))
            let consumer = try await js.orderedConsumer(stream: "BEATS", options: options)
            let bystander = try await js.orderedConsumer(stream: "BEATS", options: OrderedConsumerOptions(idleHeartbeat: .seconds(5)))
            #expect(client.consumerHeartbeats.count == 2)
            let reader = Task {
                var seen: [String] = []
                for try await message in consumer {
                    seen.append(message.payload.text)
                    if seen.count == 2 { break }
                }
                return seen
            }
            let name = try #require(consumer.core.consumerName)
            try await js.deleteConsumer(stream: "BEATS", name: name)
            try await js.publish("beats.a", payload: ByteBuffer(string: "2"))
            let seen = try await withTimeout(.seconds(10), "the second message after the consumer was recreated") { try await reader.value }
            #expect(seen == ["1", "2"])
            #expect(consumer.resets >= 1)
            #expect(consumer.core.consumerName != name)
            await consumer.stop()
            #expect(client.consumerHeartbeats.count == 1)
            await bystander.stop()
            #expect(client.consumerHeartbeats.count == 0)
            await client.close()
        }
    }
}
