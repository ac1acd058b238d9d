/// What a fence keeper removes besides the backend's processes when the armed deadline passes
/// or batond goes away: the app's virtual IPs, its systemd unit, and files to remove first (the
/// unit's fencing-token file, so that nothing can start the unit again). Given on the keeper's
/// command line (they do not change while the app runs: a config change restarts the app).
public struct FenceKeeperClaims: Sendable, Hashable {
    /// One VIP: `address/prefix` and the interface it is on.
    public struct Address: Sendable, Hashable {
        public var cidr: String
        public var interface: String

        /// Creates an address claim.
        public init(cidr: String, interface: String) {
            self.cidr = cidr
            self.interface = interface
        }
    }

    /// One systemd unit and the bus of its manager (`system`, `user` or a D-Bus address).
    public struct Unit: Sendable, Hashable {
        public var name: String
        public var bus: String

        /// Creates a unit claim.
        public init(name: String, bus: String) {
            self.name = name
            self.bus = bus
        }
    }

    public var addresses: [Address]
    public var units: [Unit]
    /// Files removed before the units are killed (a unit's epoch file: its
    /// `ConditionPathExists=` then keeps it from starting again).
    public var files: [String]

    /// Creates claims (none by default).
    public init(addresses: [Address] = [], units: [Unit] = [], files: [String] = []) {
        self.addresses = addresses
        self.units = units
        self.files = files
    }

    /// Whether there is nothing to remove.
    public var isEmpty: Bool { addresses.isEmpty && units.isEmpty && files.isEmpty }

    /// The keeper options that carry these claims: `--release-address CIDR@INTERFACE`,
    /// `--release-unit BUS@UNIT` and `--release-file PATH`, one per claim.
    public var keeperArguments: [String] {
        addresses.flatMap { ["--release-address", "\($0.cidr)@\($0.interface)"] } + units.flatMap { ["--release-unit", "\($0.bus)@\($0.name)"] }
            + files.flatMap { ["--release-file", $0] }
    }

    /// Reads one `--release-address` value.
    public static func parseAddress(_ text: String) -> Address? {
        guard let at = text.lastIndex(of: "@") else { return nil }
        let cidr = String(text[..<at])
        let interface = String(text[text.index(after: at)...])
        guard !cidr.isEmpty, !interface.isEmpty else { return nil }
        return Address(cidr: cidr, interface: interface)
    }

    /// Reads one `--release-unit` value; the bus ends at the first `@` (template unit names
    /// contain one, bus names do not).
    public static func parseUnit(_ text: String) -> Unit? {
        guard let at = text.firstIndex(of: "@") else { return nil }
        let bus = String(text[..<at])
        let name = String(text[text.index(after: at)...])
        guard !bus.isEmpty, !name.isEmpty else { return nil }
        return Unit(name: name, bus: bus)
    }
}
