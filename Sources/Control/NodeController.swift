import BatonCore

/// What the control service asks of the running node. batond's node supervisor implements it.
public protocol NodeController: Sendable {
    /// The node's status.
    func status() async -> NodeStatus
    /// Asks the app's active instance on this node to step down.
    func stepdown(app: String) async -> ControlReply
    /// Asks the app's active instance on this node to hand the lease to `target`.
    func switchover(app: String, to target: String) async -> ControlReply
    /// Pauses the app on this node (it never changes hands while paused), until resumed.
    func pause(app: String) async -> ControlReply
    /// Pauses the app on this node for `duration`: then the pause ends by itself. The reply
    /// carries ``ControlReply/pausedUntil``.
    func pause(app: String, for duration: Duration) async -> ControlReply
    /// Resumes the app on this node.
    func resume(app: String) async -> ControlReply
    /// Takes a snapshot of the app's SQLite database now, when the app is active on this node
    /// and has a `sqlite:` section; the reply carries the ``SnapshotReport``.
    func snapshot(app: String) async -> ControlReply
    /// Records that `command` about `app` was requested by `requester` (see the extension).
    func recordCommand(_ command: ControlCommand, app: String, to target: String?, requester: String) async
}

extension NodeController {
    /// A controller without expiring pauses refuses them rather than pausing for ever.
    public func pause(app: String, for duration: Duration) async -> ControlReply {
        ControlReply(ok: false, message: "this node cannot pause \(app) for a limited time (\(duration.configString)); nothing was paused")
    }

    /// Records that `command` about `app` was requested by `requester` (the node's event
    /// history). The control service calls it before it carries a command out; by default
    /// nothing is recorded.
    public func recordCommand(_ command: ControlCommand, app: String, to target: String?, requester: String) async {}
}
