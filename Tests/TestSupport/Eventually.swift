/// The one bounded wait of the test suites: for state that has no event to await (a file's
/// contents, a kernel address, a child's exit, a log line, another process's view).
///
/// Where an event exists (an `AsyncStream`, a continuation), await the event instead.

/// Thrown by ``eventually(_:timeout:every:_:)`` when the condition did not hold in time; says
/// what was awaited, for how long, and how often the condition was checked.
public struct WaitTimedOut: Error, CustomStringConvertible, Sendable {
    /// What the test waited for, as the caller described it (evaluated at the timeout, so it can
    /// show the last state seen).
    public var what: String
    /// The bound given to the wait.
    public var timeout: Duration
    /// The time that actually passed until the wait gave up.
    public var waited: Duration
    /// How many times the condition was evaluated.
    public var checks: Int
    /// The last error the condition threw, when the wait was told to retry on errors.
    public var lastError: String?

    public var description: String {
        "timed out after \(waited) (limit \(timeout), \(checks) checks) waiting for: \(what)"
            + (lastError.map { " (last error: \($0))" } ?? "")
    }
}

/// Evaluates `condition` every `every` until it returns `true`; throws ``WaitTimedOut`` naming
/// `what` once `timeout` has passed without it holding.
///
/// The condition is always checked once more at the deadline, so a wait never fails without a
/// last look. Errors thrown by `condition` end the wait and propagate unchanged, unless
/// `retryingErrors` is set (for a server still starting: connection refused means "not yet");
/// then the last one is part of the timeout's description. `what` is an
/// autoclosure evaluated only on timeout: it may quote state the condition recorded (say, the
/// last value read), and then shows the last one.
///
/// ```swift
/// try await eventually("the VIP on node-a", timeout: .seconds(20)) {
///     try await lab.hasAddress(vip, on: lab.host("a"))
/// }
/// ```
///
/// - Parameters:
///   - what: what is awaited, in words a failing test's reader understands.
///   - timeout: the bound of the wait.
///   - every: the pause between two checks (50 ms unless told).
///   - retryingErrors: treat an error of `condition` as "not yet" instead of ending the wait.
///   - condition: the state to wait for.
public func eventually(
    _ what: @autoclosure () -> String,
    timeout: Duration,
    every: Duration = .milliseconds(50),
    retryingErrors: Bool = false,
    _ condition: () async throws -> Bool
) async throws {
    let clock = ContinuousClock()
    let start = clock.now
    let deadline = start + timeout
    var checks = 0
    var lastError: (any Error)?
    func holds() async throws -> Bool {
        checks += 1
        do {
            return try await condition()
        } catch where retryingErrors && !(error is CancellationError) {
            lastError = error
            return false
        }
    }
    while clock.now < deadline {
        if try await holds() { return }
        try await Task.sleep(for: every)
    }
    if try await holds() { return }
    throw WaitTimedOut(
        what: what(), timeout: timeout, waited: clock.now - start, checks: checks, lastError: lastError.map { "\($0)" })
}
