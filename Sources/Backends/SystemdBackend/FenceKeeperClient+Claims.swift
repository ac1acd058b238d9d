import BatonCore
import FenceKeeper
import Logging

extension FenceKeeperClient {
    /// Arms a claims-only keeper (launched first if none runs): it releases the unit, its epoch
    /// file and the VIPs at `deadline` unless re-armed or disarmed before. Its reports are only
    /// logged: a keeper that guards claims has no process to report on.
    ///
    /// - Throws: ``FenceKeeperError`` naming the executable and the reason when it cannot be
    ///   started.
    func armClaims(token: UInt64, deadline: MonotonicInstant, logger: Logger) async throws(FenceKeeperError) {
        let handle = try await launch { event in Self.logClaimsEvent(event, logger: logger) }
        handle.connection.send(.arm(token: token, deadline: deadline.nanoseconds))
    }

    /// What a claims-only keeper's reports mean for operators.
    private static func logClaimsEvent(_ event: Event, logger: Logger) {
        guard case .report(let report, _) = event else { return }
        switch report {
        case .expired(let token, let deadline, let now):
            logger.error(
                "fence deadline passed: the fence keeper released the app's claims (unit killed and stopped, VIPs removed)",
                metadata: ["epoch": "\(token)", "late": "\((now - deadline) / 1_000_000)ms"])
        case .error(let message):
            logger.error("the fence keeper reported an error", metadata: ["error": "\(message)"])
        case .ready, .pong, .started, .startFailed, .killed, .exited:
            logger.debug("unexpected report from a claims-only fence keeper", metadata: ["report": "\(report.line)"])
        }
    }
}
