import Dispatch
import FenceKeeper
import Logging
import Netlink
import Synchronization
import Systemd

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Removes an app's claims outside its process group (VIPs, epoch files, its systemd unit) for
/// the keeper.
///
/// The keeper is a single-threaded poll loop; the netlink and D-Bus clients are async and run
/// their I/O on threads of their own. The release blocks the keeper's thread for a bounded time
/// per step: the VIPs are removed and the units killed (KillUnit, SIGKILL to their cgroups) at
/// the same time, within ``timeout``; only then are the units' stop jobs waited for
/// (``unitTimeout``). So neither a hung D-Bus nor a unit whose stop hangs delays the removal of
/// the VIPs.
@MainActor final class ClaimReleaser {
    private let claims: FenceKeeperClaims
    private let logger: Logger
    private var addressManager: VIPAddressManager?
    static let timeout: Duration = .seconds(2)
    /// Connecting to the bus, KillUnit, and the stop job that follows.
    static let unitTimeout: Duration = .seconds(5)

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
        releaseFiles(reason: reason)
        let units = claims.units
        let addresses = claims.addresses
        let manager = addresses.isEmpty ? nil : (addressManager ?? VIPAddressManager(logger: logger))
        addressManager = manager
        let logger = self.logger
        let killed = KilledUnits()
        let finished = Self.runBlocking(timeout: Self.timeout) {
            async let vipsRemoved: Void = Self.removeAddresses(addresses, manager: manager, reason: reason, logger: logger)
            async let unitsKilled: Void = Self.killUnits(units, into: killed, logger: logger)
            _ = await (vipsRemoved, unitsKilled)
        }
        if !finished { logger.error("removing the virtual IPs and killing the units did not finish within \(Self.timeout)") }
        stopUnits(killed.units.withLock { $0 }, reason: reason)
    }

    private func releaseFiles(reason: String) {
        for path in claims.files {
            if unlink(path) == 0 {
                logger.notice("epoch file removed by the fence keeper", metadata: ["path": "\(path)", "reason": "\(reason)"])
            } else if errno != ENOENT {
                logger.error("cannot remove \(path): \(errnoText(errno))")
            }
        }
    }

    private nonisolated static func removeAddresses(
        _ addresses: [FenceKeeperClaims.Address], manager: VIPAddressManager?, reason: String, logger: Logger
    ) async {
        guard let manager else { return }
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

    /// A connection to the manager of one claimed unit, once KillUnit was sent.
    private struct KilledUnit: Sendable {
        var name: String
        var manager: SystemdManager
    }

    /// KillUnit (SIGKILL to every process of each unit's cgroup). A unit that is not running
    /// answers KillUnit with an error, which is only logged at debug level. The connections are
    /// kept in `killed` for the stop jobs.
    private nonisolated static func killUnits(_ units: [FenceKeeperClaims.Unit], into killed: KilledUnits, logger: Logger) async {
        await withTaskGroup(of: Void.self) { group in
            for claim in units {
                group.addTask {
                    let manager: SystemdManager
                    do {
                        manager = try await SystemdManager.connect(to: Self.busAddress(claim.bus), callTimeout: .seconds(2), logger: logger)
                    } catch {
                        logger.error("cannot reach systemd to kill the unit", metadata: ["unit": "\(claim.name)", "error": "\(error)"])
                        return
                    }
                    do {
                        try await manager.killUnit(claim.name)
                    } catch {
                        logger.debug("KillUnit failed (the unit may not be running)", metadata: ["unit": "\(claim.name)", "error": "\(error)"])
                    }
                    killed.units.withLock { $0.append(KilledUnit(name: claim.name, manager: manager)) }
                }
            }
        }
    }

    private final class KilledUnits: Sendable {
        let units = Mutex<[KilledUnit]>([])
    }

    /// StopUnit for each killed unit, so that systemd does not restart it (`Restart=`) and
    /// records it stopped; bounded by ``unitTimeout``.
    private func stopUnits(_ units: [KilledUnit], reason: String) {
        guard !units.isEmpty else { return }
        let logger = self.logger
        let finished = Self.runBlocking(timeout: Self.unitTimeout) {
            await withTaskGroup(of: Void.self) { group in
                for unit in units {
                    group.addTask {
                        do {
                            try await unit.manager.stopUnit(unit.name, timeout: .seconds(3))
                            logger.notice("unit killed and stopped by the fence keeper", metadata: ["unit": "\(unit.name)", "reason": "\(reason)"])
                        } catch {
                            logger.error("cannot stop the unit", metadata: ["unit": "\(unit.name)", "error": "\(error)"])
                        }
                        await unit.manager.close()
                    }
                }
            }
        }
        if !finished { logger.error("stopping the units did not finish within \(Self.unitTimeout)") }
    }

    /// `system`, `user`, or a D-Bus address.
    nonisolated static func busAddress(_ text: String) -> SystemdBusAddress {
        switch text {
        case "system": .system
        case "user": .user
        default: .address(text)
        }
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
