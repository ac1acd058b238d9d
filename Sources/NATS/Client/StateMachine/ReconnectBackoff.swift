/// The wait before each round of connection attempts: jitter alone before the first round, then
/// `reconnectWait` doubling each round up to `maxReconnectWait`, plus jitter.
struct ReconnectBackoff: Sendable, Equatable {
    var reconnectWait: Duration
    var maxReconnectWait: Duration
    var jitter: Duration

    init(reconnectWait: Duration, maxReconnectWait: Duration, jitter: Duration) {
        self.reconnectWait = reconnectWait
        self.maxReconnectWait = maxReconnectWait
        self.jitter = jitter
    }

    init(_ options: NATSClientOptions) {
        self.init(reconnectWait: options.reconnectWait, maxReconnectWait: options.maxReconnectWait, jitter: options.reconnectJitter)
    }

    /// The wait before `round` (0 = the first) with `jitterNanoseconds` of jitter, a value drawn
    /// from `0...jitter` (``randomJitter()``).
    func delay(round: Int, jitterNanoseconds: Int64) -> Duration {
        if round == 0 { return .nanoseconds(jitterNanoseconds) }
        let base = reconnectWait.nanoseconds
        let exponent = min(round - 1, 20)
        let wait = min(base.multipliedReportingOverflow(by: 1 << exponent).partialValue, maxReconnectWait.nanoseconds)
        return .nanoseconds(max(0, wait) + jitterNanoseconds)
    }

    /// A random jitter in `0...jitter`, in nanoseconds.
    func randomJitter() -> Int64 {
        jitter.nanoseconds > 0 ? Int64.random(in: 0...jitter.nanoseconds) : 0
    }
}
