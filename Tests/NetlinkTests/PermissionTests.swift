import Foundation
import Logging
import Testing

@testable import Netlink

/// Without CAP_NET_ADMIN and CAP_NET_RAW the kernel refuses; the error must say which capability
/// is missing. Runs only as a user without them (as root the same calls would succeed).
@Suite("Netlink without privileges", .enabled(if: geteuid() != 0, "runs only as a non-root user"))
struct PermissionTests {
    static let logger = Logger(label: "NetlinkTests")

    @Test("adding an address without CAP_NET_ADMIN names the capability")
    func addressNeedsNetAdmin() async throws {
        let manager = VIPAddressManager(logger: Self.logger)
        let vip = try VIPAddress("127.0.0.77/32")
        let error = await #expect(throws: NetlinkError.self) { try await manager.add(vip, to: "lo") }
        #expect(error?.kind == .permissionDenied)
        #expect(error?.description == "cannot add 127.0.0.77/32 to lo: permission denied (EPERM: Operation not permitted); adding and removing addresses needs CAP_NET_ADMIN")
        // Listing needs no privilege.
        #expect(try await manager.addresses(on: "lo").contains { $0.vip == (try? VIPAddress("127.0.0.1/8")) })
    }

    @Test("announcing without CAP_NET_RAW names the capability")
    func announcementNeedsNetRaw() async throws {
        let announcer = VIPAnnouncer(logger: Self.logger)
        // A machine with no Ethernet interface has nothing to announce on: nothing to check.
        guard let interface = Self.ethernetInterface() else { return }
        let vip = try VIPAddress("192.0.2.77/32")
        let error = await #expect(throws: NetlinkError.self) { try await announcer.announce(vip, on: interface, burst: .single) }
        #expect(error?.kind == .permissionDenied)
        #expect(error?.description.hasSuffix("sending announcements needs CAP_NET_RAW") == true, "\(String(describing: error))")
    }

    /// An Ethernet interface (ARPHRD_ETHER) of this namespace, from /sys/class/net.
    static func ethernetInterface() -> String? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/net")) ?? []
        return names.sorted().first { name in
            let type = try? String(contentsOfFile: "/sys/class/net/\(name)/type", encoding: .utf8)
            return name != "lo" && type?.trimmingCharacters(in: .whitespacesAndNewlines) == "1"
        }
    }
}
