/// The fence keeper's decisions, without I/O: feed it what happened with the current time on
/// `CLOCK_MONOTONIC` (nanoseconds); it answers with what to do, in order.
///
/// Rules:
/// - A backend is started only while a deadline is armed and still ahead.
/// - When the armed deadline passes (checked before anything else that arrives at the same
///   time, so a late re-arm cannot save a backend whose deadline is already over), the backend's
///   process group and every other descendant are killed with SIGKILL. The deadline is spent.
/// - When batond goes away (end of input, or the keeper's parent died), everything is killed and
///   the keeper exits once no descendant is left (or after ``shutdownGrace``).
/// - When the backend's main process exits on its own, whatever it left behind is killed too, so
///   nothing outlives it; `EXITED` is reported only once every descendant is gone.
public struct FenceKeeperState: Sendable {
    /// How long the keeper waits for killed processes to disappear after batond went away,
    /// before it exits anyway.
    public static let shutdownGrace: Int64 = 5_000_000_000

    /// The armed deadline.
    public struct Arming: Sendable, Hashable {
        /// The fencing token batond armed it for (reported back, not interpreted).
        public var token: UInt64
        /// Nanoseconds on `CLOCK_MONOTONIC`.
        public var deadline: Int64

        /// Creates an arming.
        public init(token: UInt64, deadline: Int64) {
            self.token = token
            self.deadline = deadline
        }
    }

    /// The backend this keeper started.
    public struct Backend: Sendable, Hashable {
        /// The main process, also the process group id.
        public var pid: Int32
        /// The token it was started under.
        public var token: UInt64
        /// Set once the main process has been reaped.
        public var status: ExitStatus?
        /// Set once the keeper sent SIGKILL to everything.
        public var killed: Bool
    }

    /// What happened.
    public enum Input: Sendable, Hashable {
        /// A command line from batond.
        case command(KeeperCommand)
        /// The requested spawn succeeded.
        case spawned(pid: Int32)
        /// The requested spawn failed, with a message for batond.
        case spawnFailed(String)
        /// The backend's main process was reaped.
        case leaderExited(ExitStatus)
        /// The keeper has no child left (`waitpid` answered ECHILD).
        case descendantsGone
        /// batond closed the pipe or died.
        case batondGone(String)
        /// Time passed.
        case tick
    }

    /// What the keeper must do.
    public enum Effect: Sendable, Hashable {
        /// Spawn the backend, then feed back ``Input/spawned(pid:)`` or ``Input/spawnFailed(_:)``.
        case spawn(StartSpec)
        /// Send `signal` to the process group `pid`.
        case signalGroup(KeeperSignal, pid: Int32)
        /// SIGKILL the process group `pid` and every child of the keeper, and keep doing so (see
        /// ``FenceKeeperState/isSweeping``) until ``Input/descendantsGone``.
        case killAll(pid: Int32)
        /// Remove what the app claimed outside its process group (its virtual IPs, its systemd
        /// unit): the deadline passed or batond went away. Harmless when nothing is claimed.
        case releaseClaims(reason: String)
        /// Write a report line.
        case report(KeeperReport)
        /// Exit the keeper.
        case exit
    }

    /// The deadline in force, if any.
    public private(set) var armed: Arming?
    /// The backend, from its spawn until every process of it is gone.
    public private(set) var backend: Backend?
    /// Whether a spawn was asked for and its outcome is not known yet.
    public private(set) var spawning = false
    /// When batond went away: the keeper is on its way out.
    public private(set) var batondGoneAt: Int64?
    /// Whether ``Effect/exit`` was given: nothing else happens after it.
    public private(set) var exited = false

    /// Creates an idle keeper: nothing armed, no backend.
    public init() {}

    /// Whether leftovers are being killed: the backend was killed or its main process exited,
    /// and some descendant may still be around. While true, the keeper re-kills the group and
    /// its children on every wake and reaps them.
    public var isSweeping: Bool {
        guard let backend else { return false }
        return backend.killed || backend.status != nil
    }

    /// The next instant at which ``handle(_:now:)`` with ``Input/tick`` has something to do.
    public func nextWakeup() -> Int64? {
        var candidates: [Int64] = []
        if let armed { candidates.append(armed.deadline) }
        if let batondGoneAt { candidates.append(batondGoneAt + Self.shutdownGrace) }
        return candidates.min()
    }

    /// Applies `input` at `now` and returns the effects, in order.
    public mutating func handle(_ input: Input, now: Int64) -> [Effect] {
        guard !exited else { return [] }
        var effects: [Effect] = []
        checkDeadline(now: now, into: &effects)
        switch input {
        case .tick:
            if let gone = batondGoneAt, now >= gone + Self.shutdownGrace {
                effects.append(.report(.error("descendants still alive \(Self.shutdownGrace / 1_000_000) ms after batond went away; exiting anyway")))
                finish(into: &effects)
            }
        case .command(let command):
            handle(command, now: now, into: &effects)
        case .spawned(let pid):
            guard spawning else { break }
            spawning = false
            let token = pendingToken ?? 0
            pendingToken = nil
            backend = Backend(pid: pid, token: token, status: nil, killed: false)
            effects.append(.report(.started(pid: pid)))
            // The spawn took time: the deadline may have passed meanwhile.
            checkDeadline(now: now, into: &effects)
        case .spawnFailed(let message):
            guard spawning else { break }
            spawning = false
            pendingToken = nil
            effects.append(.report(.startFailed(message)))
            checkDeadline(now: now, into: &effects)
        case .leaderExited(let status):
            guard var current = backend, current.status == nil else { break }
            current.status = status
            backend = current
            if !current.killed {
                // Nothing outlives the main process.
                effects.append(.killAll(pid: current.pid))
            }
        case .descendantsGone:
            if let current = backend, let status = current.status {
                backend = nil
                effects.append(.report(.exited(pid: current.pid, status)))
            }
            if batondGoneAt != nil && backend == nil {
                finish(into: &effects)
            }
        case .batondGone(let reason):
            guard batondGoneAt == nil else { break }
            batondGoneAt = now
            armed = nil
            var killedNow = false
            if var current = backend, !current.killed {
                current.killed = true
                backend = current
                effects.append(.killAll(pid: current.pid))
                killedNow = current.status == nil
            }
            effects.append(.releaseClaims(reason: "batond went away: \(reason)"))
            if killedNow, let current = backend {
                effects.append(.report(.killed(pid: current.pid, .batondGone(reason))))
            }
            if backend == nil {
                finish(into: &effects)
            }
        }
        return effects
    }

    private var pendingToken: UInt64?

    private mutating func handle(_ command: KeeperCommand, now: Int64, into effects: inout [Effect]) {
        guard batondGoneAt == nil else { return }
        switch command {
        case .arm(let token, let deadline):
            armed = Arming(token: token, deadline: deadline)
            checkDeadline(now: now, into: &effects)
        case .disarm:
            armed = nil
        case .start(let spec):
            if let current = backend {
                effects.append(.report(.startFailed("a backend (pid \(current.pid)) is still running")))
            } else if spawning {
                effects.append(.report(.startFailed("a start is already in progress")))
            } else if armed == nil {
                effects.append(
                    .report(.startFailed("the fence keeper is not armed: it starts a backend only while a fence deadline is set")))
            } else if let armed, armed.deadline <= now {
                effects.append(.report(.startFailed("the armed fence deadline has already passed")))
            } else {
                spawning = true
                pendingToken = spec.token
                effects.append(.spawn(spec))
            }
        case .signal(let signal):
            if let current = backend, current.status == nil, !current.killed {
                effects.append(.signalGroup(signal, pid: current.pid))
            }
        case .kill:
            if var current = backend, !current.killed {
                current.killed = true
                backend = current
                effects.append(.killAll(pid: current.pid))
                if current.status == nil {
                    effects.append(.report(.killed(pid: current.pid, .requested)))
                }
            }
        case .ping(let number):
            effects.append(.report(.pong(number)))
        }
    }

    private mutating func checkDeadline(now: Int64, into effects: inout [Effect]) {
        // While a spawn is under way its outcome decides: a backend that appears is killed.
        guard !spawning, let arming = armed, now >= arming.deadline else { return }
        armed = nil
        let release = Effect.releaseClaims(reason: "fence deadline of token \(arming.token) passed")
        if var current = backend, !current.killed {
            current.killed = true
            backend = current
            effects.append(.killAll(pid: current.pid))
            effects.append(release)
            if current.status == nil {
                effects.append(.report(.killed(pid: current.pid, .deadline(token: arming.token, deadline: arming.deadline, now: now))))
                return
            }
        }
        if !effects.contains(release) { effects.append(release) }
        effects.append(.report(.expired(token: arming.token, deadline: arming.deadline, now: now)))
    }

    private mutating func finish(into effects: inout [Effect]) {
        exited = true
        effects.append(.exit)
    }
}
