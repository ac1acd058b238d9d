/// How systemd ended a job (the `result` argument of the Manager's `JobRemoved` signal).
public struct JobResult: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    /// The job completed.
    public static let done = JobResult(rawValue: "done")
    /// The job was canceled before it finished (for example replaced by a conflicting job).
    public static let canceled = JobResult(rawValue: "canceled")
    /// The job's timeout was reached.
    public static let timeout = JobResult(rawValue: "timeout")
    /// The job failed (for a start: the unit failed to start).
    public static let failed = JobResult(rawValue: "failed")
    /// A job this job depended on did not succeed (e.g. a `Requisite=`/`BindsTo=` unit is down).
    public static let dependency = JobResult(rawValue: "dependency")
    /// The job did not apply to the unit's current state.
    public static let skipped = JobResult(rawValue: "skipped")

    /// Whether the job did what was asked: `done` or `skipped`.
    public var isSuccess: Bool { self == .done || self == .skipped }

    public var description: String { rawValue }

    var explanation: String? {
        switch self {
        case .failed: return "the unit failed; see its journal"
        case .dependency: return "a unit it depends on is not active or failed to start"
        case .canceled: return "the job was canceled, e.g. replaced by a conflicting job"
        case .timeout: return "systemd's job timeout was reached"
        default: return nil
        }
    }
}

/// A unit's `ActiveState`.
public struct UnitActiveState: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    public static let active = UnitActiveState(rawValue: "active")
    public static let reloading = UnitActiveState(rawValue: "reloading")
    public static let inactive = UnitActiveState(rawValue: "inactive")
    public static let failed = UnitActiveState(rawValue: "failed")
    public static let activating = UnitActiveState(rawValue: "activating")
    public static let deactivating = UnitActiveState(rawValue: "deactivating")

    public var description: String { rawValue }
}

/// The state triple systemd reports for a unit (`LoadState`, `ActiveState`, `SubState`).
public struct UnitState: Sendable, Hashable, CustomStringConvertible {
    /// `loaded`, `not-found`, `bad-setting`, `error`, `masked`, ...
    public var loadState: String
    /// `active`, `inactive`, `failed`, `activating`, ...
    public var activeState: UnitActiveState
    /// Unit-type specific, e.g. `running`, `dead`, `failed`, `auto-restart` for a service.
    public var subState: String

    public init(loadState: String, activeState: UnitActiveState, subState: String) {
        self.loadState = loadState
        self.activeState = activeState
        self.subState = subState
    }

    /// The unit file was not found.
    public var isNotFound: Bool { loadState == "not-found" }

    public var description: String { "\(activeState)/\(subState) (\(loadState))" }
}

/// Which processes of a unit ``SystemdManager/killUnit(_:whom:signal:)`` signals.
public enum KillTarget: String, Sendable, Hashable {
    /// Only the main process.
    case main
    /// Only the control process (ExecStartPre, ExecStop, ...).
    case control
    /// Every process in the unit's cgroup: what fencing uses.
    case all
}
