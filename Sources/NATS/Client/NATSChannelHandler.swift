import NIOCore

/// Turns bytes into ``ServerOperation`` values for the channel pipeline.
struct NATSOperationDecoder: ByteToMessageDecoder {
    typealias InboundOut = ServerOperation
    let parser = NATSProtocolParser()

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let operation = try parser.parse(&buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(operation))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

/// Receives callbacks from a connection's channel handler. Every call happens on the channel's
/// event loop; `connection` identifies which connection it came from.
protocol NATSConnectionDelegate: AnyObject, Sendable {
    func connection(_ connection: ObjectIdentifier, received message: NATSMessage)
    func connection(_ connection: ObjectIdentifier, receivedInfo info: ServerInfo)
    func connectionReceivedPong(_ connection: ObjectIdentifier)
    func connection(_ connection: ObjectIdentifier, receivedError text: String)
    func connection(_ connection: ObjectIdentifier, writabilityChanged writable: Bool)
    func connectionKeepaliveTick(_ connection: ObjectIdentifier) -> Bool
    func connection(_ connection: ObjectIdentifier, closedWith error: (any Error)?)
}

/// The last handler of a connection's pipeline: runs the handshake (INFO, then CONNECT+PING
/// answered by PONG), answers server PINGs at once, sends keep-alive PINGs, and hands everything
/// else to the client.
final class NATSChannelHandler: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: every mutable field is touched only on `eventLoop`.
    typealias InboundIn = ServerOperation
    typealias OutboundOut = ByteBuffer

    private enum Phase {
        case awaitingInfo
        case awaitingConnectReply
        case ready
        case closed
    }

    let eventLoop: EventLoop
    private let delegate: any NATSConnectionDelegate
    private let pingInterval: TimeAmount
    private var phase: Phase = .awaitingInfo
    /// Answers the server's first INFO on the event loop: what to send back, and whether to
    /// start TLS first. The handshake never waits for the Swift concurrency pool, so a busy
    /// process still answers within the server's authentication timeout.
    private let respondToInfo: (ServerInfo) throws -> HandshakeReply
    private let handshakePromise: EventLoopPromise<ServerInfo>
    /// The newest INFO seen before the client took the connection over.
    private var latestInfo: ServerInfo?
    private var activated = false
    private var context: ChannelHandlerContext?
    private var keepalive: RepeatedTask?
    private var lastError: (any Error)?
    private var connectionID: ObjectIdentifier?

    /// What the client sends after the server's first INFO.
    struct HandshakeReply {
        /// The TLS handler to put in front of the pipeline before sending anything, if TLS is on.
        var tlsHandler: (any ChannelHandler)?
        /// The CONNECT line.
        var connectLine: ByteBuffer
    }

    init(eventLoop: EventLoop, delegate: any NATSConnectionDelegate, pingInterval: TimeAmount, respondToInfo: @escaping (ServerInfo) throws -> HandshakeReply) {
        self.eventLoop = eventLoop
        self.delegate = delegate
        self.pingInterval = pingInterval
        self.respondToInfo = respondToInfo
        self.handshakePromise = eventLoop.makePromise(of: ServerInfo.self)
    }

    /// Completes with the newest INFO once the server answered CONNECT+PING with PONG.
    var handshakeCompleted: EventLoopFuture<ServerInfo> { handshakePromise.futureResult }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.connectionID = ObjectIdentifier(context.channel)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Marks the connection as taken over by the client: from now on operations go to the
    /// delegate and keep-alive PINGs start.
    func activate() {
        eventLoop.execute { [self] in
            guard phase == .ready, let connectionID else { return }
            activated = true
            if let latestInfo {
                // An INFO that arrived between PONG and the client taking over.
                self.latestInfo = nil
                delegate.connection(connectionID, receivedInfo: latestInfo)
            }
            keepalive = eventLoop.scheduleRepeatedTask(initialDelay: pingInterval, delay: pingInterval) { [weak self] task in
                guard let self, let context = self.context else {
                    task.cancel()
                    return
                }
                if !self.delegate.connectionKeepaliveTick(connectionID) {
                    self.lastError = NATSError(.timeout, "server did not answer our PINGs (stale connection)")
                    context.close(promise: nil)
                }
            }
        }
    }

    /// Fails the handshake of a handler that never joined a pipeline (the TCP connect failed).
    func discard(_ error: any Error) {
        handshakePromise.fail(error)
    }

    /// Closes the connection with `error` as the reason (used for handshake timeouts).
    func abort(_ error: any Error) {
        eventLoop.execute { [self] in
            guard let context, phase != .ready, phase != .closed else { return }
            fail(context: context, error)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let operation = unwrapInboundIn(data)
        guard let connectionID else { return }
        switch (phase, operation) {
        case (_, .ping):
            var buffer = context.channel.allocator.buffer(capacity: 6)
            ClientOperationEncoder.writePong(into: &buffer)
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        case (.awaitingInfo, .info(let info)):
            latestInfo = info
            do {
                let reply = try respondToInfo(info)
                if let tlsHandler = reply.tlsHandler {
                    try context.pipeline.syncOperations.addHandler(tlsHandler, position: .first)
                }
                phase = .awaitingConnectReply
                var buffer = reply.connectLine
                ClientOperationEncoder.writePing(into: &buffer)
                context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
            } catch {
                fail(context: context, error)
            }
        case (.awaitingInfo, .error(let text)):
            fail(context: context, NATSError(.serverError, "server refused the connection: \(text)"))
        case (.awaitingInfo, _):
            fail(context: context, NATSProtocolError("expected INFO as the server's first operation"))
        case (.awaitingConnectReply, .pong):
            phase = .ready
            if let latestInfo { handshakePromise.succeed(latestInfo) }
            self.latestInfo = nil
        case (.awaitingConnectReply, .error(let text)):
            let lower = text.lowercased()
            let code: NATSError.Code = lower.contains("authorization") || lower.contains("authentication") || lower.contains("user") ? .authorizationViolation : .serverError
            fail(context: context, NATSError(code, text))
        case (.awaitingConnectReply, .info(let info)):
            latestInfo = info
        case (.awaitingConnectReply, .ok):
            break
        case (.awaitingConnectReply, .message):
            break  // cannot happen before any SUB
        case (.ready, .message(let message)):
            delegate.connection(connectionID, received: message)
        case (.ready, .pong):
            delegate.connectionReceivedPong(connectionID)
        case (.ready, .info(let info)):
            if activated {
                delegate.connection(connectionID, receivedInfo: info)
            } else {
                latestInfo = info
            }
        case (.ready, .error(let text)):
            let lower = text.lowercased()
            if lastError == nil, !lower.hasPrefix("permissions violation"), !lower.hasPrefix("invalid") {
                // Every other -ERR is followed by the server closing the connection; keep it as the reason.
                lastError = NATSError(.serverError, text)
            }
            delegate.connection(connectionID, receivedError: text)
        case (.ready, .ok), (.closed, _):
            break
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if let connectionID, phase == .ready {
            delegate.connection(connectionID, writabilityChanged: context.channel.isWritable)
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if lastError == nil { lastError = error }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        keepalive?.cancel()
        keepalive = nil
        let error = lastError ?? NATSError(.connectionLost, "the server closed the connection")
        let wasReady = phase == .ready
        phase = .closed
        handshakePromise.fail(error)
        if wasReady, let connectionID {
            delegate.connection(connectionID, closedWith: lastError)
        }
        context.fireChannelInactive()
    }

    private func fail(context: ChannelHandlerContext, _ error: any Error) {
        if lastError == nil { lastError = error }
        handshakePromise.fail(error)
        context.close(promise: nil)
    }
}
