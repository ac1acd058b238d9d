import Foundation
import Logging
import NATS
import NIOCore

/// One check of a startup permission probe: a publish or a subscription that needs one rule of a
/// ``BatonPermissions`` set, made so that it changes nothing on the server.
///
/// - A publish goes to a concrete subject under the rule (`*` and `>` replaced by
///   ``probeToken``) as a request, with a body and headers that every receiver refuses: a stream
///   publish carries `Nats-Expected-Stream: _baton_permission_probe` (JetStream rejects it
///   unstored); a stream or consumer create names another stream than its subject (refused
///   before anything is looked at); a purge is filtered to a subject that holds no message;
///   consumer subjects name the consumer `_baton_permission_probe`, which never exists.
/// - A subscription is made on the rule's subject and removed at once.
///
/// The server answers a denied one with a permissions violation naming the subject; anything
/// else (an error reply, no responders, a timeout) means the permission is there.
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

    /// The probes of every rule of `permissions`, publishes first, in the set's order.
    public static func plan(_ permissions: BatonPermissions) -> [PermissionProbe] {
        permissions.publish.map(publishProbe) + permissions.subscribe.map {
            PermissionProbe(operation: .subscribe, subject: $0.subject, payload: "", headers: [:], rule: $0)
        }
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
            let mismatchedStream = "{\"name\":\"\(probeToken)\",\"stream_name\":\"\(probeToken)\",\"config\":{\"durable_name\":\"\(probeToken)\"}}"
            if verb.hasPrefix("STREAM.CREATE.") || verb.hasPrefix("STREAM.UPDATE.") || verb.hasPrefix("CONSUMER.CREATE.")
                || verb.hasPrefix("CONSUMER.DURABLE.CREATE.")
            {
                payload = mismatchedStream
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
    /// Runs `probes` one after the other and returns the first the server refused, or nil.
    ///
    /// - Parameters:
    ///   - timeout: how long a publish probe waits for an answer; one that gets none counts as
    ///     allowed (the server reports a denial at once).
    public static func firstDenied(_ probes: [PermissionProbe], client: NATSClient, timeout: Duration = .seconds(2), logger: Logger) async throws
        -> PermissionProbeDenied?
    {
        for probe in probes {
            switch probe.operation {
            case .publish:
                var headers: NATSHeaders?
                if !probe.headers.isEmpty {
                    var built = NATSHeaders()
                    for (name, value) in probe.headers.sorted(by: { $0.key < $1.key }) { built.append(name: name, value: value) }
                    headers = built
                }
                do {
                    _ = try await client.request(probe.subject, payload: ByteBuffer(string: probe.payload), headers: headers, timeout: timeout)
                } catch let error as NATSError where error.code == .permissionViolation {
                    return PermissionProbeDenied(probe: probe, serverError: error.message)
                } catch let error as NATSError where error.code == .noResponders || error.code == .timeout {
                    logger.trace("permission probe: allowed", metadata: ["probe": "\(probe)", "answer": "\(error.code)"])
                }
            case .subscribe:
                // A denied subscription is answered with -ERR before the PONG of the flush that
                // follows it, so the error is in `events` by the time the flush returns.
                let events = client.events()
                let subscription = try await client.subscribe(to: probe.subject)
                try await client.flush(timeout: timeout)
                try? await subscription.unsubscribe()
                if let denial = await Self.subscriptionDenial(of: probe.subject, in: events) {
                    return PermissionProbeDenied(probe: probe, serverError: denial)
                }
            }
        }
        return nil
    }

    /// The permissions violation for a subscription to `subject` among the events already
    /// buffered in `events` (it waits for nothing more).
    private static func subscriptionDenial(of subject: String, in events: AsyncStream<NATSConnectionEvent>) async -> String? {
        let drained = Task { () -> String? in
            for await event in events {
                if case .serverError(let text) = event, NATSClient.isSubscriptionDenial(text, subject: subject) {
                    return text
                }
            }
            return nil
        }
        // Everything the server sent before the flush's PONG is buffered already; give the
        // reading task a moment to take it, then end the stream.
        try? await Task.sleep(for: .milliseconds(50))
        drained.cancel()
        return await drained.value
    }
}
