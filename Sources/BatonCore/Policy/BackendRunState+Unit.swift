/// The decisions a systemd unit's run adds to ``BackendRunState``. A process reports its own
/// end; a unit is watched: its manager's signals say what state it is in, and any of them may
/// be stale or caused by Baton's own start or stop. So:
///
/// - While an operation is in flight (``operationBegan()`` … ``operationEnded()``: a start,
///   restart or stray stop from the moment it asks for its turn, a stop, a fence, the handling
///   of a unit found down), the unit's state is not news: it is ignored, and looked at again
///   once the operation ended.
/// - A state that differs from what should be (``unitSignalled(_:)``) is worth reading the
///   unit's current state; only that fresh state (``unitRead(_:cause:at:)``) is acted on.
/// - A unit found down while it should run goes through the ``RestartTracker``: restart after
///   the backoff, or give up, naming the unit and what happened to it. A restart that fails
///   counts as one more end (the unit is down still), until the budget is spent.
/// - A unit found up while nothing should run is stopped again (``Effect/stopStray``).
/// - A start needs the keeper armed, before its deadline (as the keeper of a process refuses a
///   START past its deadline): ``startRefusal(at:)``.
extension BackendRunState {
    /// What a unit's state means to the run.
    public enum UnitActivity: Sendable, Hashable {
        /// Active, activating or reloading.
        case up
        /// Inactive or failed.
        case down
        /// On its way (deactivating) or unknown: nothing to decide on.
        case changing
    }

    /// Whether a run (or the handling of an event) may look at the unit now: nothing is in
    /// flight and the backend was not disposed of.
    public var idle: Bool { operationsInFlight == 0 && !disposed }

    /// An operation on the unit began (see the type's rules).
    public mutating func operationBegan() {
        operationsInFlight += 1
    }

    /// An operation on the unit ended.
    public mutating func operationEnded() {
        precondition(operationsInFlight > 0, "BackendRunState.operationEnded() without an operation in flight")
        operationsInFlight -= 1
    }

    /// The unit's manager signalled `activity`: whether to read the unit's current state now
    /// (it is not what should be, and nothing is in flight).
    public func unitSignalled(_ activity: UnitActivity) -> Bool {
        guard idle else { return false }
        switch desired {
        case .running: return activity == .down
        case .stopped: return activity == .up
        }
    }

    /// The unit's current state, read just now; `cause` says for operators what happened to a
    /// unit found down (`unit web.service went failed/failed behind Baton's back`).
    public mutating func unitRead(_ activity: UnitActivity, cause: String, at now: MonotonicInstant) -> [Effect] {
        guard idle else { return [] }
        switch desired {
        case .running(let token):
            return activity == .down ? unitDown(token: token, what: cause, at: now) : []
        case .stopped:
            return activity == .up ? [.stopStray] : []
        }
    }

    /// Whether the stray stop of ``Effect/stopStray`` is still wanted once it may begin
    /// (nothing should run, and the backend is not disposed of).
    public var strayStopWanted: Bool { desired == .stopped && !disposed }

    /// Why a start (or restart) may not begin at `now`; nil when it may: the keeper holds a
    /// deadline that has not passed.
    public func startRefusal(at now: MonotonicInstant) -> String? {
        guard let armed else { return "the fence keeper is not armed (a unit starts only under a fence deadline)" }
        guard armed.deadline > now else { return "the fence deadline has passed" }
        return nil
    }

    /// The start under `token` failed: it must not be retried later under a token that may no
    /// longer be this node's, so nothing should run (unless another start came meanwhile).
    public mutating func startFailed(token: UInt64) {
        if shouldRun(token: token) { desired = .stopped }
    }

    /// The unit runs again under `token` after it was found down.
    public func unitRestarted(token: UInt64, unit: String) -> [Effect] {
        [.reportRestarted("unit \(unit) restarted (epoch \(token))")]
    }

    /// Restarting the unit under `token` failed: the unit is down still, which counts as one
    /// more end (restart after the backoff, or give up) while the run is still wanted.
    public mutating func unitRestartFailed(token: UInt64, reason: String, at now: MonotonicInstant) -> [Effect] {
        guard shouldRun(token: token) else { return [] }
        return unitDown(token: token, what: "restart failed: \(reason)", at: now)
    }

    /// The backend is disposed of: nothing runs any more. False when it already was.
    public mutating func disposeRequested() -> Bool {
        guard !disposed else { return false }
        disposed = true
        desired = .stopped
        return true
    }

    private mutating func unitDown(token: UInt64, what: String, at now: MonotonicInstant) -> [Effect] {
        switch restarts.backendExited(describedAs: nil, at: now) {
        case .restart(let pause):
            return [.reportDown("\(what); restarting in \(pause)"), .waitToRestart(token: token, pause: pause)]
        case .giveUp(let reason):
            return [.reportDown("\(what); not restarted: \(reason)"), .giveUp("\(what); \(reason)")]
        }
    }
}
