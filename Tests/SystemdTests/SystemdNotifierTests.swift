import Foundation
import NATSTestSupport
import Systemd
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A datagram socket standing in for systemd's notification socket.
final class FakeNotifySocket {
    let descriptor: Int32
    /// What goes into NOTIFY_SOCKET.
    let name: String
    private let directory: URL?

    /// Binds a socket at a path in a temporary directory, or (`abstract`) an abstract name.
    init(abstract: Bool = false) throws {
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw POSIXError(.init(rawValue: errno)!) }
        var bytes: [UInt8]
        if abstract {
            directory = nil
            name = "@baton-notify-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            bytes = Array(name.utf8)
            bytes[0] = 0
        } else {
            let made = try makeTemporaryDirectory(prefix: "baton-notify")
            directory = made
            name = made.appendingPathComponent("notify.sock").path
            bytes = Array(name.utf8) + [0]
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
        }
        guard bound == 0 else { throw POSIXError(.init(rawValue: errno)!) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit {
        close(descriptor)
        if let directory { try? FileManager.default.removeItem(at: directory) }
    }

    /// The next datagram (waits at most 5 s).
    func receive() throws -> String {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(descriptor, &buffer, buffer.count, 0)
        guard count >= 0 else { throw POSIXError(.init(rawValue: errno)!) }
        return String(decoding: buffer[..<count], as: UTF8.self)
    }

    /// Whether a datagram is waiting, without waiting.
    func hasPending() -> Bool {
        var descriptors = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)]
        return poll(&descriptors, 1, 0) > 0
    }
}

@Suite struct SystemdNotifierTests {
    @Test func sendsEachMessageAsOneDatagramToAPathSocket() throws {
        let socket = try FakeNotifySocket()
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": socket.name])
        #expect(notifier.isEnabled)

        try notifier.ready(status: "serving 2 apps")
        #expect(try socket.receive() == "READY=1\nSTATUS=serving 2 apps")
        try notifier.status("web: active")
        #expect(try socket.receive() == "STATUS=web: active")
        try notifier.reloading(monotonicMicroseconds: 123_456)
        #expect(try socket.receive() == "RELOADING=1\nMONOTONIC_USEC=123456")
        try notifier.watchdog()
        #expect(try socket.receive() == "WATCHDOG=1")
        try notifier.stopping()
        #expect(try socket.receive() == "STOPPING=1")
    }

    @Test func reloadingCarriesTheCurrentMonotonicTime() throws {
        let socket = try FakeNotifySocket()
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let before = UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
        try SystemdNotifier(environment: ["NOTIFY_SOCKET": socket.name]).reloading()
        let lines = try socket.receive().split(separator: "\n")
        #expect(lines.first == "RELOADING=1")
        let usec = try #require(lines.last.flatMap { UInt64($0.dropFirst("MONOTONIC_USEC=".count)) })
        #expect(usec >= before && usec < before + 10_000_000)
    }

    @Test func reachesAnAbstractSocket() throws {
        let socket = try FakeNotifySocket(abstract: true)
        try SystemdNotifier(environment: ["NOTIFY_SOCKET": socket.name]).ready()
        #expect(try socket.receive() == "READY=1")
    }

    @Test func isANoOpWithoutNotifySocket() throws {
        let notifier = SystemdNotifier(environment: [:])
        #expect(!notifier.isEnabled)
        try notifier.ready()
        try notifier.watchdog()
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": ""]).isEnabled == false)
    }

    @Test func reportsASocketThatIsNotThere() throws {
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": "/nonexistent/baton/notify.sock"])
        #expect(throws: SystemdError.notifyFailed(socket: "/nonexistent/baton/notify.sock", errno: ENOENT)) {
            try notifier.ready()
        }
        let relative = SystemdNotifier(environment: ["NOTIFY_SOCKET": "relative.sock"])
        #expect(throws: SystemdError.notifyFailed(socket: "relative.sock", errno: EAFNOSUPPORT)) { try relative.ready() }
    }

    @Test func watchdogFollowsSdWatchdogEnabled() {
        let pid: pid_t = 4242
        #expect(SystemdNotifier.watchdogTimeout(environment: [:], pid: pid) == nil)
        #expect(SystemdNotifier.watchdogTimeout(environment: ["WATCHDOG_USEC": "3000000"], pid: pid) == .seconds(3))
        #expect(SystemdNotifier.watchdogTimeout(environment: ["WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "4242"], pid: pid) == .seconds(3))
        // Meant for another process (e.g. inherited by a child): off.
        #expect(SystemdNotifier.watchdogTimeout(environment: ["WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"], pid: pid) == nil)
        #expect(SystemdNotifier.watchdogTimeout(environment: ["WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "x"], pid: pid) == nil)
        #expect(SystemdNotifier.watchdogTimeout(environment: ["WATCHDOG_USEC": "0"], pid: pid) == nil)
        #expect(SystemdNotifier.watchdogTimeout(environment: ["WATCHDOG_USEC": "-5"], pid: pid) == nil)
        #expect(SystemdNotifier.watchdogTimeout(environment: ["WATCHDOG_USEC": "soon"], pid: pid) == nil)

        let notifier = SystemdNotifier(environment: ["WATCHDOG_USEC": "2000000"], pid: pid)
        #expect(notifier.watchdogTimeout == .seconds(2))
        #expect(notifier.watchdogPingInterval == .seconds(1))
    }
}
