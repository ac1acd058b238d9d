import Foundation
import NATS
import NATSTestSupport
import NIOCore
import Testing

@Suite("Core protocol against a real nats-server", .serialized)
struct CoreIntegrationTests {
    @Test(arguments: NATSServerKind.allCases)
    func publishSubscribeWithHeadersQueuesAndWildcards(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(jetStream: false)) { server in
            let client = try await connectedClient(server)
            let wildcard = try await client.subscribe(to: "orders.*")
            let tail = try await client.subscribe(to: "orders.>")
            let queueA = try await client.subscribe(to: "work", queue: "workers")
            let queueB = try await client.subscribe(to: "work", queue: "workers")
            try await client.flush()

            var headers = NATSHeaders()
            headers["Trace-Id"] = "abc"
            headers.append(name: "Multi", value: "1")
            headers.append(name: "Multi", value: "2")
            try await client.publish("orders.new", string: "line1\r\nline2", headers: headers)
            try await client.publish("orders.eu.new", string: "deep")

            let first = try await nextMessage(wildcard)
            #expect(first.subject == "orders.new")
            #expect(first.string == "line1\r\nline2")
            #expect(first.headers?["Trace-Id"] == "abc")
            #expect(first.headers?.values(for: "Multi") == ["1", "2"])
            let tailMessages = try await collect(2, from: tail)
            #expect(tailMessages.map(\.subject) == ["orders.new", "orders.eu.new"])

            for index in 0..<20 { try await client.publish("work", string: "job \(index)") }
            try await client.flush()
            // Each job goes to exactly one member of the queue group.
            async let fromA = drain(queueA)
            async let fromB = drain(queueB)
            try await Task.sleep(for: .milliseconds(1))  // let both readers start
            try await queueA.unsubscribe()
            try await queueB.unsubscribe()
            let jobs = await fromA + fromB
            #expect(jobs.count == 20)
            #expect(Set(jobs).count == 20)
            await client.close()
        }
    }

    private func drain(_ subscription: NATSSubscription) async -> [String] {
        var result: [String] = []
        for await message in subscription { result.append(message.string) }
        return result
    }

    @Test(arguments: NATSServerKind.allCases)
    func requestReplyNoRespondersAndTimeout(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(jetStream: false)) { server in
            let client = try await connectedClient(server)
            let service = try await client.subscribe(to: "math.double")
            let responder = Task {
                for await request in service {
                    let value = Int(request.string) ?? 0
                    try await client.publish(request.replyTo!, string: String(value * 2))
                }
            }
            defer { responder.cancel() }
            try await client.flush()
            for value in [1, 21, 500] {
                let reply = try await client.request("math.double", payload: ByteBuffer(string: String(value)))
                #expect(reply.string == String(value * 2))
            }
            // Many concurrent requests share one inbox subscription.
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for value in 0..<50 {
                    group.addTask {
                        let reply = try await client.request("math.double", payload: ByteBuffer(string: String(value)))
                        return reply.string == String(value * 2)
                    }
                }
                for try await ok in group { #expect(ok) }
            }

            let noResponders = await #expect(throws: NATSError.self) {
                _ = try await client.request("nobody.home", timeout: .seconds(2))
            }
            #expect(noResponders?.code == .noResponders)

            let silent = try await client.subscribe(to: "silent")
            try await client.flush()
            let timeout = await #expect(throws: NATSError.self) {
                _ = try await client.request("silent", timeout: .milliseconds(200))
            }
            #expect(timeout?.code == .timeout)
            try await silent.unsubscribe()

            let rtt = try await client.rtt()
            #expect(rtt > .zero && rtt < .seconds(1))
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func unsubscribeAfterMaxMessages(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(jetStream: false)) { server in
            let client = try await connectedClient(server)
            let subscription = try await client.subscribe(to: "limited")
            try await subscription.unsubscribe(after: 3)
            for index in 0..<10 { try await client.publish("limited", string: "\(index)") }
            try await client.flush()
            let received = try await withTimeout(.seconds(5), "the subscription to end") {
                var result: [String] = []
                for await message in subscription { result.append(message.string) }
                return result
            }
            #expect(received == ["0", "1", "2"])
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func clientSideChecksRejectBadInput(kind: NATSServerKind) async throws {
        var config = NATSServerConfig(jetStream: false)
        config.maxPayload = 1024
        try await withNATSServer(kind, config: config) { server in
            let client = try await connectedClient(server)
            #expect(client.serverInfo?.maxPayload == 1024)
            let tooBig = await #expect(throws: NATSError.self) {
                try await client.publish("big", payload: ByteBuffer(repeating: 0x41, count: 1025))
            }
            #expect(tooBig?.code == .maxPayloadExceeded)
            #expect(tooBig?.message.contains("1024") == true)
            // Headers count towards max_payload.
            var headers = NATSHeaders()
            headers["Pad"] = String(repeating: "x", count: 100)
            let withHeaders = await #expect(throws: NATSError.self) {
                try await client.publish("big", payload: ByteBuffer(repeating: 0x41, count: 1000), headers: headers)
            }
            #expect(withHeaders?.code == .maxPayloadExceeded)
            for subject in ["", "a..b", "has space", "wild.*", "tail.>", ".lead"] {
                let error = await #expect(throws: NATSError.self) { try await client.publish(subject, string: "x") }
                #expect(error?.code == .invalidSubject, "subject \"\(subject)\"")
            }
            let badSubscribe = await #expect(throws: NATSError.self) { _ = try await client.subscribe(to: "a.>.b") }
            #expect(badSubscribe?.code == .invalidSubject)
            var badHeaders = NATSHeaders()
            badHeaders["Bad Name"] = "v"
            let headerError = await #expect(throws: NATSError.self) { try await client.publish("ok", string: "x", headers: badHeaders) }
            #expect(headerError?.code == .invalidHeader)
            // The connection is still fine after every rejection.
            let subscription = try await client.subscribe(to: "ok")
            try await client.flush()
            try await client.publish("ok", payload: ByteBuffer(repeating: 0x42, count: 1024))
            #expect(try await nextMessage(subscription).payload.readableBytes == 1024)
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func reconnectsAfterServerRestartAndRestoresSubscriptions(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(jetStream: false)) { server in
            let client = try await connectedClient(server)
            let events = client.events()
            let subscription = try await client.subscribe(to: "updates")
            let other = try await connectedClient(server)
            let otherEvents = other.events()
            try await client.flush()
            try await other.publish("updates", string: "before")
            #expect(try await nextMessage(subscription).string == "before")

            await server.kill()
            try await waitForEvent(events, "disconnected") { if case .disconnected = $0 { return true } else { return false } }
            #expect(!client.isConnected)
            // Publishes made while disconnected wait in the reconnect buffer.
            try await client.publish("updates", string: "buffered")
            let notConnected = await #expect(throws: NATSError.self) { try await client.flush(timeout: .seconds(1)) }
            #expect(notConnected?.code == .notConnected)

            try await server.restart()
            try await waitForEvent(events, "reconnected") { if case .reconnected = $0 { return true } else { return false } }
            #expect(client.isConnected)
            // The buffered publish went out after the subscription was restored, so we see it.
            #expect(try await nextMessage(subscription).string == "buffered")
            try await waitForEvent(otherEvents, "other client reconnected") { if case .reconnected = $0 { return true } else { return false } }
            try await other.flush()
            try await other.publish("updates", string: "after")
            #expect(try await nextMessage(subscription).string == "after")
            await other.close()
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func inFlightRequestFailsWhenTheConnectionDrops(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(jetStream: false)) { server in
            let client = try await connectedClient(server)
            let silent = try await client.subscribe(to: "slow.service")
            try await client.flush()
            let pending = Task { try await client.request("slow.service", timeout: .seconds(30)) }
            _ = try await nextMessage(silent)  // the request reached the server
            await server.kill()
            let error = await #expect(throws: NATSError.self) { _ = try await pending.value }
            #expect(error?.code == .connectionLost)
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func reconnectBufferIsBounded(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(jetStream: false)) { server in
            let client = try await connectedClient(server) { $0.reconnectBufferSize = 4096 }
            let events = client.events()
            await server.kill()
            try await waitForEvent(events, "disconnected") { if case .disconnected = $0 { return true } else { return false } }
            var accepted = 0
            var failure: NATSError?
            for _ in 0..<100 {
                do {
                    try await client.publish("x", payload: ByteBuffer(repeating: 1, count: 200))
                    accepted += 1
                } catch let error as NATSError {
                    failure = error
                    break
                }
            }
            #expect(accepted > 0 && accepted < 20)
            #expect(failure?.code == .reconnectBufferExceeded)
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func staleConnectionIsDetectedByUnansweredPings(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(jetStream: false)) { server in
            let client = try await connectedClient(server) {
                $0.pingInterval = .milliseconds(100)
                $0.maxPingsOutstanding = 2
            }
            let events = client.events()
            let pid = try #require(server.pid)
            Foundation.kill(pid, SIGSTOP)
            defer { Foundation.kill(pid, SIGCONT) }
            let event = try await waitForEvent(events, timeout: .seconds(5), "disconnect by stale ping") {
                if case .disconnected = $0 { return true } else { return false }
            }
            if case .disconnected(_, let reason) = event {
                #expect(reason?.contains("PING") == true)
            }
            Foundation.kill(pid, SIGCONT)
            try await waitForEvent(events, "reconnected after SIGCONT") { if case .reconnected = $0 { return true } else { return false } }
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func slowConsumerDropsAreCountedAndReported(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(jetStream: false)) { server in
            let client = try await connectedClient(server)
            let events = client.events()
            let subscription = try await client.subscribe(to: "firehose", pendingLimit: 10)
            try await client.flush()
            for index in 0..<100 { try await client.publish("firehose", string: "\(index)") }
            try await client.flush()
            try await waitForEvent(events, "slow consumer event") { if case .slowConsumer = $0 { return true } else { return false } }
            try await client.flush()
            #expect(subscription.droppedMessages == 90)
            // The oldest messages were kept, in order.
            let kept = try await collect(10, from: subscription)
            #expect(kept.map(\.string) == (0..<10).map(String.init))
            await client.close()
        }
    }

    /// The pending limit in bytes: big messages stop being buffered long before the count limit,
    /// a message always fits into an empty buffer, and reading releases the bytes.
    @Test(arguments: NATSServerKind.allCases)
    func slowConsumerPendingBytesAreBounded(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: NATSServerConfig(jetStream: false)) { server in
            let client = try await connectedClient(server)
            let subscription = try await client.subscribe(to: "blobs", pendingBytesLimit: 25_000)
            try await client.flush()
            let blob = ByteBuffer(bytes: [UInt8](repeating: 1, count: 10_000))
            for _ in 0..<10 { try await client.publish("blobs", payload: blob) }
            try await client.flush()
            #expect(subscription.droppedMessages == 8)
            #expect(subscription.pendingBytes == 20_000)
            _ = try await collect(2, from: subscription)
            #expect(subscription.pendingBytes == 0)
            // One bigger than the whole limit still gets through into an empty buffer.
            try await client.publish("blobs", payload: ByteBuffer(bytes: [UInt8](repeating: 2, count: 40_000)))
            try await client.flush()
            let big = try await nextMessage(subscription)
            #expect(big.payload.readableBytes == 40_000)
            #expect(subscription.droppedMessages == 8)
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func lameDuckModeIsReported(kind: NATSServerKind) async throws {
        var config = NATSServerConfig(jetStream: false)
        config.lameDuckDuration = .seconds(30)
        config.lameDuckGracePeriod = .seconds(10)
        try await withNATSServer(kind, config: config) { server in
            let client = try await connectedClient(server)
            let events = client.events()
            try server.enterLameDuckMode()
            let event = try await waitForEvent(events, "lame duck event") { if case .lameDuckMode = $0 { return true } else { return false } }
            #expect(event == .lameDuckMode(server: server.url))
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func discoversClusterServersAndFailsOverToThem(kind: NATSServerKind) async throws {
        let routeA = try reserveLoopbackPort()
        let routeB = try reserveLoopbackPort()
        func clusterConfig(name: String, listen: Int, peer: Int) -> NATSServerConfig {
            var config = NATSServerConfig(jetStream: false)
            config.extraConfig = """
                server_name: \(name)
                cluster { name: baton-test, listen: "127.0.0.1:\(listen)", routes: ["nats://127.0.0.1:\(peer)"] }
                """
            return config
        }
        try await withNATSServer(kind, config: clusterConfig(name: "a", listen: routeA, peer: routeB)) { serverA in
            try await withNATSServer(kind, config: clusterConfig(name: "b", listen: routeB, peer: routeA)) { serverB in
                // The client is told only about A; it learns B from A's INFO once the route is up.
                let client = try await connectedClient(serverA)
                let events = client.events()
                if !client.knownServers.contains(where: { $0.hasSuffix(":\(serverB.port)") }) {
                    do {
                        try await waitForEvent(events, "B announced in connect_urls") { event in
                            if case .discoveredServers(let servers) = event { return servers.contains { $0.hasSuffix(":\(serverB.port)") } }
                            return false
                        }
                    } catch {
                        Issue.record("known: \(client.knownServers), INFO connect_urls: \(String(describing: client.serverInfo?.connectURLs)); B log: \(serverB.logTail(lines: 8))")
                        throw error
                    }
                }
                let subscription = try await client.subscribe(to: "cluster.news")
                try await client.flush()

                await serverA.kill()
                let event = try await waitForEvent(events, "reconnected to B") { if case .reconnected = $0 { return true } else { return false } }
                #expect(event == .reconnected(server: "nats://127.0.0.1:\(serverB.port)"))
                let publisher = try await connectedClient(serverB)
                try await publisher.flush()
                try await publisher.publish("cluster.news", string: "via B")
                #expect(try await nextMessage(subscription).string == "via B")
                await publisher.close()
                await client.close()
            }
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func initialConnectFailureNamesEveryServer(kind: NATSServerKind) async throws {
        let port = try reserveLoopbackPort()
        var options = NATSClientOptions(servers: ["nats://127.0.0.1:\(port)", "nats://127.0.0.1:\(port)"])
        options.connectTimeout = .milliseconds(500)
        let client = try NATSClient(options: options)
        let error = await #expect(throws: NATSError.self) { try await client.connect() }
        #expect(error?.code == .connectionFailed)
        #expect(error?.message.contains("127.0.0.1:\(port)") == true)
        await client.close()
        let closed = await #expect(throws: NATSError.self) { try await client.publish("x", string: "y") }
        #expect(closed?.code == .connectionClosed)
    }
}
