import Foundation
import NATS
import NATSTestSupport
import NIOCore
import Testing

/// What `NATSClient` does with its state machine's actions, against a real nats-server: events
/// reach listeners in the order they happened (they are delivered outside the lock now), and the
/// re-subscriptions of a reconnect go out before what was buffered while disconnected.
@Suite("NATS client: event order and reconnect ordering against a real nats-server", .serialized)
struct ConnectionEventOrderTests {
    @Test(arguments: NATSServerKind.allCases)
    func eventsArriveInOrderAcrossRestartsAndClose(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(jetStream: false)) { server in
            let client = try await connectedClient(server)
            let events = client.events()
            let observer = client.events()
            for cycle in 1...2 {
                await server.kill()
                try await waitForEvent(observer, "disconnect \(cycle)") { if case .disconnected = $0 { return true } else { return false } }
                try await server.restart()
                try await waitForEvent(observer, "reconnect \(cycle)") { if case .reconnected = $0 { return true } else { return false } }
            }
            await client.close()
            let seen = try await withTimeout(.seconds(10), "the event stream to end after close") {
                var seen: [NATSConnectionEvent] = []
                for await event in events { seen.append(event) }
                return seen
            }
            // The disconnect reasons depend on timing (EOF or reset); the order must not.
            let summary = seen.map { event -> String in
                if case .disconnected(let from, _) = event { return "disconnected from \(from)" }
                return "\(event)"
            }
            let reconnected = "\(NATSConnectionEvent.reconnected(server: server.url))"
            #expect(
                summary == [
                    "disconnected from \(server.url)", reconnected, "disconnected from \(server.url)", reconnected,
                    "\(NATSConnectionEvent.closed(reason: nil))",
                ])
            // A listener added after close gets the close at once.
            var late = client.events().makeAsyncIterator()
            #expect(await late.next() == .closed(reason: nil))
            #expect(await late.next() == nil)
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func requestMadeWhileDisconnectedIsAnsweredAfterTheReconnect(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(jetStream: false)) { server in
            // The client answers its own requests: the reply can only arrive if the reconnect
            // sent the service's SUB and the inbox SUB before the buffered request.
            let client = try await connectedClient(server)
            let events = client.events()
            let service = try await client.subscribe(to: "svc.echo")
            let responder = Task {
                for await message in service {
                    guard let replyTo = message.replyTo else { continue }
                    try await client.publish(replyTo, string: "echo: \(message.string)")
                }
            }
            defer { responder.cancel() }
            #expect(try await client.request("svc.echo", payload: ByteBuffer(string: "first")).string == "echo: first")

            await server.kill()
            try await waitForEvent(events, "disconnected") { if case .disconnected = $0 { return true } else { return false } }
            let pending = Task { try await client.request("svc.echo", payload: ByteBuffer(string: "buffered"), timeout: .seconds(20)) }
            try await server.restart()
            try await waitForEvent(events, "reconnected") { if case .reconnected = $0 { return true } else { return false } }
            #expect(try await pending.value.string == "echo: buffered")
            await client.close()
        }
    }
}
