import Dispatch
import FenceKeeper
import Logging
import Netlink
import Synchronization

/// Removes an app's claims outside its process group (VIPs, its systemd unit) for the keeper.
///
/// The keeper is a single-threaded poll loop; the netlink and D-Bus clients are async and run
/// their I/O on threads of their own. The release blocks the keeper's thread for at most
/// ``timeout`` per claim kind: the processes were already killed (SIGKILL) before.
@MainActor final class ClaimReleaser {
    private let claims: FenceKeeperClaims
    private let logger: Logger
    private var addressManager: VIPAddressManager?
    static let timeout: Duration = .seconds(2)

    init(claims: FenceKeeperClaims, app: String) {
        self.claims = claims
        var logger = Logger(label: "baton-fence-keeper") { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .info
            return handler
        }
        logger[metadataKey: "app"] = "\(app)"
        self.logger = logger
    }

    func release(reason: String) {
        guard !claims.isEmpty else { return }
        releaseAddresses(reason: reason)
        releaseUnits(reason: reason)
    }

    private func releaseAddresses(reason: String) {
        guard !claims.addresses.isEmpty else { return }
        let manager = addressManager ?? VIPAddressManager(logger: logger)
        addressManager = manager
        let addresses = claims.addresses
        let logger = self.logger
        let finished = Self.runBlocking(timeout: Self.timeout) {
            await withTaskGroup(of: Void.self) { group in
                for claim in addresses {
                    group.addTask {
                        do {
                            let vip = try VIPAddress(claim.cidr)
                            let change = try await manager.remove(vip, from: claim.interface)
                            logger.notice("virtual IP released by the fence keeper", metadata: [
                                "vip": "\(claim.cidr)", "interface": "\(claim.interface)", "change": "\(change)", "reason": "\(reason)",
                            ])
                        } catch {
                            logger.error("cannot remove virtual IP", metadata: ["vip": "\(claim.cidr)", "interface": "\(claim.interface)", "error": "\(error)"])
                        }
                    }
                }
            }
        }
        if !finished { logger.error("removing the virtual IPs did not finish within \(Self.timeout)") }
    }

    private func releaseUnits(reason: String) {
        guard !claims.units.isEmpty else { return }
        logger.error("systemd unit claims cannot be released by this keeper build", metadata: ["units": "\(claims.units.map(\.name))"])
    }

    /// Runs `body` on the concurrency pool and waits for it on this thread, at most `timeout`.
    /// Returns whether it finished.
    nonisolated static func runBlocking(timeout: Duration, _ body: @escaping @Sendable () async -> Void) -> Bool {
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            await body()
            done.signal()
        }
        let (seconds, attoseconds) = timeout.components
        let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
        return done.wait(timeout: .now() + .nanoseconds(nanoseconds)) == .success
    }
}
