/// The commands a node's control service takes besides `status`.
public enum ControlCommand: String, Codable, Sendable, Hashable, CaseIterable {
    /// Give up the lease so another node takes the app.
    case stepdown
    /// Hand the lease to a named node.
    case switchover
    /// Stop the app from changing hands (on this node).
    case pause
    /// Undo ``pause``.
    case resume
    /// Take an Object Store snapshot of the app's SQLite database now (on the active node).
    case snapshot
}

/// The body of a command request: `{"app": "web"}`, or `{"app": "web", "to": "node-b"}` for a
/// switchover.
public struct ControlRequest: Codable, Sendable, Hashable {
    /// The app the command is about.
    public var app: String
    /// The node to hand the app to; only for ``ControlCommand/switchover``.
    public var to: String?
    /// Who sends it, as the sender reports itself (absent from older batonctl versions).
    public var requester: ControlRequester?
    /// For ``ControlCommand/pause`` only: how long the pause lasts (a duration string, `30m`);
    /// absent for an indefinite pause. JSON key `for`.
    public var pauseFor: String?

    /// Creates a request.
    public init(app: String, to: String? = nil, requester: ControlRequester? = nil, pauseFor: String? = nil) {
        self.app = app
        self.to = to
        self.requester = requester
        self.pauseFor = pauseFor
    }

    enum CodingKeys: String, CodingKey {
        case app, to, requester
        case pauseFor = "for"
    }
}

/// The NATS subjects of a cluster's control services.
///
/// - `baton.<cluster>.status`: every node answers (no queue group) with its ``NodeStatus``.
/// - `baton.<cluster>.node.<node>.<command>`: one node's ``ControlCommand`` endpoints; the body
///   is a ``ControlRequest``, the answer a ``ControlReply``.
public struct ControlSubjects: Sendable, Hashable {
    /// The first token of every subject.
    public static let root = "baton"

    /// The cluster the subjects belong to.
    public var cluster: String

    /// The subjects of `cluster`.
    public init(cluster: String) {
        self.cluster = cluster
    }

    /// `baton.<cluster>.status`, answered by every node.
    public var status: String { "\(Self.root).\(cluster).status" }

    /// `baton.<cluster>.node.<node>`, the prefix of one node's command subjects.
    public func nodePrefix(_ node: String) -> String { "\(Self.root).\(cluster).node.\(node)" }

    /// `baton.<cluster>.node.<node>.<command>`.
    public func command(_ command: ControlCommand, node: String) -> String { "\(nodePrefix(node)).\(command.rawValue)" }

    /// Whether `token` can be used as the cluster or node part of a subject: not empty, and
    /// without dots, wildcards (`*`, `>`) or whitespace.
    public static func isValidToken(_ token: String) -> Bool {
        !token.isEmpty && !token.unicodeScalars.contains { scalar in
            scalar == "." || scalar == "*" || scalar == ">" || scalar.properties.isWhitespace || scalar.value < 0x20
        }
    }
}
