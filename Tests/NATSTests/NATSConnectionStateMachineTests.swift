import NIOCore
import Testing

@testable import NATS

/// Plain values in place of channels, timers and continuations: the machine is tested without
/// I/O, and each returned waiter or timer says which one it is.
enum MachineTestTypes: NATSConnectionStateMachineTypes {
    struct Connection: Identifiable, Sendable, Equatable {
        let id: Int
    }
    typealias Timer = String
    typealias ReplyWaiter = String
    typealias PongWaiter = String
    typealias DrainWaiter = String
    typealias Sink = String
    typealias Listener = Int
    typealias ReconnectTask = String
}

typealias TestMachine = NATSConnectionStateMachine<MachineTestTypes>

private let serverA = try! NATSServerAddress(parsing: "nats://10.0.0.1:4222")
private let serverB = try! NATSServerAddress(parsing: "nats://10.0.0.2:4222")

private func makeMachine(_ configure: (inout NATSClientOptions) -> Void = { _ in }) -> TestMachine {
    var options = NATSClientOptions(servers: [serverA.description, serverB.description])
    configure(&options)
    return TestMachine(configuration: .init(options), servers: [serverA, serverB])
}

private func info(maxPayload: Int = 1024 * 1024, lameDuck: Bool = false, connectURLs: [String]? = nil) -> ServerInfo {
    var info = ServerInfo(serverID: "S", version: "2.9.10", maxPayload: maxPayload)
    info.headers = true
    info.lameDuckMode = lameDuck ? true : nil
    info.connectURLs = connectURLs
    return info
}

/// Runs connect → established on `connection` and returns the bytes of the first flush.
@discardableResult
private func connect(_ machine: inout TestMachine, _ connection: Int, server: NATSServerAddress = serverA, isReconnect: Bool = false) -> String {
    let conn = MachineTestTypes.Connection(id: connection)
    guard case .activate(let activated) = machine.connectionEstablished(conn, server: server, info: info(), isReconnect: isReconnect) else {
        Issue.record("connection \(connection) was not activated")
        return ""
    }
    #expect(activated == conn)
    // The prelude's flush is already scheduled: another publish schedules nothing more.
    #expect(machine.scheduleFlush() == nil)
    return written(&machine, connection)
}

/// The bytes the flush of `connection` writes now ("" when nothing).
private func written(_ machine: inout TestMachine, _ connection: Int) -> String {
    guard let flush = machine.flushDue(connection) else { return "" }
    return String(buffer: flush.bytes)
}

/// Every connection event waiting in the outbox, for the listeners they go to.
private func events(_ machine: inout TestMachine) -> [NATSConnectionEvent] {
    guard machine.claimEventDelivery() else { return [] }
    var events: [NATSConnectionEvent] = []
    while let deliveries = machine.takeEvents() {
        for case .event(let event, _) in deliveries { events.append(event) }
    }
    return events
}

private func publish(_ machine: inout TestMachine, _ subject: String, _ text: String) throws(NATSError) -> TestMachine.PublishAction {
    try machine.publish(subject: subject, replyTo: nil, headerBlock: nil, payload: ByteBuffer(string: text))
}

@Suite("NATS connection state machine")
struct NATSConnectionStateMachineTests {
    // MARK: - Connecting

    @Test func firstConnectSendsSubscriptionsAndBufferedPublishesInOrder() throws {
        var machine = makeMachine()
        _ = machine.addListener(1)
        #expect(try machine.connectRequested() == .start)
        #expect(try machine.connectRequested() == .alreadyStarted)
        let (sid, flush) = try machine.subscribe(subject: "orders.>", queue: "workers", sink: "orders")
        #expect(sid == 1 && flush == nil)
        let action = try publish(&machine, "greet", "hi")
        #expect(action.flush == nil && !action.waitForDrain)
        #expect(!machine.isConnected)

        #expect(connect(&machine, 7) == "SUB orders.> workers 1\r\nPUB greet 2\r\nhi\r\n")
        #expect(machine.isConnected && machine.connectedServer == serverA)
        #expect(events(&machine) == [.connected(server: serverA.description)])
        // Connected: a publish schedules one flush, the next one rides along.
        #expect(try publish(&machine, "a", "1").flush == MachineTestTypes.Connection(id: 7))
        #expect(try publish(&machine, "b", "2").flush == nil)
        #expect(written(&machine, 7) == "PUB a 1\r\n1\r\nPUB b 1\r\n2\r\n")
    }

    @Test func failedFirstConnectGoesBackToIdleAndMayBeRetried() throws {
        var machine = makeMachine()
        #expect(try machine.connectRequested() == .start)
        #expect(machine.serversToTry() == [serverA, serverB])
        machine.initialConnectFailed()
        #expect(try machine.connectRequested() == .start)
    }

    @Test func roundLimitGivesUp() throws {
        var machine = makeMachine { $0.maxReconnectRounds = 2 }
        _ = try machine.connectRequested()
        #expect(try machine.connectRound() == 0)
        #expect(machine.roundFailed() == .retry(round: 1))
        #expect(try machine.connectRound() == 1)
        #expect(machine.roundFailed() == .giveUp(reason: "no server reachable after 2 reconnect rounds"))
        _ = machine.closeRequested(reason: "no server reachable after 2 reconnect rounds")
        #expect(machine.roundFailed() == .closed)
        #expect(throws: NATSError.self) { try machine.connectRound() }
        #expect(machine.closeReason == "no server reachable after 2 reconnect rounds")
    }

    @Test func lameDuckAndDiscoveredServersAreLearned() {
        var machine = makeMachine()
        _ = machine.addListener(1)
        connect(&machine, 1)
        _ = events(&machine)
        let lameDuck = machine.infoReceived(1, info: info(lameDuck: true, connectURLs: ["10.0.0.3:4222"]))
        #expect(lameDuck == serverA)
        #expect(
            events(&machine) == [
                .discoveredServers(["nats://10.0.0.3:4222"]), .lameDuckMode(server: serverA.description),
            ])
        // Lame-duck servers go last; the next round starts after the current server.
        #expect(machine.serversToTry().map(\.description) == ["nats://10.0.0.2:4222", "nats://10.0.0.3:4222", serverA.description])
        // An INFO of an old connection changes nothing.
        #expect(machine.infoReceived(99, info: info(connectURLs: ["10.0.0.4:4222"])) == nil)
        #expect(machine.pool.entries.count == 3)
    }

    // MARK: - Reconnect

    @Test func reconnectResubscribesWithRemainingMaxThenSendsTheBuffer() throws {
        var machine = makeMachine()
        _ = machine.addListener(1)
        _ = try machine.connectRequested()
        connect(&machine, 1)
        let (a, _) = try machine.subscribe(subject: "a", queue: nil, sink: "a")
        let (b, _) = try machine.subscribe(subject: "b", queue: "q", sink: "b")
        let (c, _) = try machine.subscribe(subject: "c", queue: nil, sink: "c")
        _ = machine.unsubscribe(sid: b, after: 5)
        #expect(machine.messageReceived(sid: b)?.finished == false)
        #expect(machine.messageReceived(sid: b)?.finished == false)
        #expect(machine.unsubscribe(sid: c, after: nil).finished == "c")
        #expect(written(&machine, 1) == "SUB a 1\r\nSUB b q 2\r\nSUB c 3\r\nUNSUB 2 5\r\nUNSUB 3\r\n")
        _ = events(&machine)

        guard case .reconnect(let reconnect) = machine.connectionClosed(1, reason: "EOF") else {
            Issue.record("no reconnect")
            return
        }
        #expect(reconnect.server == serverA && reconnect.reason == "EOF")
        #expect(events(&machine) == [.disconnected(server: serverA.description, reason: "EOF")])
        // While disconnected: publishes are buffered, subscriptions recorded.
        _ = try publish(&machine, "later", "x")
        let (d, _) = try machine.subscribe(subject: "d", queue: nil, sink: "d")
        #expect(machine.reconnectTaskStarted("task-1", generation: reconnect.generation) == nil)
        // A callback of the old connection is ignored.
        guard case .none = machine.connectionClosed(1, reason: nil) else {
            Issue.record("an old connection's close was taken")
            return
        }

        #expect(machine.serversToTry() == [serverB, serverA])
        let prelude = connect(&machine, 2, server: serverB, isReconnect: true)
        #expect(prelude == "SUB a \(a)\r\nSUB b q \(b)\r\nUNSUB \(b) 3\r\nSUB d \(d)\r\nPUB later 1\r\nx\r\n")
        #expect(events(&machine) == [.reconnected(server: serverB.description)])
        #expect(machine.connectedServer == serverB)
    }

    @Test func requestsSentOnALostConnectionFailButBufferedOnesSurvive() throws {
        var machine = makeMachine()
        _ = try machine.connectRequested()
        connect(&machine, 1)
        let (first, inboxFlush) = try machine.requestStarted(inboxSubject: "_INBOX.x.*") { "inbox" }
        #expect(inboxFlush == MachineTestTypes.Connection(id: 1))
        let issued = machine.requestIssued(token: first, waiter: "sent", subject: "svc", replyTo: "_INBOX.x.\(first)", headerBlock: nil, payload: ByteBuffer())
        guard case .sent(let timerOn, _) = issued else {
            Issue.record("request not sent")
            return
        }
        #expect(timerOn == MachineTestTypes.Connection(id: 1))
        #expect(machine.requestTimerScheduled(token: first, timer: "t-sent") == nil)
        #expect(written(&machine, 1) == "SUB _INBOX.x.* 1\r\nPUB svc _INBOX.x.\(first) 0\r\n\r\n")

        guard case .reconnect(let reconnect) = machine.connectionClosed(1, reason: "reset") else {
            Issue.record("no reconnect")
            return
        }
        #expect(reconnect.failures.requests.map(\.0) == ["sent"])
        #expect(reconnect.failures.requests.map(\.1) == ["t-sent"])
        #expect(reconnect.failures.error.code == .connectionLost)
        #expect(reconnect.failures.error.message == "connection to \(serverA) lost: reset; outcome unknown")

        // Made while disconnected: buffered, not failed; goes out after the reconnect.
        let (second, noFlush) = try machine.requestStarted(inboxSubject: "_INBOX.x.*") { "inbox" }
        #expect(noFlush == nil)
        guard case .sent(nil, nil) = machine.requestIssued(token: second, waiter: "buffered", subject: "svc", replyTo: "_INBOX.x.\(second)", headerBlock: nil, payload: ByteBuffer()) else {
            Issue.record("buffered request not accepted")
            return
        }
        #expect(connect(&machine, 2, isReconnect: true) == "SUB _INBOX.x.* 1\r\nPUB svc _INBOX.x.\(second) 0\r\n\r\n")
        let reply = machine.replyReceived(token: second, message: NATSMessage(subject: "_INBOX.x.\(second)", payload: ByteBuffer(string: "ok"), sid: 1))
        #expect(reply?.waiter == "buffered")
        #expect((try? reply?.result.get())?.string == "ok")
        // The reply came: its timer, reported late, is handed back to be cancelled.
        #expect(machine.requestTimerScheduled(token: second, timer: "t-late") == "t-late")
    }

    @Test func noRespondersTimeoutsAndDeniedPublishesEndRequests() throws {
        var machine = makeMachine()
        _ = machine.addListener(1)
        _ = try machine.connectRequested()
        connect(&machine, 1)
        var tokens: [Substring] = []
        for (index, subject) in ["svc.a", "svc.b", "svc.c"].enumerated() {
            let (token, _) = try machine.requestStarted(inboxSubject: "_INBOX.x.*") { "inbox" }
            _ = machine.requestIssued(token: token, waiter: "w\(index)", subject: subject, replyTo: "_INBOX.x.\(token)", headerBlock: nil, payload: ByteBuffer())
            tokens.append(token)
        }
        var headers = NATSHeaders()
        headers.status = 503
        let noResponders = machine.replyReceived(token: tokens[0], message: NATSMessage(subject: "_INBOX.x.1", headers: headers, payload: ByteBuffer(), sid: 1))
        #expect(noResponders?.result.failureCode == .noResponders)

        let timedOut = machine.requestFailed(token: tokens[1], error: NATSError(.timeout, "no reply"))
        #expect(timedOut?.waiter == "w1" && timedOut?.result.failureCode == .timeout)
        #expect(machine.requestFailed(token: tokens[1], error: NATSError(.timeout, "twice")) == nil)

        _ = events(&machine)
        let denied = machine.serverError(1, text: "Permissions Violation for Publish to \"svc.c\"")
        #expect(denied.map(\.waiter) == ["w2"])
        #expect(denied.first?.result.failureCode == .permissionViolation)
        #expect(events(&machine) == [.serverError("Permissions Violation for Publish to \"svc.c\"")])
        #expect(machine.requests.isEmpty)
    }

    @Test func closeWhileReconnectingFailsEverythingAndStopsTheTask() throws {
        var machine = makeMachine()
        _ = machine.addListener(1)
        _ = machine.addListener(2)
        _ = try machine.connectRequested()
        connect(&machine, 1)
        _ = try machine.subscribe(subject: "a", queue: nil, sink: "sink-a")
        guard case .reconnect(let reconnect) = machine.connectionClosed(1, reason: nil) else {
            Issue.record("no reconnect")
            return
        }
        #expect(machine.reconnectTaskStarted("task", generation: reconnect.generation) == nil)
        let (token, _) = try machine.requestStarted(inboxSubject: "_INBOX.x.*") { "inbox" }
        _ = machine.requestIssued(token: token, waiter: "buffered", subject: "svc", replyTo: "_INBOX.x.\(token)", headerBlock: nil, payload: ByteBuffer())
        _ = events(&machine)

        let closeResult = machine.closeRequested(reason: nil)
        let close = try #require(closeResult)
        #expect(close.reconnectTask == "task")
        #expect(close.connection == nil)
        #expect(Set(close.sinks) == ["sink-a", "inbox"])
        #expect(close.failures.requests.map(\.0) == ["buffered"])
        #expect(close.failures.error.code == .connectionClosed)
        #expect(machine.closeRequested(reason: nil) == nil)
        // The closed event, then both listeners end.
        let claimed = machine.claimEventDelivery()
        #expect(claimed)
        let deliveriesResult = machine.takeEvents()
        let deliveries = try #require(deliveriesResult)
        #expect(deliveries.count == 2)
        if case .event(.closed(nil), let to) = deliveries[0] { #expect(Set(to) == [1, 2]) } else { Issue.record("no closed event first") }
        if case .finish(let listeners) = deliveries[1] { #expect(Set(listeners) == [1, 2]) } else { Issue.record("listeners not finished") }
        #expect(machine.takeEvents() == nil)

        // After close: a late task is cancelled, a late connection closed, calls refused.
        #expect(machine.reconnectTaskStarted("late-task", generation: reconnect.generation) == "late-task")
        guard case .close = machine.connectionEstablished(.init(id: 3), server: serverA, info: info(), isReconnect: true) else {
            Issue.record("a connection made after close was kept")
            return
        }
        #expect(throws: NATSError.self) { try machine.subscribe(subject: "b", queue: nil, sink: "b") }
        #expect(throws: NATSError.self) { try publish(&machine, "x", "y") }
        #expect(throws: NATSError.self) { try machine.connectRequested() }
        if case .failure(let closed) = machine.addListener(9) { #expect(closed.reason == nil) } else { Issue.record("listener added to a closed client") }
    }

    @Test func closeWhileConnectedHandsBackTheConnectionAndPongWaiters() throws {
        var machine = makeMachine()
        _ = try machine.connectRequested()
        connect(&machine, 1)
        guard case .sent(let id, _, _) = machine.pingRequested("flush") else {
            Issue.record("ping not sent")
            return
        }
        #expect(machine.pongTimerScheduled(id: id, timer: "pt") == nil)
        let closeResult = machine.closeRequested(reason: "bye")
        let close = try #require(closeResult)
        #expect(close.connection == MachineTestTypes.Connection(id: 1))
        #expect(close.failures.pongWaiters.map(\.0) == ["flush"])
        #expect(close.failures.pongWaiters.map(\.1) == ["pt"])
        #expect(machine.pending.readableBytes == 0)
    }

    // MARK: - PING / PONG

    @Test func unansweredKeepalivesMakeTheConnectionStale() throws {
        var machine = makeMachine { $0.maxPingsOutstanding = 2 }
        _ = try machine.connectRequested()
        connect(&machine, 1)
        guard case .ping(let flush) = machine.keepaliveTick(1) else {
            Issue.record("no first ping")
            return
        }
        #expect(flush == MachineTestTypes.Connection(id: 1))
        #expect(written(&machine, 1) == "PING\r\n")
        guard case .ping = machine.keepaliveTick(1) else {
            Issue.record("no second ping")
            return
        }
        guard case .stale = machine.keepaliveTick(1) else {
            Issue.record("two unanswered pings did not make the connection stale")
            return
        }
        // A PONG resets the count; an old connection's tick is ignored.
        #expect(machine.pongReceived(1) == nil)
        guard case .ping = machine.keepaliveTick(1) else {
            Issue.record("no ping after a pong")
            return
        }
        guard case .ignore = machine.keepaliveTick(2) else {
            Issue.record("another connection's tick was taken")
            return
        }
    }

    @Test func pongsAnswerPingsInOrderAndATimedOutCallerIsSkipped() throws {
        var machine = makeMachine()
        _ = try machine.connectRequested()
        connect(&machine, 1)
        guard case .sent(let first, _, _) = machine.pingRequested("first"),
            case .sent(let second, _, _) = machine.pingRequested("second")
        else {
            Issue.record("pings not sent")
            return
        }
        #expect(machine.pongTimerScheduled(id: first, timer: "t1") == nil)
        #expect(machine.pongTimerScheduled(id: second, timer: "t2") == nil)
        #expect(written(&machine, 1) == "PING\r\nPING\r\n")
        #expect(machine.pongTimedOut(id: first) == "first")
        #expect(machine.pongTimedOut(id: first) == nil)
        #expect(machine.pongReceived(1) == nil)  // the abandoned first
        let answered = machine.pongReceived(1)
        #expect(answered?.0 == "second" && answered?.1 == "t2")
        // A timer reported after its PONG came is handed back to be cancelled.
        guard case .sent(let third, _, _) = machine.pingRequested("third") else { return }
        #expect(machine.pongReceived(1)?.0 == "third")
        #expect(machine.pongTimerScheduled(id: third, timer: "t3") == "t3")
    }

    @Test func pingsBufferedAcrossAReconnectAnswerNobody() throws {
        var machine = makeMachine()
        _ = try machine.connectRequested()
        connect(&machine, 1)
        guard case .sent = machine.pingRequested("lost") else { return }
        // The PING is still in the buffer when the connection drops.
        guard case .reconnect(let reconnect) = machine.connectionClosed(1, reason: nil) else { return }
        #expect(reconnect.failures.pongWaiters.map(\.0) == ["lost"])
        if case .fail(let waiter, let error) = machine.pingRequested("offline") {
            #expect(waiter == "offline" && error.code == .notConnected)
        } else {
            Issue.record("a ping while disconnected was accepted")
        }
        #expect(connect(&machine, 2, isReconnect: true) == "PING\r\n")
        guard case .sent = machine.pingRequested("new") else { return }
        #expect(machine.pongReceived(2) == nil)  // answers the PING written before the reconnect
        #expect(machine.pongReceived(2)?.0 == "new")
    }

    // MARK: - Flush and drain

    @Test func publishersWaitForTheBufferToDrain() throws {
        var machine = makeMachine { $0.maxPendingBytes = 16 }
        // Not connected: nothing to wait for.
        #expect(machine.drainWaiterAdded("offline") == "offline")
        _ = try machine.connectRequested()
        connect(&machine, 1)
        let action = try publish(&machine, "big", "0123456789abcdef")
        #expect(action.waitForDrain)
        #expect(machine.drainWaiterAdded("w1") == nil)
        let flushResult = machine.flushDue(1)
        let flush = try #require(flushResult)
        #expect(flush.drainWaiters == ["w1"])
        // Drained: a late waiter goes on at once.
        #expect(machine.drainWaiterAdded("w2") == "w2")

        // Not writable: the flush writes nothing until the socket is writable again.
        _ = try publish(&machine, "big", "0123456789abcdef")
        #expect(machine.writabilityChanged(1, writable: false) == nil)
        #expect(machine.flushDue(1) == nil)
        #expect(machine.drainWaiterAdded("w3") == nil)
        #expect(machine.writabilityChanged(1, writable: true) == MachineTestTypes.Connection(id: 1))
        // A lost connection resumes drain waiters too.
        guard case .reconnect(let reconnect) = machine.connectionClosed(1, reason: nil) else { return }
        #expect(reconnect.drainWaiters == ["w3"])
    }

    @Test func limitsAreCheckedBeforeBuffering() throws {
        var machine = makeMachine { $0.reconnectBufferSize = 64 }
        _ = try publish(&machine, "a", "0123456789")
        #expect(throws: NATSError.self) { try publish(&machine, "a", String(repeating: "x", count: 40)) }
        _ = try machine.connectRequested()
        let conn = MachineTestTypes.Connection(id: 1)
        _ = machine.connectionEstablished(conn, server: serverA, info: info(maxPayload: 8), isReconnect: false)
        do {
            _ = try publish(&machine, "a", "0123456789")
            Issue.record("a message over max_payload was accepted")
        } catch {
            #expect(error.code == .maxPayloadExceeded)
            #expect(error.message.contains("over the server's max_payload of 8 bytes"))
        }
    }

    // MARK: - Events

    @Test func eventsGoOutInOrderToTheListenersOfTheirTime() throws {
        var machine = makeMachine()
        guard case .success(let first) = machine.addListener(1) else { return }
        _ = try machine.connectRequested()
        _ = machine.connectionEstablished(.init(id: 1), server: serverA, info: info(), isReconnect: false)
        _ = machine.addListener(2)
        _ = machine.connectionClosed(1, reason: "x")
        let claimed = machine.claimEventDelivery()
        #expect(claimed)
        let claimedAgain = machine.claimEventDelivery()
        #expect(!claimedAgain)  // one deliverer at a time
        machine.slowConsumer(subject: "s", sid: 1, dropped: 1)  // while delivering: same outbox
        let deliveriesResult = machine.takeEvents()
        let deliveries = try #require(deliveriesResult)
        var seen: [(NATSConnectionEvent, [Int])] = []
        for case .event(let event, let to) in deliveries { seen.append((event, to.sorted())) }
        #expect(seen.map(\.0) == [.connected(server: serverA.description), .disconnected(server: serverA.description, reason: "x"), .slowConsumer(subject: "s", sid: 1, dropped: 1)])
        #expect(seen.map(\.1) == [[1], [1, 2], [1, 2]])
        #expect(machine.takeEvents() == nil)
        machine.removeListener(first)
        machine.slowConsumer(subject: "s", sid: 1, dropped: 2)
        let claimedLater = machine.claimEventDelivery()
        #expect(claimedLater)
        let lastDeliveries = machine.takeEvents()
        if case .event(_, let to) = try #require(lastDeliveries).first { #expect(to == [2]) }
    }

    // MARK: - Backoff

    @Test func backoffDoublesUpToTheLimitPlusJitter() {
        let backoff = ReconnectBackoff(reconnectWait: .milliseconds(50), maxReconnectWait: .seconds(2), jitter: .milliseconds(50))
        #expect(backoff.delay(round: 0, jitterNanoseconds: 7) == .nanoseconds(7))
        #expect(backoff.delay(round: 1, jitterNanoseconds: 0) == .milliseconds(50))
        #expect(backoff.delay(round: 2, jitterNanoseconds: 0) == .milliseconds(100))
        #expect(backoff.delay(round: 6, jitterNanoseconds: 0) == .milliseconds(1600))
        #expect(backoff.delay(round: 7, jitterNanoseconds: 1) == .seconds(2) + .nanoseconds(1))
        #expect(backoff.delay(round: 500, jitterNanoseconds: 0) == .seconds(2))
        for _ in 0..<100 { #expect((0...50_000_000).contains(backoff.randomJitter())) }
    }
}

extension Result where Failure == NATSError {
    fileprivate var failureCode: NATSError.Code? {
        if case .failure(let error) = self { return error.code }
        return nil
    }
}
