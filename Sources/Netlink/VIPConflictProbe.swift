import CBatonNetlink
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Asks a link whether another host already answers for an IPv4 virtual IP: an ARP probe
/// (RFC 5227, sender address 0.0.0.0, so nobody learns anything from it), then every ARP frame
/// whose sender is the VIP from another MAC address is collected for a while.
///
/// The supervisor reports what it finds (a host that was not fenced, a misconfigured
/// neighbour); it does not decide anything on it: the fencing token decides who is active.
/// IPv6 has no such probe here (duplicate address detection is what the kernel would do, and
/// VIPs are added without it so they are usable at once).
///
/// The probe blocks its own thread for the listening time (never the Swift concurrency pool,
/// and never the announcer's thread). Needs CAP_NET_RAW.
public final class VIPConflictProbe: Sendable {
    /// The namespace the probe works in.
    public let namespace: NetworkNamespace
    private let thread: NamespaceThread
    private let logger: Logger

    /// - Parameters:
    ///   - namespace: where the interfaces are; the process's own namespace by default.
    ///   - logger: receives a `debug` line per probe.
    public init(namespace: NetworkNamespace = .current, logger: Logger) {
        self.namespace = namespace
        self.logger = logger
        self.thread = NamespaceThread(namespace: namespace, name: "baton-arp-probe")
    }

    deinit {
        thread.stop()
    }

    /// Ends the probe's thread after the calls already made.
    public func shutdown() {
        thread.stop()
    }

    /// Sends one ARP probe for `vip` from `interface` and listens for `listenFor`.
    ///
    /// - Returns: the MAC addresses (`aa:bb:cc:dd:ee:ff`, sorted) of other hosts that answered
    ///   for the VIP or announced it meanwhile; empty when nobody did, and for IPv6 VIPs.
    /// - Throws: ``NetlinkError`` (unknown interface, an interface without an Ethernet address,
    ///   no CAP_NET_RAW, the kernel's other errors).
    public func otherOwners(of vip: VIPAddress, on interface: String, listenFor: Duration) async throws(NetlinkError) -> [String] {
        guard vip.family == .ipv4 else { return [] }
        let address = vip.address.description
        if let reason = InterfaceNames.check(interface) {
            throw NetlinkError(.invalidInterfaceName, operation: .probe, interface: interface, address: address, reason: reason)
        }
        let namespace = self.namespace
        let target = vip.address.bytes
        let listenMilliseconds = max(1, Int(listenFor.components.seconds * 1000 + listenFor.components.attoseconds / 1_000_000_000_000_000))
        let owners = try await thread.run(.probe) { context throws(NetlinkError) -> [String] in
            let session = try AddressSession(context: context, operation: .probe, interface: interface, address: address, namespace: namespace)
            guard let mac = session.hardwareAddress, mac.count == 6, mac.contains(where: { $0 != 0 }) else {
                throw NetlinkError(.unsupportedInterface, operation: .probe, interface: interface, address: address, reason: "\(interface) has no Ethernet address")
            }
            let descriptor = cbn_arp_socket(Int32(session.index))
            guard descriptor >= 0 else {
                throw NetlinkError.kernel(errno, operation: .probe, interface: interface, address: address, reason: "cannot open an ARP socket")
            }
            defer { close(descriptor) }
            let probe = AnnouncementPackets.arpProbe(for: vip.address, hardwareAddress: mac)
            let sent = probe.withUnsafeBufferPointer { frame in
                AnnouncementPackets.broadcastMAC.withUnsafeBufferPointer { destination in
                    cbn_packet_send(descriptor, Int32(session.index), destination.baseAddress, frame.baseAddress, frame.count)
                }
            }
            guard sent == probe.count else {
                throw NetlinkError.kernel(sent < 0 ? errno : EIO, operation: .probe, interface: interface, address: address, reason: "sending the ARP probe failed")
            }
            var found: Set<[UInt8]> = []
            var buffer = [UInt8](repeating: 0, count: 2048)
            let deadline = Self.monotonicMilliseconds() + listenMilliseconds
            while true {
                let left = deadline - Self.monotonicMilliseconds()
                if left <= 0 { break }
                _ = cbn_set_receive_timeout(descriptor, Int32(left))
                let length = buffer.withUnsafeMutableBufferPointer { cbn_packet_receive(descriptor, $0.baseAddress, $0.count) }
                if length < 0 {
                    if errno == EAGAIN || errno == EWOULDBLOCK { break }
                    throw NetlinkError.kernel(errno, operation: .probe, interface: interface, address: address, reason: "receiving ARP frames failed")
                }
                if let sender = AnnouncementPackets.arpSender(of: Array(buffer[0..<length])), sender.address == target, sender.hardwareAddress != mac {
                    found.insert(sender.hardwareAddress)
                }
            }
            return found.map { bytes in bytes.map { byte in (byte < 16 ? "0" : "") + String(byte, radix: 16) }.joined(separator: ":") }.sorted()
        }
        logger.debug("probed for other owners of a virtual IP", metadata: ["vip": "\(vip)", "interface": "\(interface)", "owners": "\(owners)"])
        return owners
    }

    private static func monotonicMilliseconds() -> Int {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int(now.tv_sec) * 1000 + Int(now.tv_nsec) / 1_000_000
    }
}
