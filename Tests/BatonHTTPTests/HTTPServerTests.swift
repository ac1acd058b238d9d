import BatonCore
import BatonHTTP
import Foundation
import Logging
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A node whose answers the test sets: the cluster's statuses, and each node's reply to a
/// command (or no answer at all).
private struct ScriptedNode: BatonHTTPNode {
    var statuses: [NodeStatus]
    var replies: [String: ControlReply]
    var liveness = Liveness(stalledApps: [], nodeAnswered: true, limit: "2s")
    /// Nodes whose batond knows expiring pauses: their pause replies carry `paused_until`
    /// (here the duration asked for, so the test sees what reached the node).
    var expiringPauses: Set<String> = []

    func localStatus() async -> NodeStatus? { statuses.first }
    func clusterStatuses() async throws -> [NodeStatus] { statuses }
    func liveness() async -> Liveness { liveness }
    func send(_ command: ControlCommand, app: String, to target: String?, pauseFor: Duration?, node: String, caller: String) async throws -> ControlReply {
        guard var reply = replies[node] else { throw ScriptedNodeSilent(node: node) }
        if let pauseFor, expiringPauses.contains(node) { reply.pausedUntil = "in \(pauseFor.configString)" }
        return reply
    }
    func metricsText() async -> String { "baton_test 1\n" }
    var history: [BatonEvent] = []
    func eventHistory(count: Int) async throws -> [BatonEvent] { Array(history.suffix(count)) }
    var live: [BatonEvent] = []
    func followEvents() async throws -> AsyncThrowingStream<BatonEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: BatonEvent.self, throwing: (any Error).self)
        for event in live { continuation.yield(event) }
        continuation.finish()
        return stream
    }
}

private struct ScriptedNodeSilent: Error, CustomStringConvertible {
    var node: String
    var description: String { "node \(node) did not answer" }
}

private func status(_ node: String, _ role: AppStatus.Role) -> NodeStatus {
    NodeStatus(
        node: node, instance: "i", cluster: "demo", version: "test", natsConnected: true,
        apps: [AppStatus(name: "web", role: role, paused: false, priority: 100, leader: nil, token: 3, backendRunning: role == .active, lastEvent: nil)])
}

/// Runs the server on a free loopback port for `body`.
private func withServer(_ node: ScriptedNode, token: String?, _ body: (String) async throws -> Void) async throws {
    var config = HTTPConfig(host: "127.0.0.1", port: 0)
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("baton-http-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    if let token {
        let path = directory.appendingPathComponent("token").path
        try "\(token)\n".write(toFile: path, atomically: true, encoding: .utf8)
        config.controlTokenFile = path
    }
    let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
    let application = try BatonHTTPServer(config: config, node: node, logger: Logger(label: "test")).application { port in continuation.yield(port) }
    let server = Task { try await application.run() }
    defer { server.cancel() }
    var iterator = ports.makeAsyncIterator()
    let port = try #require(await iterator.next())
    try await body("http://127.0.0.1:\(port)")
}

private func request(_ url: String, method: String = "GET", token: String? = nil) async throws -> (Int, String) {
    var request = URLRequest(url: URL(string: url)!, timeoutInterval: 10)
    request.httpMethod = method
    if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
    return try await withCheckedThrowingContinuation { continuation in
        URLSession.shared.dataTask(with: request) { data, response, error in
            if let error { return continuation.resume(throwing: error) }
            continuation.resume(returning: ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data ?? Data(), as: UTF8.self)))
        }.resume()
    }
}

@Suite("HTTP server: answers of the routes")
struct HTTPServerTests {
    @Test("a refused command is 409 with the node's message, an unknown target 404, a node that does not answer 502")
    func commandOutcomes() async throws {
        let node = ScriptedNode(
            statuses: [status("a", .active), status("b", .passive)],
            replies: ["a": ControlReply(ok: false, message: "web is not active on a"), "b": ControlReply(ok: true, message: "web paused on b")])
        try await withServer(node, token: "s3cret") { base in
            let (refused, text) = try await request("\(base)/apps/web/stepdown", method: "POST", token: "s3cret")
            #expect(refused == 409 && text.contains("web is not active on a"), "\(text)")
            let (unknown, text2) = try await request("\(base)/apps/web/switchover?to=c", method: "POST", token: "s3cret")
            #expect(unknown == 404 && text2.contains("node c does not run web"), "\(text2)")
        }
        var partial = node
        partial.replies = ["b": ControlReply(ok: true, message: "web paused on b")]
        try await withServer(partial, token: "s3cret") { base in
            let (status, text) = try await request("\(base)/apps/web/pause", method: "POST", token: "s3cret")
            #expect(status == 502 && text.contains("node a did not answer") && text.contains("web paused on b"), "\(text)")
        }
    }

    @Test("pause?for= reaches every node; a bad duration or for on another command is 400; a node that ignores it is refused")
    func expiringPause() async throws {
        var node = ScriptedNode(
            statuses: [status("a", .active), status("b", .passive)],
            replies: ["a": ControlReply(ok: true, message: "web paused on a"), "b": ControlReply(ok: true, message: "web paused on b")])
        node.expiringPauses = ["a", "b"]
        try await withServer(node, token: "s3cret") { base in
            let (ok, text) = try await request("\(base)/apps/web/pause?for=30m", method: "POST", token: "s3cret")
            #expect(ok == 200, "\(text)")
            #expect(text.components(separatedBy: "\"paused_until\" : \"in 30m\"").count == 3, "\(text)")
            let (bad, badText) = try await request("\(base)/apps/web/pause?for=soon", method: "POST", token: "s3cret")
            #expect(bad == 400 && badText.contains("?for=soon is not a positive duration"), "\(badText)")
            let (zero, _) = try await request("\(base)/apps/web/pause?for=0s", method: "POST", token: "s3cret")
            #expect(zero == 400)
            let (other, otherText) = try await request("\(base)/apps/web/stepdown?for=1m", method: "POST", token: "s3cret")
            #expect(other == 400 && otherText.contains("only applies to pause"), "\(otherText)")
        }
        node.expiringPauses = ["b"]  // a's batond predates pause ?for=: its pause would never end
        try await withServer(node, token: "s3cret") { base in
            let (status, text) = try await request("\(base)/apps/web/pause?for=30m", method: "POST", token: "s3cret")
            #expect(status == 409 && text.contains("without an end"), "\(text)")
        }
    }

    @Test("healthz follows the liveness report; checks answer 404 for an unknown app; the page and metrics are served")
    func plainRoutes() async throws {
        var node = ScriptedNode(statuses: [status("a", .active)], replies: [:])
        node.liveness = Liveness(stalledApps: ["web"], nodeAnswered: true, limit: "2s")
        try await withServer(node, token: nil) { base in
            let (health, message) = try await request("\(base)/healthz")
            #expect(health == 503 && message.contains("the loops of web made no progress for 2s"))
            #expect(try await request("\(base)/apps/db/active").0 == 404)
            #expect(try await request("\(base)/apps/web/active").0 == 200)
            let (page, html) = try await request("\(base)/")
            #expect(page == 200 && html.contains("new EventSource(\"events\")") && !html.contains("http://") && !html.contains("https://"))
            #expect(try await request("\(base)/metrics").1 == "baton_test 1\n")
            let (off, why) = try await request("\(base)/apps/web/resume", method: "POST", token: "anything")
            #expect(off == 403 && why.contains("no http.control_token_file"))
        }
    }
}
