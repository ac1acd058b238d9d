import FenceKeeper

/// Everything a node needs to run one app, derived from its ``AppConfig`` in one place: the
/// lease timing and every bound of the lifecycle, the backend's argv or unit with its own
/// timeouts, the health check, and what the fence keeper releases. Pure: built from the config
/// (and the node's id and runtime directory), never from I/O, so every value can be checked in a
/// unit test; the node supervisor and the backends only read it.
///
/// Timeouts that are not in the config are here, named and documented, rather than at the call
/// sites:
/// - the lifecycle's graceful-stop bound is the backend's own stop timeout plus
///   ``stopMargin`` (a process backend's `stop_timeout`, a systemd backend's
///   ``SystemdPlan/stopTimeout``), past which the backend is fenced;
/// - each promotion step may take ``stepTimeout(health:)``;
/// - a lower priority holds back from a free lease for ``priorityHoldback(priority:renew:)``.
public struct AppPlan: Sendable, Hashable {
    /// How the backend runs.
    public enum Backend: Sendable, Hashable {
        /// A child process, run through the fence keeper: its argv (`command`), environment,
        /// user, stop timeout and restart policy, as configured.
        case process(ProcessBackendConfig)
        /// An existing systemd unit.
        case systemd(SystemdPlan)
    }

    /// A systemd-unit backend.
    public struct SystemdPlan: Sendable, Hashable {
        /// The unit, e.g. `web.service`.
        public var unit: String
        /// The manager whose bus the unit is on.
        public var bus: SystemdBackendConfig.Bus
        /// Restarts while active.
        public var restart: RestartPolicy
        /// The epoch file (`BATON_EPOCH=<token>`): `<runtime directory>/<app>/epoch`.
        public var epochFile: String
        /// How long Baton waits for a start job.
        public var startTimeout: Duration
        /// How long Baton waits for a stop job before it kills the unit: systemd's default
        /// `TimeoutStopSec` (``SystemdPlan/defaultJobTimeout``), after which systemd itself
        /// kills a unit with the default settings.
        public var stopTimeout: Duration
        /// How long one D-Bus call may take.
        public var callTimeout: Duration

        /// systemd's `DefaultTimeoutStartSec` and `DefaultTimeoutStopSec`: 90 s.
        public static let defaultJobTimeout: Duration = .seconds(90)
        /// The bound on one D-Bus call.
        public static let defaultCallTimeout: Duration = .seconds(10)
    }

    /// The app's name.
    public var app: String
    /// This node's id.
    public var node: String
    /// The lease timing (`lease:`).
    public var timing: LeaseTiming
    /// The app's priority (`priority:`).
    public var priority: Int
    /// Whether the app starts paused.
    public var paused: Bool
    /// The backend.
    public var backend: Backend
    /// The health check, if any.
    public var health: HealthCheckConfig?
    /// The VIPs (`vip:`), each claimed when active and released by the fence keeper.
    public var vips: [VIPConfig]
    /// The SQLite replica (`sqlite:`), if any.
    public var sqlite: SQLiteReplicaConfig?
    /// What the fence keeper releases besides a process backend's process: the VIPs, and for a
    /// systemd backend the unit and its epoch file.
    public var keeperClaims: FenceKeeperClaims
    /// The hooks (`hooks:`).
    public var hooks: HooksConfig

    /// The margin added to the backend's own stop timeout for the lifecycle's graceful-stop
    /// bound: the backend's stop timeout is how long it waits for the backend; the margin
    /// covers reporting back.
    public static let stopMargin: Duration = .seconds(2)
    /// The smallest bound on a promotion step.
    public static let minimumStepTimeout: Duration = .seconds(30)

    /// The plan of `app` on `node`. `runtimeDirectory` is where a systemd backend's epoch file
    /// goes (`<runtimeDirectory>/<app>/epoch`).
    public init(app: AppConfig, node: String, runtimeDirectory: String = "/run/baton") {
        self.app = app.name
        self.node = node
        self.timing = app.lease
        self.priority = app.priority
        self.paused = app.paused
        self.health = app.health
        self.vips = app.vips
        self.sqlite = app.sqlite
        self.hooks = app.hooks
        let addresses = app.vips.map { FenceKeeperClaims.Address(cidr: $0.cidr, interface: $0.interface) }
        switch app.backend {
        case .process(let process):
            backend = .process(process)
            keeperClaims = FenceKeeperClaims(addresses: addresses)
        case .systemd(let systemd):
            let plan = SystemdPlan(
                unit: systemd.unit, bus: systemd.bus, restart: systemd.restart, epochFile: "\(runtimeDirectory)/\(app.name)/epoch",
                startTimeout: SystemdPlan.defaultJobTimeout, stopTimeout: SystemdPlan.defaultJobTimeout, callTimeout: SystemdPlan.defaultCallTimeout)
            backend = .systemd(plan)
            keeperClaims = FenceKeeperClaims(
                addresses: addresses, units: [FenceKeeperClaims.Unit(name: systemd.unit, bus: systemd.bus.rawValue)], files: [plan.epochFile])
        }
    }

    /// The backend's own bound on a graceful stop.
    public var backendStopTimeout: Duration {
        switch backend {
        case .process(let process): process.stopTimeout
        case .systemd(let systemd): systemd.stopTimeout
        }
    }

    /// The backend's restart policy.
    public var restart: RestartPolicy {
        switch backend {
        case .process(let process): process.restart
        case .systemd(let systemd): systemd.restart
        }
    }

    /// The lifecycle's bound on a graceful backend stop: ``backendStopTimeout`` plus
    /// ``stopMargin``; past it the backend is fenced.
    /// The before_passive hooks run within it (after any after_active hooks still running:
    /// hooks run one at a time), so their timeouts are added.
    public var stopTimeout: Duration { backendStopTimeout + Self.stopMargin + hooks.total(.afterActive, .beforePassive) }

    /// The bound on the before_active step: the before_active hooks' timeouts, after the
    /// after_passive and on_fence hooks of an earlier epoch that may still be running (hooks
    /// run one at a time), plus ``stopMargin``; nil without before_active hooks.
    public var beforeActiveTimeout: Duration? {
        hooks[.beforeActive].isEmpty ? nil : hooks.total(.beforeActive, .afterPassive, .onFence) + Self.stopMargin
    }

    /// The bound on each promotion step (see ``stepTimeout(health:)``).
    public var stepTimeout: Duration { Self.stepTimeout(health: health) }

    /// How long this node lets higher priorities try a free lease first (see
    /// ``priorityHoldback(priority:renew:)``).
    public var priorityHoldback: Duration { Self.priorityHoldback(priority: priority, renew: timing.renew) }

    /// How long the final WAL flush of a graceful demotion may take (`sqlite.flush_timeout`, or
    /// its default without a `sqlite:` section).
    public var flushTimeout: Duration { sqlite?.flushTimeout ?? SQLiteReplicaConfig.defaultFlushTimeout }

    /// The state machine's configuration. `hasReplica` and `hasAddresses` say what the node
    /// could set up (a replica and VIPs the config asks for); `wallClockOffset` is the wall
    /// clock minus the monotonic clock, which places the renew grid (``renewPhase(renew:wallClockOffset:)``).
    public func lifecycle(instance: String, hasReplica: Bool, hasAddresses: Bool, wallClockOffset: Duration) -> AppLifecycle.Configuration {
        var configuration = AppLifecycle.Configuration(
            node: node, instance: instance, timing: timing, hasHealthCheck: health != nil, hasReplica: hasReplica, hasAddresses: hasAddresses,
            stepTimeout: stepTimeout, stopTimeout: stopTimeout, priorityHoldback: priorityHoldback, flushTimeout: flushTimeout)
        configuration.beforeActiveTimeout = beforeActiveTimeout
        configuration.renewPhase = Self.renewPhase(renew: timing.renew, wallClockOffset: wallClockOffset)
        return configuration
    }

    /// Where the renew grid of a node starts (``AppLifecycle/Configuration/renewPhase``): at the
    /// monotonic instants that are whole multiples of `renew` on the wall clock, given the wall
    /// clock minus the monotonic clock. Nodes whose clocks agree (NTP) then renew all their apps
    /// with the same `renew` at the same instants, so each node gets every other node's renewals
    /// in one burst per interval. The wall clock only places renews within their interval; how
    /// long a lease lasts never depends on it.
    public static func renewPhase(renew: Duration, wallClockOffset: Duration) -> Duration {
        let interval = renew.totalNanoseconds
        guard interval > 0 else { return .zero }
        let phase = (-wallClockOffset.totalNanoseconds) % interval
        return .nanoseconds(phase < 0 ? phase + interval : phase)
    }

    /// Each promotion step may take as long as the health grace plus a few intervals and a
    /// probe's timeout, at least ``minimumStepTimeout``.
    public static func stepTimeout(health: HealthCheckConfig?) -> Duration {
        guard let health else { return minimumStepTimeout }
        return max(minimumStepTimeout, health.grace + health.interval * (health.failures + 1) + health.timeout)
    }

    /// Higher priority takes a free lease first: priority 100 (the default, or more) at once,
    /// lower ones up to one renew interval later, in proportion.
    public static func priorityHoldback(priority: Int, renew: Duration) -> Duration {
        let clamped = Double(min(max(priority, 0), 100))
        return renew * ((100 - clamped) / 100)
    }
}
