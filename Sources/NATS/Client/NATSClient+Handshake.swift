import Foundation
import NIOCore
import NIOPosix
import NIOSSL

// Opening one connection: TCP, the server's INFO, TLS when asked, CONNECT with credentials, and
// the PONG that ends the handshake. Everything here runs before the connection is the client's.
extension NATSClient {
    struct EstablishedConnection {
        var channel: any Channel
        var handler: NATSChannelHandler
        var info: ServerInfo
    }

    func establish(_ server: NATSServerAddress) async throws -> EstablishedConnection {
        let eventLoop = group.next()
        let handler = NATSChannelHandler(eventLoop: eventLoop, delegate: self, pingInterval: options.pingInterval.timeAmount) { [self] info in
            try handshakeReply(to: info, server: server)
        }
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(options.connectTimeout.timeAmount)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandlers(ByteToMessageHandler(NATSOperationDecoder()), handler)
                    }
                }
                .connect(host: server.host, port: server.port)
                .get()
        } catch {
            handler.discard(error)
            throw error
        }
        let timeout = eventLoop.scheduleTask(in: options.connectTimeout.timeAmount) {
            handler.abort(NATSError(.timeout, "handshake did not finish within \(self.options.connectTimeout)"))
        }
        defer { timeout.cancel() }
        do {
            let latestInfo = try await handler.handshakeCompleted.get()
            return EstablishedConnection(channel: channel, handler: handler, info: latestInfo)
        } catch {
            channel.close(promise: nil)
            throw Self.classify(error, server: server)
        }
    }

    /// Decides, on the event loop, how to answer a server's first INFO: TLS or not, and the
    /// CONNECT line with credentials (signing the nonce when needed).
    private func handshakeReply(to info: ServerInfo, server: NATSServerAddress) throws -> NATSChannelHandler.HandshakeReply {
        let wantsTLS = server.requiresTLS || options.tls != nil
        var tlsHandler: (any ChannelHandler)?
        if info.tlsRequired == true || wantsTLS {
            guard let tlsContext else {
                throw NATSError(.tlsFailure, "server \(server) requires TLS; give TLS options or use a tls:// URL")
            }
            if info.tlsRequired != true && info.tlsAvailable != true {
                throw NATSError(.tlsFailure, "TLS is configured but server \(server) does not offer TLS")
            }
            let hostname = options.tls?.serverName ?? (server.hostIsIPAddress ? nil : server.host)
            tlsHandler = try NIOSSLClientHandler(context: tlsContext, serverHostname: hostname)
        }
        if info.headers == false {
            logger.warning("server does not support headers; JetStream features will not work", metadata: ["server": "\(server)"])
        }
        let connectLine = try makeConnectLine(info: info, server: server, tls: tlsHandler != nil)
        return NATSChannelHandler.HandshakeReply(tlsHandler: tlsHandler, connectLine: connectLine)
    }

    private static func classify(_ error: any Error, server: NATSServerAddress) -> any Error {
        if error is NATSError || error is NATSProtocolError { return error }
        if error is NIOSSLError || error is BoringSSLError {
            return NATSError(.tlsFailure, "TLS with \(server) failed: \(error)")
        }
        return error
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? NATSError { return error.message }
        if let error = error as? IOError { return error.description }
        return "\(error)"
    }

    private struct ConnectMessage: Encodable {
        var verbose = false
        var pedantic = false
        var tls_required: Bool
        var name: String?
        var lang = "swift"
        var version = "0.1.0"
        var `protocol` = 1
        var echo: Bool
        var headers = true
        var no_responders = true
        var user: String?
        var pass: String?
        var auth_token: String?
        var nkey: String?
        var sig: String?
        var jwt: String?
    }

    private func makeConnectLine(info: ServerInfo, server: NATSServerAddress, tls: Bool) throws -> ByteBuffer {
        var message = ConnectMessage(tls_required: tls, name: options.name, echo: !options.noEcho)
        if let user = server.user {
            if let password = server.password {
                message.user = user
                message.pass = password
            } else {
                message.auth_token = user
            }
        }
        switch options.authentication {
        case .none:
            break
        case .userPassword(let user, let password):
            message.user = user
            message.pass = password
        case .token(let token):
            message.auth_token = token
        case .nkeySeed(let seed):
            let pair: NKeyPair
            do { pair = try NKeyPair(seed: seed) } catch {
                throw NATSError(.invalidCredentials, "nkey seed is unusable: \(error)")
            }
            message.nkey = pair.publicKey
            if let nonce = info.nonce { message.sig = pair.signNonce(nonce) }
        case .credentialsFile(let path):
            let credentials: NATSCredentials
            do { credentials = try NATSCredentials.load(path: path) } catch {
                throw NATSError(.invalidCredentials, "\(error)")
            }
            message.jwt = credentials.jwt
            if let nonce = info.nonce { message.sig = credentials.nkey.signNonce(nonce) }
        case .credentials(let credentials):
            message.jwt = credentials.jwt
            if let nonce = info.nonce { message.sig = credentials.nkey.signNonce(nonce) }
        }
        let json = try JSONEncoder().encode(message)
        var buffer = allocator.buffer(capacity: json.count + 16)
        ClientOperationEncoder.writeConnect(into: &buffer, json: Array(json))
        return buffer
    }

    // MARK: - TLS

    static func makeTLSContext(_ options: NATSTLSOptions) throws(NATSError) -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        do {
            if let caFile = options.caFile {
                try Self.checkReadable(caFile, what: "TLS CA file")
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
            }
            if let certificateFile = options.certificateFile {
                try Self.checkReadable(certificateFile, what: "TLS certificate file")
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) }
            }
            if let keyFile = options.keyFile {
                try Self.checkReadable(keyFile, what: "TLS key file")
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
            }
            if (options.certificateFile == nil) != (options.keyFile == nil) {
                throw NATSError(.invalidCredentials, "TLS client certificate and key must be given together")
            }
            if !options.verifyServer {
                configuration.certificateVerification = .none
            }
            return try NIOSSLContext(configuration: configuration)
        } catch let error as NATSError {
            throw error
        } catch {
            throw NATSError(.invalidCredentials, "TLS files unusable: \(error)")
        }
    }

    private static func checkReadable(_ path: String, what: String) throws(NATSError) {
        guard FileManager.default.fileExists(atPath: path) else {
            throw NATSError(.invalidCredentials, "\(what) \(path) does not exist")
        }
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw NATSError(.invalidCredentials, "\(what) \(path) is not readable (permission denied)")
        }
    }
}
