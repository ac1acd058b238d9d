import Foundation
import NATSTestSupport

/// What a finished `ip` command printed.
struct IPCommandResult: Sendable, CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String

    var description: String { "exit \(status)\n--- stdout:\n\(stdout)--- stderr:\n\(stderr)---" }
}

struct IPCommandFailed: Error, CustomStringConvertible {
    var arguments: [String]
    var result: IPCommandResult
    var description: String { "ip \(arguments.joined(separator: " ")) failed: \(result)" }
}

/// Two network namespaces joined by a veth pair, made with `ip` and deleted by ``tearDown()``:
/// the announcer's side (`hostNamespace`/`hostInterface`, 10.77.0.1/24) and a peer that watches
/// (`peerNamespace`/`peerInterface`, 10.77.0.2/24). Names are random, so parallel runs and other
/// users of the machine do not collide; all start with `bnl` for manual clean-up.
struct NamespaceLab: Sendable {
    let ipPath: String
    let hostNamespace: String
    let peerNamespace: String
    let hostInterface: String
    let peerInterface: String

    /// Runs `body` in a fresh lab and deletes the lab afterwards, whether `body` threw or not.
    /// Skips (or fails under BATON_REQUIRE_INTEGRATION=1) when not root or `ip` is missing.
    static func with<Result: Sendable>(_ body: (NamespaceLab) async throws -> Result) async throws -> Result {
        guard geteuid() == 0 else {
            try Integration.missingPrerequisite(MissingPrerequisite(
                name: "root", reason: "network namespace tests create namespaces and veth pairs",
                remedy: "running the tests as root, e.g. `sudo swift test --filter NetlinkTests`"))
        }
        let ipPath = try Integration.requireExecutable("ip", remedy: "`apt-get install iproute2`")
        let tag = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let lab = NamespaceLab(
            ipPath: ipPath, hostNamespace: "bnl-\(tag)-host", peerNamespace: "bnl-\(tag)-peer",
            hostInterface: "bnl\(tag)h", peerInterface: "bnl\(tag)p")
        do {
            try await lab.setUp()
        } catch {
            await lab.tearDown()
            throw error
        }
        do {
            let result = try await body(lab)
            await lab.tearDown()
            return result
        } catch {
            await lab.tearDown()
            throw error
        }
    }

    private func setUp() async throws {
        try await ip(["netns", "add", hostNamespace])
        try await ip(["netns", "add", peerNamespace])
        // Created directly inside the namespaces: the pair never appears in the caller's one.
        try await ip([
            "link", "add", hostInterface, "netns", hostNamespace, "type", "veth",
            "peer", "name", peerInterface, "netns", peerNamespace,
        ])
        try await ip(["-n", hostNamespace, "link", "set", "lo", "up"])
        try await ip(["-n", peerNamespace, "link", "set", "lo", "up"])
        try await ip(["-n", hostNamespace, "addr", "add", "10.77.0.1/24", "dev", hostInterface])
        try await ip(["-n", peerNamespace, "addr", "add", "10.77.0.2/24", "dev", peerInterface])
        try await ip(["-n", hostNamespace, "link", "set", hostInterface, "up"])
        try await ip(["-n", peerNamespace, "link", "set", peerInterface, "up"])
        // Frames sent before the kernel's link watch has activated the queueing discipline
        // ("qdisc noop") are dropped; wait until both ends are operationally up.
        for (namespace, interface) in [(hostNamespace, hostInterface), (peerNamespace, peerInterface)] {
            let ready = try await eventually {
                let shown = try await ip(["-n", namespace, "-o", "link", "show", "dev", interface])
                return shown.contains("state UP") && !shown.contains("qdisc noop")
            }
            guard ready else {
                throw IPCommandFailed(
                    arguments: ["-n", namespace, "link", "show", "dev", interface],
                    result: IPCommandResult(status: 0, stdout: "", stderr: "not operationally up within 5 s"))
            }
        }
    }

    /// Deletes both namespaces (which deletes the veth pair). Never throws: a namespace that is
    /// already gone is fine.
    func tearDown() async {
        _ = try? await run(["netns", "del", hostNamespace])
        _ = try? await run(["netns", "del", peerNamespace])
    }

    /// Runs `ip arguments` and returns its stdout; throws when it exits non-zero.
    @discardableResult
    func ip(_ arguments: [String]) async throws -> String {
        let result = try await run(arguments)
        guard result.status == 0 else { throw IPCommandFailed(arguments: arguments, result: result) }
        return result.stdout
    }

    /// The MAC address of `interface` in `namespace`, as `ip` prints it (lower case).
    func macAddress(of interface: String, in namespace: String) async throws -> String {
        let output = try await ip(["-n", namespace, "-o", "link", "show", "dev", interface])
        let words = output.split(whereSeparator: \.isWhitespace)
        guard let index = words.firstIndex(of: "link/ether"), index + 1 < words.count else {
            throw IPCommandFailed(arguments: ["link", "show", interface], result: IPCommandResult(status: 0, stdout: output, stderr: "no link/ether"))
        }
        return String(words[index + 1])
    }

    /// The link-layer address the peer's neighbour table holds for `address`, or `nil`.
    func peerNeighbour(_ address: String) async throws -> String? {
        let output = try await ip(["-n", peerNamespace, "neigh", "show", address, "dev", peerInterface])
        let words = output.split(whereSeparator: \.isWhitespace)
        guard let index = words.firstIndex(of: "lladdr"), index + 1 < words.count else { return nil }
        return String(words[index + 1])
    }

    /// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
    func eventually(timeout: Duration = .seconds(5), _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return try await condition()
    }

    /// Runs `ip` with the wait on a thread of its own (never on the Swift concurrency pool).
    private func run(_ arguments: [String]) async throws -> IPCommandResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ipPath)
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
                continuation.resume(returning: IPCommandResult(
                    status: process.terminationStatus,
                    stdout: String(decoding: stdout, as: UTF8.self),
                    stderr: String(decoding: stderr, as: UTF8.self)))
            }
        }
    }
}
