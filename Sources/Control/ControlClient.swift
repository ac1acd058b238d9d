import BatonCore
import Foundation
import NATS
import NIOCore
import Synchronization

/// The requesting side of the nodes' ``ControlService``s: what `batonctl` uses.
public struct ControlClient: Sendable {
    /// The client requests are sent with.
    public let client: NATSClient
    /// The subjects of the cluster.
    public let subjects: ControlSubjects

    /// Who sends the commands, put into every command request (the control service logs it).
    public var requester: ControlRequester?

    /// Creates a control client for `cluster`; `requester` describes the sender in every command.
    public init(client: NATSClient, cluster: String, requester: ControlRequester? = nil) {
        self.client = client
        self.subjects = ControlSubjects(cluster: cluster)
        self.requester = requester
    }

    /// The replies to one status request.
    public struct StatusReplies: Sendable {
        /// The statuses, sorted by node id.
        public var statuses: [NodeStatus]
        /// Replies that were not a status (a micro service error, a body that does not decode),
        /// each described in words.
        public var problems: [String]

        /// Creates a collection.
        public init(statuses: [NodeStatus], problems: [String]) {
            self.statuses = statuses
            self.problems = problems
        }

        /// Whether nobody answered at all.
        public var isEmpty: Bool { statuses.isEmpty && problems.isEmpty }
    }

    /// Asks every node for its status on `baton.<cluster>.status` and collects the replies for
    /// `window`, or until `done` says the replies so far are enough, or at once when the server
    /// reports that nobody listens.
    ///
    /// - Throws: the client's error when the request cannot be sent.
    public func statuses(
        window: Duration,
        until done: (@Sendable ([NodeStatus]) -> Bool)? = nil
    ) async throws -> StatusReplies {
        let subject = subjects.status
        let inbox = client.newInbox()
        let subscription = try await client.subscribe(to: inbox)
        let closer = Task {
            try? await Task.sleep(for: window)
            try? await subscription.unsubscribe()
        }
        defer { closer.cancel() }
        return try await withTaskCancellationHandler {
            do {
                try await client.publish(subject, replyTo: inbox)
            } catch {
                try? await subscription.unsubscribe()
                throw error
            }
            var replies = StatusReplies(statuses: [], problems: [])
            let decoder = JSONDecoder()
            for await message in subscription {
                if message.status == 503 { break }  // no responders
                if let error = MicroServiceError(reply: message) {
                    replies.problems.append("error \(error.code): \(error.description)")
                } else if let status = try? decoder.decode(NodeStatus.self, from: Data(message.payload.readableBytesView)) {
                    replies.statuses.append(status)
                    if let done, done(replies.statuses) { break }
                } else {
                    let text = String(decoding: message.payload.readableBytesView.prefix(120), as: UTF8.self)
                    replies.problems.append("a reply that is not a node status: \(text)")
                }
            }
            try? await subscription.unsubscribe()
            replies.statuses.sort { $0.node < $1.node }
            return replies
        } onCancel: {
            closer.cancel()
        }
    }

    /// Sends `command` about `app` to `node` and returns its answer.
    ///
    /// - Throws: ``ControlClientError`` when nobody listens on the node's subject, when it does
    ///   not answer within `timeout`, when it answers with an error or with something that is
    ///   not a ``ControlReply``; the client's error for anything else.
    /// `pauseFor` (pause only) gives the pause an end.
    public func send(
        _ command: ControlCommand, app: String, to target: String? = nil, pauseFor: Duration? = nil, node: String, timeout: Duration
    ) async throws -> ControlReply {
        let subject = subjects.command(command, node: node)
        let request = ControlRequest(app: app, to: target, requester: requester, pauseFor: pauseFor?.configString)
        let body = ByteBuffer(bytes: try JSONEncoder().encode(request))
        let reply: NATSMessage
        do {
            reply = try await client.request(subject, payload: body, timeout: timeout)
        } catch let error as NATSError where error.code == .noResponders {
            throw ControlClientError.nodeNotListening(node: node, subject: subject)
        } catch let error as NATSError where error.code == .timeout {
            throw ControlClientError.noAnswer(node: node, subject: subject, timeout: timeout)
        }
        if let error = MicroServiceError(reply: reply) {
            throw ControlClientError.refused(node: node, code: error.code, message: error.description)
        }
        do {
            return try JSONDecoder().decode(ControlReply.self, from: Data(reply.payload.readableBytesView))
        } catch {
            throw ControlClientError.badReply(node: node, text: String(decoding: reply.payload.readableBytesView.prefix(200), as: UTF8.self))
        }
    }

    /// Binds the lease bucket of `app` (it is not created when missing) for watching.
    ///
    /// - Throws: ``ControlClientError/noLeaseBucket(app:bucket:)`` when no node ever opened it.
    public func leaseStore(app: String, jetStream: JetStream) async throws -> LeaseStore {
        let bucket = LeaseStore.bucketName(cluster: subjects.cluster, app: app)
        do {
            return LeaseStore(kv: try await jetStream.keyValue(bucket), app: app)
        } catch let error as KeyValueError where error.code == .bucketNotFound {
            throw ControlClientError.noLeaseBucket(app: app, bucket: bucket)
        }
    }

    /// The current holder of the lease in `store`, or nil when it is free.
    public func currentHolder(of store: LeaseStore) async throws -> LeaseHolderSnapshot? {
        guard let entry = try await store.kv.get(LeaseStore.key) else { return nil }
        guard let record = try? JSONDecoder().decode(LeaseRecord.self, from: Data(entry.value.readableBytesView)) else {
            return LeaseHolderSnapshot(node: "?", token: entry.revision)
        }
        return LeaseHolderSnapshot(node: record.node, token: record.token == 0 ? entry.revision : record.token)
    }

    /// Waits for the definite outcome of a stepdown (`target` nil) or switchover of `app` away
    /// from the node that held the lease when `lease` started: until the lease is held by
    /// another node (the target, for a switchover) and that node reports the app active with the
    /// new fencing token; or until it is clear that this will not happen; or until `timeout`.
    ///
    /// Start `lease` (``LeaseStore/watch()``) before sending the command, so that no change is
    /// missed. The watch is stopped before this returns.
    public func awaitHandover(
        app: String,
        from previous: LeaseHolderSnapshot,
        to target: String?,
        lease: LeaseWatch,
        timeout: Duration,
        pollInterval: Duration = .milliseconds(100)
    ) async -> HandoverOutcome {
        let tracker = Mutex(HandoverTracker(app: app, previous: previous, target: target))
        let watcher = Task {
            do {
                for try await event in lease {
                    guard case .observed(let observation) = event else { continue }
                    tracker.withLock { $0.observe(observation) }
                }
            } catch {
                tracker.withLock { $0.watchFailed("\(error)") }
            }
        }
        defer { watcher.cancel() }
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            var verdict = tracker.withLock { $0.verdict }
            if case .confirmWith(let holder, let token) = verdict {
                // Ask the new holder whether it runs the app now.
                let replies = try? await statuses(window: min(.milliseconds(500), max(.milliseconds(50), deadline - clock.now))) { statuses in
                    statuses.contains { $0.node == holder }
                }
                let report = replies?.statuses.first { $0.node == holder }?.apps.first { $0.name == app }
                verdict = tracker.withLock { tracker in
                    tracker.holderReported(report, node: holder, token: token)
                    return tracker.verdict
                }
            }
            switch verdict {
            case .finished(let result):
                await lease.stop()
                return result
            case .waiting, .confirmWith:
                if clock.now >= deadline {
                    let result = tracker.withLock { $0.timedOut(after: timeout) }
                    await lease.stop()
                    return result
                }
                try? await Task.sleep(for: min(pollInterval, max(.zero, deadline - clock.now)))
            }
        }
    }
}

/// Who held a lease before a command, as batonctl saw it.
public struct LeaseHolderSnapshot: Sendable, Hashable {
    /// The holding node.
    public var node: String
    /// The fencing token of its lease.
    public var token: UInt64

    /// Creates a snapshot.
    public init(node: String, token: UInt64) {
        self.node = node
        self.token = token
    }
}

/// How a stepdown or switchover ended.
public enum HandoverOutcome: Sendable, Hashable, CustomStringConvertible {
    /// The app runs on `node` with the fencing token `token`.
    case active(app: String, node: String, token: UInt64)
    /// It did not happen (or not as asked); the text says what happened instead.
    case failed(String)

    /// Whether the handover went as asked.
    public var succeeded: Bool {
        if case .active = self { return true }
        return false
    }

    /// `web is now active on node-b (epoch 42)`, or the reason of the failure.
    public var description: String {
        switch self {
        case .active(let app, let node, let token): "\(app) is now active on \(node) (epoch \(token))"
        case .failed(let reason): reason
        }
    }
}

/// Follows the lease of one app through a stepdown or switchover and decides the outcome. Pure:
/// fed lease observations and the new holder's status reports, it says what to do next.
public struct HandoverTracker: Sendable {
    /// What the waiter should do now.
    public enum Verdict: Sendable, Hashable {
        /// Keep watching.
        case waiting
        /// `node` holds the lease with `token`: ask it whether the app is active.
        case confirmWith(node: String, token: UInt64)
        /// The outcome is known.
        case finished(HandoverOutcome)
    }

    /// The app whose lease is followed.
    public let app: String
    /// Who held the lease before the command.
    public let previous: LeaseHolderSnapshot
    /// The switchover target; nil for a stepdown (any other node will do).
    public let target: String?
    /// Whether the previous holder's lease was seen released.
    public private(set) var released = false
    /// The holder of a lease newer than the previous one.
    public private(set) var newHolder: LeaseHolderSnapshot?
    /// A node that held the new lease and gave it up again, with its token.
    private var lostBy: LeaseHolderSnapshot?
    /// The last status the new holder reported for the app.
    private var lastReport: AppStatus?
    private var watchError: String?
    /// What to do next, given everything observed so far.
    public private(set) var verdict: Verdict = .waiting

    /// Starts tracking a handover of `app` away from `previous`.
    public init(app: String, previous: LeaseHolderSnapshot, target: String?) {
        self.app = app
        self.previous = previous
        self.target = target
    }

    /// Takes one lease observation, in watch order.
    public mutating func observe(_ observation: LeaseObservation) {
        if case .finished = verdict { return }
        apply(observation)
    }

    private mutating func apply(_ observation: LeaseObservation) {
        switch observation {
        case .held(let holder, _, let token, _):
            if newHolder == nil {
                guard token != previous.token else { return }  // a renewal (or the handoff write) of the old lease
                released = true
            } else if let current = newHolder, current.token == token {
                return  // renewal
            }
            let snapshot = LeaseHolderSnapshot(node: holder.node, token: token)
            if let lost = newHolder, lost.token != token {
                lostBy = lost
            }
            newHolder = snapshot
            lastReport = nil
            if holder.node == previous.node {
                verdict = .finished(.failed(
                    lostBy.map { "\($0.node) took the lease of \(app) (epoch \($0.token)) but gave it up, and \(holder.node) took it back (epoch \(token))" }
                        ?? "\(holder.node) released \(app) and took it back (epoch \(token)): no other node took it"))
            } else if let target, holder.node != target {
                verdict = .finished(.failed("switchover failed: \(holder.node) took \(app) (epoch \(token)) instead of \(target)"))
            } else {
                verdict = .confirmWith(node: holder.node, token: token)
            }
        case .free, .released, .vanished:
            if let holder = newHolder {
                lostBy = holder
                newHolder = nil
                verdict = .waiting
                if target != nil {
                    verdict = .finished(.failed(
                        "switchover failed: \(holder.node) took the lease of \(app) (epoch \(holder.token)) but gave it up again\(Self.lastEventText(lastReport))"))
                }
            } else {
                released = true
            }
        }
    }

    /// Takes what the new holder `node` reported for the app (nil when it did not answer).
    public mutating func holderReported(_ report: AppStatus?, node: String, token: UInt64) {
        guard case .confirmWith(let holder, let current) = verdict, holder == node, current == token else { return }
        guard let report else { return }
        lastReport = report
        if report.role == .active && (report.token == nil || report.token == token) {
            verdict = .finished(.active(app: app, node: node, token: token))
        }
    }

    /// The lease watch ended with an error: the outcome cannot be followed any further.
    public mutating func watchFailed(_ reason: String) {
        if case .finished = verdict { return }
        watchError = reason
    }

    /// The outcome when time ran out.
    public func timedOut(after timeout: Duration) -> HandoverOutcome {
        if case .finished(let outcome) = verdict { return outcome }
        let limit = timeout.configString
        let watchNote = watchError.map { " (the lease watch failed: \($0))" } ?? ""
        if let holder = newHolder {
            let role = lastReport.map { "it reports \($0.role.rawValue)\(Self.lastEventText($0))" } ?? "it did not report the app"
            return .failed("\(holder.node) holds the lease of \(app) (epoch \(holder.token)) but is not active after \(limit): \(role)\(watchNote)")
        }
        if !released {
            return .failed("\(previous.node) still holds \(app) (epoch \(previous.token)) after \(limit)\(watchNote)")
        }
        if let lost = lostBy {
            return .failed("\(lost.node) took the lease of \(app) (epoch \(lost.token)) but gave it up; no node holds it after \(limit)\(watchNote)")
        }
        let who = target.map { "\($0) has not taken it" } ?? "no other node has taken it"
        return .failed("\(previous.node) released \(app) but \(who) after \(limit)\(watchNote)")
    }

    private static func lastEventText(_ report: AppStatus?) -> String {
        guard let event = report?.lastEvent, !event.isEmpty else { return "" }
        return " (last event: \(event))"
    }
}

/// A control command that did not get a usable answer.
public enum ControlClientError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Nobody listens on the node's command subject (the node is down or not connected).
    case nodeNotListening(node: String, subject: String)
    /// The node did not answer in time.
    case noAnswer(node: String, subject: String, timeout: Duration)
    /// The node answered with a micro service error (400 bad request, 404 unknown app...).
    case refused(node: String, code: Int, message: String)
    /// The node's answer is not a ``ControlReply``.
    case badReply(node: String, text: String)
    /// The app's lease bucket does not exist: no node ever ran the app.
    case noLeaseBucket(app: String, bucket: String)

    /// What went wrong, naming the node and subject.
    public var description: String {
        switch self {
        case .nodeNotListening(let node, let subject):
            "node \(node) does not listen on \(subject) (is its batond running and connected?)"
        case .noAnswer(let node, let subject, let timeout):
            "node \(node) did not answer on \(subject) within \(timeout.configString)"
        case .refused(let node, let code, let message):
            "node \(node) answered with error \(code): \(message)"
        case .badReply(let node, let text):
            "node \(node) answered with something that is not a control reply: \(text)"
        case .noLeaseBucket(let app, let bucket):
            "app \(app) has no lease bucket \(bucket) (no node has run it)"
        }
    }
}
