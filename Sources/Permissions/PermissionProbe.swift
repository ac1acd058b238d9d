import Foundation
import Logging
import NATS
import NIOCore

/// One check of a startup permission probe: a publish or a subscription that needs one rule of a
/// ``BatonPermissions`` set, made so that it changes nothing on the server.
///
/// - A publish goes to a concrete subject under the rule (`*` and `>` replaced by
///   ``probeToken``), without a reply subject, with a body and headers that every receiver
///   refuses: a stream
///   publish carries `Nats-Expected-Stream: _baton_permission_probe` (JetStream rejects it
///   unstored); a stream or consumer create names another stream than its subject (refused
///   before anything is looked at); a purge is filtered to a subject that holds no message;
///   consumer subjects name the consumer `_baton_permission_probe`, which never exists.
/// - A subscription is made on the rule's subject and removed at once.
///
/// The server answers a denied one with a permissions violation naming the subject at once;
/// without one, the permission is there.
public struct PermissionProbe: Sendable, Hashable, CustomStringConvertible {
    /// Publish or subscribe.
    public enum Operation: String, Sendable, Hashable {
        case publish, subscribe
    }

    /// The token wildcards are replaced with, and the name of everything a probe refers to:
    /// never a valid app, node, stream or consumer name of Baton (app and node names have no `_`
    /// at the start).
    public static let probeToken = "_baton_permission_probe"

    /// What is checked.
    public var operation: Operation
    /// The subject used: concrete for a publish, the rule's own for a subscription.
    public var subject: String
    /// The body of a publish.
    public var payload: String
    /// Headers of a publish.
    public var headers: [String: String]
    /// The rule this checks.
    public var rule: NATSPermissionRule

    public var description: String { "\(operation.rawValue) \(subject) (\(rule.purpose))" }

    /// The probes of every rule of `permissions`, in the set's order, subscriptions first: the
    /// first is the role's reply inbox, without which no request (and so no publish probe) can
    /// be answered.
    public static func plan(_ permissions: BatonPermissions) -> [PermissionProbe] {
        permissions.subscribe.map {
            PermissionProbe(operation: .subscribe, subject: $0.subject, payload: "", headers: [:], rule: $0)
        } + permissions.publish.map(publishProbe)
    }

    /// `subject` with every `*` and `>` token replaced by ``probeToken``.
    static func concrete(_ subject: String) -> String {
        subject.split(separator: ".", omittingEmptySubsequences: false)
            .map { $0 == "*" || $0 == ">" ? probeToken : String($0) }
            .joined(separator: ".")
    }

    private static func publishProbe(_ rule: NATSPermissionRule) -> PermissionProbe {
        let subject = concrete(rule.subject)
        let api = JetStreamNames.apiPrefix + "."
        var payload = ""
        var headers: [String: String] = [:]
        if subject.hasPrefix(api) {
            let verb = subject.dropFirst(api.count)
            if verb.hasPrefix("STREAM.CREATE.") || verb.hasPrefix("STREAM.UPDATE.") {
                payload = "{\"name\":\"\(probeToken)\"}"
            } else if verb.hasPrefix("CONSUMER.CREATE.") || verb.hasPrefix("CONSUMER.DURABLE.CREATE.") {
                payload = "{\"stream_name\":\"\(probeToken)\"}"
            } else if verb.hasPrefix("STREAM.PURGE.") {
                // Filtered to a subject without messages: purges nothing.
                payload = "{\"filter\":\"\(rule.probeFilter ?? probeToken)\"}"
            }
        } else {
            // A stream's subject (KV keys, WAL records, Object Store chunks) or a consumer's
            // ack / flow-control subject: a stream that captures it rejects it unstored.
            headers["Nats-Expected-Stream"] = probeToken
        }
        return PermissionProbe(operation: .publish, subject: subject, payload: payload, headers: headers, rule: rule)
    }
}

/// The first probe the server refused.
public struct PermissionProbeDenied: Error, Sendable, Hashable, CustomStringConvertible {
    /// The probe.
    public var probe: PermissionProbe
    /// The server's words.
    public var serverError: String

    public var description: String {
        "the NATS user lacks a permission batond needs: \(probe.operation == .publish ? "publish to" : "subscribe to") \"\(probe.rule.subject)\" (\(probe.rule.purpose)); the server said: \(serverError). Grant the node role's set (`batonctl permissions --role node`)"
    }
}

/// Runs a probe plan over a connected client.
public enum PermissionProber {
    /// Makes every probe of `probes` (publishes without a reply subject, subscriptions removed
    /// again), then one flush, and returns the first probe in plan order the server refused, or
    /// nil. The server answers a denied publish or subscription with `-ERR` at once, before the
    /// PONG of the flush (the client records it as a connection event before it handles the
    /// PONG), so nothing waits for replies (a JetStream API subject of a stream that
    /// does not exist yet answers no one on nats-server 2.9).
    ///
    /// - Parameter timeout: bounds the flush.
    public static func firstDenied(_ probes: [PermissionProbe], client: NATSClient, timeout: Duration = .seconds(5), logger: Logger) async throws
        -> PermissionProbeDenied?
    {
        let events = client.events()
        var subscriptions: [NATSSubscription] = []
        for probe in probes {
            switch probe.operation {
            case .publish:
                var headers: NATSHeaders?
                if !probe.headers.isEmpty {
                    var built = NATSHeaders()
                    for (name, value) in probe.headers.sorted(by: { $0.key < $1.key }) { built.append(name: name, value: value) }
                    headers = built
                }
                try await client.publish(probe.subject, payload: ByteBuffer(string: probe.payload), headers: headers)
            case .subscribe:
                subscriptions.append(try await client.subscribe(to: probe.subject))
            }
        }
        try await client.flush(timeout: timeout)
        for subscription in subscriptions { try? await subscription.unsubscribe() }
        let errors = await Self.bufferedServerErrors(events)
        for probe in probes {
            let refusal = errors.first { text in
                probe.operation == .publish
                    ? NATSClient.isPublishDenial(text, subject: probe.subject) : NATSClient.isSubscriptionDenial(text, subject: probe.subject)
            }
            if let refusal { return PermissionProbeDenied(probe: probe, serverError: refusal) }
        }
        logger.trace("permission probe: every rule allowed", metadata: ["probes": "\(probes.count)", "server_errors": "\(errors)"])
        return nil
    }

    /// The server errors among the events already buffered in `events`; ends the stream. The
    /// reading task is cancelled at once: a cancelled `AsyncStream` still hands out what it
    /// buffered before it ends, so this waits for nothing.
    private static func bufferedServerErrors(_ events: AsyncStream<NATSConnectionEvent>) async -> [String] {
        let reader = Task { () -> [String] in
            var errors: [String] = []
            for await event in events {
                if case .serverError(let text) = event { errors.append(text) }
            }
            return errors
        }
        reader.cancel()
        return await reader.value
    }
}
