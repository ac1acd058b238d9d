import Testing
import TestSupport

/// A failure a condition throws on purpose.
private struct Refused: Error, CustomStringConvertible {
    var description: String { "refused" }
}

@Suite("eventually: the one bounded wait")
struct EventuallyTests {
    @Test("returns once the condition holds, after as many checks as it took")
    func returnsWhenTheConditionHolds() async throws {
        var checks = 0
        try await eventually("the third check", timeout: .seconds(30), every: .milliseconds(1)) {
            checks += 1
            return checks == 3
        }
        #expect(checks == 3)
    }

    @Test("on timeout, names what it waited for, the limit and the checks, with the last state")
    func timeoutSaysWhatAndHowLong() async throws {
        var last = 0
        let error = await #expect(throws: WaitTimedOut.self) {
            try await eventually("the counter at -1 (is \(last))", timeout: .milliseconds(30), every: .milliseconds(5)) {
                last += 1
                return false
            }
        }
        let timedOut = try #require(error)
        #expect(timedOut.what == "the counter at -1 (is \(last))")
        #expect(timedOut.timeout == .milliseconds(30))
        #expect(timedOut.waited >= .milliseconds(30))
        #expect(timedOut.checks == last)
        #expect(timedOut.checks >= 2, "checked at least once before and once at the deadline")
        #expect(timedOut.lastError == nil)
        #expect(timedOut.description.hasPrefix("timed out after "))
        #expect(timedOut.description.contains("(limit 0.03 seconds, \(last) checks) waiting for: the counter at -1 (is \(last))"))
    }

    @Test("an error of the condition ends the wait at once, unless told to retry")
    func errorsEndTheWaitUnlessRetrying() async throws {
        var checks = 0
        await #expect(throws: Refused.self) {
            try await eventually("never", timeout: .seconds(30), every: .milliseconds(1)) {
                checks += 1
                throw Refused()
            }
        }
        #expect(checks == 1)

        checks = 0
        try await eventually("a server that refuses twice", timeout: .seconds(30), every: .milliseconds(1), retryingErrors: true) {
            checks += 1
            if checks < 3 { throw Refused() }
            return true
        }
        #expect(checks == 3)

        let error = await #expect(throws: WaitTimedOut.self) {
            try await eventually("a server that always refuses", timeout: .milliseconds(20), every: .milliseconds(5), retryingErrors: true) {
                throw Refused()
            }
        }
        #expect(error?.lastError == "refused")
        #expect(error?.description.hasSuffix("(last error: refused)") == true)
    }

    @Test("cancellation is not retried")
    func cancellationEndsTheWait() async throws {
        let task = Task {
            try await eventually("never", timeout: .seconds(30), every: .milliseconds(1), retryingErrors: true) {
                try Task.checkCancellation()
                return false
            }
        }
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
    }
}
