import Foundation
import NIOCore
import Synchronization
import TestSupport
import Testing

@testable import NATS
import NATSTestSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Pure tests: validation, JSON shapes, timestamps, error headers

@Suite("MicroService (pure)")
struct MicroServiceTests {
    // MARK: Validation

    @Test(arguments: ["a", "baton", "svc_1-x", "BATON-node_2", "0"])
    func acceptsServiceNames(_ name: String) throws {
        try MicroServiceConfig(name: name, version: "1.0.0").validate()
    }

    @Test(arguments: ["", "a b", "a.b", "a*", "a>", "nœud", "a/b", "$SRV"])
    func rejectsServiceNames(_ name: String) {
        let error = #expect(throws: MicroValidationError.self) {
            try MicroServiceConfig(name: name, version: "1.0.0").validate()
        }
        #expect(error?.field == .serviceName)
        #expect(error?.value == name)
    }

    @Test(arguments: [
        "0.0.0", "1.2.3", "10.20.30", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-0.3.7", "1.0.0-x.7.z.92",
        "1.0.0-x-y-z.--", "1.0.0+20130313144700", "1.0.0-beta+exp.sha.5114f85", "1.0.0-rc.1+build.01",
        "99999999999999999999.0.0",
    ])
    func acceptsSemanticVersions(_ version: String) throws {
        try MicroServiceConfig(name: "svc", version: version).validate()
    }

    @Test(arguments: [
        "", "1", "1.2", "1.2.3.4", "01.2.3", "1.02.3", "1.2.03", "v1.2.3", "1.2.3-", "1.2.3-01", "1.2.3+",
        "1.2.3-a..b", "1.2.3-a_b", "1.2.3+a_b", " 1.2.3", "1.2.3 ", "1.2.x", "1..3", "-1.2.3", "1.2.3-ü",
    ])
    func rejectsVersionsThatAreNotSemantic(_ version: String) {
        let error = #expect(throws: MicroValidationError.self) {
            try MicroServiceConfig(name: "svc", version: version).validate()
        }
        #expect(error?.field == .version)
        #expect(error?.description.contains("semantic version such as 1.2.3") == true, "\(String(describing: error))")
    }

    @Test func versionErrorsSayWhatIsWrong() {
        func reason(_ version: String) -> String {
            do {
                try MicroValidation.checkSemanticVersion(version)
                return "accepted"
            } catch {
                return error.reason
            }
        }
        #expect(reason("1.2").contains("exactly three dot-separated numbers, found 2 parts"))
        #expect(reason("1.02.3").contains("minor version \"02\" has a leading zero"))
        #expect(reason("1.2.x").contains("patch version \"x\" is not a number"))
        #expect(reason("1.2.3-rc.01").contains("pre-release identifier \"01\" is a number with a leading zero"))
        #expect(reason("1.2.3+a..b").contains("build metadata has an empty identifier"))
    }

    @Test func rejectsBadQueueGroupsAndConcurrencyLimits() {
        #expect(throws: MicroValidationError.self) {
            try MicroServiceConfig(name: "svc", version: "1.0.0", queueGroup: "a b").validate()
        }
        #expect(throws: MicroValidationError.self) {
            try MicroServiceConfig(name: "svc", version: "1.0.0", queueGroup: "").validate()
        }
        #expect(throws: MicroValidationError.self) {
            try MicroServiceConfig(name: "svc", version: "1.0.0", maxConcurrentRequestsPerEndpoint: 0).validate()
        }
        #expect(throws: Never.self) {
            try MicroServiceConfig(name: "svc", version: "1.0.0", queueGroup: .disabled).validate()
        }
    }

    @Test func validatesEndpointSubjectsAndGroupPrefixes() throws {
        for subject in ["a", "a.b.c", "a.*.c", "a.>", "baton.demo.node-1.status", "*"] {
            try MicroValidation.checkEndpointSubject(subject)
        }
        for subject in ["", "a..b", "a b", "a.>.c", ".a", "a.", "$SRV", "$SRV.PING", "$SRV.anything.else"] {
            #expect(throws: MicroValidationError.self, "\(subject)") { try MicroValidation.checkEndpointSubject(subject) }
        }
        for prefix in ["baton", "baton.demo", "baton.*.x"] {
            try MicroValidation.checkGroupPrefix(prefix)
        }
        for prefix in ["", ">", "a.>", "a..b", "a b"] {
            #expect(throws: MicroValidationError.self, "\(prefix)") { try MicroValidation.checkGroupPrefix(prefix) }
        }
    }

    @Test func startRefusesAnInvalidConfigWithoutSubscribing() async throws {
        let client = try NATSClient(options: NATSClientOptions(servers: ["nats://127.0.0.1:1"]))
        let error = await #expect(throws: MicroValidationError.self) {
            _ = try await MicroService.start(client: client, config: MicroServiceConfig(name: "svc", version: "1.0"))
        }
        #expect(error?.description.hasPrefix("invalid service version \"1.0\": ") == true)
        await client.close()
    }

    @Test func addEndpointValidatesNameSubjectAndQueueGroup() async throws {
        try await withOfflineService { service in
            await #expect(throws: MicroValidationError.self) {
                try await service.addEndpoint(name: "bad name") { _ in MicroResponse() }
            }
            await #expect(throws: MicroValidationError.self) {
                try await service.addEndpoint(name: "ok", subject: "a..b") { _ in MicroResponse() }
            }
            await #expect(throws: MicroValidationError.self) {
                try await service.addEndpoint(name: "ok", subject: "$SRV.PING.x") { _ in MicroResponse() }
            }
            await #expect(throws: MicroValidationError.self) {
                try await service.addEndpoint(name: "ok", queueGroup: "has space") { _ in MicroResponse() }
            }
            #expect(throws: MicroValidationError.self) { try service.group("a.>") }
            #expect(service.info().endpoints.isEmpty, "a rejected endpoint is not added")
        }
    }

    // MARK: Subjects

    @Test func controlSubjects() {
        #expect(MicroService.controlSubject(.ping) == "$SRV.PING")
        #expect(MicroService.controlSubject(.info, name: "baton") == "$SRV.INFO.baton")
        #expect(MicroService.controlSubject(.stats, name: "baton", id: "ABC") == "$SRV.STATS.baton.ABC")
        #expect(MicroDiscoveryVerb.allCases.map(\.rawValue) == ["PING", "INFO", "STATS"])
    }

    @Test func endpointSubjectsAndQueueGroupsResolve() async throws {
        try await withOfflineService(queueGroup: "svc-q") { service in
            let plain = try await service.addEndpoint(name: "plain") { _ in MicroResponse() }
            #expect(plain == MicroEndpointInfo(name: "plain", subject: "plain", queueGroup: "svc-q", metadata: [:]))
            let custom = try await service.addEndpoint(name: "custom", subject: "x.y", queueGroup: .disabled, metadata: ["k": "v"]) { _ in
                MicroResponse()
            }
            #expect(custom == MicroEndpointInfo(name: "custom", subject: "x.y", queueGroup: "", metadata: ["k": "v"]))
            let group = try service.group("baton.demo", queueGroup: "g")
            let inGroup = try await group.addEndpoint(name: "status") { _ in MicroResponse() }
            #expect(inGroup.subject == "baton.demo.status")
            #expect(inGroup.queueGroup == "g")
            let nested = try group.group("node-1")
            let inNested = try await nested.addEndpoint(name: "stepdown", subject: "act.*", queueGroup: "own") { _ in MicroResponse() }
            #expect(inNested.subject == "baton.demo.node-1.act.*")
            #expect(inNested.queueGroup == "own")
            let inheriting = try await service.group("other").addEndpoint(name: "e") { _ in MicroResponse() }
            #expect(inheriting.queueGroup == "svc-q")
            #expect(service.info().endpoints.map(\.name) == ["plain", "custom", "status", "stepdown", "e"])
        }
    }

    // MARK: JSON shapes (as the NATS CLI's schemas require)

    @Test func pingJSONHasTheSchemaFields() async throws {
        try await withOfflineService { service in
            let object = try jsonObject(try JSONEncoder().encode(service.ping()))
            #expect(Set(object.keys) == ["type", "name", "id", "version", "metadata"])
            #expect(object["type"] as? String == "io.nats.micro.v1.ping_response")
            #expect(object["name"] as? String == "shapes")
            #expect(object["id"] as? String == service.id)
            #expect(object["version"] as? String == "1.2.3-rc.1")
            #expect(object["metadata"] as? [String: String] == [:], "metadata is an object, never null")
        }
    }

    @Test func infoJSONHasTheSchemaFields() async throws {
        try await withOfflineService(description: "", metadata: ["zone": "a"]) { service in
            try await service.addEndpoint(name: "status", subject: "baton.status") { _ in MicroResponse() }
            try await service.addEndpoint(name: "tagged", metadata: ["x": "y"]) { _ in MicroResponse() }
            let object = try jsonObject(try JSONEncoder().encode(service.info()))
            #expect(Set(object.keys) == ["type", "name", "id", "version", "metadata", "description", "endpoints"])
            #expect(object["type"] as? String == "io.nats.micro.v1.info_response")
            #expect(object["description"] as? String == "", "description is a string even when empty")
            #expect(object["metadata"] as? [String: String] == ["zone": "a"])
            let endpoints = try #require(object["endpoints"] as? [[String: Any]])
            #expect(endpoints.count == 2)
            for endpoint in endpoints {
                #expect(Set(endpoint.keys) == ["name", "subject", "queue_group", "metadata"])
                #expect(endpoint["metadata"] is [String: String])
            }
            #expect(endpoints[0]["subject"] as? String == "baton.status")
            #expect(endpoints[0]["queue_group"] as? String == "q")
            #expect(endpoints[0]["metadata"] as? [String: String] == [:])
            #expect(endpoints[1]["metadata"] as? [String: String] == ["x": "y"])
        }
    }

    @Test func infoJSONOfAServiceWithoutEndpointsHasAnEmptyArray() async throws {
        try await withOfflineService { service in
            let object = try jsonObject(try JSONEncoder().encode(service.info()))
            #expect((object["endpoints"] as? [Any])?.isEmpty == true)
        }
    }

    @Test func statsJSONHasTheSchemaFieldsWithIntegerNanoseconds() async throws {
        try await withOfflineService { service in
            try await service.addEndpoint(name: "status") { _ in MicroResponse() }
            let data = try JSONEncoder().encode(service.stats())
            let object = try jsonObject(data)
            #expect(Set(object.keys) == ["type", "name", "id", "version", "metadata", "started", "endpoints"])
            #expect(object["type"] as? String == "io.nats.micro.v1.stats_response")
            let started = try #require(object["started"] as? String)
            #expect(started.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z/) != nil, "\(started)")
            let endpoints = try #require(object["endpoints"] as? [[String: Any]])
            #expect(Set(endpoints[0].keys) == [
                "name", "subject", "queue_group", "num_requests", "num_errors", "last_error", "processing_time",
                "average_processing_time",
            ])
            #expect(endpoints[0]["last_error"] as? String == "", "last_error is a string even without errors")
            // Strictly typed: integers for the counters and nanoseconds.
            let strict = try JSONDecoder().decode(StrictStatsDocument.self, from: data)
            #expect(strict.endpoints[0].processing_time == 0)
            #expect(strict.endpoints[0].average_processing_time == 0)
            #expect(strict.endpoints[0].num_requests == 0)
        }
    }

    @Test func statsEncodeDurationsAsIntegerNanoseconds() throws {
        let stats = MicroEndpointStats(
            name: "e", subject: "s", queueGroup: "q", numRequests: 3, numErrors: 1, lastError: "500:boom",
            processingTime: .milliseconds(1500) + .nanoseconds(7), averageProcessingTime: .nanoseconds(500_000_002))
        let text = String(decoding: try JSONEncoder().encode(stats), as: UTF8.self)
        #expect(text.contains(#""processing_time":1500000007"#))
        #expect(text.contains(#""average_processing_time":500000002"#))
        #expect(try JSONDecoder().decode(MicroEndpointStats.self, from: Data(text.utf8)) == stats)
    }

    @Test func responsesRoundTrip() throws {
        let started = Date(timeIntervalSince1970: 1_709_211_909.123456)
        let stats = MicroStatsResponse(
            name: "svc", id: "ID", version: "1.0.0", metadata: ["a": "b"], started: started,
            endpoints: [MicroEndpointStats(name: "e", subject: "s", queueGroup: "", numRequests: 2)])
        let decoded = try JSONDecoder().decode(MicroStatsResponse.self, from: JSONEncoder().encode(stats))
        #expect(decoded.endpoints == stats.endpoints)
        #expect(abs(decoded.started.timeIntervalSince(started)) < 0.000_001)
        let info = MicroInfoResponse(
            name: "svc", id: "ID", version: "1.0.0", metadata: [:], description: "d",
            endpoints: [MicroEndpointInfo(name: "e", subject: "s", queueGroup: "q", metadata: ["m": "n"])])
        #expect(try JSONDecoder().decode(MicroInfoResponse.self, from: JSONEncoder().encode(info)) == info)
        let ping = MicroPingResponse(name: "svc", id: "ID", version: "1.0.0", metadata: ["a": "b"])
        #expect(try JSONDecoder().decode(MicroPingResponse.self, from: JSONEncoder().encode(ping)) == ping)
    }

    /// Other implementations send `null` where the schema allows it (nats-py: description, endpoint
    /// metadata, `data`) and timestamps with other precisions (nats-py: milliseconds; Go:
    /// nanoseconds).
    @Test func decodesWhatOtherImplementationsSend() throws {
        let info = #"""
            {"type":"io.nats.micro.v1.info_response","id":"X","name":"py","version":"1.0.0","description":null,
             "endpoints":[{"name":"e","subject":"s","queue_group":"q","metadata":null}],"metadata":null}
            """#
        let decodedInfo = try JSONDecoder().decode(MicroInfoResponse.self, from: Data(info.utf8))
        #expect(decodedInfo.description == "")
        #expect(decodedInfo.metadata == [:])
        #expect(decodedInfo.endpoints == [MicroEndpointInfo(name: "e", subject: "s", queueGroup: "q", metadata: [:])])

        let stats = #"""
            {"type":"io.nats.micro.v1.stats_response","name":"py","id":"X","version":"1.0.0",
             "started":"2024-02-29T13:05:09.123Z","metadata":{},
             "endpoints":[{"name":"e","subject":"s","queue_group":"q","num_requests":2,"num_errors":1,
                           "last_error":"","processing_time":30,"average_processing_time":15,"data":null}]}
            """#
        let decodedStats = try JSONDecoder().decode(MicroStatsResponse.self, from: Data(stats.utf8))
        #expect(abs(decodedStats.started.timeIntervalSince1970 - 1_709_211_909.123) < 0.000_001)
        #expect(decodedStats.endpoints.first?.averageProcessingTime == .nanoseconds(15))

        let goStats = stats.replacingOccurrences(of: "2024-02-29T13:05:09.123Z", with: "2024-02-29T13:05:09.123456789Z")
        #expect(try JSONDecoder().decode(MicroStatsResponse.self, from: Data(goStats.utf8)).endpoints.count == 1)
    }

    // MARK: Errors

    @Test func serviceErrorHeadersAndReplyParsing() {
        let error = MicroServiceError(code: 404, description: "app \"web\" not found", payload: ByteBuffer(string: "{}"))
        #expect(error.headers["Nats-Service-Error"] == "app \"web\" not found")
        #expect(error.headers["Nats-Service-Error-Code"] == "404")
        let reply = NATSMessage(subject: "_INBOX.x", headers: error.headers, payload: ByteBuffer(string: "{}"))
        #expect(MicroServiceError(reply: reply) == error)

        let multiline = MicroServiceError(code: 500, description: "first\r\nsecond\nthird")
        #expect(multiline.headers["Nats-Service-Error"] == "first second third")

        #expect(MicroServiceError(reply: NATSMessage(subject: "x", payload: ByteBuffer())) == nil)
        var other = NATSHeaders()
        other["X-Other"] = "1"
        #expect(MicroServiceError(reply: NATSMessage(subject: "x", headers: other, payload: ByteBuffer())) == nil)
        var textual = NATSHeaders()
        textual["Nats-Service-Error-Code"] = "oops"
        #expect(MicroServiceError(reply: NATSMessage(subject: "x", headers: textual, payload: ByteBuffer()))?.code == 500)
    }

    @Test func requestAndResponseConveniences() throws {
        struct Command: Codable, Equatable { var app: String }
        let request = MicroRequest(endpoint: "e", subject: "s", payload: ByteBuffer(string: #"{"app":"web"}"#))
        #expect(try request.decodeJSON(Command.self) == Command(app: "web"))
        #expect(request.string == #"{"app":"web"}"#)
        let malformed = MicroRequest(endpoint: "e", subject: "s", payload: ByteBuffer(string: "nope"))
        let error = #expect(throws: MicroServiceError.self) { try malformed.decodeJSON(Command.self) }
        #expect(error?.code == 400)
        let response = try MicroResponse(json: Command(app: "db"))
        #expect(String(buffer: response.payload) == #"{"app":"db"}"#)
        #expect(String(buffer: MicroResponse(string: "hi").payload) == "hi")
        let queueGroup: MicroQueueGroup = "workers"
        #expect(queueGroup.name == "workers")
        #expect(MicroQueueGroup.disabled.name == nil)
        #expect(MicroQueueGroup.default.name == "q")
    }
}

// MARK: - Integration tests against nats-server

@Suite("MicroService (nats-server)", .serialized)
struct MicroServiceIntegrationTests {
    @Test(arguments: NATSServerKind.allCases)
    func endpointsAnswerRequests(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: .init(jetStream: false)) { server in
            try await withClient(server) { client in
                let service = try await MicroService.start(client: client, config: MicroServiceConfig(name: "echo", version: "1.0.0"))
                try await service.addEndpoint(name: "echo", subject: "test.echo") { request in
                    var headers = NATSHeaders()
                    headers["X-Subject"] = request.subject
                    headers["X-Trace"] = request.headers?["X-Trace"] ?? "none"
                    headers["X-Endpoint"] = request.endpoint
                    return MicroResponse(payload: request.payload, headers: headers)
                }
                try await service.addEndpoint(name: "items", subject: "test.items.*") { request in
                    MicroResponse(string: "item " + (request.subject.split(separator: ".").last.map(String.init) ?? ""))
                }
                try await service.addEndpoint(name: "bare") { _ in MicroResponse(string: "bare") }

                var headers = NATSHeaders()
                headers["X-Trace"] = "t-1"
                let reply = try await client.request("test.echo", payload: ByteBuffer(string: "hello\r\nworld"), headers: headers)
                #expect(reply.string == "hello\r\nworld")
                #expect(reply.headers?["X-Subject"] == "test.echo")
                #expect(reply.headers?["X-Trace"] == "t-1")
                #expect(reply.headers?["X-Endpoint"] == "echo")
                #expect(MicroServiceError(reply: reply) == nil)

                #expect(try await client.request("test.items.42").string == "item 42")
                #expect(try await client.request("bare").string == "bare", "the subject defaults to the endpoint name")
                let empty = try await client.request("test.echo")
                #expect(empty.payload.readableBytes == 0)
                await service.stop()
            }
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func handlerErrorsBecomeServiceErrorHeaders(kind: NATSServerKind) async throws {
        struct DiskFull: Error, CustomStringConvertible {
            var description: String { "disk full on /var/lib/baton" }
        }
        try await withNATSServer(kind, config: .init(jetStream: false)) { server in
            try await withClient(server) { client in
                let service = try await MicroService.start(client: client, config: MicroServiceConfig(name: "errors", version: "1.0.0"))
                try await service.addEndpoint(name: "missing", subject: "err.missing") { _ in
                    throw MicroServiceError(code: 404, description: "app web not found", payload: ByteBuffer(string: #"{"app":"web"}"#))
                }
                try await service.addEndpoint(name: "crash", subject: "err.crash") { _ in throw DiskFull() }
                try await service.addEndpoint(name: "multiline", subject: "err.multiline") { _ in
                    throw MicroServiceError(code: 409, description: "line one\nline two")
                }
                try await service.addEndpoint(name: "badheader", subject: "err.badheader") { _ in
                    var headers = NATSHeaders()
                    headers["Bad"] = "a\r\nb"
                    return MicroResponse(string: "never sent", headers: headers)
                }

                let missing = try await client.request("err.missing")
                #expect(missing.headers?["Nats-Service-Error"] == "app web not found")
                #expect(missing.headers?["Nats-Service-Error-Code"] == "404")
                #expect(missing.string == #"{"app":"web"}"#)
                #expect(MicroServiceError(reply: missing) == MicroServiceError(code: 404, description: "app web not found", payload: ByteBuffer(string: #"{"app":"web"}"#)))

                let crash = try #require(MicroServiceError(reply: try await client.request("err.crash")))
                #expect(crash.code == 500)
                #expect(crash.description == "disk full on /var/lib/baton")

                let multiline = try #require(MicroServiceError(reply: try await client.request("err.multiline")))
                #expect(multiline == MicroServiceError(code: 409, description: "line one line two"))

                let unsendable = try #require(MicroServiceError(reply: try await client.request("err.badheader")))
                #expect(unsendable.code == 500)
                #expect(unsendable.description.contains("could not send the reply"))

                let stats = service.stats().endpoints
                #expect(stats.map(\.numErrors) == [1, 1, 1, 1])
                #expect(stats[0].lastError == "404:app web not found")
                #expect(stats[1].lastError == "500:disk full on /var/lib/baton")
                await service.stop()
            }
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func discoveryAnswersOnAllThreeSubjectForms(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: .init(jetStream: false)) { server in
            try await withClient(server) { first in
                try await withClient(server) { second in
                    try await withClient(server) { observer in
                        let alphaConfig = MicroServiceConfig(
                            name: "alpha", version: "2.1.0", description: "the alpha service", metadata: ["node": "n1"])
                        let alpha1 = try await MicroService.start(client: first, config: alphaConfig)
                        var alpha2Config = alphaConfig
                        alpha2Config.metadata = ["node": "n2"]
                        let alpha2 = try await MicroService.start(client: second, config: alpha2Config)
                        // Two services on one connection are independent instances.
                        let beta = try await MicroService.start(client: first, config: MicroServiceConfig(name: "beta", version: "0.1.0"))
                        for service in [alpha1, alpha2, beta] {
                            try await service.addEndpoint(name: "work", subject: "\(service.config.name).work") { _ in MicroResponse() }
                        }
                        #expect(Set([alpha1.id, alpha2.id, beta.id]).count == 3)

                        let discovery = MicroServiceDiscovery(client: observer, replyWindow: .seconds(2))
                        let everyone = Set([alpha1.id, alpha2.id, beta.id])
                        let alphas = Set([alpha1.id, alpha2.id])

                        #expect(Set(try await discovery.ping(maxReplies: 3).map(\.id)) == everyone)
                        #expect(Set(try await discovery.ping(name: "alpha", maxReplies: 2).map(\.id)) == alphas)
                        let one = try await discovery.ping(name: "alpha", id: alpha2.id)
                        #expect(one == [alpha2.ping()])
                        #expect(one.first?.metadata == ["node": "n2"])

                        #expect(Set(try await discovery.info(maxReplies: 3).map(\.id)) == everyone)
                        #expect(Set(try await discovery.info(name: "alpha", maxReplies: 2).map(\.id)) == alphas)
                        let info = try #require(try await discovery.info(name: "beta", id: beta.id).first)
                        #expect(info == beta.info())
                        #expect(info.endpoints == [MicroEndpointInfo(name: "work", subject: "beta.work", queueGroup: "q", metadata: [:])])

                        #expect(Set(try await discovery.stats(maxReplies: 3).map(\.id)) == everyone)
                        #expect(Set(try await discovery.stats(name: "alpha", maxReplies: 2).map(\.id)) == alphas)
                        let stats = try #require(try await discovery.stats(name: "alpha", id: alpha1.id).first)
                        #expect(stats.id == alpha1.id)
                        #expect(stats.endpoints.map(\.subject) == ["alpha.work"])

                        // Nobody else answers: wait out a window without a reply limit.
                        let shortWindow = MicroServiceDiscovery(client: observer, replyWindow: .milliseconds(500))
                        #expect(try await shortWindow.replies(verb: .ping, name: "alpha").count == 2)
                        #expect(try await shortWindow.replies(verb: .info, name: "beta").count == 1)
                        #expect(try await shortWindow.replies(verb: .stats, name: "alpha", id: beta.id, maxReplies: 5).isEmpty)
                        #expect(try await shortWindow.replies(verb: .ping, name: "gamma").isEmpty)

                        // The raw documents carry the right type on every form.
                        for verb in MicroDiscoveryVerb.allCases {
                            for (name, id) in [(nil, nil), ("beta", nil), ("beta", beta.id)] as [(String?, String?)] {
                                let replies = try await discovery.replies(verb: verb, name: name, id: id, maxReplies: name == nil ? 3 : 1)
                                #expect(!replies.isEmpty, "\(verb) \(name ?? "-") \(id ?? "-")")
                                for reply in replies {
                                    let object = try jsonObject(Data(reply.payload.readableBytesView))
                                    #expect(object["type"] as? String == "io.nats.micro.v1.\(verb.rawValue.lowercased())_response")
                                }
                            }
                        }
                        for service in [alpha1, alpha2, beta] { await service.stop() }
                    }
                }
            }
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func statsCountRequestsErrorsAndTime(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: .init(jetStream: false)) { server in
            try await withClient(server) { client in
                let before = Date()
                let service = try await MicroService.start(client: client, config: MicroServiceConfig(name: "counted", version: "1.0.0"))
                try await service.addEndpoint(name: "work", subject: "stats.work") { request in
                    switch request.string {
                    case "conflict": throw MicroServiceError(code: 409, description: "already running")
                    case "crash": throw CancellationError()
                    default:
                        try await Task.sleep(for: .milliseconds(20))
                        return MicroResponse(string: "done")
                    }
                }
                try await service.addEndpoint(name: "idle", subject: "stats.idle") { _ in MicroResponse() }

                for _ in 0..<5 { _ = try await client.request("stats.work", payload: ByteBuffer(string: "job")) }
                for _ in 0..<2 { _ = try await client.request("stats.work", payload: ByteBuffer(string: "conflict")) }
                _ = try await client.request("stats.work", payload: ByteBuffer(string: "crash"))
                // A publish without a reply subject is handled and counted, and answered by no one.
                try await client.publish("stats.work", payload: ByteBuffer(string: "job"))
                try await eventually("9 requests counted (are \(service.stats().endpoints[0].numRequests))", timeout: .seconds(10), every: .milliseconds(20)) { service.stats().endpoints[0].numRequests == 9 }

                let discovery = MicroServiceDiscovery(client: client)
                let stats = try #require(try await discovery.stats(name: "counted", id: service.id).first)
                #expect(stats.started >= before.addingTimeInterval(-0.001) && stats.started <= Date())
                let work = stats.endpoints[0]
                #expect(work.name == "work")
                #expect(work.subject == "stats.work")
                #expect(work.queueGroup == "q")
                #expect(work.numRequests == 9)
                #expect(work.numErrors == 3)
                #expect(work.lastError.hasPrefix("500:"), "\(work.lastError)")
                #expect(work.processingTime >= .milliseconds(6 * 20))
                let average = work.processingTime / 9
                #expect(abs((work.averageProcessingTime - average) / .nanoseconds(1)) <= 1)
                let idle = stats.endpoints[1]
                #expect(idle.numRequests == 0 && idle.numErrors == 0 && idle.lastError == "")
                #expect(idle.processingTime == .zero && idle.averageProcessingTime == .zero)

                // The wire document has integer nanoseconds.
                let raw = try #require(try await discovery.replies(verb: .stats, name: "counted", id: service.id).first)
                let strict = try JSONDecoder().decode(StrictStatsDocument.self, from: Data(raw.payload.readableBytesView))
                #expect(strict.endpoints[0].processing_time >= 120_000_000)

                service.reset()
                let reset = try #require(try await discovery.stats(name: "counted", id: service.id).first)
                #expect(reset.started > stats.started)
                #expect(reset.endpoints[0].numRequests == 0)
                #expect(reset.endpoints[0].numErrors == 0)
                #expect(reset.endpoints[0].lastError == "")
                #expect(reset.endpoints[0].processingTime == .zero)
                _ = try await client.request("stats.work", payload: ByteBuffer(string: "job"))
                #expect(service.stats().endpoints[0].numRequests == 1)
                await service.stop()
            }
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func queueGroupsSpreadRequestsOrBroadcastThem(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: .init(jetStream: false)) { server in
            try await withClient(server) { client in
                let calls = CallCounter()
                var services: [MicroService] = []
                for _ in 0..<2 {
                    let service = try await MicroService.start(client: client, config: MicroServiceConfig(name: "worker", version: "1.0.0"))
                    let id = service.id
                    try await service.addEndpoint(name: "job", subject: "jobs.run") { _ in
                        calls.count("job")
                        return MicroResponse(string: id)
                    }
                    try await service.addEndpoint(name: "notify", subject: "jobs.notify", queueGroup: .disabled) { _ in
                        calls.count("notify")
                        return MicroResponse(string: id)
                    }
                    services.append(service)
                }
                let custom = try await MicroService.start(
                    client: client, config: MicroServiceConfig(name: "custom", version: "1.0.0", queueGroup: "workers"))
                try await custom.addEndpoint(name: "e", subject: "custom.e") { _ in MicroResponse() }

                let inbox = client.newInbox()
                let replies = try await client.subscribe(to: inbox)
                for _ in 0..<10 { try await client.publish("jobs.run", replyTo: inbox) }
                try await client.publish("jobs.notify", replyTo: inbox)
                try await eventually("handler calls job: 10, notify: 2 (are \(calls.values))", timeout: .seconds(10), every: .milliseconds(20)) { calls.values == ["job": 10, "notify": 2] }
                // Let any extra reply arrive before counting.
                try await client.flush()
                try await Task.sleep(for: .milliseconds(200))
                try await replies.unsubscribe()
                var count = 0
                for await _ in replies { count += 1 }
                #expect(count == 12, "10 queue-group requests answered once each, 1 broadcast answered twice")
                #expect(calls.values == ["job": 10, "notify": 2])

                let endpoints = services[0].info().endpoints
                #expect(endpoints.map(\.queueGroup) == ["q", ""])
                #expect(custom.info().endpoints.map(\.queueGroup) == ["workers"])
                #expect(try await client.request("custom.e").payload.readableBytes == 0)
                for service in services + [custom] { await service.stop() }
            }
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func groupsPrefixEndpointSubjects(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: .init(jetStream: false)) { server in
            try await withClient(server) { client in
                let service = try await MicroService.start(client: client, config: MicroServiceConfig(name: "baton", version: "1.0.0"))
                let node = try service.group("baton.demo.node-1", queueGroup: "node-1")
                try await node.addEndpoint(name: "status") { request in MicroResponse(string: "status via \(request.subject)") }
                let apps = try node.group("app")
                try await apps.addEndpoint(name: "stepdown", subject: "*.stepdown") { request in
                    MicroResponse(string: "stepdown " + request.subject.split(separator: ".")[4])
                }
                #expect(try await client.request("baton.demo.node-1.status").string == "status via baton.demo.node-1.status")
                #expect(try await client.request("baton.demo.node-1.app.web.stepdown").string == "stepdown web")
                let info = try #require(try await MicroServiceDiscovery(client: client).info(name: "baton", id: service.id).first)
                #expect(info.endpoints == [
                    MicroEndpointInfo(name: "status", subject: "baton.demo.node-1.status", queueGroup: "node-1", metadata: [:]),
                    MicroEndpointInfo(name: "stepdown", subject: "baton.demo.node-1.app.*.stepdown", queueGroup: "node-1", metadata: [:]),
                ])
                await service.stop()
            }
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func handlersRunConcurrentlyWithinTheLimitAndNeverBlockDiscovery(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: .init(jetStream: false)) { server in
            try await withClient(server) { client in
                let service = try await MicroService.start(
                    client: client,
                    config: MicroServiceConfig(name: "slow", version: "1.0.0", maxConcurrentRequestsPerEndpoint: 3))
                let gate = Gate()
                try await service.addEndpoint(name: "wait", subject: "slow.wait") { request in
                    await gate.pass()
                    return MicroResponse(payload: request.payload)
                }
                try await service.addEndpoint(name: "fast", subject: "slow.fast") { _ in MicroResponse(string: "fast") }

                try await withThrowingTaskGroup(of: String.self) { group in
                    for index in 0..<5 {
                        group.addTask {
                            try await client.request("slow.wait", payload: ByteBuffer(string: "\(index)"), timeout: .seconds(20)).string
                        }
                    }
                    // Three handlers run at once (the limit), the others wait in the buffer.
                    try await eventually("3 handlers waiting at the gate", timeout: .seconds(10), every: .milliseconds(20)) { await gate.waiting == 3 }
                    try await Task.sleep(for: .milliseconds(200))
                    #expect(await gate.waiting == 3)
                    #expect(await gate.maximumWaiting == 3)
                    // Other endpoints and discovery still answer while those handlers are busy.
                    #expect(try await client.request("slow.fast", timeout: .seconds(5)).string == "fast")
                    let ping = try await MicroServiceDiscovery(client: client).ping(name: "slow", id: service.id)
                    #expect(ping.map(\.id) == [service.id])
                    await gate.open()
                    var answers: [String] = []
                    for try await answer in group { answers.append(answer) }
                    #expect(answers.sorted() == ["0", "1", "2", "3", "4"])
                }
                #expect(service.stats().endpoints[0].numRequests == 5)
                await service.stop()
            }
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func stopAnswersRequestsInFlightThenGoesQuiet(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: .init(jetStream: false)) { server in
            try await withClient(server) { client in
                let service = try await MicroService.start(client: client, config: MicroServiceConfig(name: "stopping", version: "1.0.0"))
                let gate = Gate()
                try await service.addEndpoint(name: "slow", subject: "stop.slow") { _ in
                    await gate.pass()
                    return MicroResponse(string: "finished")
                }
                #expect(service.isRunning)
                let inFlight = Task { try await client.request("stop.slow", timeout: .seconds(20)).string }
                try await eventually("1 handler waiting at the gate", timeout: .seconds(10), every: .milliseconds(20)) { await gate.waiting == 1 }
                let stopping = Task { await service.stop() }
                // Stop unsubscribes at once: discovery goes quiet while the handler still runs.
                try await eventually("discovery going quiet for the stopping service", timeout: .seconds(10), every: .milliseconds(20)) {
                    (try? await MicroServiceDiscovery(client: client, replyWindow: .milliseconds(200)).ping(name: "stopping").isEmpty) == true
                }
                #expect(!service.isRunning)
                await gate.open()
                #expect(try await inFlight.value == "finished", "the request in flight is still answered")
                await stopping.value

                await #expect(throws: NATSError.self) {
                    _ = try await client.request("stop.slow", timeout: .seconds(5))
                }
                await #expect(throws: NATSError.self) {
                    try await service.addEndpoint(name: "late") { _ in MicroResponse() }
                }
                await service.stop()  // idempotent
            }
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func aHandlerCanStopItsOwnService(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: .init(jetStream: false)) { server in
            try await withClient(server) { client in
                let service = try await MicroService.start(client: client, config: MicroServiceConfig(name: "selfstop", version: "1.0.0"))
                try await service.addEndpoint(name: "shutdown") { _ in
                    await service.stop()
                    return MicroResponse(string: "bye")
                }
                #expect(try await client.request("shutdown", timeout: .seconds(5)).string == "bye")
                #expect(!service.isRunning)
                await #expect(throws: NATSError.self) { _ = try await client.request("shutdown", timeout: .seconds(5)) }
                await service.stop()
            }
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func closingTheClientStopsTheService(kind: NATSServerKind) async throws {
        try await withNATSServer(kind, config: .init(jetStream: false)) { server in
            let client = try await NATSClient.connect(options: NATSClientOptions(servers: [server.url]))
            let service = try await MicroService.start(client: client, config: MicroServiceConfig(name: "closing", version: "1.0.0"))
            try await service.addEndpoint(name: "e") { _ in MicroResponse() }
            await client.close()
            try await eventually("the service stopped", timeout: .seconds(10), every: .milliseconds(20)) { !service.isRunning }
            await service.stop()
        }
    }

    /// A real third-party implementation reads our responses: nats-py (from the test venv) runs
    /// its own micro service next to ours, requests `$SRV.PING|INFO|STATS` from both, compares
    /// the field sets and JSON types, parses ours with its own classes, and calls our endpoints.
    /// In the other direction our discovery client reads nats-py's service.
    @Test(arguments: NATSServerKind.allCases)
    func natsPyReadsOurResponsesAndWeReadItsOwn(kind: NATSServerKind) async throws {
        let python = try PythonWithNATSPy.require()
        try await withNATSServer(kind, config: .init(jetStream: false)) { server in
            try await withClient(server) { client in
                let service = try await MicroService.start(
                    client: client,
                    config: MicroServiceConfig(
                        name: "baton-interop", version: "1.2.3", description: "Baton interop check", metadata: ["k": "v"]))
                try await service.addEndpoint(name: "echo", subject: "interop.echo", metadata: ["a": "b"]) { request in
                    MicroResponse(payload: request.payload)
                }
                try await service.group("interop.grp").addEndpoint(name: "fail", metadata: ["a": "b"]) { _ in
                    throw MicroServiceError(code: 404, description: "nothing here")
                }

                let run = try PythonRun(
                    python: python, script: natsPyInteropScript,
                    arguments: [server.url, service.config.name, service.id, "interop"])
                do {
                    let resultLine = try await run.waitForLine(startingWith: "RESULT ", timeout: .seconds(60))
                    let result = try jsonObject(Data(resultLine.dropFirst("RESULT ".count).utf8))
                    let problems = result["problems"] as? [String] ?? ["no problems list in \(resultLine)"]
                    #expect(problems.isEmpty, "nats-py found: \(problems.joined(separator: "; "))")
                    let referenceID = try #require(result["reference_id"] as? String)
                    _ = try await run.waitForLine(startingWith: "READY", timeout: .seconds(10))

                    // Our side reads nats-py's documents, nulls and millisecond timestamps included.
                    let discovery = MicroServiceDiscovery(client: client)
                    let ping = try #require(try await discovery.ping(name: "pyref", id: referenceID).first)
                    #expect(ping.name == "pyref" && ping.version == "1.2.3" && ping.metadata == ["k": "v"])
                    let info = try #require(try await discovery.info(name: "pyref", id: referenceID).first)
                    #expect(info.description == "nats-py reference")
                    #expect(info.endpoints == [
                        MicroEndpointInfo(name: "echo", subject: "pyref.echo", queueGroup: "q", metadata: ["a": "b"]),
                        MicroEndpointInfo(name: "fail", subject: "pyref.grp.fail", queueGroup: "q", metadata: ["a": "b"]),
                    ])
                    let stats = try #require(try await discovery.stats(name: "pyref", id: referenceID).first)
                    #expect(stats.endpoints.map(\.numRequests) == [1, 1])
                    #expect(stats.endpoints.map(\.numErrors) == [0, 1])
                    #expect(abs(stats.started.timeIntervalSinceNow) < 300)
                    // Both implementations answer the bare discovery subject.
                    let everyone = try await discovery.ping(maxReplies: 2)
                    #expect(Set(everyone.map(\.id)) == [service.id, referenceID])
                    // nats-py's error replies read as service errors.
                    let failure = try #require(MicroServiceError(reply: try await client.request("pyref.grp.fail")))
                    #expect(failure.code == 404 && failure.description == "nothing here")
                    // And nats-py's calls were counted on our side.
                    #expect(service.stats().endpoints.map(\.numRequests) == [1, 1])

                    try await run.finish(timeout: .seconds(15))
                } catch {
                    FileHandle.standardError.write(Data("--- nats-py output:\n\(run.output)\n---\n".utf8))
                    run.kill()
                    throw error
                }
                await service.stop()
            }
        }
    }
}

// MARK: - Helpers

/// A service on a client that never connects: enough for everything that does not touch the
/// network (the subscriptions just wait for a connection).
private func withOfflineService(
    description: String = "shape check",
    metadata: [String: String] = [:],
    queueGroup: MicroQueueGroup = .default,
    _ body: (MicroService) async throws -> Void
) async throws {
    let client = try NATSClient(options: NATSClientOptions(servers: ["nats://127.0.0.1:1"]))
    let service = try await MicroService.start(
        client: client,
        config: MicroServiceConfig(name: "shapes", version: "1.2.3-rc.1", description: description, metadata: metadata, queueGroup: queueGroup))
    do {
        try await body(service)
    } catch {
        await service.stop()
        await client.close()
        throw error
    }
    await service.stop()
    await client.close()
}

private func withClient<T>(_ server: NATSServerProcess, _ body: (NATSClient) async throws -> T) async throws -> T {
    var options = NATSClientOptions(servers: [server.url])
    options.requestTimeout = .seconds(5)
    let client = try await NATSClient.connect(options: options)
    do {
        let result = try await body(client)
        await client.close()
        return result
    } catch {
        await client.close()
        throw error
    }
}

private func jsonObject(_ data: Data) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any], "not a JSON object: \(String(decoding: data, as: UTF8.self))")
}

/// Counts handler calls by name, from any task.
private final class CallCounter: Sendable {
    private let counts = Mutex<[String: Int]>([:])

    func count(_ name: String) {
        counts.withLock { $0[name, default: 0] += 1 }
    }

    var values: [String: Int] { counts.withLock { $0 } }
}

/// Holds handlers until opened, counting how many wait at once.
private actor Gate {
    private(set) var waiting = 0
    private(set) var maximumWaiting = 0
    private var isOpen = false
    private var continuations: [CheckedContinuation<Void, Never>] = []

    func pass() async {
        guard !isOpen else { return }
        waiting += 1
        maximumWaiting = max(maximumWaiting, waiting)
        await withCheckedContinuation { continuations.append($0) }
        waiting -= 1
    }

    func open() {
        isOpen = true
        for continuation in continuations { continuation.resume() }
        continuations.removeAll()
    }
}

/// The `$SRV.STATS` document with every field the NATS CLI's schema requires, typed strictly
/// (integers must be integers).
private struct StrictStatsDocument: Decodable {
    struct Endpoint: Decodable {
        var name: String
        var subject: String
        var queue_group: String
        var num_requests: Int64
        var num_errors: Int64
        var last_error: String
        var processing_time: Int64
        var average_processing_time: Int64
    }
    var type: String
    var name: String
    var id: String
    var version: String
    var metadata: [String: String]
    var started: String
    var endpoints: [Endpoint]
}

// MARK: - nats-py

/// The Python interpreter of the test venv, with nats-py importable.
private enum PythonWithNATSPy {
    static func require() throws -> String {
        let environment = ProcessInfo.processInfo.environment
        let venv = environment["BATON_VENV"].flatMap { $0.isEmpty ? nil : $0 }
            ?? Integration.packageRoot.appendingPathComponent(".venv").path
        let python = URL(fileURLWithPath: venv).appendingPathComponent("bin/python").path
        let problem: String
        if !FileManager.default.isExecutableFile(atPath: python) {
            problem = "no executable at \(python)"
        } else {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: python)
            process.arguments = ["-c", "import nats.micro"]
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            if process.terminationStatus == 0 { return python }
            problem = "\(python) cannot import nats.micro (exit status \(process.terminationStatus))"
        }
        try Integration.missingPrerequisite(
            MissingPrerequisite(
                name: "nats-py",
                reason: problem,
                remedy: "run scripts/install-prerequisites (it installs nats-py into $BATON_VENV or .venv)"))
    }
}

/// A Python script run as a child process: output collected as it arrives, stdin kept open
/// until ``finish(timeout:)``, and killed if anything goes wrong.
private final class PythonRun: Sendable {
    private let process: Process
    private let input: Pipe
    private let collected = CollectedOutput()
    private let directory: URL

    init(python: String, script: String, arguments: [String]) throws {
        directory = try makeTemporaryDirectory(prefix: "baton-micro-interop")
        let scriptFile = directory.appendingPathComponent("interop.py")
        try Data(script.utf8).write(to: scriptFile)
        process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [scriptFile.path] + arguments
        input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        output.fileHandleForReading.readabilityHandler = { [collected] handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
            } else {
                collected.append(data)
            }
        }
        try process.run()
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(at: directory)
    }

    var output: String { collected.text }

    func waitForLine(startingWith prefix: String, timeout: Duration) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while true {
            let lines = output.split(separator: "\n", omittingEmptySubsequences: true)
            if let line = lines.first(where: { $0.hasPrefix(prefix) }) { return String(line) }
            if !process.isRunning {
                // The last output may still be on its way.
                try await Task.sleep(for: .milliseconds(200))
                if let line = output.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }) { return String(line) }
                throw InteropFailure(description: "nats-py script exited (status \(process.terminationStatus)) before printing \(prefix)")
            }
            if ContinuousClock.now >= deadline {
                throw InteropFailure(description: "nats-py script printed no \(prefix) line within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Closes stdin (the script's signal to stop) and waits for a clean exit.
    func finish(timeout: Duration) async throws {
        try input.fileHandleForWriting.close()
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now >= deadline {
                kill()
                throw InteropFailure(description: "nats-py script did not exit within \(timeout) of stdin closing")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        if process.terminationStatus != 0 {
            throw InteropFailure(description: "nats-py script exited with status \(process.terminationStatus)")
        }
    }

    func kill() {
        if process.isRunning {
            sendSIGKILL(to: process.processIdentifier)
            process.waitUntilExit()
        }
    }
}

private final class CollectedOutput: Sendable {
    private let buffer = Mutex("")

    func append(_ data: Data) {
        buffer.withLock { $0 += String(decoding: data, as: UTF8.self) }
    }

    var text: String { buffer.withLock { $0 } }
}

private func sendSIGKILL(to pid: Int32) {
    _ = kill(pid, SIGKILL)
}

private struct InteropFailure: Error, CustomStringConvertible {
    var description: String
}

/// Run by ``MicroServiceIntegrationTests/natsPyReadsOurResponsesAndWeReadItsOwn(kind:)``.
/// argv: server URL, our service name, our instance id, our endpoint subject prefix.
private let natsPyInteropScript = #"""
    import asyncio
    import datetime
    import json
    import sys

    import nats
    from nats.micro import add_service
    from nats.micro.request import ServiceError
    from nats.micro.service import ServiceInfo, ServicePing, ServiceStats

    URL, NAME, ID, PREFIX = sys.argv[1:5]
    REFERENCE = "pyref"
    problems = []


    def shape_problems(path, ours, ref, out):
        """Compares field sets and JSON types recursively. A null on nats-py's side matches anything."""
        if ref is None:
            return
        if path.endswith(".metadata"):
            # Free-form: only the type is fixed, an object of strings.
            if not isinstance(ours, dict) or not all(isinstance(v, str) for v in ours.values()):
                out.append(f"{path}: ours is not an object of strings: {ours!r}")
            return
        if isinstance(ref, bool) or isinstance(ours, bool):
            if type(ref) is not type(ours):
                out.append(f"{path}: ours is {type(ours).__name__}, nats-py's is {type(ref).__name__}")
            return
        if isinstance(ref, dict):
            if not isinstance(ours, dict):
                out.append(f"{path}: ours is {type(ours).__name__}, nats-py's is an object")
                return
            for key in ref.keys() - ours.keys():
                # nats-py sends "data": null without a stats handler; the CLI's schema wants an
                # object there, so a conforming service leaves the field out.
                if not (key == "data" and ref[key] is None):
                    out.append(f"{path}.{key}: missing in ours")
            for key in ours.keys() - ref.keys():
                out.append(f"{path}.{key}: not in nats-py's")
            for key in ours.keys() & ref.keys():
                shape_problems(f"{path}.{key}", ours[key], ref[key], out)
        elif isinstance(ref, list):
            if not isinstance(ours, list):
                out.append(f"{path}: ours is {type(ours).__name__}, nats-py's is an array")
            elif ours and ref:
                shape_problems(f"{path}[0]", ours[0], ref[0], out)
        elif type(ref) is not type(ours):
            out.append(f"{path}: ours is {type(ours).__name__}, nats-py's is {type(ref).__name__}")


    def check(condition, text):
        if not condition:
            problems.append(text)


    async def main():
        nc = await nats.connect(URL)

        async def echo(request):
            await request.respond(request.data)

        async def fail(request):
            raise ServiceError("404", "nothing here")

        service = await add_service(
            nc, name=REFERENCE, version="1.2.3", description="nats-py reference", metadata={"k": "v"}
        )
        await service.add_endpoint(name="echo", subject=f"{REFERENCE}.echo", handler=echo, metadata={"a": "b"})
        group = service.add_group(name=f"{REFERENCE}.grp")
        await group.add_endpoint(name="fail", handler=fail, metadata={"a": "b"})
        await nc.flush()

        # Traffic on both services, so their counters are not all zero.
        for subject in (f"{REFERENCE}.echo", f"{PREFIX}.echo"):
            reply = await nc.request(subject, b"ping", timeout=5)
            check(reply.data == b"ping", f"{subject} echoed {reply.data!r}")
        for subject in (f"{REFERENCE}.grp.fail", f"{PREFIX}.grp.fail"):
            reply = await nc.request(subject, b"", timeout=5)
            headers = reply.headers or {}
            check(headers.get("Nats-Service-Error") == "nothing here", f"{subject}: error headers {headers}")
            check(headers.get("Nats-Service-Error-Code") == "404", f"{subject}: error headers {headers}")

        async def fetch(subject):
            reply = await nc.request(subject, b"", timeout=5)
            return json.loads(reply.data)

        documents = {}
        for verb in ("PING", "INFO", "STATS"):
            ours = await fetch(f"$SRV.{verb}.{NAME}.{ID}")
            ref = await fetch(f"$SRV.{verb}.{REFERENCE}")
            documents[verb] = {"ours": ours, "nats-py": ref}
            shape_problems(verb, ours, ref, problems)
            check(ours.get("type") == f"io.nats.micro.v1.{verb.lower()}_response", f"{verb}: type {ours.get('type')!r}")
            check(ours.get("id") == ID and ours.get("name") == NAME, f"{verb}: identity {ours.get('name')}/{ours.get('id')}")

        # nats-py's own parsers read ours, and write it back unchanged.
        try:
            ping = ServicePing.from_dict(documents["PING"]["ours"])
            check(ping.to_dict() == documents["PING"]["ours"], f"PING changes through nats-py: {ping.to_dict()}")
        except Exception as error:
            problems.append(f"nats-py cannot read our PING: {error!r}")
        try:
            info = ServiceInfo.from_dict(documents["INFO"]["ours"])
            check(info.to_dict() == documents["INFO"]["ours"], f"INFO changes through nats-py: {info.to_dict()}")
        except Exception as error:
            problems.append(f"nats-py cannot read our INFO: {error!r}")
        try:
            stats = dict(documents["STATS"]["ours"])
            # ServiceStats.from_dict insists on "data", which the schema lets us leave out.
            stats["endpoints"] = [{"data": None, **endpoint} for endpoint in stats["endpoints"]]
            parsed = ServiceStats.from_dict(stats)
            age = datetime.datetime.utcnow() - parsed.started
            check(datetime.timedelta(seconds=-1) <= age < datetime.timedelta(minutes=5), f"STATS started is {parsed.started}")
            counts = [(e.num_requests, e.num_errors) for e in parsed.endpoints]
            check(counts == [(1, 0), (1, 1)], f"STATS counts {counts}")
        except Exception as error:
            problems.append(f"nats-py cannot read our STATS: {error!r}")

        print("RESULT " + json.dumps({"problems": problems, "reference_id": service.id, "documents": documents}), flush=True)
        print("READY", flush=True)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), timeout=60)
        except asyncio.TimeoutError:
            pass
        await service.stop()
        await nc.close()


    asyncio.run(main())
    """#
