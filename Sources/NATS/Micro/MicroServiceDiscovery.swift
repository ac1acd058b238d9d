import Foundation
import NIOCore

/// Finds micro service instances and reads their info and statistics, as `nats micro ls`,
/// `nats micro info` and `nats micro stats` do.
///
/// A discovery request goes to every instance that matches, so replies are collected for a
/// while: until ``replyWindow`` has passed, or until `maxReplies` replies arrived (one when an
/// instance id is given), or at once when nobody listens.
public struct MicroServiceDiscovery: Sendable {
    /// The client the requests are sent with.
    public let client: NATSClient
    /// How long to collect replies.
    public var replyWindow: Duration

    /// Creates a discovery helper.
    public init(client: NATSClient, replyWindow: Duration = .seconds(1)) {
        self.client = client
        self.replyWindow = replyWindow
    }

    /// Pings every instance (`name` nil), every instance of `name`, or one instance.
    public func ping(name: String? = nil, id: String? = nil, maxReplies: Int? = nil) async throws -> [MicroPingResponse] {
        try await collect(MicroPingResponse.self, verb: .ping, name: name, id: id, maxReplies: maxReplies)
    }

    /// Reads the info of every instance (`name` nil), every instance of `name`, or one instance.
    public func info(name: String? = nil, id: String? = nil, maxReplies: Int? = nil) async throws -> [MicroInfoResponse] {
        try await collect(MicroInfoResponse.self, verb: .info, name: name, id: id, maxReplies: maxReplies)
    }

    /// Reads the statistics of every instance (`name` nil), every instance of `name`, or one
    /// instance.
    public func stats(name: String? = nil, id: String? = nil, maxReplies: Int? = nil) async throws -> [MicroStatsResponse] {
        try await collect(MicroStatsResponse.self, verb: .stats, name: name, id: id, maxReplies: maxReplies)
    }

    /// Replies that do not decode as `Response` are left out.
    private func collect<Response: Decodable>(
        _ type: Response.Type, verb: MicroDiscoveryVerb, name: String?, id: String?, maxReplies: Int?
    ) async throws -> [Response] {
        let decoder = JSONDecoder()
        return try await replies(verb: verb, name: name, id: id, maxReplies: maxReplies).compactMap { reply in
            try? decoder.decode(type, from: Data(reply.payload.readableBytesView))
        }
    }

    /// The raw replies to a discovery request, in arrival order.
    public func replies(verb: MicroDiscoveryVerb, name: String? = nil, id: String? = nil, maxReplies: Int? = nil) async throws -> [NATSMessage] {
        if let name { try MicroValidation.checkName(name, field: .serviceName) }
        let limit = maxReplies ?? (name != nil && id != nil ? 1 : nil)
        let inbox = client.newInbox()
        let subscription = try await client.subscribe(to: inbox)
        let window = replyWindow
        // Ends the collection when the window closes (or at once when cancelled).
        let closer = Task {
            try? await Task.sleep(for: window)
            try? await subscription.unsubscribe()
        }
        defer { closer.cancel() }
        return try await withTaskCancellationHandler {
            do {
                try await client.publish(MicroService.controlSubject(verb, name: name, id: id), replyTo: inbox)
            } catch {
                try? await subscription.unsubscribe()
                throw error
            }
            var replies: [NATSMessage] = []
            for await message in subscription {
                if message.status == 503 { break }  // no responders
                replies.append(message)
                if let limit, replies.count >= limit { break }
            }
            try? await subscription.unsubscribe()
            return replies
        } onCancel: {
            // The closer stops sleeping and unsubscribes, which ends the loop above.
            closer.cancel()
        }
    }
}
