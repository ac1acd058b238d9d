import BatonCore
import Foundation
import Logging
import NATSTestSupport
import Netlink
import Backends
import Control
import Supervisor
import TestSupport
import Testing

/// A network namespace with a veth pair (the kernel here has no dummy interfaces), for
/// VIPClaims against the real kernel.
private struct DummyInterfaceNamespace {
    let name: String
    let interface = "bvc0"
    let ip: String

    static func with(_ body: (DummyInterfaceNamespace) async throws -> Void) async throws {
        if getuid() != 0 {
            try Integration.missingPrerequisite(MissingPrerequisite(name: "root", reason: "network namespaces need root", remedy: "run the tests as root"))
        }
        let ip = try Integration.requireExecutable("ip", remedy: "`apt-get install iproute2`")
        let lab = DummyInterfaceNamespace(name: "bvc-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))", ip: ip)
        try lab.run(["netns", "add", lab.name])
        defer { _ = try? lab.run(["netns", "delete", lab.name]) }
        try lab.run(["-n", lab.name, "link", "add", lab.interface, "type", "veth", "peer", "name", "bvc1"])
        try lab.run(["-n", lab.name, "link", "set", lab.interface, "up"])
        try lab.run(["-n", lab.name, "link", "set", "bvc1", "up"])
        try lab.run(["-n", lab.name, "addr", "add", "10.78.0.1/24", "dev", lab.interface])
        try await body(lab)
    }

    @discardableResult
    func run(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ip)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 else { throw DummyInterfaceError(message: "ip \(arguments.joined(separator: " ")): \(text)") }
        return text
    }

    func hasAddress(_ cidr: String) throws -> Bool {
        try run(["-n", name, "-o", "addr", "show", "dev", interface]).contains(" \(cidr) ")
    }
}

private struct DummyInterfaceError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

@Suite("VIP claims against the kernel", .serialized, .timeLimit(.minutes(1)))
struct VIPClaimsTests {
    static let logger = Logger(label: "VIPClaimsTests")

    @Test("claim, repair from outside, release, hygiene while passive, fence")
    func claimsFollowTheRole() async throws {
        try await DummyInterfaceNamespace.with { lab in
            let vip = VIPConfig(address: "10.78.0.100", prefixLength: 24, isIPv6: false, interface: lab.interface, announce: AnnounceConfig(count: 0))
            let vip6 = VIPConfig(address: "2001:db8:78::100", prefixLength: 64, isIPv6: true, interface: lab.interface, announce: AnnounceConfig(count: 0))
            let claims = try VIPClaims(
                app: "web", vips: [vip, vip6], namespace: .named(lab.name), reconcileInterval: .milliseconds(50), logger: Self.logger)
            var events = claims.events().makeAsyncIterator()

            // A VIP left behind (by a batond that crashed) goes when the node starts passive.
            try lab.run(["-n", lab.name, "addr", "add", "10.78.0.100/24", "dev", lab.interface])
            await claims.enterPassive()
            #expect(try !lab.hasAddress("10.78.0.100/24"))
            #expect(await events.next()?.contains("removed virtual IP 10.78.0.100/24") == true)

            try await claims.claim(token: 7)
            #expect(try lab.hasAddress("10.78.0.100/24"))
            #expect(try lab.hasAddress("2001:db8:78::100/64"))

            // Removed from outside while active: added again, with an event.
            try lab.run(["-n", lab.name, "addr", "del", "10.78.0.100/24", "dev", lab.interface])
            try await eventually("10.78.0.100/24 added again", timeout: .seconds(5), every: .milliseconds(20)) { try lab.hasAddress("10.78.0.100/24") }
            #expect(await events.next()?.contains("removed from \(lab.interface) from outside; added again") == true)

            try await claims.release()
            #expect(try !lab.hasAddress("10.78.0.100/24"))
            #expect(try !lab.hasAddress("2001:db8:78::100/64"))

            // Added by hand while passive: removed again.
            try lab.run(["-n", lab.name, "addr", "add", "2001:db8:78::100/64", "dev", lab.interface, "nodad"])
            try await eventually("2001:db8:78::100/64 removed again", timeout: .seconds(5), every: .milliseconds(20)) { try !lab.hasAddress("2001:db8:78::100/64") }

            try await claims.claim(token: 8)
            await claims.fence()
            #expect(try !lab.hasAddress("10.78.0.100/24"))
            #expect(try !lab.hasAddress("2001:db8:78::100/64"))
            await claims.dispose()
        }
    }

    @Test("a claim on a missing interface fails with the interface named")
    func missingInterface() async throws {
        try await DummyInterfaceNamespace.with { lab in
            let vip = VIPConfig(address: "10.78.0.100", prefixLength: 24, isIPv6: false, interface: "nosuch0")
            let claims = try VIPClaims(app: "web", vips: [vip], namespace: .named(lab.name), logger: Self.logger)
            let error = await #expect(throws: NetlinkError.self) { try await claims.claim(token: 1) }
            #expect(error?.kind == .unknownInterface)
            #expect(error?.description.contains("nosuch0") == true)
            await claims.dispose()
        }
    }
}

@Suite("The fence keeper releases VIPs", .serialized, .timeLimit(.minutes(1)))
struct KeeperReleasesVIPsTests {
    @Test("when the armed deadline passes, and when batond goes away")
    func keeperRemovesTheVIP() async throws {
        try await DummyInterfaceNamespace.with { lab in
            let keeper = try keeperPath()
            for ending in ["deadline", "batond gone"] {
                try lab.run(["-n", lab.name, "addr", "add", "10.78.0.100/24", "dev", lab.interface])
                // Through a shell that outlives nothing but the keeper: the keeper closes every
                // descriptor it does not need, including the one Foundation's Process watches to
                // learn that its child exited (Foundation would then block in waitpid).
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/bin/sh")
                process.arguments = [
                    "-c", "\"$0\" netns exec \"$1\" \"$2\" --app web --release-address \"$3\"; exit $?",
                    lab.ip, lab.name, keeper, "10.78.0.100/24@\(lab.interface)",
                ]
                let input = Pipe()
                process.standardInput = input
                process.standardOutput = Pipe()
                process.standardError = Pipe()
                try process.run()
                defer { if process.isRunning { process.terminate() } }
                if ending == "deadline" {
                    // A deadline 100 ms from now on CLOCK_MONOTONIC (the keeper's clock).
                    var now = timespec()
                    clock_gettime(CLOCK_MONOTONIC, &now)
                    let deadline = Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec) + 100_000_000
                    input.fileHandleForWriting.write(Data("ARM 7 \(deadline)\n".utf8))
                    try await eventually("10.78.0.100/24 removed at the deadline", timeout: .seconds(5), every: .milliseconds(20)) { try !lab.hasAddress("10.78.0.100/24") }
                    input.fileHandleForWriting.closeFile()
                } else {
                    input.fileHandleForWriting.write(Data("DISARM\n".utf8))
                    input.fileHandleForWriting.closeFile()
                    try await eventually("10.78.0.100/24 removed when batond went away", timeout: .seconds(5), every: .milliseconds(20)) { try !lab.hasAddress("10.78.0.100/24") }
                }
                try await eventually("the keeper exiting once batond is gone", timeout: .seconds(5), every: .milliseconds(20)) { !process.isRunning }
            }
        }
    }

    /// Issue 11 item 4: at a deadline the keeper removes the VIPs at once, also when the app's
    /// unit cannot be killed quickly (here its bus accepts the connection and never answers).
    @Test("a hung D-Bus does not delay the removal of the VIPs at the deadline")
    func aHungBusDoesNotDelayTheVIPs() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // A listening socket that never accepts: the D-Bus handshake waits forever.
        let socketPath = directory + "/hung-bus.sock"
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        try #require(listener >= 0)
        defer { close(listener) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            socketPath.utf8CString.withUnsafeBytes { raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0.prefix(raw.count))) }
        }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        try #require(bound == 0 && listen(listener, 8) == 0)

        try await DummyInterfaceNamespace.with { lab in
            let keeper = try keeperPath()
            try lab.run(["-n", lab.name, "addr", "add", "10.78.0.101/24", "dev", lab.interface])
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = [
                "-c", "\"$0\" netns exec \"$1\" \"$2\" --app web --release-unit \"$3\" --release-address \"$4\"; exit $?",
                lab.ip, lab.name, keeper, "unix:path=\(socketPath)@web.service", "10.78.0.101/24@\(lab.interface)",
            ]
            let input = Pipe()
            process.standardInput = input
            process.standardOutput = Pipe()
            process.standardError = Pipe()
            try process.run()
            defer { if process.isRunning { process.terminate() } }
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let deadline = Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec) + 100_000_000
            input.fileHandleForWriting.write(Data("ARM 7 \(deadline)\n".utf8))
            // Poll the address (no event to await), bounded.
            var removedAt: Int64?
            for _ in 0..<150 {
                if try !lab.hasAddress("10.78.0.101/24") {
                    clock_gettime(CLOCK_MONOTONIC, &now)
                    removedAt = Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
                    break
                }
                try await Task.sleep(for: .milliseconds(10))
            }
            let removed = try #require(removedAt, "the VIP was not removed")
            print("[measure] VIP removed \((removed - deadline) / 1_000_000) ms after the deadline with a hung bus")
            #expect(removed - deadline < 1_000_000_000, "the VIP went \((removed - deadline) / 1_000_000) ms after the deadline")
            input.fileHandleForWriting.closeFile()
            try await eventually("the keeper exiting once batond is gone", timeout: .seconds(5), every: .milliseconds(20)) { !process.isRunning }
        }
    }
}
