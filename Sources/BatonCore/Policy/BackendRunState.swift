/// A backend run's decisions, without I/O: whether the backend should run and under which
/// token, the deadline last given to the fence keeper, and what to do when the backend ends
/// while it should run (restart after the policy's backoff, re-arm a keeper that died with it,
/// or give up). Feed it what happened, with the time where it matters; it answers with what to
/// do, in order. The backend actor executes the effects and feeds their results back.
///
/// Rules:
/// - Only an end of the run that should be running counts: an end under another token, or
///   after a stop or fence was asked for, changes nothing.
/// - An end that was asked for (a graceful stop) changes nothing either.
/// - Any other end goes through the ``RestartTracker``: restart after the backoff, or give up
///   (a failure that steps the app down: an active app never rests without its backend).
/// - After the backoff, a restart happens only if the same run is still wanted. If the fence
///   keeper died with the backend, it is re-armed first with the deadline last given for that
///   token (it refuses the start if that deadline has passed); if the run is no longer wanted
///   once the keeper is re-armed, the keeper is disarmed again, unless it was armed anew
///   meanwhile.
///
/// A systemd unit's run adds the rules in `BackendRunState+Unit.swift`: the unit's state is
/// watched rather than reported, so the state also counts the operations in flight (while one
/// runs, what the unit shows is not news) and decides what a unit found down or up means.
public struct BackendRunState: Sendable, Hashable {
    /// A deadline given to the fence keeper.
    public struct Arming: Sendable, Hashable {
        /// The token of the lease the deadline belongs to.
        public var token: UInt64
        /// When the keeper kills the backend unless re-armed.
        public var deadline: MonotonicInstant

        /// Creates an arming.
        public init(token: UInt64, deadline: MonotonicInstant) {
            self.token = token
            self.deadline = deadline
        }
    }

    /// How a run ended.
    public enum Ending: Sendable, Hashable {
        /// It stopped because a stop was asked for.
        case stopped
        /// It exited on its own, with this description of how (`exited with status 1`; nil when
        /// unknown).
        case exited(String?)
        /// Anything else: killed, or lost with its fence keeper.
        case other
    }

    /// What the backend must do.
    public enum Effect: Sendable, Hashable {
        /// Give the fence keeper this deadline.
        case arm(Arming)
        /// Lift the keeper's deadline.
        case disarm
        /// Tell operators the backend is down, and why.
        case reportDown(String)
        /// Tell operators the backend runs again.
        case reportRestarted(String)
        /// The restart budget is spent: report it as a failure that steps the app down.
        case giveUp(String)
        /// A restart failed: report it as a failure that steps the app down.
        case fail(String)
        /// Wait `pause`, then feed ``BackendRunState/restartDue(token:keeperRunning:)``.
        case waitToRestart(token: UInt64, pause: Duration)
        /// Arm the keeper (it died with the backend) for a restart, then feed
        /// ``BackendRunState/rearmedForRestart(token:)`` (or
        /// ``BackendRunState/restartFailed(token:reason:)`` when it cannot be armed).
        case rearmForRestart(Arming)
        /// Start the backend again under `token`, then feed
        /// ``BackendRunState/restarted(token:pid:)`` or
        /// ``BackendRunState/restartFailed(token:reason:)`` (a unit:
        /// ``BackendRunState/unitRestarted(token:unit:)`` or
        /// ``BackendRunState/unitRestartFailed(token:reason:at:)``).
        case restart(token: UInt64)
        /// A unit runs while nothing should: stop it (if nothing should run still once the
        /// stop may begin, see ``BackendRunState/strayStopWanted``) and report it.
        case stopStray
    }

    /// What should run: nothing, or the backend under a token.
    public enum Desired: Sendable, Hashable {
        /// Nothing runs.
        case stopped
        /// The backend runs under this token.
        case running(token: UInt64)
    }

    /// What should run.
    public internal(set) var desired: Desired = .stopped
    /// The deadline last given to the keeper, until it is lifted.
    public private(set) var armed: Arming?
    /// The restart budget.
    public internal(set) var restarts: RestartTracker
    /// Operations on a unit in flight: a start, restart or stray stop (from the moment it asks
    /// for its turn), a stop, a fence, the handling of a unit found down (backoff and restart).
    public internal(set) var operationsInFlight = 0
    /// The backend was disposed of: nothing runs or is looked at any more.
    public internal(set) var disposed = false

    /// A backend that does not run, with a full restart budget under `policy`.
    public init(policy: RestartPolicy) {
        self.restarts = RestartTracker(policy: policy)
    }

    /// Whether the backend should run under `token`.
    public func shouldRun(token: UInt64) -> Bool { desired == .running(token: token) }

    /// Whether the backend should run at all.
    public var shouldRun: Bool { desired != .stopped }

    /// The lifecycle arms the keeper.
    public mutating func armRequested(token: UInt64, deadline: MonotonicInstant) -> [Effect] {
        let arming = Arming(token: token, deadline: deadline)
        armed = arming
        return [.arm(arming)]
    }

    /// The lifecycle lifts the keeper's deadline.
    public mutating func disarmRequested() -> [Effect] {
        armed = nil
        return [.disarm]
    }

    /// The lifecycle starts the backend under `token` (the backend starts it at once; a start
    /// refills the restart budget).
    public mutating func startRequested(token: UInt64) {
        desired = .running(token: token)
        restarts.reset()
    }

    /// A stop, a fence or the end of the backend: nothing should run any more.
    public mutating func stopRequested() {
        desired = .stopped
    }

    /// The run under `token` ended; `cause` describes it for operators (`exited on its own`,
    /// `killed: ...`).
    public mutating func backendEnded(token: UInt64, ending: Ending, cause: String, at now: MonotonicInstant) -> [Effect] {
        guard shouldRun(token: token) else { return [] }
        let how: String?
        switch ending {
        case .stopped: return []
        case .exited(let description): how = description
        case .other: how = nil
        }
        switch restarts.backendExited(describedAs: how, at: now) {
        case .restart(let pause):
            return [
                .reportDown("backend \(cause) (epoch \(token)); restarting in \(pause)"),
                .waitToRestart(token: token, pause: pause),
            ]
        case .giveUp(let reason):
            return [.reportDown("backend \(cause) (epoch \(token)); not restarted: \(reason)"), .giveUp(reason)]
        }
    }

    /// The backoff before restarting the run under `token` is over; `keeperRunning` says
    /// whether its fence keeper still runs.
    public func restartDue(token: UInt64, keeperRunning: Bool) -> [Effect] {
        guard shouldRun(token: token) else { return [] }
        if !keeperRunning, let armed, armed.token == token {
            return [.rearmForRestart(armed)]
        }
        return [.restart(token: token)]
    }

    /// The keeper was armed again for the restart of the run under `token`.
    public func rearmedForRestart(token: UInt64) -> [Effect] {
        guard shouldRun(token: token) else {
            // A stop or fence ran meanwhile and found nothing running: the keeper armed for
            // nothing is disarmed, unless the lifecycle armed it again since.
            return armed == nil ? [.disarm] : []
        }
        return [.restart(token: token)]
    }

    /// The run under `token` runs again, as process `pid` (nil when unknown).
    public func restarted(token: UInt64, pid: Int32?) -> [Effect] {
        [.reportRestarted("backend restarted (epoch \(token), pid \(pid.map { "\($0)" } ?? "?"))")]
    }

    /// Restarting the run under `token` failed.
    public func restartFailed(token: UInt64, reason: String) -> [Effect] {
        [.fail("restart failed: \(reason)")]
    }
}
