import Backends
import BatonCore
import Control

/// The virtual IPs of one app on this node, as the app supervisor drives them. Every method
/// must be safe to call in any order and more than once.
public protocol AppAddresses: Sendable {
    /// Adds every VIP and announces it (gratuitous ARP / unsolicited NA); from here on the VIPs
    /// are kept present (re-added and re-announced when removed from outside). Throws with a
    /// clear reason when a VIP cannot be added.
    func claim(token: UInt64) async throws
    /// Removes every VIP (graceful demotion); from here on they are kept absent.
    func release() async throws
    /// Removes every VIP now, as part of fencing; never throws (failures are logged). Says
    /// whether every VIP is known absent.
    func fence() async -> StopOutcome
    /// The node follows another: VIPs present on this node are removed (for example left behind
    /// by a batond that crashed) and kept absent.
    func enterPassive() async
    /// Failures while the VIPs are claimed that could not be repaired: each element is a reason.
    func failures() -> AsyncStream<String>
    /// Things an operator should see that change nothing (a VIP repaired, a conflict seen).
    func events() -> AsyncStream<String>
    /// Stops background work once the app is gone from the config or batond stops.
    func dispose() async
}

/// The SQLite replica of one app on this node, as the app supervisor drives it. Every method
/// must be safe to call in any order and more than once.
public protocol AppReplica: Sendable {
    /// Makes this node's replica the app's database: stops applying, drains the replication
    /// stream, verifies the copy and moves it into place, then ships the WAL under `token`.
    /// Throws (and leaves the database path untouched) when the copy cannot be verified.
    func promote(token: UInt64) async throws
    /// Ships what the WAL still holds and a final marker under `token`, then stops shipping
    /// (graceful demotion: the next node promotes only after applying the marker).
    func flush(token: UInt64) async throws
    /// The final flush under `token` gave up (``flush(token:)`` kept failing): moves the
    /// database aside so that no later promotion or restore on this node overwrites the
    /// transactions it holds that were not shipped, and reports them (log and status).
    /// Returns where the database went, or nil when nothing had to move (no database, or a
    /// late flush completed after all). Throws when it could not be moved.
    func setAside(token: UInt64, reason: String) async throws -> String?
    /// Stops shipping now, as part of fencing; never throws.
    func fence() async
    /// Applies the active node's records to the local replica (passive).
    func follow() async
    /// Failures while shipping that the replica could not recover from: each element is a reason.
    func failures() -> AsyncStream<String>
    /// Takes a snapshot now, while shipping (this node is active): returns it once published.
    /// Throws, saying why, when this node does not ship.
    func snapshotNow() async throws -> SnapshotReport
    /// What the replica does now, for `batonctl status`.
    func status() async -> ReplicationStatus
    /// Stops background work once the app is gone from the config or batond stops.
    func dispose() async
}
