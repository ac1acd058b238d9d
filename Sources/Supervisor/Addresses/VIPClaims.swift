import Backends
import BatonCore
import Control
import Logging
import Netlink

/// The virtual IPs of one app on this node, over netlink: added and announced when the node
/// becomes active, removed when it becomes passive or is fenced, and reconciled in between
/// (a VIP removed from outside while active is added and announced again; a VIP present while
/// passive, for example left behind by a batond that crashed, is removed).
public actor VIPClaims: AppAddresses {
    /// One configured VIP, parsed for netlink.
    struct Claim: Sendable {
        var vip: VIPAddress
        var config: VIPConfig
    }

    private enum Mode: Equatable {
        case passive
        case active(token: UInt64)
    }

    private let app: String
    private let claims: [Claim]
    private let manager: VIPAddressManager
    private let announcer: VIPAnnouncer
    private let reconcileInterval: Duration
    private let logger: Logger
    private var mode: Mode = .passive
    private var reconciler: Task<Void, Never>?
    /// The last netlink change asked for. Changes run in the order they were decided here, so
    /// a removal decided after an addition always lands after it (the actor may interleave
    /// calls at every `await`, but the chain is extended synchronously).
    private var lastChange: Task<Void, Never>?
    private var announcements: [Task<Void, Never>] = []
    private let conflictProbe: VIPConflictProbe
    private let failureStream: AsyncStream<String>
    private let failureContinuation: AsyncStream<String>.Continuation
    private let eventStream: AsyncStream<String>
    private let eventContinuation: AsyncStream<String>.Continuation

    /// Creates the claims of `app`; nothing changes on the host until the first call.
    ///
    /// - Parameters:
    ///   - namespace: the network namespace the interfaces are in (the process's own by default).
    ///   - reconcileInterval: how often the VIPs are checked against what the node should hold.
    /// - Throws: when a configured address is not a VIP netlink accepts.
    public init(
        app: String, vips: [VIPConfig], namespace: NetworkNamespace = .current, reconcileInterval: Duration = .seconds(1), logger: Logger
    ) throws {
        var logger = logger
        logger[metadataKey: "app"] = "\(app)"
        self.app = app
        self.claims = try vips.map { config in Claim(vip: try VIPAddress(config.cidr), config: config) }
        self.manager = VIPAddressManager(namespace: namespace, logger: logger)
        self.announcer = VIPAnnouncer(namespace: namespace, logger: logger)
        self.conflictProbe = VIPConflictProbe(namespace: namespace, logger: logger)
        self.reconcileInterval = reconcileInterval
        self.logger = logger
        (failureStream, failureContinuation) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(16))
        (eventStream, eventContinuation) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(16))
    }

    public nonisolated func failures() -> AsyncStream<String> { failureStream }
    public nonisolated func events() -> AsyncStream<String> { eventStream }

    public func claim(token: UInt64) async throws {
        mode = .active(token: token)
        startReconciling()
        for claim in claims where claim.config.checkConflicts {
            probeForOtherOwners(claim, token: token)
        }
        for claim in claims {
            guard mode == .active(token: token) else { throw VIPClaimSuperseded(vip: claim.vip.description) }
            let change = try await add(claim)
            logger.notice("virtual IP claimed", metadata: ["vip": "\(claim.vip)", "interface": "\(claim.config.interface)", "change": "\(change)", "epoch": "\(token)"])
            guard mode == .active(token: token) else { throw VIPClaimSuperseded(vip: claim.vip.description) }
            announce(claim)
            if claim.config.announce.refresh > .zero {
                let announcer = self.announcer
                announcements.append(Task { await announcer.refresh(claim.vip, on: claim.config.interface, every: claim.config.announce.refresh) })
            }
        }
    }

    public func release() async throws {
        mode = .passive
        stopAnnouncing()
        var firstError: (any Error)?
        for claim in claims {
            do {
                let change = try await remove(claim)
                logger.info("virtual IP released", metadata: ["vip": "\(claim.vip)", "interface": "\(claim.config.interface)", "change": "\(change)"])
            } catch {
                firstError = firstError ?? error
            }
        }
        if let firstError { throw firstError }
    }

    @discardableResult
    public func fence() async -> StopOutcome {
        mode = .passive
        stopAnnouncing()
        let failures = await removeAll(reason: "fenced")
        return failures.isEmpty ? .confirmed : .unconfirmed(failures.joined(separator: "; "))
    }

    public func enterPassive() async {
        mode = .passive
        stopAnnouncing()
        startReconciling()
        await removeAll(reason: "this node does not hold the lease", reportsRemoval: true)
    }

    public func dispose() async {
        reconciler?.cancel()
        reconciler = nil
        stopAnnouncing()
        failureContinuation.finish()
        eventContinuation.finish()
        manager.shutdown()
        announcer.shutdown()
        conflictProbe.shutdown()
    }

    /// Reports another host that answers for the VIP (it was not fenced, or it is misconfigured).
    /// Runs beside the claim and decides nothing: the fencing token does.
    private func probeForOtherOwners(_ claim: Claim, token: UInt64) {
        let probe = conflictProbe
        let logger = self.logger
        let events = eventContinuation
        Task {
            do {
                let owners = try await probe.otherOwners(of: claim.vip, on: claim.config.interface, listenFor: .milliseconds(200))
                guard !owners.isEmpty else { return }
                let event = "another host (\(owners.joined(separator: ", "))) answers for virtual IP \(claim.vip) on \(claim.config.interface) while this node claims it under epoch \(token)"
                logger.error("virtual IP conflict", metadata: ["vip": "\(claim.vip)", "owners": "\(owners)", "epoch": "\(token)"])
                events.yield(event)
            } catch {
                logger.warning("cannot probe for other owners of a virtual IP", metadata: ["vip": "\(claim.vip)", "error": "\(error)"])
            }
        }
    }

    // MARK: - Reconcile

    private func startReconciling() {
        guard reconciler == nil else { return }
        let interval = reconcileInterval
        reconciler = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                if Task.isCancelled { return }
                await self?.reconcile()
            }
        }
    }

    private func reconcile() async {
        let expected = mode
        for claim in claims {
            let present: Bool
            do {
                present = try await manager.contains(claim.vip, on: claim.config.interface)
            } catch {
                if mode == expected, case .active = expected { report("cannot check \(claim.vip) on \(claim.config.interface): \(error)") }
                continue
            }
            // The mode may have changed while the dump ran: judge with the current one.
            switch mode {
            case .active(let token) where !present:
                logger.warning("virtual IP was removed from outside; adding it again", metadata: ["vip": "\(claim.vip)", "interface": "\(claim.config.interface)"])
                eventContinuation.yield("virtual IP \(claim.vip) was removed from \(claim.config.interface) from outside; added again")
                do {
                    _ = try await add(claim)
                    guard mode == .active(token: token) else { continue }
                    announce(claim)
                } catch {
                    report("cannot add \(claim.vip) to \(claim.config.interface) again: \(error)")
                }
            case .passive where present:
                logger.warning("removing a virtual IP this node does not own", metadata: ["vip": "\(claim.vip)", "interface": "\(claim.config.interface)"])
                eventContinuation.yield("removed virtual IP \(claim.vip) from \(claim.config.interface): this node does not hold the lease")
                do {
                    _ = try await remove(claim)
                } catch {
                    logger.error("cannot remove a virtual IP this node does not own", metadata: ["vip": "\(claim.vip)", "error": "\(error)"])
                }
            case .active, .passive:
                break
            }
        }
    }

    private func report(_ reason: String) {
        logger.error("virtual IP failure", metadata: ["reason": "\(reason)"])
        failureContinuation.yield(reason)
    }

    // MARK: - Helpers

    private func announce(_ claim: Claim) {
        let settings = claim.config.announce
        guard settings.count > 0 else { return }
        let shape = AnnouncementBurst(count: settings.count, interval: settings.interval)
        let announcer = self.announcer
        let logger = self.logger
        announcements.removeAll { $0.isCancelled }
        announcements.append(Task {
            do {
                try await announcer.announce(claim.vip, on: claim.config.interface, burst: shape)
            } catch is CancellationError {
            } catch {
                // Neighbours learn the move later (on their next ARP/ND); the VIP itself works.
                logger.warning("cannot announce virtual IP", metadata: ["vip": "\(claim.vip)", "error": "\(error)"])
            }
        })
    }

    private func add(_ claim: Claim) async throws -> AddressChange {
        let manager = self.manager
        return try await serially { try await manager.add(claim.vip, to: claim.config.interface, label: claim.config.label) }
    }

    private func remove(_ claim: Claim) async throws -> AddressChange {
        let manager = self.manager
        return try await serially { try await manager.remove(claim.vip, from: claim.config.interface) }
    }

    /// Runs `change` after every change asked for before it.
    private func serially(_ change: @escaping @Sendable () async throws -> AddressChange) async throws -> AddressChange {
        let previous = lastChange
        let task = Task<AddressChange, any Error> {
            await previous?.value
            return try await change()
        }
        lastChange = Task { _ = try? await task.value }
        return try await task.value
    }

    private func stopAnnouncing() {
        for task in announcements { task.cancel() }
        announcements.removeAll()
    }

    /// Removes every VIP; returns what could not be removed (empty when all are absent).
    @discardableResult
    private func removeAll(reason: String, reportsRemoval: Bool = false) async -> [String] {
        var failures: [String] = []
        for claim in claims {
            do {
                let change = try await remove(claim)
                if change == .removed {
                    logger.warning("virtual IP removed", metadata: ["vip": "\(claim.vip)", "interface": "\(claim.config.interface)", "reason": "\(reason)"])
                    if reportsRemoval { eventContinuation.yield("removed virtual IP \(claim.vip) from \(claim.config.interface): \(reason)") }
                }
            } catch {
                logger.error("cannot remove virtual IP", metadata: ["vip": "\(claim.vip)", "interface": "\(claim.config.interface)", "error": "\(error)"])
                failures.append("\(claim.vip) on \(claim.config.interface): \(error)")
            }
        }
        return failures
    }
}

/// A claim that lost to a release or fence decided while it ran.
struct VIPClaimSuperseded: Error, CustomStringConvertible {
    var vip: String
    var description: String { "claiming \(vip) was superseded by a release or fence" }
}
