/// The timing of one app's lease, and the instants the safety rules derive from it.
///
/// - The active node notes the monotonic time *before* sending each renew (`sent`). A successful
///   renew keeps the lease valid until `sent + ttl`, whether or not later renews get through.
/// - Fencing (SIGKILL of the backend, removal of the VIPs) starts at `sent + ttl - fenceBudget`,
///   so it is finished before the lease can be taken by anyone else.
/// - A passive node that last saw the lease written at local time `seen` may try to take it over
///   at `seen + ttl + skew` (on NATS 2.9 an expiry is silent).
public struct LeaseTiming: Sendable, Hashable {
    /// How long a write keeps the lease (the KV bucket's TTL).
    public var ttl: Duration
    /// How often the active node renews.
    public var renew: Duration
    /// How long fencing may take; it starts this long before the lease runs out.
    public var fenceBudget: Duration
    /// Extra margin a passive node adds for clock-rate differences and delivery delays.
    public var skew: Duration

    /// Creates a timing.
    public init(ttl: Duration, renew: Duration, fenceBudget: Duration, skew: Duration) {
        self.ttl = ttl
        self.renew = renew
        self.fenceBudget = fenceBudget
        self.skew = skew
    }

    /// When fencing must start for a lease last renewed by a write sent at `sent`.
    public func fenceAt(sentAt sent: MonotonicInstant) -> MonotonicInstant { sent + ttl - fenceBudget }

    /// When a passive node may try to take over a lease it last saw written at `seen`, by a
    /// holder whose ttl is `holderTTL` (this timing's own ttl when nil). The holder's ttl is what
    /// counts: the holder fences by its own, whatever this node's config says.
    public func takeoverAt(seenAt seen: MonotonicInstant, holderTTL: Duration? = nil) -> MonotonicInstant {
        seen + (holderTTL ?? ttl) + skew
    }
}
