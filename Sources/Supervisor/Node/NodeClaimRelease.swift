import Backends
import BatonCore
import Control
import Logging
import Netlink
import Systemd

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Drops everything a batond of this config may have left on the host, without NATS: for every
/// app, its epoch file (so nothing can start its systemd unit again), its configured virtual IPs,
/// and its systemd unit (KillUnit, then StopUnit).
///
/// A node holds no lease when it runs this: batond runs it at process start (before it connects
/// to NATS, so a node that restarts and cannot reach NATS still drops what a killed predecessor
/// left behind) and `batond --release-claims` runs it from `ExecStopPost=` of batond.service
/// (after every stop of batond, including a watchdog SIGKILL that took the fence keepers along).
/// Every step is idempotent and bounded in time; one step failing does not keep the others from
/// running.
public struct NodeClaimRelease: Sendable {
    /// One thing released (or found already released, or that could not be released).
    public struct Outcome: Sendable, Hashable, CustomStringConvertible {
        /// How a step ended.
        public enum Result: String, Sendable, Hashable {
            /// Something was removed or stopped.
            case released
            /// There was nothing to remove or stop.
            case alreadyReleased = "already released"
            /// It may still be there.
            case failed
        }

        /// The app it belongs to.
        public var app: String
        /// What it is: `virtual IP 192.0.2.10/24 on eth0`, `unit web.service`, `epoch file ...`.
        public var subject: String
        /// How the step ended.
        public var result: Result
        /// What was found and done, or why it failed.
        public var detail: String

        /// Creates an outcome.
        public init(app: String, subject: String, result: Result, detail: String) {
            self.app = app
            self.subject = subject
            self.result = result
            self.detail = detail
        }

        /// One line: `web: virtual IP 192.0.2.10/24 on eth0: released (removed)`.
        public var description: String { "\(app): \(subject): \(result.rawValue) (\(detail))" }
    }

    private let apps: [AppConfig]
    private let runtimeDirectory: String
    private let namespace: NetworkNamespace
    private let busOverride: SystemdBusAddress?
    private let addressTimeout: Duration
    private let unitTimeout: Duration
    private let logger: Logger

    /// - Parameters:
    ///   - config: the node's config: every app in it is released.
    ///   - runtimeDirectory: where the epoch files are (`<runtimeDirectory>/<app>/epoch`, as
    ///     ``SystemdAppBackend/Configuration`` places them).
    ///   - namespace: the network namespace of the VIPs' interfaces.
    ///   - bus: the bus of every unit's manager, in place of the configured one (tests).
    ///   - addressTimeout: the bound of each VIP removal.
    ///   - unitTimeout: the bound of each unit's kill and stop (connecting included).
    public init(
        config: BatonConfig, runtimeDirectory: String, namespace: NetworkNamespace = .current, bus: SystemdBusAddress? = nil,
        addressTimeout: Duration = .seconds(2), unitTimeout: Duration = .seconds(15), logger: Logger
    ) {
        self.apps = config.apps
        self.runtimeDirectory = runtimeDirectory
        self.namespace = namespace
        self.busOverride = bus
        self.addressTimeout = addressTimeout
        self.unitTimeout = unitTimeout
        self.logger = logger
    }

    /// The epoch file of `app`'s systemd unit.
    public static func epochFile(app: String, runtimeDirectory: String) -> String { "\(runtimeDirectory)/\(app)/epoch" }

    /// Releases every app's claims; returns one outcome per epoch file, VIP and unit, in config
    /// order (per app: epoch file, VIPs, unit). Epoch files go first, so that a unit cannot be
    /// started again while it is being stopped; VIPs before units, since a unit's stop can take
    /// long and the address is what clients follow.
    public func run() async -> [Outcome] {
        var outcomes: [Outcome] = []
        for app in apps {
            if case .systemd = app.backend { outcomes.append(releaseEpochFile(app: app.name)) }
        }
        outcomes += await releaseAddresses()
        for app in apps {
            guard case .systemd(let systemd) = app.backend else { continue }
            let bus = busOverride ?? (systemd.bus == .user ? .user : .system)
            outcomes.append(await releaseUnit(app: app.name, unit: systemd.unit, bus: bus))
        }
        return outcomes
    }

    private func releaseEpochFile(app: String) -> Outcome {
        let path = Self.epochFile(app: app, runtimeDirectory: runtimeDirectory)
        let subject = "epoch file \(path)"
        if unlink(path) == 0 { return Outcome(app: app, subject: subject, result: .released, detail: "removed") }
        let code = errno
        if code == ENOENT { return Outcome(app: app, subject: subject, result: .alreadyReleased, detail: "absent") }
        return Outcome(app: app, subject: subject, result: .failed, detail: "cannot remove it: \(String(cString: strerror(code)))")
    }

    private func releaseAddresses() async -> [Outcome] {
        let claims = apps.flatMap { app in app.vips.map { (app: app.name, vip: $0) } }
        guard !claims.isEmpty else { return [] }
        let manager = VIPAddressManager(namespace: namespace, logger: logger)
        defer { manager.shutdown() }
        var outcomes: [Outcome] = []
        for claim in claims {
            let subject = "virtual IP \(claim.vip.cidr) on \(claim.vip.interface)"
            let vip: VIPAddress
            do {
                vip = try VIPAddress(claim.vip.cidr)
            } catch {
                outcomes.append(Outcome(app: claim.app, subject: subject, result: .failed, detail: "\(error)"))
                continue
            }
            let interface = claim.vip.interface
            let answer = await withTimeLimit(addressTimeout) { () -> Result<AddressChange, NetlinkError> in
                do throws(NetlinkError) {
                    return .success(try await manager.remove(vip, from: interface))
                } catch {
                    return .failure(error)
                }
            }
            switch answer {
            case .none:
                outcomes.append(Outcome(app: claim.app, subject: subject, result: .failed, detail: "netlink did not answer within \(addressTimeout)"))
            case .some(.success(.removed)):
                outcomes.append(Outcome(app: claim.app, subject: subject, result: .released, detail: "removed"))
            case .some(.success):
                outcomes.append(Outcome(app: claim.app, subject: subject, result: .alreadyReleased, detail: "absent"))
            case .some(.failure(let error)) where error.kind == .unknownInterface:
                // No interface, no address on it.
                outcomes.append(Outcome(app: claim.app, subject: subject, result: .alreadyReleased, detail: "no interface \(interface)"))
            case .some(.failure(let error)):
                outcomes.append(Outcome(app: claim.app, subject: subject, result: .failed, detail: "\(error)"))
            }
        }
        return outcomes
    }

    private func releaseUnit(app: String, unit: String, bus: SystemdBusAddress) async -> Outcome {
        let subject = "unit \(unit)"
        let logger = self.logger
        let stopTimeout = max(.seconds(1), unitTimeout - .seconds(4))
        let answer = await withTimeLimit(unitTimeout) { () -> Outcome in
            let manager: SystemdManager
            do {
                manager = try await SystemdManager.connect(to: bus, callTimeout: .seconds(2), logger: logger)
            } catch {
                return Outcome(app: app, subject: subject, result: .failed, detail: "cannot reach the systemd manager on \(bus): \(error)")
            }
            let outcome = await Self.killAndStop(unit, app: app, subject: subject, manager: manager, stopTimeout: stopTimeout)
            await manager.close()
            return outcome
        }
        return answer ?? Outcome(app: app, subject: subject, result: .failed, detail: "systemd did not finish within \(unitTimeout)")
    }

    private static func killAndStop(_ unit: String, app: String, subject: String, manager: SystemdManager, stopTimeout: Duration) async -> Outcome {
        let before: UnitState
        do {
            before = try await manager.unitState(unit)
        } catch SystemdError.unknownUnit {
            return Outcome(app: app, subject: subject, result: .alreadyReleased, detail: "no such unit")
        } catch {
            return Outcome(app: app, subject: subject, result: .failed, detail: "cannot read its state: \(error)")
        }
        let wasDown = before.activeState == .inactive || before.activeState == .failed
        // SIGKILL to the whole cgroup first (a fence, not a graceful stop); a unit without
        // processes answers with an error, which says nothing.
        if !wasDown { try? await manager.killUnit(unit) }
        // StopUnit also when down: it cancels a queued start or restart job.
        var stopError: (any Error)?
        do {
            try await manager.stopUnit(unit, timeout: stopTimeout)
        } catch {
            stopError = error
        }
        let after: UnitState
        do {
            after = try await manager.unitState(unit)
        } catch {
            return Outcome(app: app, subject: subject, result: .failed, detail: "cannot read its state after the stop: \(error)")
        }
        guard after.activeState == .inactive || after.activeState == .failed else {
            return Outcome(
                app: app, subject: subject, result: .failed,
                detail: "still \(after.activeState)/\(after.subState) after KillUnit and StopUnit\(stopError.map { ": \($0)" } ?? "")")
        }
        if wasDown { return Outcome(app: app, subject: subject, result: .alreadyReleased, detail: "not running: \(before.activeState)/\(before.subState)") }
        return Outcome(app: app, subject: subject, result: .released, detail: "was \(before.activeState)/\(before.subState); killed (SIGKILL) and stopped")
    }
}
