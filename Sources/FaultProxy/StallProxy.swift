import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A TCP proxy (on loopback unless told otherwise) in front of one server, that can stall every connection through it:
/// while stalled nothing is read on either side, so bytes wait in the kernel's buffers and
/// arrive when it resumes — what a client sees of a server that is stopped (SIGSTOP), without
/// signalling a child process (a stopped child makes Foundation's `Process` machinery trip).
public final class StallProxy: Sendable {
    /// The address clients connect to.
    public let host: String
    /// The port clients connect to.
    public let port: Int
    private let listener: any Channel
    fileprivate let state: NIOLockedValueBox<State>

    fileprivate struct State {
        var stalled = false
        var channels: [ObjectIdentifier: any Channel] = [:]
    }

    /// Starts a proxy on a free port of `listenHost` (loopback by default) that forwards to
    /// `targetHost:targetPort`.
    public static func start(
        targetPort: Int, targetHost: String = "127.0.0.1", listenHost: String = "127.0.0.1",
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> StallProxy {
        let state = NIOLockedValueBox(State())
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { inbound in
                inbound.pipeline.addHandler(ClientSide(targetHost: targetHost, targetPort: targetPort, state: state))
            }
            .bind(host: listenHost, port: 0).get()
        return StallProxy(host: listenHost, port: listener.localAddress?.port ?? 0, listener: listener, state: state)
    }

    private init(host: String, port: Int, listener: any Channel, state: NIOLockedValueBox<State>) {
        self.host = host
        self.port = port
        self.listener = listener
        self.state = state
    }

    /// How many connections (client and server sides together) are open through the proxy.
    public var openChannels: Int { state.withLockedValue { $0.channels.count } }

    /// `nats://HOST:PORT` of the proxy.
    public var url: String { "nats://\(host):\(port)" }

    /// Stops reading on every connection (and on those accepted from now on) until ``resume()``.
    public func stall() async throws {
        let channels = state.withLockedValue { state in
            state.stalled = true
            return Array(state.channels.values)
        }
        for channel in channels { try? await channel.setOption(.autoRead, value: false).get() }
    }

    /// Reads again: what waited is forwarded at once.
    public func resume() async throws {
        let channels = state.withLockedValue { state in
            state.stalled = false
            return Array(state.channels.values)
        }
        try? await Self.resume(channels).get()
    }

    fileprivate static func resume(_ channels: [any Channel]) -> EventLoopFuture<Void> {
        guard let first = channels.first else { return MultiThreadedEventLoopGroup.singleton.any().makeSucceededVoidFuture() }
        let futures = channels.map { channel in
            channel.setOption(.autoRead, value: true).map { channel.read() }
        }
        return EventLoopFuture.andAllComplete(futures, on: first.eventLoop)
    }

    /// Closes the listener and every connection.
    public func close() async {
        try? await listener.close().get()
        let channels = state.withLockedValue { Array($0.channels.values) }
        for channel in channels { try? await channel.close().get() }
    }
}

/// The accepted side: once active, connects to the server and starts relaying both ways
/// (unless the proxy is stalled).
private final class ClientSide: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let targetHost: String
    let targetPort: Int
    let state: NIOLockedValueBox<StallProxy.State>

    init(targetHost: String, targetPort: Int, state: NIOLockedValueBox<StallProxy.State>) {
        self.targetHost = targetHost
        self.targetPort = targetPort
        self.state = state
    }

    func channelActive(context: ChannelHandlerContext) {
        let inbound = context.channel
        let state = self.state
        ClientBootstrap(group: inbound.eventLoop)
            .channelOption(.autoRead, value: false)
            .channelInitializer { outbound in outbound.pipeline.addHandler(Relay(peer: inbound)) }
            .connect(host: targetHost, port: targetPort)
            .flatMap { outbound in
                let stalled = state.withLockedValue { state in
                    state.channels[ObjectIdentifier(inbound)] = inbound
                    state.channels[ObjectIdentifier(outbound)] = outbound
                    return state.stalled
                }
                for channel in [inbound, outbound] {
                    channel.closeFuture.whenComplete { _ in
                        state.withLockedValue { _ = $0.channels.removeValue(forKey: ObjectIdentifier(channel)) }
                    }
                }
                return inbound.pipeline.addHandler(Relay(peer: outbound)).flatMap {
                    stalled ? inbound.eventLoop.makeSucceededVoidFuture() : StallProxy.resume([inbound, outbound])
                }
            }
            .whenFailure { _ in inbound.close(promise: nil) }
        context.fireChannelActive()
    }
}

/// Writes what one side reads to the other; closes the other when one closes.
private final class Relay: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let peer: any Channel

    init(peer: any Channel) { self.peer = peer }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        peer.writeAndFlush(unwrapInboundIn(data), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        peer.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
