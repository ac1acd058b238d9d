import BatonCore

/// What the control service asks of the running node. batond's node supervisor implements it.
public protocol NodeController: Sendable {
    /// The node's status.
    func status() async -> NodeStatus
    /// Asks the app's active instance on this node to step down.
    func stepdown(app: String) async -> ControlReply
    /// Asks the app's active instance on this node to hand the lease to `target`.
    func switchover(app: String, to target: String) async -> ControlReply
    /// Pauses the app on this node (it never changes hands while paused).
    func pause(app: String) async -> ControlReply
    /// Resumes the app on this node.
    func resume(app: String) async -> ControlReply
}
