/// The rules that make a lease's timing safe, and the defaults that follow them.
///
/// Why these rules (see ``LeaseTiming`` for the instants):
/// - `ttl >= 100ms`: the lease's TTL is its KV bucket's `max_age`, and nats-server refuses a
///   stream whose `max_age` is set below 100ms ("max age needs to be >= 100ms" in
///   `server/stream.go`, checked when a stream is created or updated).
/// - `renew <= ttl / 3`: the active node sends at least three renews per ttl, so two in a row
///   can be lost before the lease is at risk.
/// - `fence_budget >= 50ms`: killing the backend (SIGKILL or KillUnit) and removing the VIPs
///   needs time to be done *before* the lease can expire.
/// - `2 * renew + fence_budget <= ttl`: fencing starts at `last renew sent + ttl - fence_budget`;
///   a renew may fail once and its retry (sent `2 * renew` after the last good one) must go out
///   before fencing starts, or a single lost message would fence a healthy node.
/// - `0 <= skew < ttl`: a passive node waits `ttl + skew` after the last write it saw; a
///   negative skew would cut into the active node's lease, and a skew of a whole ttl or more
///   would only slow down failover.
extension LeaseTiming {
    /// The shortest ttl: nats-server's smallest stream `max_age` (a KV bucket's TTL).
    public static let minimumTTL: Duration = .milliseconds(100)
    /// The shortest fence budget.
    public static let minimumFenceBudget: Duration = .milliseconds(50)

    /// The timing used when only `ttl` is given: `renew = ttl / 4`, `fence_budget = ttl / 5` but
    /// at least 50ms, `skew = ttl / 10` but at most 100ms (each rounded down to a microsecond).
    /// For ttl 3s that is renew 750ms, fence_budget 600ms and skew 100ms.
    ///
    /// Every ttl of at least 100ms gives a safe timing, and a default `fence_budget` fits any
    /// `renew` up to `ttl / 3` once the ttl is 150ms or more.
    public static func defaults(ttl: Duration) -> LeaseTiming {
        LeaseTiming(
            ttl: ttl,
            renew: defaultRenew(ttl: ttl),
            fenceBudget: defaultFenceBudget(ttl: ttl),
            skew: defaultSkew(ttl: ttl)
        )
    }

    /// `ttl / 4`, rounded down to a microsecond.
    public static func defaultRenew(ttl: Duration) -> Duration {
        wholeMicroseconds(ttl / 4)
    }

    /// `ttl / 5` rounded down to a microsecond, but at least ``minimumFenceBudget``.
    public static func defaultFenceBudget(ttl: Duration) -> Duration {
        max(minimumFenceBudget, wholeMicroseconds(ttl / 5))
    }

    /// The longest default skew.
    public static let maximumDefaultSkew: Duration = .milliseconds(100)

    /// `ttl / 10` rounded down to a microsecond, but at most ``maximumDefaultSkew``.
    ///
    /// The skew only absorbs the difference in clock rate between two nodes over one ttl and
    /// the delivery of the watch update (which is always after the renew was sent, so it already
    /// delays the passive node's deadline). Safety rests on the compare-and-set and on the active
    /// node fencing at `sent + ttl - fence_budget`; a skew proportional to long ttls only slows
    /// crash failover down.
    public static func defaultSkew(ttl: Duration) -> Duration {
        min(maximumDefaultSkew, wholeMicroseconds(ttl / 10))
    }

    private static func wholeMicroseconds(_ duration: Duration) -> Duration {
        let nanoseconds = DurationText.nanoseconds(of: duration)
        return .nanoseconds(Int64(nanoseconds - nanoseconds % 1_000))
    }

    /// Every rule this timing breaks, in a fixed order (ttl, renew, fence_budget, skew).
    ///
    /// - Parameter defaulted: the parameters that were not written in the config but took their
    ///   default, so that messages can say so.
    public func violations(defaulted: Set<LeaseTimingViolation.Parameter> = []) -> [LeaseTimingViolation] {
        func show(_ parameter: LeaseTimingViolation.Parameter, _ value: Duration) -> String {
            defaulted.contains(parameter) ? "\(value.configString), the default" : value.configString
        }
        var found: [LeaseTimingViolation] = []
        func add(_ parameters: [LeaseTimingViolation.Parameter], _ message: String) {
            found.append(LeaseTimingViolation(parameters: parameters, message: message))
        }

        if ttl < Self.minimumTTL {
            add([.ttl], "ttl \(ttl.configString) is below 100ms, the smallest max_age nats-server accepts for the lease's bucket")
        }
        if renew <= .zero {
            add([.renew], "renew must be positive, got \(renew.configString)")
        } else if ttl > .zero, renew * 3 > ttl {
            add([.renew, .ttl], "unsafe lease timing: renew \(show(.renew, renew)) is more than a third of ttl (\(ttl.configString)); the active node must send at least three renews per ttl")
        }
        if fenceBudget < Self.minimumFenceBudget {
            add([.fenceBudget], "fence_budget \(show(.fenceBudget, fenceBudget)) is below 50ms, too little time to kill the backend before the lease expires")
        }
        if ttl > .zero, renew > .zero, renew * 2 + fenceBudget > ttl {
            let start = fenceBudget < ttl
                ? "\((ttl - fenceBudget).configString) after the last renew was sent"
                : "as soon as a renew was sent"
            add([.fenceBudget, .renew, .ttl], "unsafe lease timing: 2 * renew (\(show(.renew, renew))) + fence_budget (\(show(.fenceBudget, fenceBudget))) = \((renew * 2 + fenceBudget).configString) is more than ttl (\(ttl.configString)); fencing would start \(start), before the retry of one failed renew at \((renew * 2).configString)")
        }
        if skew < .zero {
            add([.skew], "skew must not be negative, got \(skew.configString)")
        } else if ttl > .zero, skew >= ttl {
            add([.skew, .ttl], "skew \(show(.skew, skew)) must be shorter than ttl (\(ttl.configString))")
        }
        return found
    }
}

/// A broken lease timing rule: which parameters it involves and why it is unsafe.
public struct LeaseTimingViolation: Sendable, Hashable, CustomStringConvertible {
    /// A lease timing parameter, named as in the config file.
    public enum Parameter: String, Sendable, Hashable, CaseIterable {
        /// `ttl`.
        case ttl
        /// `renew`.
        case renew
        /// `fence_budget`.
        case fenceBudget = "fence_budget"
        /// `skew`.
        case skew
    }

    /// The parameters involved, the one to blame first (the config error points at the first one
    /// written in the file).
    public var parameters: [Parameter]
    /// The rule and the reason, as a sentence without a final period.
    public var message: String

    /// Creates a violation.
    public init(parameters: [Parameter], message: String) {
        self.parameters = parameters
        self.message = message
    }

    /// The message.
    public var description: String { message }
}
