import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The network of a `--network netns` run: one namespace per batond node (`<tag>-n1..3`), per
/// nats-server (`<tag>-s1..3`) and for the VIP prober (`<tag>-c`), each with an `eth0` on one
/// bridge (`br0` in `<tag>-br`), plus a veth from the root namespace onto the bridge (address
/// `.254`) where the suite's own stall proxies and NATS client live. Every node and server
/// namespace has an nftables table `inet chaos` with an input and an output chain that the
/// partition and loss faults fill and flush. Names carry a tag of the run's pid, the subnet is
/// `10.213.X.0/24` with X free on this host; everything is made with `ip` and `nft` and deleted at
/// the end (the namespaces' names are written to `<run>/netns.list` first, so `scripts/chaos` can
/// delete them even if `baton-chaos` is SIGKILLed).
struct NetLab: Sendable {
    /// `bc<hex pid>`.
    let tag: String
    /// The first three octets, e.g. `10.213.42`.
    let subnet: String
    let ipPath: String
    let nftPath: String
    let runDirectory: String

    var bridgeNamespace: String { "\(tag)-br" }
    func nodeNamespace(_ index: Int) -> String { "\(tag)-n\(index)" }
    func serverNamespace(_ index: Int) -> String { "\(tag)-s\(index)" }
    var clientNamespace: String { "\(tag)-c" }
    /// The root namespace's end of its veth onto the bridge.
    var rootInterface: String { "\(tag)-r" }

    /// Node `index` (1-based): `.index`.
    func nodeAddress(_ index: Int) -> String { "\(subnet).\(index)" }
    /// Server `index` (1-based): `.10+index`.
    func serverAddress(_ index: Int) -> String { "\(subnet).\(10 + index)" }
    var clientAddress: String { "\(subnet).50" }
    /// The root namespace's address: where the proxies listen and the suite's client connects from.
    var rootAddress: String { "\(subnet).254" }
    /// The VIP of the VIP app.
    var vipAddress: String { "\(subnet).100" }
    /// Node `index`'s MAC on `eth0` (fixed, so the VIP evidence names nodes).
    static func nodeMAC(_ index: Int) -> String { "02:bc:00:00:00:0\(index)" }

    var hostNamespaces: [(namespace: String, address: String, mac: String?)] {
        (1...3).map { (nodeNamespace($0), nodeAddress($0), Self.nodeMAC($0)) }
            + (1...3).map { (serverNamespace($0), serverAddress($0), nil) } + [(clientNamespace, clientAddress, nil)]
    }
    var namespaces: [String] { [bridgeNamespace] + hostNamespaces.map(\.namespace) }

    /// Picks a tag and a subnet no interface of the root namespace uses.
    static func plan(runDirectory: String) throws -> NetLab {
        let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let ip else { throw ChaosError("--network netns needs ip (apt-get install iproute2)") }
        guard let nft else { throw ChaosError("--network netns needs nft (apt-get install nftables), or use --network loopback") }
        guard geteuid() == 0 else { throw ChaosError("--network netns needs root (namespaces, veths, nftables), or use --network loopback") }
        let used = Set(
            ((try? String(contentsOfFile: "/proc/net/fib_trie", encoding: .utf8)) ?? "").split(whereSeparator: { $0 == " " || $0 == "\n" })
                .filter { $0.hasPrefix("10.213.") }.compactMap { $0.split(separator: ".").dropFirst(2).first.flatMap { Int($0) } })
        let pid = Int(getpid())
        guard let third = (0..<250).map({ (pid + $0) % 250 + 1 }).first(where: { !used.contains($0) }) else {
            throw ChaosError("no free 10.213.X.0/24 subnet on this host")
        }
        return NetLab(tag: "bc" + String(pid % 0xFFFF, radix: 16), subnet: "10.213.\(third)", ipPath: ip, nftPath: nft, runDirectory: runDirectory)
    }

    /// Makes the namespaces, the bridge, the veths, the addresses and the nftables chains.
    func setUp() async throws {
        try namespaces.joined(separator: "\n").write(toFile: "\(runDirectory)/netns.list", atomically: true, encoding: .utf8)
        try await ip(["netns", "add", bridgeNamespace])
        try await ip(["-n", bridgeNamespace, "link", "set", "lo", "up"])
        try await ip(["-n", bridgeNamespace, "link", "add", "br0", "type", "bridge"])
        try await ip(["-n", bridgeNamespace, "link", "set", "br0", "up"])
        for (offset, host) in hostNamespaces.enumerated() {
            try await ip(["netns", "add", host.namespace])
            try await ip(["-n", host.namespace, "link", "set", "lo", "up"])
            let port = "p\(offset)"
            try await ip(
                ["link", "add", "eth0"] + (host.mac.map { ["address", $0] } ?? []) + ["netns", host.namespace, "type", "veth", "peer", "name", port, "netns", bridgeNamespace])
            try await ip(["-n", bridgeNamespace, "link", "set", port, "master", "br0"])
            try await ip(["-n", bridgeNamespace, "link", "set", port, "up"])
            try await ip(["-n", host.namespace, "addr", "add", "\(host.address)/24", "dev", "eth0"])
            try await ip(["-n", host.namespace, "link", "set", "eth0", "up"])
        }
        try await ip(["link", "add", rootInterface, "type", "veth", "peer", "name", "pr", "netns", bridgeNamespace])
        try await ip(["-n", bridgeNamespace, "link", "set", "pr", "master", "br0"])
        try await ip(["-n", bridgeNamespace, "link", "set", "pr", "up"])
        try await ip(["addr", "add", "\(rootAddress)/24", "dev", rootInterface])
        try await ip(["link", "set", rootInterface, "up"])
        for namespace in (1...3).map(nodeNamespace) + (1...3).map(serverNamespace) {
            try await nft(
                in: namespace,
                """
                table inet chaos {
                  chain in { type filter hook input priority 0; policy accept; }
                  chain out { type filter hook output priority 0; policy accept; }
                }
                """)
        }
    }

    /// Runs `ip` with the arguments; throws naming the command if it fails.
    func ip(_ arguments: [String]) async throws {
        try await runChecked(ipPath, arguments)
    }

    /// Loads an nftables script in a namespace.
    func nft(in namespace: String, _ script: String) async throws {
        let path = "\(runDirectory)/nft-\(namespace).nft"
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        try await runChecked(ipPath, ["netns", "exec", namespace, nftPath, "-f", path])
    }

    /// Adds rules to a namespace's chains (`in`: input, `out`: output).
    func drop(in namespace: String, input: String?, output: String?) async throws {
        var script = ""
        if let input { script += "add rule inet chaos in \(input)\n" }
        if let output { script += "add rule inet chaos out \(output)\n" }
        try await nft(in: namespace, script)
    }

    /// Removes every rule a fault added.
    func heal(_ namespace: String) async throws {
        try await nft(in: namespace, "flush chain inet chaos in\nflush chain inet chaos out\n")
    }

    /// The command line that runs `executable` inside `namespace`.
    func launcher(_ namespace: String) -> [String] { [ipPath, "netns", "exec", namespace] }

    private func runChecked(_ executable: String, _ arguments: [String]) async throws {
        let log = "\(runDirectory)/lab.log"
        appendLine(to: log, "$ \(executable) \(arguments.joined(separator: " "))")
        let child = try Child(name: "ip", executable: executable, arguments: arguments, environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"], logPath: log)
        guard await child.waitForExit(timeout: .seconds(20)) else {
            await child.killHard()
            throw ChaosError("\(executable) \(arguments.joined(separator: " ")) did not finish within 20 s")
        }
        if let code = child.exitCode, code != 0 {
            throw ChaosError("\(executable) \(arguments.joined(separator: " ")) failed with exit status \(code); see \(log)")
        }
    }

    /// Deletes the namespaces listed in `<runDirectory>/netns.list` (the veths and the bridge go
    /// with them). Blocking: for exit paths on dispatch queues, never the concurrency pool.
    static func destroyBlocking(runDirectory: String) {
        guard let list = try? String(contentsOfFile: "\(runDirectory)/netns.list", encoding: .utf8) else { return }
        let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "/usr/sbin/ip"
        for namespace in list.split(separator: "\n") where !namespace.isEmpty {
            var pid: pid_t = 0
            let arguments: [String] = [ip, "netns", "del", String(namespace)]
            let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
            defer { for pointer in argv { free(pointer) } }
            if posix_spawn(&pid, ip, nil, nil, argv, nil) == 0 {
                var status: Int32 = 0
                _ = waitpid(pid, &status, 0)
            }
        }
        try? FileManager.default.removeItem(atPath: "\(runDirectory)/netns.list")
    }

    /// ``destroyBlocking(runDirectory:)`` off the concurrency pool.
    static func destroy(runDirectory: String) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                destroyBlocking(runDirectory: runDirectory)
                continuation.resume()
            }
        }
    }
}

/// Appends a line to a file (made if missing).
func appendLine(to path: String, _ line: String) {
    if let handle = FileHandle(forWritingAtPath: path) {
        handle.seekToEndOfFile()
        handle.write(Data((line + "\n").utf8))
        try? handle.close()
    } else {
        _ = FileManager.default.createFile(atPath: path, contents: Data((line + "\n").utf8))
    }
}

/// The VIP prober, run in the client namespace: a raw AF_PACKET socket on `eth0` sends an ARP
/// request "who-has VIP" every 5 ms (request k from sender address `.150 + k mod 100`, so each
/// reply names the request it answers: its target address), and writes `s <mono-ns> <k>` per
/// request and `r <mono-ns> <k> <mac>` per reply (k = -1: a reply more than 250 ms late, not
/// attributed). Gratuitous ARP (requests) is not counted: only replies are.
let vipProber = """
    import os, select, socket, struct, sys, time
    iface, vip, out = sys.argv[1], sys.argv[2], sys.argv[3]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    s.bind((iface, 0x0806))
    mac = s.getsockname()[4]
    vipb = socket.inet_aton(vip)
    prefix = vip.rsplit(".", 1)[0]
    sources = [socket.inet_aton(f"{prefix}.{150 + i}") for i in range(100)]
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sent = [(-1, 0)] * 100
    k, period = 0, 5_000_000
    next_send = time.monotonic_ns()
    while True:
        now = time.monotonic_ns()
        if now >= next_send:
            i = k % 100
            frame = b"\\xff" * 6 + mac + b"\\x08\\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + sources[i] + b"\\x00" * 6 + vipb
            s.send(frame)
            sent[i] = (k, now)
            os.write(fd, f"s {now} {k}\\n".encode())
            k += 1
            next_send = max(next_send + period, now + period // 2)
        wait = max(0, next_send - time.monotonic_ns()) / 1e9
        ready, _, _ = select.select([s], [], [], wait)
        while ready:
            try:
                data = s.recv(128, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if len(data) < 42 or data[12:14] != b"\\x08\\x06" or data[20:22] != b"\\x00\\x02" or data[28:32] != vipb:
                continue
            index = data[41] - 150
            if not 0 <= index < 100:
                continue
            at = time.monotonic_ns()
            number, when = sent[index]
            if number < 0 or at - when > 250_000_000:
                number = -1
            os.write(fd, f"r {at} {number} {data[22:28].hex(':')}\\n".encode())

    """
