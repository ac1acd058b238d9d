// A small L2 network of network namespaces, for failover tests and benchmarks of virtual IPs:
// a bridge inside a namespace of its own and one namespace per host, each attached to the bridge
// with a veth pair (`eth0` inside the host, `p<host>` on the bridge). Everything is made and
// deleted with `ip`; names carry a random tag so parallel runs never collide.
//
// Test and benchmark support only: the waits for `ip` run on threads of their own, never on the
// Swift concurrency pool.

import Foundation
import TestSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What a finished command printed.
public struct LabCommandResult: Sendable, CustomStringConvertible {
    public var status: Int32
    public var stdout: String
    public var stderr: String

    public var description: String { "exit \(status)\n--- stdout:\n\(stdout)--- stderr:\n\(stderr)---" }
}

/// A lab command that exited non-zero, or a lab condition that did not hold in time.
public struct LabError: Error, CustomStringConvertible {
    public var description: String

    public init(_ description: String) { self.description = description }
}

/// Runs `executable arguments` to completion; the wait happens on a thread of its own.
public func runLabCommand(_ executable: String, _ arguments: [String]) async throws -> LabCommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    process.standardInput = FileHandle.nullDevice
    try process.run()
    return await withCheckedContinuation { continuation in
        Thread.detachNewThread {
            let stdout = output.fileHandleForReading.readDataToEndOfFile()
            let stderr = errors.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            continuation.resume(returning: LabCommandResult(
                status: process.terminationStatus,
                stdout: String(decoding: stdout, as: UTF8.self),
                stderr: String(decoding: stderr, as: UTF8.self)))
        }
    }
}

/// Wall-clock time in microseconds since the epoch: the one clock shared by this process, the
/// probe and `ip -ts monitor` (which prints local wall-clock time).
public func wallMicros() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1000
}

/// The lab: a bridge namespace and host namespaces on one /24.
public struct NetnsLab: Sendable {
    /// One host namespace.
    public struct Host: Sendable, Hashable {
        /// The short name given to ``NetnsLab/create(hosts:ipPath:prefix:)``.
        public var name: String
        /// The namespace (`ip netns exec NAMESPACE ...`).
        public var namespace: String
        /// The host's interface on the bridge (always `eth0`).
        public var interface: String
        /// The host's own address, without prefix.
        public var address: String
        /// The interface's MAC address, as `ip` prints it.
        public var mac: String
    }

    public let ipPath: String
    public let tag: String
    /// The namespace holding the bridge `br0`, which has ``bridgeAddress``.
    public let bridgeNamespace: String
    /// The bridge's address (a service every host reaches, e.g. nats-server).
    public let bridgeAddress: String
    /// The subnet's first three octets (`10.88.0`).
    public let subnet: String
    public let hosts: [Host]

    /// The host called `name`.
    public func host(_ name: String) -> Host {
        guard let host = hosts.first(where: { $0.name == name }) else { preconditionFailure("no lab host \(name)") }
        return host
    }

    /// Every namespace of the lab.
    public var namespaces: [String] { [bridgeNamespace] + hosts.map(\.namespace) }

    /// Makes a lab with the named hosts (addresses `subnet.1`, `.2`, … in order; the bridge is
    /// `subnet.254`). Deletes whatever it made when a step fails.
    public static func create(hosts names: [String], ipPath: String, prefix: String = "bvf", subnet: String = "10.88.0") async throws -> NetnsLab {
        let tag = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let bridge = "\(prefix)-\(tag)-br"
        var planned: [Host] = []
        for (index, name) in names.enumerated() {
            planned.append(Host(name: name, namespace: "\(prefix)-\(tag)-\(name)", interface: "eth0", address: "\(subnet).\(index + 1)", mac: ""))
        }
        var lab = NetnsLab(ipPath: ipPath, tag: tag, bridgeNamespace: bridge, bridgeAddress: "\(subnet).254", subnet: subnet, hosts: planned)
        do {
            try await lab.setUp()
            var withMACs: [Host] = []
            for var host in planned {
                host.mac = try await lab.macAddress(of: host.interface, in: host.namespace)
                withMACs.append(host)
            }
            lab = NetnsLab(ipPath: ipPath, tag: tag, bridgeNamespace: bridge, bridgeAddress: lab.bridgeAddress, subnet: subnet, hosts: withMACs)
            return lab
        } catch {
            await lab.destroy()
            throw error
        }
    }

    private func setUp() async throws {
        try await ip(["netns", "add", bridgeNamespace])
        try await ip(["-n", bridgeNamespace, "link", "set", "lo", "up"])
        try await ip(["-n", bridgeNamespace, "link", "add", "br0", "type", "bridge"])
        try await ip(["-n", bridgeNamespace, "addr", "add", "\(bridgeAddress)/24", "dev", "br0"])
        try await ip(["-n", bridgeNamespace, "link", "set", "br0", "up"])
        for (index, host) in hosts.enumerated() {
            let port = "p\(index)"
            try await ip(["netns", "add", host.namespace])
            // Made directly inside the namespaces: neither end ever appears in the caller's one.
            try await ip(["link", "add", host.interface, "netns", host.namespace, "type", "veth", "peer", "name", port, "netns", bridgeNamespace])
            try await ip(["-n", bridgeNamespace, "link", "set", port, "master", "br0"])
            try await ip(["-n", bridgeNamespace, "link", "set", port, "up"])
            try await ip(["-n", host.namespace, "link", "set", "lo", "up"])
            try await ip(["-n", host.namespace, "addr", "add", "\(host.address)/24", "dev", host.interface])
            try await ip(["-n", host.namespace, "link", "set", host.interface, "up"])
        }
        // Frames sent before the kernel's link watch has activated the queueing discipline
        // ("qdisc noop") are dropped: wait until every end is operationally up.
        for host in hosts {
            try await eventually("\(host.namespace)/\(host.interface) operationally up", timeout: .seconds(5)) {
                let shown = try await ip(["-n", host.namespace, "-o", "link", "show", "dev", host.interface])
                return shown.contains("state UP") && !shown.contains("qdisc noop")
            }
        }
    }

    /// Kills every process still inside the lab's namespaces (by pid, as `ip netns pids` lists
    /// them), then deletes the namespaces (and with them the veth pairs and the bridge). Never
    /// throws.
    public func destroy() async {
        for namespace in namespaces {
            guard let result = try? await runLabCommand(ipPath, ["netns", "pids", namespace]), result.status == 0 else { continue }
            for pid in result.stdout.split(whereSeparator: \.isWhitespace).compactMap({ Int32($0) }) where pid != getpid() {
                kill(pid, SIGCONT)
                kill(pid, SIGKILL)
            }
        }
        for namespace in namespaces {
            _ = try? await runLabCommand(ipPath, ["netns", "del", namespace])
        }
    }

    /// Runs `ip arguments` and returns its stdout; throws when it exits non-zero.
    @discardableResult
    public func ip(_ arguments: [String]) async throws -> String {
        let result = try await runLabCommand(ipPath, arguments)
        guard result.status == 0 else { throw LabError("ip \(arguments.joined(separator: " ")) failed: \(result)") }
        return result.stdout
    }

    /// The MAC address of `interface` in `namespace`.
    public func macAddress(of interface: String, in namespace: String) async throws -> String {
        let output = try await ip(["-n", namespace, "-o", "link", "show", "dev", interface])
        let words = output.split(whereSeparator: \.isWhitespace)
        guard let index = words.firstIndex(of: "link/ether"), index + 1 < words.count else {
            throw LabError("no link/ether in: \(output)")
        }
        return String(words[index + 1])
    }

    /// Whether `host`'s interface has `address` (no prefix) right now.
    public func hasAddress(_ address: String, on host: Host) async throws -> Bool {
        let output = try await ip(["-n", host.namespace, "-o", "-4", "addr", "show", "dev", host.interface])
        return output.split(whereSeparator: \.isWhitespace).contains { $0.hasPrefix("\(address)/") }
    }

    /// The link-layer address `host`'s neighbour table holds for `address`, or nil.
    public func neighbour(_ address: String, in host: Host) async throws -> String? {
        let output = try await ip(["-n", host.namespace, "neigh", "show", address, "dev", host.interface])
        let words = output.split(whereSeparator: \.isWhitespace)
        guard let index = words.firstIndex(of: "lladdr"), index + 1 < words.count else { return nil }
        return String(words[index + 1])
    }

    /// Sets `host`'s link up or down (down: the host is lost to the network, its processes keep
    /// running). The bridge side goes down too, so nothing is queued for the host either.
    public func setLink(of host: Host, up: Bool) async throws {
        guard let index = hosts.firstIndex(of: host) else { throw LabError("\(host.name) is not a host of this lab") }
        try await ip(["-n", host.namespace, "link", "set", host.interface, up ? "up" : "down"])
        try await ip(["-n", bridgeNamespace, "link", "set", "p\(index)", up ? "up" : "down"])
    }
}

/// A long-running process inside a lab namespace (`ip netns exec NAMESPACE argv...`; `ip` execs
/// the command, so ``pid`` is the command's own pid). Output goes to a log file.
public final class LabProcess: @unchecked Sendable {
    public let name: String
    public let logPath: String
    private let process = Process()

    /// Starts `arguments` inside `namespace` with `environment` added to this process's one.
    public init(name: String, ipPath: String, namespace: String, arguments: [String], environment: [String: String] = [:], logPath: String) throws {
        self.name = name
        self.logPath = logPath
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.executableURL = URL(fileURLWithPath: ipPath)
        process.arguments = ["netns", "exec", namespace] + arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    public func signal(_ signal: Int32) {
        if process.isRunning { sendSignal(pid, signal) }
    }

    /// What the process printed so far.
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// The pids of this process's children running `command` (compared as `/proc/PID/stat`
    /// shows it: at most 15 bytes).
    public func children(named command: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { candidate in
            guard let stat = try? String(contentsOfFile: "/proc/\(candidate)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")"), let open = stat.firstIndex(of: "(")
            else { return false }
            let comm = stat[stat.index(after: open)..<close]
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 2 && Int32(fields[1]) == pid && String(comm) == String(command.prefix(15))
        }
    }

    /// SIGTERM (after SIGCONT), then SIGKILL when it has not exited within `grace`; waits until
    /// it has exited.
    public func stop(grace: Duration = .seconds(5)) async {
        guard process.isRunning else { return }
        sendSignal(pid, SIGCONT)
        sendSignal(pid, SIGTERM)
        // Still running after `grace` is no failure here: it gets SIGKILL.
        try? await eventually("process \(pid) exited after SIGTERM", timeout: grace, every: .milliseconds(20)) { !process.isRunning }
        await kill()
    }

    /// SIGKILL, and waits until it has exited.
    public func kill() async {
        guard process.isRunning else { return }
        sendSignal(pid, SIGKILL)
        while process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
    }
}

/// `kill(2)`, named apart from ``LabProcess/kill()``.
@discardableResult
public func sendSignal(_ pid: Int32, _ signal: Int32) -> Int32 { kill(pid, signal) }
