import Foundation
import NATS
import NATSTestSupport
import NIOCore
import TestSupport
import Testing

/// JetStream on a real 3-server cluster: replicated streams and consumers.
@Suite("JetStream on a 3-server cluster", .serialized)
struct JetStreamClusterTests {
    /// A replicated consumer sends a message only once its delivery is replicated, while
    /// nats-server 2.11+ sends `409 Batch Completed` (a request with `max_bytes` whose batch was
    /// taken) at once: the status arrives before the message. A fetch must wait for the
    /// dispatched messages rather than end empty (before: every waiting fetch of one message
    /// ended empty, the message came back only after the ack wait, and the applier recreated
    /// its consumer several times a second).
    @Test(arguments: NATSServerKind.allCases)
    func replicatedConsumerDeliversEveryMessageOfACompletedBatch(kind: NATSServerKind) async throws {
        try await withNATSCluster(kind) { servers in
            let reader = try await connectedClient(servers[0])
            let writer = try await connectedClient(servers[1])
            let js = JetStream(client: reader)
            var stream = StreamConfig(name: "REPLICATED", subjects: ["replicated.>"])
            stream.replicas = 3
            try await createWhenJetStreamIsReady(js, stream)
            var config = ConsumerConfig(durableName: "reader", ackPolicy: .explicit)
            config.replicas = 3
            config.ackWait = .seconds(30)
            let consumer = try await js.createPullConsumer(stream: "REPLICATED", config: config)

            let total = 60
            let publishing = Task {
                let writerJS = JetStream(client: writer)
                for index in 1...total {
                    try await writerJS.publish("replicated.\(index)", payload: ByteBuffer(string: "\(index)"))
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            var sequences: [UInt64] = []
            try await eventually("\(kind): all \(total) messages, received \(sequences.count): \(sequences.prefix(20))", timeout: .seconds(30), every: .milliseconds(1)) {
                // The WAL applier's pattern: what is there without waiting, else wait for one.
                var batch = try await consumer.fetch(batch: 16, maxBytes: 1 << 20, noWait: true)
                if batch.isEmpty {
                    batch = try await consumer.fetch(batch: 1, maxBytes: 1 << 20, expires: .milliseconds(500))
                }
                for message in batch {
                    sequences.append(message.metadata.streamSequence)
                    try await message.ack()
                }
                return sequences.count >= total
            }
            try await publishing.value
            #expect(sequences == (1...UInt64(total)).map { $0 }, "\(kind): received \(sequences.count) of \(total): \(sequences.prefix(20))")
            await reader.close()
            await writer.close()
        }
    }

    private func createWhenJetStreamIsReady(_ js: JetStream, _ config: StreamConfig) async throws {
        // Until there is a meta leader, creating fails ("JetStream system temporarily
        // unavailable", a timeout): those errors mean "not yet".
        try await eventually("stream \(config.name) created once the cluster has a meta leader", timeout: .seconds(30), every: .milliseconds(250), retryingErrors: true) {
            try await js.createStream(config)
            return true
        }
    }
}
