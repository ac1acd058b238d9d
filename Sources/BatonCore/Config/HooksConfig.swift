/// The moments of an app's life at which hooks run (the keys of `hooks:`).
public enum HookPoint: String, Sendable, Hashable, CaseIterable, Codable {
    /// After the lease, the replica promotion and the VIPs, before the backend starts. A
    /// failure or timeout aborts the promotion like a failed backend start.
    case beforeActive = "before_active"
    /// After the app became active (backend started and healthy).
    case afterActive = "after_active"
    /// Before a graceful step-down stops the backend (stepdown, switchover, shutdown, a failed
    /// health check), only when the app was active.
    case beforePassive = "before_passive"
    /// After a graceful step-down released the lease, only when the app had been active.
    case afterPassive = "after_passive"
    /// After a fence completed (the backend killed and the VIPs removed because the lease
    /// could no longer be renewed).
    case onFence = "on_fence"

    /// `BATON_ROLE` for the hooks of this point: `active`, `passive` or `fenced`.
    public var role: String {
        switch self {
        case .beforeActive, .afterActive: "active"
        case .beforePassive, .afterPassive: "passive"
        case .onFence: "fenced"
        }
    }
}

/// One hook: a command run without a shell, bounded by `timeout`.
public struct HookCommand: Sendable, Hashable {
    /// The argv; the first element is an absolute path or a name looked up in `PATH`.
    public var command: [String]
    /// Past this the hook is killed with its process group and counts as failed (default
    /// ``HooksConfig/defaultTimeout``).
    public var timeout: Duration

    /// Creates a hook.
    public init(command: [String], timeout: Duration = HooksConfig.defaultTimeout) {
        self.command = command
        self.timeout = timeout
    }
}

/// An app's `hooks:` section: for each ``HookPoint``, the commands run one at a time, in order.
public struct HooksConfig: Sendable, Hashable {
    /// A hook's timeout when it gives none: 10 seconds.
    public static let defaultTimeout: Duration = .seconds(10)
    /// The longest timeout a hook may have: a hook holds up its app's promotion or step-down
    /// (before_active, before_passive) or the hooks after it.
    public static let maximumTimeout: Duration = .seconds(600)

    /// The hooks of each point, in order; a point without hooks is absent.
    public var commands: [HookPoint: [HookCommand]]

    /// Creates a hooks section.
    public init(_ commands: [HookPoint: [HookCommand]] = [:]) {
        self.commands = commands.filter { !$0.value.isEmpty }
    }

    /// The hooks of `point`, in order.
    public subscript(point: HookPoint) -> [HookCommand] { commands[point] ?? [] }

    /// The sum of the timeouts of `points`' hooks: how long running them all can take.
    public func total(_ points: HookPoint...) -> Duration {
        points.reduce(.zero) { sum, point in self[point].reduce(sum) { $0 + $1.timeout } }
    }

    /// Whether no point has a hook.
    public var isEmpty: Bool { commands.isEmpty }
}

extension HooksConfig: ConfigSection {
    static let keys = HookPoint.allCases.map(\.rawValue)
    static var expectation: String { "a mapping with \(listing(keys, "or")), each a list of {command: [...], timeout: 10s}" }

    init?(fields: ConfigFields) {
        var commands: [HookPoint: [HookCommand]] = [:]
        var ok = true
        for point in HookPoint.allCases {
            guard let value = fields.optional(point.rawValue) else { continue }
            guard let items = value.list(expected: "a list of hooks like [{command: [\"/usr/local/bin/notify\", \"up\"], timeout: 10s}]") else {
                ok = false
                continue
            }
            var hooks: [HookCommand] = []
            for item in items {
                guard let hook = item.section(HookCommand.self) else {
                    ok = false
                    continue
                }
                hooks.append(hook)
            }
            commands[point] = hooks
        }
        guard ok else { return nil }
        self.init(commands)
    }
}

extension HookCommand: ConfigSection {
    static let keys = ["command", "timeout"]

    init?(fields: ConfigFields) {
        let command = fields.required("command")?.argv()
        var timeout = fields.optional("timeout", default: HooksConfig.defaultTimeout) { $0.duration(.positive) }
        if let value = fields.optional("timeout"), let given = timeout, given > HooksConfig.maximumTimeout {
            value.error("timeout \(given.configString) is longer than the limit of \(HooksConfig.maximumTimeout.configString) for a hook")
            timeout = nil
        }
        guard let command, let timeout else { return nil }
        self.init(command: command, timeout: timeout)
    }
}

/// Decides, without I/O, which hooks an app's lifecycle notifications call for: the
/// after_active, after_passive and on_fence hooks, and whether a graceful stop runs the
/// before_passive hooks. (before_active is a promotion step of its own, see
/// ``PromotionStep/beforeActive``.)
///
/// The passive hooks belong to an activation: they run only for an epoch that became active on
/// this node (a promotion that failed before the backend ran has nothing to undo), once each.
public struct HookSchedule: Sendable, Hashable {
    /// The epoch that became active here and has not been left yet.
    public private(set) var activeEpoch: UInt64?

    /// Creates a schedule with nothing active.
    public init() {}

    /// The point whose hooks `notification` calls for (with the epoch they run under), if any.
    public mutating func observe(_ notification: AppLifecycle.Notification) -> (point: HookPoint, epoch: UInt64)? {
        switch notification {
        case .becameActive(let token):
            activeEpoch = token
            return (.afterActive, token)
        case .released(let token), .releaseUnconfirmed(let token, _):
            guard activeEpoch == token else { return nil }
            activeEpoch = nil
            return (.afterPassive, token)
        case .fenced(let token, _), .fenceUnconfirmed(let token, _):
            if activeEpoch == token { activeEpoch = nil }
            // A fence of a promotion under way runs on_fence too: the backend may have started.
            return (.onFence, token)
        default:
            return nil
        }
    }

    /// Whether a graceful stop of `epoch`'s backend runs the before_passive hooks first: only
    /// when that epoch became active here.
    public func runsBeforePassive(epoch: UInt64) -> Bool { activeEpoch == epoch }
}
