import BatonCore

/// What the app supervisor needs from a backend (a child process, a systemd unit). Every
/// method must be safe to call in any order and more than once.
public protocol AppBackend: Sendable {
    /// Starts the backend, handing it the fencing token. Returns once it runs; throws with a
    /// clear reason when it cannot start.
    func start(token: UInt64) async throws
    /// Waits until the backend is healthy (returns at once when no health check is configured).
    func waitUntilHealthy(token: UInt64) async throws
    /// Tells the fence keeper to kill the backend of lease `token` at `deadline` unless re-armed
    /// before.
    func armFence(token: UInt64, deadline: MonotonicInstant) async
    /// The backend is stopped: the keeper has nothing to kill.
    func disarmFence() async
    /// Stops the backend gracefully; returns when it is gone (``StopOutcome/confirmed``) or
    /// when that cannot be confirmed (it may still run: the caller must not release the lease).
    func stop() async -> StopOutcome
    /// Kills the backend now; returns when it is gone, or when that cannot be confirmed.
    func fence() async -> StopOutcome
    /// Releases what the backend holds (its fence keeper) once the app is gone from the config
    /// or batond stops. Called after the backend was stopped.
    func dispose() async
    /// Failures while running that the backend could not recover from (restart budget spent,
    /// health check failing): each element is a reason.
    func failures() -> AsyncStream<AppBackendFailure>
}

/// A failure a running backend reports.
public enum AppBackendFailure: Sendable, Hashable {
    /// The backend kept exiting: the restart budget is spent.
    case exhausted(String)
    /// The health check kept failing.
    case unhealthy(String)
}

/// Something a backend did on its own that operators should know about, but that is not a
/// failure of the active node (so it does not step the app down). batond shows the latest one
/// as the app's last event in `batonctl status`; the backend also logs it.
public enum AppBackendNotice: Sendable, Hashable, CustomStringConvertible {
    /// While this node is passive, the backend was found running (started by hand, or left
    /// over) and was stopped again.
    case strayStopped(String)
    /// The backend could not be stopped (or fenced); it may still run.
    case cannotStop(String)
    /// The backend ended while it should run (exited, killed, lost with its fence keeper); the
    /// restart policy decides what follows, and the text says what.
    case backendDown(String)
    /// The backend runs again after a ``backendDown(_:)``.
    case backendRestarted(String)

    public var description: String {
        switch self {
        case .strayStopped(let text): text
        case .cannotStop(let text): text
        case .backendDown(let text): text
        case .backendRestarted(let text): text
        }
    }
}

/// Backends that report ``AppBackendNotice``s.
public protocol AppBackendNotices: Sendable {
    /// Notices, as they happen; finishes when the backend is disposed of.
    func notices() -> AsyncStream<AppBackendNotice>
}
