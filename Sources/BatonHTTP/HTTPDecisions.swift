import BatonCore

// The decisions behind batond's HTTP endpoints, as pure functions of what the node reports:
// tested without a server, and the server only turns their answers into responses.

/// A load-balancer check of one app on this node: `GET /apps/APP/active`, `/passive`,
/// `/replica?max_lag=N`.
public enum AppCheck: String, Sendable, Hashable, CaseIterable {
    /// 200 where the app is active and its backend runs (the lifecycle reaches `active` only
    /// after the health check passed, and leaves it when checks fail).
    case active
    /// 200 where the app is a standby: passive, not taking or giving up the lease.
    case passive
    /// 200 where the node is a passive node whose SQLite replica applies the active node's WAL,
    /// no restore runs, the last apply did not fail, and (with `max_lag`) it is at most that many
    /// transactions behind.
    case replica

    /// The outcome of a check: `ok` means 200, otherwise 503 (404 when the node runs no such app).
    public struct Outcome: Sendable, Hashable, Codable {
        /// The app.
        public var app: String
        /// The node that answered.
        public var node: String
        /// The check (`active`, `passive`, `replica`).
        public var check: String
        /// Whether the check passes.
        public var ok: Bool
        /// The node's role for the app (nil when it runs no such app).
        public var role: String?
        /// Why, in words.
        public var reason: String

        /// Creates an outcome.
        public init(app: String, node: String, check: String, ok: Bool, role: String?, reason: String) {
            self.app = app
            self.node = node
            self.check = check
            self.ok = ok
            self.role = role
            self.reason = reason
        }
    }

    /// Why a `max_lag` parameter is not usable.
    public struct BadParameter: Error, Sendable, Hashable {
        /// What is wrong.
        public var message: String
    }

    /// Parses `max_lag` (a number of transactions, 0 or more); nil when absent.
    public static func maxLag(_ text: String?) -> Result<UInt64?, BadParameter> {
        guard let text else { return .success(nil) }
        guard let value = UInt64(text) else {
            return .failure(BadParameter(message: "max_lag must be a number of transactions (0 or more), got \"\(text)\""))
        }
        return .success(value)
    }

    /// Parses `max_lag_seconds` (seconds, 0 or more, a decimal fraction allowed); nil when absent.
    public static func maxLagSeconds(_ text: String?) -> Result<Double?, BadParameter> {
        guard let text else { return .success(nil) }
        guard let value = Double(text), value.isFinite, value >= 0 else {
            return .failure(BadParameter(message: "max_lag_seconds must be a number of seconds (0 or more), got \"\(text)\""))
        }
        return .success(value)
    }

    /// Evaluates the check for `app` in `status` (this node's own status); nil when the node does
    /// not run the app. `maxLag` bounds the replica's lag in transactions, `maxLagSeconds` its
    /// lag in seconds (``ReplicationStatus/lagSeconds``).
    public func evaluate(app name: String, in status: NodeStatus, maxLag: UInt64? = nil, maxLagSeconds: Double? = nil) -> Outcome? {
        guard let app = status.apps.first(where: { $0.name == name }) else { return nil }
        func outcome(_ ok: Bool, _ reason: String) -> Outcome {
            Outcome(app: name, node: status.node, check: rawValue, ok: ok, role: app.role.rawValue, reason: reason)
        }
        switch self {
        case .active:
            guard app.role == .active else { return outcome(false, "\(name) is \(app.role.rawValue) on \(status.node)") }
            guard app.backendRunning else { return outcome(false, "\(name) is active on \(status.node) but its backend is not running") }
            return outcome(true, "\(name) is active on \(status.node) (epoch \(app.token.map(String.init) ?? "?"))")
        case .passive:
            guard app.role == .passive else { return outcome(false, "\(name) is \(app.role.rawValue) on \(status.node)") }
            return outcome(true, "\(name) is passive on \(status.node)")
        case .replica:
            guard app.role == .passive else { return outcome(false, "\(name) is \(app.role.rawValue) on \(status.node), not a replica") }
            guard let replication = app.replication else { return outcome(false, "\(name) has no sqlite: section, so no replica") }
            guard replication.role == .applying else {
                return outcome(false, "the replica of \(name) on \(status.node) is \(replication.role.rawValue), not applying")
            }
            if let sync = replication.sync { return outcome(false, "the replica of \(name) on \(status.node) is restoring: \(sync.text)") }
            if let error = replication.lastError { return outcome(false, "the replica of \(name) on \(status.node) failed: \(error)") }
            if let maxLagSeconds {
                let limit = Self.secondsText(maxLagSeconds)
                guard let seconds = replication.lagSeconds else {
                    return outcome(false, "the replica's lag in seconds on \(status.node) is not known yet (max_lag_seconds=\(limit))")
                }
                guard seconds <= maxLagSeconds else {
                    return outcome(false, "the replica on \(status.node) is \(Self.secondsText(seconds))s behind (max_lag_seconds=\(limit))")
                }
                if maxLag == nil { return outcome(true, "the replica on \(status.node) is \(Self.secondsText(seconds))s behind (max_lag_seconds=\(limit))") }
            }
            if let maxLag {
                guard let lag = replication.lagTransactions else {
                    return outcome(false, "the replica's lag on \(status.node) is not known yet (max_lag=\(maxLag))")
                }
                guard lag <= maxLag else { return outcome(false, "the replica on \(status.node) is \(lag) transactions behind (max_lag=\(maxLag))") }
                return outcome(true, "the replica on \(status.node) is \(lag) transactions behind (max_lag=\(maxLag))")
            }
            return outcome(true, "the replica on \(status.node) applies txid \(replication.txid.map(String.init) ?? "?")")
        }
    }

    /// `1.5`, `0`, `12.25`: seconds with at most 3 decimals, trailing zeros dropped.
    static func secondsText(_ seconds: Double) -> String {
        var text = String(format: "%.3f", seconds)
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }
}

/// Whether a request may use a control endpoint (`POST /apps/APP/...`).
public enum ControlAuthorization: Sendable, Hashable {
    /// The bearer token matches.
    case allowed
    /// No `Authorization: Bearer` header: 401.
    case missingToken
    /// A token that does not match: 403.
    case wrongToken
    /// No `control_token_file` is configured: the endpoints are refused (403).
    case disabled

    /// The decision for an `Authorization` header value, given the configured token (nil when
    /// no token file is configured). The comparison takes the same time wherever the tokens
    /// differ.
    public static func decide(authorization: String?, expected: String?) -> ControlAuthorization {
        guard let expected, !expected.isEmpty else { return .disabled }
        guard let authorization else { return .missingToken }
        let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return .missingToken }
        let given = Array(parts[1].trimmingPrefix(while: { $0 == " " }).utf8)
        let wanted = Array(expected.utf8)
        var difference = UInt8(given.count == wanted.count ? 0 : 1)
        for index in 0..<wanted.count {
            difference |= wanted[index] ^ (index < given.count ? given[index] : 0)
        }
        return difference == 0 ? .allowed : .wrongToken
    }
}

/// Where a control command sent over HTTP goes: the same nodes `batonctl` sends it to.
public enum CommandPlan: Sendable, Hashable {
    /// Send it to these nodes (their control services carry it out).
    case send(to: [String])
    /// Nothing to send: the answer is this status code and message.
    case refuse(status: Int, message: String)

    /// The plan for `command` about `app` (`to` for a switchover), from every node's status:
    /// stepdown and switchover go to the node that reports the app active, pause and resume to
    /// every node that runs the app.
    public static func make(_ command: ControlCommand, app: String, to target: String?, statuses: [NodeStatus]) -> CommandPlan {
        let reports = statuses.compactMap { status in status.apps.first { $0.name == app }.map { (node: status.node, app: $0) } }
        guard !reports.isEmpty else {
            let nodes = statuses.map(\.node).sorted().joined(separator: ", ")
            return .refuse(status: 404, message: "no node runs app \"\(app)\" (nodes that answered: \(nodes.isEmpty ? "none" : nodes))")
        }
        switch command {
        case .pause, .resume:
            return .send(to: reports.map(\.node).sorted())
        case .stepdown, .switchover, .snapshot:
            if command == .switchover {
                guard let target, !target.isEmpty else { return .refuse(status: 400, message: "switchover needs ?to=NODE: the node to hand \(app) to") }
                guard reports.contains(where: { $0.node == target }) else {
                    return .refuse(
                        status: 404,
                        message: "node \(target) does not run \(app) (it runs on \(reports.map(\.node).sorted().joined(separator: ", ")))")
                }
            } else if target != nil {
                return .refuse(status: 400, message: "\"to\" only applies to switchover")
            }
            let active = reports.filter { $0.app.role == .active }.map(\.node).sorted()
            guard active.count == 1 else {
                return .refuse(
                    status: 409,
                    message: active.isEmpty
                        ? "no node reports \(app) active" : "more than one node reports \(app) active (\(active.joined(separator: ", "))); try again")
            }
            if command == .switchover, active[0] == target {
                return .refuse(status: 409, message: "\(app) is already active on \(active[0])")
            }
            return .send(to: active)
        }
    }
}

/// `GET /healthz`: whether batond is alive and its loops tick.
public struct Liveness: Sendable, Hashable {
    /// Apps whose supervisor loop made no progress for longer than the limit.
    public var stalledApps: [String]
    /// Whether the node supervisor answered within its time limit.
    public var nodeAnswered: Bool
    /// The limit the loops are held to, in words (`5s`).
    public var limit: String

    /// Creates a liveness report.
    public init(stalledApps: [String], nodeAnswered: Bool, limit: String) {
        self.stalledApps = stalledApps
        self.nodeAnswered = nodeAnswered
        self.limit = limit
    }

    /// Whether `/healthz` answers 200.
    public var ok: Bool { nodeAnswered && stalledApps.isEmpty }

    /// What `/healthz` says.
    public var message: String {
        if !nodeAnswered { return "batond's node supervisor did not answer within \(limit)" }
        if !stalledApps.isEmpty { return "the loops of \(stalledApps.sorted().joined(separator: ", ")) made no progress for \(limit)" }
        return "ok: no app loop is more than \(limit) late for a deadline"
    }
}
