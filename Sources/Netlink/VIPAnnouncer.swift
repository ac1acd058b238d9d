import CBatonNetlink
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How many announcements a burst sends and how far apart.
public struct AnnouncementBurst: Sendable, Hashable, CustomStringConvertible {
    /// Announcements in the burst; 0 sends none (the config's `announce.count: 0`).
    public let count: Int
    /// The pause between two announcements of the burst.
    public let interval: Duration

    /// 5 announcements, 200 ms apart: a neighbour that misses one (a busy switch, a lost frame)
    /// still learns the new owner within a second.
    public static let `default` = AnnouncementBurst(count: 5, interval: .milliseconds(200))

    /// One announcement, for periodic refresh.
    public static let single = AnnouncementBurst(count: 1, interval: .zero)

    /// - Precondition: `count >= 0` and `interval >= .zero`.
    public init(count: Int, interval: Duration) {
        precondition(count >= 0, "an announcement burst cannot send a negative number of announcements")
        precondition(interval >= .zero, "an announcement interval cannot be negative")
        self.count = count
        self.interval = interval
    }

    public var description: String { "\(count) × \(interval)" }
}

/// Tells the neighbours on a link that this host's interface now owns a virtual IP: gratuitous
/// ARP requests for IPv4, unsolicited neighbor advertisements (override flag set) for IPv6, sent
/// over an AF_PACKET socket.
///
/// Neighbours update an entry they already have for the address; a neighbour without one learns
/// the address when it next resolves it. Add the address first (``VIPAddressManager``), so the
/// host also answers the neighbours' own requests.
///
/// Packet I/O runs on a thread the announcer owns, which enters the announcer's namespace
/// first; the pauses of a burst are `Task.sleep`s and end early when the task is cancelled.
/// Needs CAP_NET_RAW (and CAP_SYS_ADMIN to enter another namespace).
public final class VIPAnnouncer: Sendable {
    /// The namespace the announcer works in.
    public let namespace: NetworkNamespace
    private let thread: NamespaceThread
    private let logger: Logger

    /// - Parameters:
    ///   - namespace: where the interfaces are; the process's own namespace by default.
    ///   - logger: receives a `debug` line per burst.
    public init(namespace: NetworkNamespace = .current, logger: Logger) {
        self.namespace = namespace
        self.logger = logger
        self.thread = NamespaceThread(namespace: namespace, name: "baton-announce")
    }

    deinit {
        thread.stop()
    }

    /// Ends the announcer's thread after the calls already made. Later calls fail with
    /// ``NetlinkError/Kind/shutDown``.
    public func shutdown() {
        thread.stop()
    }

    /// Sends a burst of announcements of `vip` (its address; the prefix length plays no part)
    /// from `interface`'s MAC address: `burst.count` frames, `burst.interval` apart. The
    /// supervisor calls this once after adding the VIP, and may call it with
    /// ``AnnouncementBurst/single`` periodically to refresh neighbours.
    ///
    /// - Throws: ``NetlinkError`` (``NetlinkError/Kind/unknownInterface``,
    ///   ``NetlinkError/Kind/unsupportedInterface`` for an interface without an Ethernet address,
    ///   ``NetlinkError/Kind/permissionDenied`` without CAP_NET_RAW, the kernel's other errors,
    ///   such as ENETDOWN for an interface that is down), or `CancellationError` when the task is
    ///   cancelled between two announcements.
    public func announce(_ vip: VIPAddress, on interface: String, burst: AnnouncementBurst = .default) async throws {
        let address = vip.address.description
        if burst.count == 0 { return }
        if let reason = InterfaceNames.check(interface) {
            throw NetlinkError(.invalidInterfaceName, operation: .announce, interface: interface, address: address, reason: reason)
        }
        let namespace = self.namespace
        let target = try await thread.run(.announce) { context throws(NetlinkError) in
            let session = try AddressSession(
                context: context, operation: .announce, interface: interface, address: address, namespace: namespace)
            guard let mac = session.hardwareAddress, mac.count == 6, mac.contains(where: { $0 != 0 }) else {
                throw NetlinkError(
                    .unsupportedInterface, operation: .announce, interface: interface, address: address,
                    reason: "\(interface) has no Ethernet address")
            }
            return AnnouncementTarget(interfaceIndex: session.index, hardwareAddress: mac)
        }
        let frame: [UInt8]
        let destination: [UInt8]
        switch vip.family {
        case .ipv4:
            frame = AnnouncementPackets.gratuitousARP(for: vip.address, hardwareAddress: target.hardwareAddress)
            destination = AnnouncementPackets.broadcastMAC
        case .ipv6:
            frame = AnnouncementPackets.unsolicitedNeighborAdvertisement(for: vip.address, hardwareAddress: target.hardwareAddress)
            destination = AnnouncementPackets.allNodesMAC
        }
        for sent in 0..<burst.count {
            if sent > 0 { try await Task.sleep(for: burst.interval) }
            try await thread.run(.announce) { context throws(NetlinkError) in
                let descriptor = try context.packetSocket(interface: interface, address: address)
                let result = frame.withUnsafeBufferPointer { frameBytes in
                    destination.withUnsafeBufferPointer { destinationBytes in
                        cbn_packet_send(
                            descriptor, Int32(target.interfaceIndex), destinationBytes.baseAddress,
                            frameBytes.baseAddress, frameBytes.count)
                    }
                }
                guard result == frame.count else {
                    let code = result < 0 ? errno : EIO
                    throw NetlinkError.kernel(
                        code, operation: .announce, interface: interface, address: address,
                        reason: code == ENETDOWN ? "\(interface) is down" : "sending the frame failed")
                }
            }
        }
        logger.debug(
            "announced virtual IP",
            metadata: [
                "vip": "\(vip.address)", "interface": "\(interface)", "count": "\(burst.count)",
                "kind": "\(vip.family == .ipv4 ? "gratuitous ARP" : "unsolicited NA")",
            ])
    }

    /// Sends one announcement of `vip` every `period` until the task is cancelled, for the
    /// config's `announce.refresh`. A failed announcement is logged as a warning and tried again
    /// at the next period: it does not end the loop. Returns when the task is cancelled.
    ///
    /// - Precondition: `period > .zero`.
    public func refresh(_ vip: VIPAddress, on interface: String, every period: Duration) async {
        precondition(period > .zero, "a refresh period must be positive")
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: period)
                try await announce(vip, on: interface, burst: .single)
            } catch is CancellationError {
                return
            } catch {
                logger.warning(
                    "refreshing the announcement of a virtual IP failed",
                    metadata: ["vip": "\(vip.address)", "interface": "\(interface)", "error": "\(error)"])
            }
        }
    }
}

struct AnnouncementTarget: Sendable {
    var interfaceIndex: UInt32
    var hardwareAddress: [UInt8]
}

extension NamespaceThreadContext {
    /// A socket that sends whole Ethernet frames, opened on first use in the thread's namespace.
    func packetSocket(interface: String, address: String) throws(NetlinkError) -> Int32 {
        try checkNamespace()
        if packetDescriptor >= 0 { return packetDescriptor }
        let descriptor = cbn_packet_socket()
        guard descriptor >= 0 else {
            throw NetlinkError.kernel(
                errno, operation: .announce, interface: interface, address: address,
                reason: "cannot open a packet socket")
        }
        packetDescriptor = descriptor
        return descriptor
    }
}
