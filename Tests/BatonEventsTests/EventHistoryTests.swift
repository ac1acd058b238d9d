import BatonCore
import BatonEvents
import Foundation
import Logging
import NATS
import NATSTestSupport
import TestSupport
import Testing

@Suite("Event history on a real nats-server")
struct EventHistoryTests {
    static func event(_ kind: BatonEvent.Kind, app: String?, node: String = "node-1", time: Double = Date().timeIntervalSince1970, epoch: UInt64? = nil) -> BatonEvent {
        BatonEvent(time: time, cluster: "evt", node: node, app: app, kind: kind, epoch: epoch, detail: "\(kind.rawValue) of \(app ?? "node")")
    }

    /// Waits until the publisher has had `count` events acknowledged (bounded).
    static func waitPublished(_ publisher: EventPublisher, count: Int) async throws {
        try await eventually(
            "\(count) events published (are \(publisher.published); failed \(publisher.failed), dropped \(publisher.dropped))",
            timeout: .seconds(10), every: .milliseconds(20)
        ) { publisher.published >= count }
    }

    @Test("published events are read back by app and since a time, and follow sees a new one", arguments: NATSServerKind.allCases)
    func publishReadFollow(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let client = try await NATSClient.connect(options: NATSClientOptions(servers: [server.url]), logger: Logger(label: "test"))
            let jetStream = JetStream(client: client)
            let publisher = EventPublisher(
                jetStream: jetStream, cluster: "evt", retention: EventStream.Retention(maxAge: .seconds(3600), maxBytes: 1_048_576), replicas: 1,
                logger: Logger(label: "test"))
            let running = Task { await publisher.run() }
            let old = Date().timeIntervalSince1970 - 7200
            publisher.publish(Self.event(.nodeStarted, app: nil))
            publisher.publish(Self.event(.acquired, app: "web", epoch: 3))
            publisher.publish(Self.event(.active, app: "web", epoch: 3))
            publisher.publish(Self.event(.acquired, app: "db", epoch: 5))
            try await Self.waitPublished(publisher, count: 4)

            let info = try await jetStream.streamInfo(EventSubjects.stream(cluster: "evt"))
            #expect(info.config.maxAge == .seconds(3600))
            #expect(info.config.maxBytes == 1_048_576)
            #expect(info.config.subjects == ["baton.evt.events.>"])

            let reader = EventReader(jetStream: jetStream, cluster: "evt")
            let all = try await reader.recentEvents()
            #expect(all.map(\.kind) == [.nodeStarted, .acquired, .active, .acquired])
            let web = try await reader.recentEvents(app: "web")
            #expect(web.map(\.kind) == [.acquired, .active])
            #expect(web.allSatisfy { $0.app == "web" })
            let limited = try await reader.recentEvents(limit: 1)
            #expect(limited.map(\.app) == ["db"])
            let future = try await reader.recentEvents(since: Date().addingTimeInterval(3600))
            #expect(future.isEmpty)
            let none = try await reader.recentEvents(app: "nothing")
            #expect(none.isEmpty)
            // The last N of every app and node, reading only the stream's last N messages.
            #expect(try await reader.lastEvents(2).map(\.kind) == [.active, .acquired])
            #expect(try await reader.lastEvents(2).map(\.app) == ["web", "db"])
            #expect(try await reader.lastEvents(10) == all)
            #expect(try await reader.lastEvents(0).isEmpty)
            await #expect(throws: EventStreamError.self) { try await EventReader(jetStream: jetStream, cluster: "none").lastEvents(5) }
            #expect(old < all[0].time)
            let last = try await reader.lastEvent(app: "web", kind: .acquired)
            #expect(last?.epoch == 3)
            #expect(try await reader.lastEvent(app: "web", kind: .fenced) == nil)

            // Follow from now: sees only what is published after it started.
            let follow = try await reader.follow(app: "web")
            publisher.publish(Self.event(.steppingDown, app: "db"))
            publisher.publish(Self.event(.fenced, app: "web", epoch: 3))
            var iterator = follow.makeAsyncIterator()
            let seen = try await iterator.next()
            #expect(seen?.kind == .fenced)
            #expect(seen?.epoch == 3)

            running.cancel()
            publisher.finish()
            await running.value
            await client.close()
        }
    }

    @Test("a full buffer drops and counts events instead of waiting, while NATS has no stream yet")
    func boundedBufferDrops() async throws {
        // JetStream off: the stream can never be created, so nothing leaves the buffer.
        try await withNATSServer(.debian, config: NATSServerConfig(jetStream: false)) { server in
            let client = try await NATSClient.connect(options: NATSClientOptions(servers: [server.url]), logger: Logger(label: "test"))
            let publisher = EventPublisher(
                jetStream: JetStream(client: client, timeout: .milliseconds(200)), cluster: "evt", replicas: 1, capacity: 4,
                logger: Logger(label: "test"))
            let running = Task { await publisher.run() }
            let local = publisher.localEvents()
            // Returns although nothing can be published (the call cost is in Benchmarks/EventsBenchmark).
            for index in 0..<10 { publisher.publish(Self.event(.observed, app: "web", epoch: UInt64(index))) }
            #expect(publisher.dropped == 6)
            #expect(publisher.published == 0)
            var iterator = local.makeAsyncIterator()
            #expect(await iterator.next()?.epoch == 0)
            running.cancel()
            publisher.finish()
            await running.value
            await client.close()
        }
    }
}
