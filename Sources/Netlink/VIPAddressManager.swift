import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What ``VIPAddressManager/add(_:to:label:)`` and ``VIPAddressManager/remove(_:from:)`` did.
public enum AddressChange: Sendable, Hashable, CustomStringConvertible {
    /// The address was added.
    case added
    /// The address (same bytes, same prefix length) was already on the interface: nothing done.
    case alreadyPresent
    /// The address was removed.
    case removed
    /// The address (same bytes, same prefix length) was not on the interface: nothing done.
    case absent

    public var description: String {
        switch self {
        case .added: "added"
        case .alreadyPresent: "already present"
        case .removed: "removed"
        case .absent: "absent"
        }
    }
}

/// Adds, removes and lists the addresses of a network interface over rtnetlink (libmnl), in the
/// process's network namespace or another one.
///
/// Adding and removing are idempotent: an address that is already there is reported as
/// ``AddressChange/alreadyPresent`` and one that is not as ``AddressChange/absent``, never as an
/// error. Presence is decided from an address dump by exact comparison of the address bytes and
/// the prefix length. IPv6 addresses are added with `IFA_F_NODAD`, so they are usable at once.
///
/// Every call runs its blocking netlink I/O on a thread the manager owns (never on the Swift
/// concurrency pool); calls run one after another in the order they were made. The thread ends
/// when the manager is released or ``shutdown()`` is called.
///
/// Needs CAP_NET_ADMIN to add and remove (listing needs nothing), and CAP_SYS_ADMIN to enter
/// another namespace.
public final class VIPAddressManager: Sendable {
    /// The namespace the manager works in.
    public let namespace: NetworkNamespace
    private let thread: NamespaceThread
    private let logger: Logger

    /// - Parameters:
    ///   - namespace: where the interfaces are; the process's own namespace by default.
    ///   - logger: receives one `info` line per change and `debug` lines for no-ops.
    public init(namespace: NetworkNamespace = .current, logger: Logger) {
        self.namespace = namespace
        self.logger = logger
        self.thread = NamespaceThread(namespace: namespace, name: "baton-netlink")
    }

    deinit {
        thread.stop()
    }

    /// Ends the manager's thread after the calls already made. Later calls fail with
    /// ``NetlinkError/Kind/shutDown``.
    public func shutdown() {
        thread.stop()
    }

    /// Adds `vip` to `interface` unless it is already there.
    ///
    /// - Parameter label: an IPv4 label, such as `eth0:web`. The kernel shows it in place of the
    ///   interface name; it must start with the interface name (by convention followed by `:`)
    ///   and be 15 bytes at most, as the config check requires. IPv6 addresses have no labels.
    /// - Returns: ``AddressChange/added`` or ``AddressChange/alreadyPresent``.
    /// - Throws: ``NetlinkError``: ``NetlinkError/Kind/invalidInterfaceName``,
    ///   ``NetlinkError/Kind/invalidLabel``, ``NetlinkError/Kind/unknownInterface``,
    ///   ``NetlinkError/Kind/conflictingPrefixLength`` when the address is there with another
    ///   prefix length, ``NetlinkError/Kind/permissionDenied`` and the kernel's other errors.
    @discardableResult
    public func add(_ vip: VIPAddress, to interface: String, label: String? = nil) async throws(NetlinkError) -> AddressChange {
        let address = vip.description
        if let reason = InterfaceNames.check(interface) {
            throw NetlinkError(.invalidInterfaceName, operation: .addAddress, interface: interface, address: address, reason: reason)
        }
        if let label, let reason = InterfaceNames.checkLabel(label, interface: interface, family: vip.family) {
            throw NetlinkError(.invalidLabel, operation: .addAddress, interface: interface, address: address, reason: reason)
        }
        let namespace = self.namespace
        let change = try await thread.run(.addAddress) { context throws(NetlinkError) in
            let session = try AddressSession(
                context: context, operation: .addAddress, interface: interface, address: address, namespace: namespace)
            let present = try session.addresses()
            if present.contains(where: { $0.vip == vip }) { return AddressChange.alreadyPresent }
            if let other = present.first(where: { $0.vip.address == vip.address }) {
                throw NetlinkError(
                    .conflictingPrefixLength, operation: .addAddress, interface: interface, address: address,
                    reason: "\(vip.address) is already on \(interface) as \(other.vip)")
            }
            do throws(NetlinkError) {
                try session.send(RouteMessages.newAddress(
                    vip, interfaceIndex: session.index, label: label, sequence: session.socket.nextSequence()))
            } catch where error.errno == EEXIST {
                return .alreadyPresent
            }
            return .added
        }
        switch change {
        case .added:
            logger.info("added virtual IP", metadata: metadataFor(vip, interface, label: label))
        default:
            logger.debug("virtual IP already present", metadata: metadataFor(vip, interface, label: label))
        }
        return change
    }

    /// Removes `vip` (the same address with the same prefix length) from `interface` if it is
    /// there. An address present with another prefix length is left alone (a warning is logged).
    ///
    /// - Returns: ``AddressChange/removed`` or ``AddressChange/absent``.
    /// - Throws: ``NetlinkError`` as ``add(_:to:label:)`` does.
    @discardableResult
    public func remove(_ vip: VIPAddress, from interface: String) async throws(NetlinkError) -> AddressChange {
        let address = vip.description
        if let reason = InterfaceNames.check(interface) {
            throw NetlinkError(.invalidInterfaceName, operation: .removeAddress, interface: interface, address: address, reason: reason)
        }
        let namespace = self.namespace
        let (change, other) = try await thread.run(.removeAddress) { context throws(NetlinkError) in
            let session = try AddressSession(
                context: context, operation: .removeAddress, interface: interface, address: address, namespace: namespace)
            let present = try session.addresses()
            guard present.contains(where: { $0.vip == vip }) else {
                return (AddressChange.absent, present.first { $0.vip.address == vip.address }?.vip)
            }
            do throws(NetlinkError) {
                try session.send(RouteMessages.deleteAddress(
                    vip, interfaceIndex: session.index, sequence: session.socket.nextSequence()))
            } catch where error.errno == EADDRNOTAVAIL || error.errno == ENOENT {
                return (.absent, nil)
            }
            return (.removed, nil)
        }
        var metadata = metadataFor(vip, interface, label: nil)
        switch change {
        case .removed:
            logger.info("removed virtual IP", metadata: metadata)
        default:
            if let other {
                metadata["present"] = "\(other)"
                logger.warning("virtual IP is on the interface with another prefix length; left alone", metadata: metadata)
            } else {
                logger.debug("virtual IP already absent", metadata: metadata)
            }
        }
        return change
    }

    /// The IPv4 and IPv6 addresses of `interface`, in the kernel's order.
    ///
    /// - Throws: ``NetlinkError`` (``NetlinkError/Kind/unknownInterface`` and others).
    public func addresses(on interface: String) async throws(NetlinkError) -> [InterfaceAddress] {
        if let reason = InterfaceNames.check(interface) {
            throw NetlinkError(.invalidInterfaceName, operation: .listAddresses, interface: interface, reason: reason)
        }
        let namespace = self.namespace
        return try await thread.run(.listAddresses) { context throws(NetlinkError) in
            try AddressSession(
                context: context, operation: .listAddresses, interface: interface, address: nil, namespace: namespace
            ).addresses()
        }
    }

    /// Whether `vip` (same address, same prefix length) is on `interface`.
    public func contains(_ vip: VIPAddress, on interface: String) async throws(NetlinkError) -> Bool {
        try await addresses(on: interface).contains { $0.vip == vip }
    }

    private func metadataFor(_ vip: VIPAddress, _ interface: String, label: String?) -> Logger.Metadata {
        var metadata: Logger.Metadata = ["vip": "\(vip)", "interface": "\(interface)"]
        if let label { metadata["label"] = "\(label)" }
        if namespace.path != nil { metadata["netns"] = "\(namespace)" }
        return metadata
    }
}

/// One operation's view of an interface on the manager's thread: the socket, the resolved index
/// and the error context.
struct AddressSession {
    let socket: RouteSocket
    let index: UInt32
    let hardwareAddress: [UInt8]?
    let operation: NetlinkError.Operation
    let interface: String
    let address: String?

    init(
        context: NamespaceThreadContext, operation: NetlinkError.Operation, interface: String,
        address: String?, namespace: NetworkNamespace
    ) throws(NetlinkError) {
        self.operation = operation
        self.interface = interface
        self.address = address
        socket = try context.route(for: operation, interface: interface, address: address)
        let sequence = socket.nextSequence()
        let messages: [RouteMessages.Message]?
        do throws(NetlinkError) {
            messages = try socket.exchange(RouteMessages.getLink(name: interface, sequence: sequence), sequence: sequence) { code in
                NetlinkError.kernel(code, operation: operation, interface: interface, address: address, reason: "cannot look up the interface")
            }
        } catch where error.errno == ENODEV {
            let place = namespace.path.map { " in network namespace \($0)" } ?? ""
            throw NetlinkError(.unknownInterface, operation: operation, interface: interface, address: address, reason: "no interface named \(quoted(interface))\(place)")
        }
        switch RouteMessages.link(from: messages ?? []) {
        case .success(let link):
            index = link.index
            hardwareAddress = link.hardwareAddress
        case .failure(let reason):
            throw NetlinkError(.malformedReply, operation: operation, interface: interface, address: address, reason: "malformed RTM_NEWLINK reply: \(reason)")
        }
    }

    /// The addresses of the interface, from a fresh dump.
    func addresses() throws(NetlinkError) -> [InterfaceAddress] {
        for _ in 0..<RouteSocket.dumpAttempts {
            let sequence = socket.nextSequence()
            let reply = try socket.exchange(RouteMessages.dumpAddresses(sequence: sequence), sequence: sequence) { code in
                NetlinkError.kernel(code, operation: operation, interface: interface, address: address, reason: "the address dump failed")
            }
            guard let reply else { continue }
            switch RouteMessages.addresses(from: reply, interfaceIndex: index) {
            case .success(let addresses): return addresses
            case .failure(let reason):
                throw NetlinkError(.malformedReply, operation: operation, interface: interface, address: address, reason: "malformed address dump: \(reason)")
            }
        }
        throw NetlinkError(.kernel, operation: operation, interface: interface, address: address, errno: EINTR, reason: "the address dump was interrupted \(RouteSocket.dumpAttempts) times by concurrent changes")
    }

    /// Sends an acknowledged request and waits for the ack.
    func send(_ message: [UInt8]) throws(NetlinkError) {
        let sequence = message.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self) }
        _ = try socket.exchange(message, sequence: sequence) { code in
            NetlinkError.kernel(code, operation: operation, interface: interface, address: address, reason: "the kernel refused")
        }
    }
}

/// The kernel's rules for interface names and IPv4 labels.
enum InterfaceNames {
    /// IFNAMSIZ - 1.
    static let maximumLength = 15

    /// Why `name` cannot be an interface name (the kernel's `dev_valid_name`), or `nil`.
    static func check(_ name: String) -> String? {
        if name.isEmpty { return "empty interface name" }
        if name.utf8.count > maximumLength { return "interface name longer than \(maximumLength) bytes" }
        if name == "." || name == ".." { return "\(quoted(name)) cannot be an interface name" }
        if let bad = name.unicodeScalars.first(where: { $0 == "/" || $0 == ":" || $0.properties.isWhitespace || $0.value < 0x20 }) {
            return "interface name contains \(quoted(String(bad)))"
        }
        return nil
    }

    /// Why `label` cannot label an address of `family` on `interface`, or `nil`.
    static func checkLabel(_ label: String, interface: String, family: IPAddress.Family) -> String? {
        if family == .ipv6 { return "labels apply to IPv4 addresses only" }
        if label.utf8.count > maximumLength {
            return "label \(quoted(label)) is longer than \(maximumLength) bytes"
        }
        if label.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 }) {
            return "label \(quoted(label)) contains whitespace or control characters"
        }
        guard label.hasPrefix(interface) else {
            return "label \(quoted(label)) must start with the interface name \(quoted(interface)), like \(quoted(interface + ":vip"))"
        }
        return nil
    }
}
