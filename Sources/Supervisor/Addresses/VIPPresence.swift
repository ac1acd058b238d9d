import BatonCore
import Logging
import Netlink

/// Whether one configured virtual IP is on this node, as the kernel says (not as Baton's claim
/// state says): what `baton_vip_present` reports on every node, so that a VIP on a passive node
/// (or missing on the active one) can raise an alert.
public struct VIPPresence: Sendable, Hashable {
    /// The app the VIP belongs to.
    public var app: String
    /// The VIP as configured, `address/prefix` (`192.0.2.10/24`).
    public var address: String
    /// The interface it is configured on.
    public var interface: String
    /// True when the kernel lists the address (with any prefix length) on the interface.
    public var present: Bool

    /// Creates a presence report.
    public init(app: String, address: String, interface: String, present: Bool) {
        self.app = app
        self.address = address
        self.interface = interface
        self.present = present
    }

    /// The presence of every VIP of `apps`, given the addresses the kernel lists per interface
    /// (`kernel[interface]`; an interface missing from the map, or that does not exist, holds
    /// none). The address is compared without its prefix length: the address on another prefix
    /// still answers for it.
    public static func presences(apps: [AppConfig], kernel: [String: [IPAddress]]) -> [VIPPresence] {
        apps.flatMap { app in
            app.vips.map { vip in
                let wanted = try? IPAddress(vip.address)
                let present = wanted.map { (kernel[vip.interface] ?? []).contains($0) } ?? false
                return VIPPresence(app: app.name, address: vip.cidr, interface: vip.interface, present: present)
            }
        }
    }
}

/// Reads which configured VIPs are on this node's interfaces (netlink address dumps, listing
/// needs no capability).
public final class VIPPresenceReader: Sendable {
    private let manager: VIPAddressManager
    private let logger: Logger

    /// A reader of the interfaces in `namespace` (this process's by default).
    public init(namespace: NetworkNamespace = .current, logger: Logger) {
        self.manager = VIPAddressManager(namespace: namespace, logger: logger)
        self.logger = logger
    }

    /// Stops the reader's netlink thread.
    public func shutdown() { manager.shutdown() }

    /// The presence of every VIP of `apps`. An interface that does not exist holds none; an
    /// interface that cannot be read (another netlink error) leaves its VIPs out, logged.
    public func read(apps: [AppConfig]) async -> [VIPPresence] {
        var kernel: [String: [IPAddress]] = [:]
        var unreadable = Set<String>()
        for interface in Set(apps.flatMap { $0.vips.map(\.interface) }).sorted() {
            do {
                kernel[interface] = try await manager.addresses(on: interface).map(\.vip.address)
            } catch where error.kind == .unknownInterface {
                kernel[interface] = []
            } catch {
                unreadable.insert(interface)
                logger.debug("cannot list the addresses of an interface", metadata: ["interface": "\(interface)", "error": "\(error)"])
            }
        }
        return VIPPresence.presences(apps: apps, kernel: kernel).filter { !unreadable.contains($0.interface) }
    }
}
