import Foundation
import NATS
import NATSTestSupport
import NIOCore
import Testing

@Suite("Authentication and TLS against a real nats-server", .serialized)
struct AuthIntegrationTests {
    /// Connects, proves a round trip through the server, and closes.
    private func roundTrip(_ options: NATSClientOptions) async throws {
        let client = try await NATSClient.connect(options: options, logger: testLogger())
        let subscription = try await client.subscribe(to: "auth.check")
        try await client.flush()
        try await client.publish("auth.check", string: "ok")
        #expect(try await nextMessage(subscription).string == "ok")
        await client.close()
    }

    private func expectRefused(_ options: NATSClientOptions, sourceLocation: SourceLocation = #_sourceLocation) async {
        let error = await #expect(throws: NATSError.self, sourceLocation: sourceLocation) {
            let client = try NATSClient(options: options, logger: testLogger())
            defer { Task { await client.close() } }
            try await client.connect()
        }
        #expect(error?.code == .authorizationViolation, "\(String(describing: error))", sourceLocation: sourceLocation)
    }

    @Test(arguments: NATSServerKind.allCases)
    func userAndPassword(kind: NATSServerKind) async throws {
        var config = NATSServerConfig(jetStream: false)
        config.extraConfig = "authorization { user: alice, password: \"s3cret\" }"
        try await withNATSServer(kind, config: config) { server in
            var options = testOptions(server)
            options.authentication = .userPassword(user: "alice", password: "s3cret")
            try await roundTrip(options)
            // The same credentials embedded in the URL.
            var inURL = testOptions(server)
            inURL.servers = ["nats://alice:s3cret@127.0.0.1:\(server.port)"]
            try await roundTrip(inURL)
            options.authentication = .userPassword(user: "alice", password: "wrong")
            await expectRefused(options)
        }
    }

    /// A request the user's permissions do not allow fails at once with
    /// ``NATSError/Code/permissionViolation`` naming the subject — not after its timeout — and
    /// the connection stays usable. A user who may not subscribe to the reply inbox gets the
    /// same for every request.
    @Test(arguments: NATSServerKind.allCases)
    func aDeniedRequestFailsAtOnceAndSaysWhy(kind: NATSServerKind) async throws {
        var config = NATSServerConfig(jetStream: false)
        config.extraConfig = """
            authorization {
              users: [
                { user: limited, password: pw, permissions: { publish: { deny: ["forbidden.>"] } } }
                { user: noinbox, password: pw, permissions: { subscribe: { deny: ["_INBOX.>"] } } }
              ]
            }
            """
        try await withNATSServer(kind, config: config) { server in
            var options = testOptions(server)
            options.authentication = .userPassword(user: "limited", password: "pw")
            options.requestTimeout = .seconds(20)
            let client = try NATSClient(options: options, logger: testLogger())
            try await client.connect()
            let started = ContinuousClock.now
            let error = await #expect(throws: NATSError.self) { _ = try await client.request("forbidden.steer") }
            #expect(error?.code == .permissionViolation)
            #expect(error?.message == #"permission denied: the NATS server does not let this user publish to "forbidden.steer" (request on "forbidden.steer")"#)
            #expect(ContinuousClock.now - started < .seconds(10), "the request waited for its timeout")
            // Still connected and usable.
            let echo = try await client.subscribe(to: "allowed.echo")
            try await client.publish("allowed.echo", payload: ByteBuffer(string: "hi"))
            var messages = echo.makeAsyncIterator()
            #expect(await messages.next()?.payload == ByteBuffer(string: "hi"))
            await client.close()

            options.authentication = .userPassword(user: "noinbox", password: "pw")
            let deaf = try NATSClient(options: options, logger: testLogger())
            try await deaf.connect()
            let denied = await #expect(throws: NATSError.self) { _ = try await deaf.request("anything") }
            #expect(denied?.code == .permissionViolation)
            #expect(denied?.message.contains("subscribe to \"_INBOX.") == true, "\(String(describing: denied))")
            await deaf.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func token(kind: NATSServerKind) async throws {
        var config = NATSServerConfig(jetStream: false)
        config.extraConfig = "authorization { token: \"t0ken-abc\" }"
        try await withNATSServer(kind, config: config) { server in
            var options = testOptions(server)
            options.authentication = .token("t0ken-abc")
            try await roundTrip(options)
            options.authentication = .token("nope")
            await expectRefused(options)
            options.authentication = .none
            await expectRefused(options)
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func nkeySignsTheNonce(kind: NATSServerKind) async throws {
        let user = NKeyPair.generate(.user)
        let stranger = NKeyPair.generate(.user)
        var config = NATSServerConfig(jetStream: false)
        config.extraConfig = "authorization { users: [ { nkey: \(user.publicKey) } ] }"
        try await withNATSServer(kind, config: config) { server in
            var options = testOptions(server)
            options.authentication = .nkeySeed(user.seed)
            try await roundTrip(options)
            options.authentication = .nkeySeed(stranger.seed)
            await expectRefused(options)
            options.authentication = .nkeySeed("SUNOTASEED")
            let error = await #expect(throws: NATSError.self) {
                let client = try NATSClient(options: options, logger: testLogger())
                try await client.connect()
            }
            #expect(error?.message.contains("nkey seed") == true)
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func credentialsFileInOperatorMode(kind: NATSServerKind) async throws {
        let setup = OperatorModeSetup()
        var config = NATSServerConfig(jetStream: false)
        config.extraConfig = setup.serverConfig()
        let directory = try makeTemporaryDirectory(prefix: "creds")
        defer { try? FileManager.default.removeItem(at: directory) }
        let credsPath = directory.appendingPathComponent("user.creds").path
        try setup.credsFile.write(toFile: credsPath, atomically: true, encoding: .utf8)
        try await withNATSServer(kind, config: config) { server in
            var options = testOptions(server)
            options.authentication = .credentialsFile(path: credsPath)
            try await roundTrip(options)
            options.authentication = .credentials(setup.credentials)
            try await roundTrip(options)
            // A user signed by an account the server does not know is refused.
            let other = OperatorModeSetup()
            options.authentication = .credentials(other.credentials)
            await expectRefused(options)
            // A missing creds file is a clear local error naming the path.
            options.authentication = .credentialsFile(path: directory.appendingPathComponent("missing.creds").path)
            let error = await #expect(throws: NATSError.self) {
                let client = try NATSClient(options: options, logger: testLogger())
                try await client.connect()
            }
            #expect(error?.message.contains("missing.creds") == true)
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func tlsWithCustomCAAndClientCertificate(kind: NATSServerKind) async throws {
        let directory = try makeTemporaryDirectory(prefix: "tls")
        defer { try? FileManager.default.removeItem(at: directory) }
        let files = try TestTLSFiles.generate(in: directory)
        var config = NATSServerConfig(jetStream: false)
        config.tls = files
        config.verifyClientCertificates = true
        try await withNATSServer(kind, config: config) { server in
            #expect(server.url.hasPrefix("tls://"))
            var options = testOptions(server)
            options.tls = NATSTLSOptions(caFile: files.caCertificate.path, certificateFile: files.clientCertificate.path, keyFile: files.clientKey.path)
            try await roundTrip(options)
            // The server requires TLS: a nats:// URL is upgraded when TLS options are given.
            options.servers = ["nats://127.0.0.1:\(server.port)"]
            try await roundTrip(options)

            // Without trusting the CA the handshake fails with a TLS error.
            var untrusted = testOptions(server)
            untrusted.tls = NATSTLSOptions(certificateFile: files.clientCertificate.path, keyFile: files.clientKey.path)
            let tlsError = await #expect(throws: NATSError.self) {
                let client = try NATSClient(options: untrusted, logger: testLogger())
                try await client.connect()
            }
            #expect(tlsError?.message.contains("TLS") == true)

            // A plain client is told TLS is needed.
            var plain = testOptions(server)
            plain.servers = ["nats://127.0.0.1:\(server.port)"]
            let plainError = await #expect(throws: NATSError.self) {
                let client = try NATSClient(options: plain, logger: testLogger())
                try await client.connect()
            }
            #expect(plainError?.message.contains("requires TLS") == true)
        }
        // Unreadable TLS files are reported when the client is created.
        let missing = #expect(throws: NATSError.self) {
            var options = NATSClientOptions()
            options.tls = NATSTLSOptions(caFile: directory.appendingPathComponent("nope.pem").path)
            _ = try NATSClient(options: options)
        }
        #expect(missing?.code == .invalidCredentials)
        #expect(missing?.message.contains("nope.pem") == true)
    }
}
