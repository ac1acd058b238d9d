import Foundation
import NIOCore
import Testing

@testable import NATS

// MARK: - Helpers

/// A small, fast, seedable generator (SplitMix64) so that randomised tests replay identically.
private struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

private func bytes(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

/// Parses exactly one operation that makes up the whole of `wire`, requiring the buffer to be
/// consumed completely.
private func parseOne(_ wire: String, parser: NATSProtocolParser = NATSProtocolParser()) throws -> ServerOperation? {
    var buffer = bytes(wire)
    let operation = try parser.parse(&buffer)
    #expect(buffer.readableBytes == 0, "the whole operation is consumed")
    return operation
}

/// Parses `wire` and returns the protocol error it must produce.
private func parseError(
    _ wire: String, parser: NATSProtocolParser = NATSProtocolParser(), sourceLocation: SourceLocation = #_sourceLocation
) -> NATSProtocolError? {
    var buffer = bytes(wire)
    do throws(NATSProtocolError) {
        while try parser.parse(&buffer) != nil {}
        Issue.record("expected a protocol error for \(wire.debugDescription)", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

private func message(
    _ subject: String, sid: UInt64, reply: String? = nil, headers: NATSHeaders? = nil, payload: String
) -> ServerOperation {
    .message(NATSMessage(subject: subject, replyTo: reply, headers: headers, payload: bytes(payload), sid: sid))
}

private func headers(status: Int? = nil, description: String? = nil, _ fields: [(String, String)] = []) -> NATSHeaders {
    var result = NATSHeaders()
    result.status = status
    result.statusDescription = description
    for (name, value) in fields { result.append(name: name, value: value) }
    return result
}

/// An `HMSG` frame with the sizes computed from the parts.
private func hmsgWire(_ subject: String, sid: UInt64, reply: String? = nil, headerBlock: String, payload: String) -> String {
    let headerLength = headerBlock.utf8.count
    let total = headerLength + payload.utf8.count
    let replyPart = reply.map { "\($0) " } ?? ""
    return "HMSG \(subject) \(sid) \(replyPart)\(headerLength) \(total)\r\n\(headerBlock)\(payload)\r\n"
}

/// A contract violation seen while draining a buffer.
private struct ContractViolation: Error, CustomStringConvertible {
    var description: String
}

/// Parses every complete operation in `buffer`, checking the parser's contract on every call: an
/// operation consumes at least one byte and never writes; nil leaves the buffer untouched.
private func drain(
    _ parser: NATSProtocolParser, _ buffer: inout ByteBuffer, into operations: inout [ServerOperation]
) throws -> Void {
    while true {
        let reader = buffer.readerIndex
        let writer = buffer.writerIndex
        guard let operation = try parser.parse(&buffer) else {
            guard buffer.readerIndex == reader, buffer.writerIndex == writer else {
                throw ContractViolation(description: "nil consumed bytes (\(reader) -> \(buffer.readerIndex))")
            }
            return
        }
        guard buffer.readerIndex > reader, buffer.readerIndex <= writer, buffer.writerIndex == writer else {
            throw ContractViolation(description: "operation consumed \(buffer.readerIndex - reader) bytes")
        }
        operations.append(operation)
    }
}

// MARK: - Fixtures

/// A realistic nats-server 2.9 INFO with a cluster's worth of `connect_urls`, pushing the line well
/// past 4 KiB, plus fields the client does not decode.
private let longInfoJSON: String = {
    var urls: [String] = []
    for rack in 0..<9 {
        for host in 0..<20 { urls.append("\"10.\(rack).\(host).\(100 + host):4222\"") }
    }
    urls.append("\"[fd00:10:244::1a]:4222\"")
    let wsURLs = (0..<8).map { "\"10.9.0.\($0):8080\"" }
    return """
        {"server_id":"NCUWF4KWI6NQR4NRT2ZWBI6WBW6V63XERJGREROVAVV6WZ4BN6RQUMHS","server_name":"n1-east",\
        "version":"2.9.10","proto":1,"git_commit":"4d8b0a5","go":"go1.19.4","host":"0.0.0.0","port":4222,\
        "headers":true,"auth_required":true,"tls_required":false,"tls_verify":false,"tls_available":true,\
        "max_payload":1048576,"jetstream":true,"client_id":4711,"client_ip":"192.168.7.21",\
        "nonce":"bCvwb6rhwPvZ5Hs","cluster":"east","domain":"hub","connect_urls":[\(urls.joined(separator: ","))],\
        "ws_connect_urls":[\(wsURLs.joined(separator: ","))],"ldm":true,\
        "xkey":"XAXRBXVXP5QMN2H4E5DRB7DBV2GKOECXSHYNNPXJ4QNE5XW4CTFWIZ4V",\
        "future_field":{"nested":[1,2.5,null,true,{"deeper":"value with \\"quotes\\" and \\\\ slash"}]},"ip":"nats://10.0.0.1:4222"}
        """
}()

private let longInfoExpected: ServerInfo = {
    var info = ServerInfo(serverID: "NCUWF4KWI6NQR4NRT2ZWBI6WBW6V63XERJGREROVAVV6WZ4BN6RQUMHS", version: "2.9.10", maxPayload: 1_048_576)
    info.serverName = "n1-east"
    info.proto = 1
    info.host = "0.0.0.0"
    info.port = 4222
    info.headers = true
    info.clientID = 4711
    info.clientIP = "192.168.7.21"
    info.authRequired = true
    info.tlsRequired = false
    info.tlsVerify = false
    info.tlsAvailable = true
    var urls: [String] = []
    for rack in 0..<9 {
        for host in 0..<20 { urls.append("10.\(rack).\(host).\(100 + host):4222") }
    }
    urls.append("[fd00:10:244::1a]:4222")
    info.connectURLs = urls
    info.lameDuckMode = true
    info.jetStream = true
    info.nonce = "bCvwb6rhwPvZ5Hs"
    info.cluster = "east"
    info.domain = "hub"
    return info
}()

private let shortInfoJSON = #"{"server_id":"S2","version":"2.9.10","max_payload":1024,"nonce":"n2","ldm":false,"connect_urls":[]}"#

private let shortInfoExpected: ServerInfo = {
    var info = ServerInfo(serverID: "S2", version: "2.9.10", maxPayload: 1024)
    info.nonce = "n2"
    info.lameDuckMode = false
    info.connectURLs = []
    return info
}()

/// Many operations of every kind, as one wire stream, with the exact results expected.
private func sampleStream(includeLongInfo: Bool) -> (wire: String, expected: [ServerOperation]) {
    var wire = ""
    var expected: [ServerOperation] = []
    func add(_ text: String, _ operation: ServerOperation) {
        wire += text
        expected.append(operation)
    }
    if includeLongInfo {
        add("INFO \(longInfoJSON) \r\n", .info(longInfoExpected))
    } else {
        add("INFO \(shortInfoJSON) \r\n", .info(shortInfoExpected))
    }
    add("+OK\r\n", .ok)
    add("PING\r\n", .ping)
    add("MSG foo.bar 9 5\r\nhello\r\n", message("foo.bar", sid: 9, payload: "hello"))
    add("MSG foo.bar 10 _INBOX.abc.1 11\r\nhello world\r\n", message("foo.bar", sid: 10, reply: "_INBOX.abc.1", payload: "hello world"))
    add("MSG crlf 2 17\r\nPING\r\nMSG x 1 0\r\n\r\n", message("crlf", sid: 2, payload: "PING\r\nMSG x 1 0\r\n"))
    add("MSG empty 3 0\r\n\r\n", message("empty", sid: 3, payload: ""))
    add("pong\r\n", .pong)
    add(
        hmsgWire("svc.req", sid: 4, reply: "_INBOX.r.2", headerBlock: "NATS/1.0\r\nNats-Msg-Id: a:b:c\r\nX: 1\r\nX: 2\r\n\r\n", payload: "body\r\n\r\n"),
        message("svc.req", sid: 4, reply: "_INBOX.r.2", headers: headers([("Nats-Msg-Id", "a:b:c"), ("X", "1"), ("X", "2")]), payload: "body\r\n\r\n"))
    add(
        hmsgWire("_INBOX.r.3", sid: 5, headerBlock: "NATS/1.0 503\r\n\r\n", payload: ""),
        message("_INBOX.r.3", sid: 5, headers: headers(status: 503), payload: ""))
    add(
        hmsgWire(
            "deliver.hb", sid: 6, reply: "$JS.FC.KV_b.x.1",
            headerBlock: "NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 17\r\nNats-Last-Stream: 42\r\n\r\n", payload: ""),
        message(
            "deliver.hb", sid: 6, reply: "$JS.FC.KV_b.x.1",
            headers: headers(status: 100, description: "Idle Heartbeat", [("Nats-Last-Consumer", "17"), ("Nats-Last-Stream", "42")]),
            payload: ""))
    add("-ERR 'Permissions Violation for Subscription to \"secret\"'\r\n", .error("Permissions Violation for Subscription to \"secret\""))
    add("msg\tlower.case \t 7  \t12   \r\nlower\r\ncase!\r\n", message("lower.case", sid: 7, payload: "lower\r\ncase!"))
    add(
        "hmsg  tabs\t8\t_R.x\t 32  \t 34\r\nNATS/1.0 408 Request Timeout\r\n\r\nok\r\n",
        message("tabs", sid: 8, reply: "_R.x", headers: headers(status: 408, description: "Request Timeout"), payload: "ok"))
    add("MSG zero 11 0\r\n\r\n", message("zero", sid: 11, payload: ""))
    add("-ERR Stale Connection\r\n", .error("Stale Connection"))
    add("info\t\(shortInfoJSON)\r\n", .info(shortInfoExpected))
    add("PONG\r\n", .pong)
    add(
        hmsgWire("pull.reply", sid: 12, headerBlock: "NATS/1.0 404 No Messages\r\n\r\n", payload: ""),
        message("pull.reply", sid: 12, headers: headers(status: 404, description: "No Messages"), payload: ""))
    add("+ok\r\n", .ok)
    add("MSG bin 13 4\r\n\u{0}\r\n\u{1}\r\n", message("bin", sid: 13, payload: "\u{0}\r\n\u{1}"))
    add("ping\r\n", .ping)
    return (wire, expected)
}

// MARK: - Tests

@Suite("Protocol parser")
struct ProtocolParserTests {
    // MARK: INFO

    @Test func longRealisticInfo() throws {
        let wire = "INFO \(longInfoJSON) \r\n"
        #expect(wire.utf8.count > 4096, "the INFO line is longer than 4 KiB")
        let operation = try parseOne(wire)
        #expect(operation == .info(longInfoExpected))
        guard case .info(let info) = operation else { return }
        #expect(info.connectURLs?.count == 181)
        #expect(info.connectURLs?.last == "[fd00:10:244::1a]:4222")
        #expect(info.lameDuckMode == true)
        #expect(info.nonce == "bCvwb6rhwPvZ5Hs")
    }

    @Test func infoVariants() throws {
        // Without the trailing space, separated by a tab, lower case.
        #expect(try parseOne("INFO \(shortInfoJSON)\r\n") == .info(shortInfoExpected))
        #expect(try parseOne("INFO\t\(shortInfoJSON) \r\n") == .info(shortInfoExpected))
        #expect(try parseOne("info \(shortInfoJSON)\r\n") == .info(shortInfoExpected))
        // Only the required fields; everything else stays nil; unknown fields of any shape ignored.
        let minimal = try parseOne(#"INFO {"server_id":"S","version":"2.10.0","max_payload":8,"extra":[{"a":{}}],"n":null}\#r\#n"#)
        #expect(minimal == .info(ServerInfo(serverID: "S", version: "2.10.0", maxPayload: 8)))
        guard case .info(let info) = minimal else { return }
        #expect(info.connectURLs == nil)
        #expect(info.lameDuckMode == nil)
        #expect(info.nonce == nil)
    }

    @Test func infoWithLameDuckAndNonce() throws {
        let operation = try parseOne(
            #"INFO {"server_id":"S","version":"2.9.10","max_payload":1048576,"ldm":true,"nonce":"abc-DEF_123","connect_urls":["a:4222","b:4222"]} "# + "\r\n")
        guard case .info(let info) = operation else {
            Issue.record("expected INFO, got \(String(describing: operation))")
            return
        }
        #expect(info.lameDuckMode == true)
        #expect(info.nonce == "abc-DEF_123")
        #expect(info.connectURLs == ["a:4222", "b:4222"])
        #expect(info.maxPayload == 1_048_576)
    }

    // MARK: MSG

    @Test func messageWithoutReply() throws {
        #expect(try parseOne("MSG foo.bar 9 5\r\nhello\r\n") == message("foo.bar", sid: 9, payload: "hello"))
    }

    @Test func messageWithReply() throws {
        let operation = try parseOne("MSG foo.bar 42 _INBOX.Zx9.7 11\r\nhello world\r\n")
        #expect(operation == message("foo.bar", sid: 42, reply: "_INBOX.Zx9.7", payload: "hello world"))
    }

    @Test func messagePayloadContainingCRLF() throws {
        #expect(try parseOne("MSG s 1 12\r\nab\r\n\r\ncd\r\nef\r\n") == message("s", sid: 1, payload: "ab\r\n\r\ncd\r\nef"))
        // A payload that looks like protocol is still payload.
        #expect(try parseOne("MSG s 1 13\r\n+OK\r\nPING\r\n\r\n\r\n") == message("s", sid: 1, payload: "+OK\r\nPING\r\n\r\n"))
    }

    @Test func emptyAndZeroLengthMessages() throws {
        let operation = try parseOne("MSG empty 3 0\r\n\r\n")
        #expect(operation == message("empty", sid: 3, payload: ""))
        guard case .message(let msg) = operation else { return }
        #expect(msg.payload.readableBytes == 0)
        #expect(msg.headers == nil)
        #expect(try parseOne("MSG empty 3 _INBOX.x 0\r\n\r\n") == message("empty", sid: 3, reply: "_INBOX.x", payload: ""))
    }

    @Test func tabsAndMultipleSpacesBetweenArguments() throws {
        #expect(try parseOne("MSG\tfoo  \t 1\t\t_R.1   5\r\nhello\r\n") == message("foo", sid: 1, reply: "_R.1", payload: "hello"))
        #expect(try parseOne("MSG   foo   1   5   \r\nhello\r\n") == message("foo", sid: 1, payload: "hello"))
        #expect(
            try parseOne("HMSG\t\tfoo \t2 \t12\t\t 14 \r\nNATS/1.0\r\n\r\nhi\r\n")
                == message("foo", sid: 2, headers: headers(), payload: "hi"))
    }

    @Test func lowerAndMixedCaseOperationNames() throws {
        #expect(try parseOne("msg foo 1 2\r\nhi\r\n") == message("foo", sid: 1, payload: "hi"))
        #expect(try parseOne("hmsg foo 1 12 12\r\nNATS/1.0\r\n\r\n\r\n") == message("foo", sid: 1, headers: headers(), payload: ""))
        #expect(try parseOne("ping\r\n") == .ping)
        #expect(try parseOne("PiNg\r\n") == .ping)
        #expect(try parseOne("pong\r\n") == .pong)
        #expect(try parseOne("+ok\r\n") == .ok)
        #expect(try parseOne("-err 'oops'\r\n") == .error("oops"))
        #expect(try parseOne("Msg foo 1 0\r\n\r\n") == message("foo", sid: 1, payload: ""))
    }

    @Test func largeSidAndSizeAtTheLimit() throws {
        #expect(
            try parseOne("MSG s 9999999999999999999 1\r\nx\r\n") == message("s", sid: 9_999_999_999_999_999_999, payload: "x"))
        let parser = NATSProtocolParser(maxPayloadLength: 5)
        #expect(try parseOne("MSG s 1 5\r\n12345\r\n", parser: parser) == message("s", sid: 1, payload: "12345"))
    }

    // MARK: HMSG and headers

    @Test func headerMessageExactBytes() throws {
        let block = "NATS/1.0\r\nA: b\r\n\r\n"
        #expect(block.utf8.count == 18)
        let operation = try parseOne("HMSG foo 1 _INBOX.x 18 23\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\n")
        #expect(operation == message("foo", sid: 1, reply: "_INBOX.x", headers: headers([("A", "b")]), payload: "hello"))
        let noReply = try parseOne("HMSG foo 2 18 23\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\n")
        #expect(noReply == message("foo", sid: 2, headers: headers([("A", "b")]), payload: "hello"))
    }

    @Test func headerOnlyMessage() throws {
        let operation = try parseOne(hmsgWire("foo", sid: 1, headerBlock: "NATS/1.0\r\nKV-Operation: DEL\r\n\r\n", payload: ""))
        #expect(operation == message("foo", sid: 1, headers: headers([("KV-Operation", "DEL")]), payload: ""))
    }

    @Test func noRespondersStatus() throws {
        let operation = try parseOne(hmsgWire("_INBOX.a.b", sid: 3, headerBlock: "NATS/1.0 503\r\n\r\n", payload: ""))
        #expect(operation == message("_INBOX.a.b", sid: 3, headers: headers(status: 503), payload: ""))
        guard case .message(let msg) = operation else { return }
        #expect(msg.status == 503)
        #expect(msg.headers?.statusDescription == nil)
        #expect(msg.headers?.fields.isEmpty == true)
    }

    @Test func idleHeartbeatStatus() throws {
        let block = "NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 1042\r\nNats-Last-Stream: 2077\r\n\r\n"
        let operation = try parseOne(hmsgWire("deliver.x", sid: 8, headerBlock: block, payload: ""))
        guard case .message(let msg) = operation else {
            Issue.record("expected a message, got \(String(describing: operation))")
            return
        }
        #expect(msg.status == 100)
        #expect(msg.headers?.statusDescription == "Idle Heartbeat")
        #expect(msg.headers?[NATSHeaderName.lastConsumer] == "1042")
        #expect(msg.headers?[NATSHeaderName.lastStream] == "2077")
        #expect(msg.payload.readableBytes == 0)
    }

    @Test func flowControlRequestStatus() throws {
        let operation = try parseOne(
            hmsgWire("deliver.x", sid: 8, reply: "$JS.FC.S.abc.1", headerBlock: "NATS/1.0 100 FlowControl Request\r\n\r\n", payload: ""))
        #expect(
            operation
                == message("deliver.x", sid: 8, reply: "$JS.FC.S.abc.1", headers: headers(status: 100, description: "FlowControl Request"), payload: ""))
    }

    @Test func pullStatuses() throws {
        let timeout = try parseOne(
            hmsgWire(
                "_INBOX.p", sid: 4, headerBlock: "NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\nNats-Pending-Bytes: 0\r\n\r\n",
                payload: ""))
        #expect(
            timeout
                == message(
                    "_INBOX.p", sid: 4,
                    headers: headers(status: 408, description: "Request Timeout", [("Nats-Pending-Messages", "1"), ("Nats-Pending-Bytes", "0")]),
                    payload: ""))
        let noMessages = try parseOne(hmsgWire("_INBOX.p", sid: 4, headerBlock: "NATS/1.0 404 No Messages\r\n\r\n", payload: ""))
        #expect(noMessages == message("_INBOX.p", sid: 4, headers: headers(status: 404, description: "No Messages"), payload: ""))
        let tabbed = try NATSProtocolParser.parseHeaders(bytes("NATS/1.0\t409   Consumer Deleted  \r\n\r\n"))
        #expect(tabbed == headers(status: 409, description: "Consumer Deleted"))
    }

    @Test func headerValuesWithColonsAndSpaces() throws {
        let block = "NATS/1.0\r\nTime:  12:30:45 \r\nURL:http://h:1/p\r\nPadded:   spaced   value   \r\nEmpty:\r\nBlank:   \r\n\r\n"
        let parsed = try NATSProtocolParser.parseHeaders(bytes(block))
        #expect(
            parsed.fields == [
                .init(name: "Time", value: "12:30:45"),
                .init(name: "URL", value: "http://h:1/p"),
                .init(name: "Padded", value: "spaced   value"),
                .init(name: "Empty", value: ""),
                .init(name: "Blank", value: ""),
            ])
        #expect(parsed.status == nil)
    }

    @Test func repeatedHeaderNamesAndCasePreserved() throws {
        let block = "NATS/1.0\r\nX-Tag: 1\r\nnats-MSG-id: abc\r\nX-Tag: 2\r\nx-tag: lower\r\nX-Tag: 3\r\n\r\n"
        let parsed = try NATSProtocolParser.parseHeaders(bytes(block))
        #expect(parsed.fields.map(\.name) == ["X-Tag", "nats-MSG-id", "X-Tag", "x-tag", "X-Tag"])
        #expect(parsed.values(for: "X-Tag") == ["1", "2", "3"])
        #expect(parsed.values(for: "x-tag") == ["lower"])
        #expect(parsed["X-Tag"] == "1")
        #expect(parsed["nats-MSG-id"] == "abc")
        #expect(parsed["Nats-Msg-Id"] == nil, "names are case-sensitive")
    }

    // MARK: Other operations

    @Test func pingPongOk() throws {
        #expect(try parseOne("PING\r\n") == .ping)
        #expect(try parseOne("PONG\r\n") == .pong)
        #expect(try parseOne("+OK\r\n") == .ok)
    }

    @Test func errorWithAndWithoutQuotes() throws {
        #expect(try parseOne("-ERR 'Authorization Violation'\r\n") == .error("Authorization Violation"))
        #expect(try parseOne("-ERR 'Maximum Payload Violation'  \r\n") == .error("Maximum Payload Violation"))
        #expect(try parseOne("-ERR Stale Connection\r\n") == .error("Stale Connection"))
        #expect(try parseOne("-ERR\t'Unknown Protocol Operation'\r\n") == .error("Unknown Protocol Operation"))
        #expect(try parseOne("-ERR\r\n") == .error(""))
        #expect(try parseOne("-ERR ''\r\n") == .error(""))
        #expect(try parseOne("-ERR 'it's'\r\n") == .error("it's"))
        #expect(try parseOne("-ERR '\r\n") == .error("'"), "a lone quote is kept")
    }

    // MARK: Incomplete input and buffer positions

    @Test func everyProperPrefixIsIncompleteAndConsumesNothing() throws {
        let parser = NATSProtocolParser()
        let frames = [
            "PING\r\n", "+OK\r\n", "-ERR 'x'\r\n", "INFO \(shortInfoJSON) \r\n", "MSG a 1 _R 5\r\nhe\r\no\r\n", "MSG a 1 0\r\n\r\n",
            hmsgWire("a", sid: 2, reply: "r", headerBlock: "NATS/1.0 100 Idle Heartbeat\r\nA: b\r\n\r\n", payload: "xy"),
        ]
        for frame in frames {
            let all = Array(frame.utf8)
            for length in 0..<all.count {
                var buffer = ByteBuffer(bytes: all[0..<length])
                let result = try parser.parse(&buffer)
                #expect(result == nil, "prefix of \(length) bytes of \(frame.debugDescription)")
                #expect(buffer.readerIndex == 0 && buffer.readableBytes == length)
            }
            var whole = ByteBuffer(bytes: all)
            let complete = try parser.parse(&whole)
            #expect(complete != nil)
            #expect(whole.readableBytes == 0)
        }
    }

    @Test func parsesAtNonZeroReaderIndexAndLeavesTheRest() throws {
        var buffer = ByteBufferAllocator().buffer(capacity: 64)
        buffer.writeString("garbage!")
        buffer.moveReaderIndex(forwardBy: 8)
        buffer.writeString("MSG a 1 3\r\nabc\r\nPING\r\nMSG b 2 ")
        let parser = NATSProtocolParser()
        let first = try parser.parse(&buffer)
        #expect(first == message("a", sid: 1, payload: "abc"))
        #expect(buffer.readerIndex == 8 + 16)
        let second = try parser.parse(&buffer)
        #expect(second == .ping)
        let partial = try parser.parse(&buffer)
        #expect(partial == nil)
        #expect(buffer.readableBytes == "MSG b 2 ".utf8.count)
        buffer.writeString("1\r\nz\r\n")
        let third = try parser.parse(&buffer)
        #expect(third == message("b", sid: 2, payload: "z"))
        #expect(buffer.readableBytes == 0)
        let empty = try parser.parse(&buffer)
        #expect(empty == nil)
    }

    @Test func payloadSurvivesLaterWritesToTheBuffer() throws {
        var buffer = bytes("MSG a 1 3\r\nabc\r\n")
        let operation = try NATSProtocolParser().parse(&buffer)
        buffer.discardReadBytes()
        buffer.writeString("XXXXXXXXXXXXXXXXXXXXXXXXXXXXXX")
        #expect(operation == message("a", sid: 1, payload: "abc"))
    }

    // MARK: Whole streams split everywhere

    @Test func streamAllAtOnce() throws {
        let (wire, expected) = sampleStream(includeLongInfo: true)
        var buffer = bytes(wire)
        var operations: [ServerOperation] = []
        try drain(NATSProtocolParser(), &buffer, into: &operations)
        #expect(operations == expected)
        #expect(buffer.readableBytes == 0)
        #expect(expected.count == 22)
    }

    @Test func streamFedByteByByte() throws {
        let (wire, expected) = sampleStream(includeLongInfo: true)
        let parser = NATSProtocolParser()
        var buffer = ByteBufferAllocator().buffer(capacity: 16)
        var operations: [ServerOperation] = []
        for byte in wire.utf8 {
            buffer.writeInteger(byte)
            let before = operations.count
            try drain(parser, &buffer, into: &operations)
            // Compact after progress, as ByteToMessageDecoder may do.
            if operations.count > before { buffer.discardReadBytes() }
        }
        #expect(operations == expected)
        #expect(buffer.readableBytes == 0)
    }

    @Test(.timeLimit(.minutes(2)))
    func streamSplitInTwoAtEveryPoint() throws {
        // Without the 4 KiB INFO (the byte-by-byte test covers it): thousands of JSON decodes of
        // it here would cost seconds of CPU that the integration tests running beside need.
        let (wire, expected) = sampleStream(includeLongInfo: false)
        let all = Array(wire.utf8)
        let parser = NATSProtocolParser()
        var failures = 0
        for split in 0...all.count {
            var buffer = ByteBufferAllocator().buffer(capacity: 256)
            var operations: [ServerOperation] = []
            buffer.writeBytes(all[0..<split])
            try drain(parser, &buffer, into: &operations)
            let firstCount = operations.count
            if split % 2 == 1 { buffer.discardReadBytes() }  // both with and without compaction
            buffer.writeBytes(all[split...])
            try drain(parser, &buffer, into: &operations)
            if operations != expected || buffer.readableBytes != 0 || firstCount > expected.count {
                failures += 1
                if failures <= 3 { Issue.record("split at \(split): got \(operations.count) operations, \(buffer.readableBytes) bytes left") }
            }
        }
        #expect(failures == 0)
    }

    @Test func streamInRandomPieces() throws {
        let (wire, expected) = sampleStream(includeLongInfo: false)
        let all = Array(wire.utf8)
        var random = SplitMix64(seed: 0xBA70)
        let parser = NATSProtocolParser()
        for round in 0..<300 {
            var buffer = ByteBufferAllocator().buffer(capacity: 32)
            var operations: [ServerOperation] = []
            var offset = 0
            while offset < all.count {
                let length = min(all.count - offset, Int.random(in: 1...40, using: &random))
                buffer.writeBytes(all[offset..<(offset + length)])
                offset += length
                try drain(parser, &buffer, into: &operations)
                if Bool.random(using: &random) { buffer.discardReadBytes() }
            }
            #expect(operations == expected, "round \(round)")
        }
    }

    // MARK: Malformed input

    @Test func unknownOperations() {
        for wire in ["FOO bar\r\n", "PUB foo 1\r\n", "PINGX\r\n", "PING \r\n", "+OKAY\r\n", "INFOX {}\r\n", "HELLO\r\n", "\u{0}\r\n"] {
            let error = parseError(wire)
            #expect(error?.reason == "unknown operation", "\(wire.debugDescription)")
        }
        #expect(parseError("FOO bar\r\n")?.excerpt == "FOO bar")
        #expect(parseError("\r\n")?.reason == "empty control line")
    }

    @Test func nonLetterBytesAreNotCaseFolded() {
        // 0x0D | 0x20 == '-' and 0x0B | 0x20 == '+': only letters may differ in case.
        #expect(parseError("\rERR 'x'\r\n")?.reason == "unknown operation")
        #expect(parseError("\u{0B}OK\r\n")?.reason == "unknown operation")
    }

    @Test func messageArgumentCounts() {
        #expect(parseError("MSG\r\n")?.reason == "MSG without arguments")
        #expect(parseError("MSG foo\r\n")?.reason == "MSG needs 3 or 4 arguments, got 1")
        #expect(parseError("MSG foo 1\r\n")?.reason == "MSG needs 3 or 4 arguments, got 2")
        #expect(parseError("MSG foo 1 reply extra 5\r\n")?.reason == "MSG needs 3 or 4 arguments, got 5")
        #expect(parseError("MSG  \t \r\n")?.reason == "MSG needs 3 or 4 arguments, got 0")
        #expect(parseError("HMSG\r\n")?.reason == "HMSG without arguments")
        #expect(parseError("HMSG foo 1 12\r\n")?.reason == "HMSG needs 4 or 5 arguments, got 3")
        #expect(parseError("HMSG foo 1 r x 12 12\r\n")?.reason == "HMSG needs 4 or 5 arguments, got 6")
        #expect(parseError("MSGX a 1 0\r\n")?.reason == "MSG without arguments")
        #expect(parseError("MSG foo 1\r\n")?.excerpt == "MSG foo 1")
    }

    @Test func nonNumericSidAndSize() {
        #expect(parseError("MSG foo x 5\r\n")?.reason == "MSG subscription id is not a number")
        #expect(parseError("MSG foo -1 5\r\n")?.reason == "MSG subscription id is not a number")
        #expect(parseError("MSG foo 99999999999999999999 5\r\n")?.reason == "MSG subscription id is not a number")
        #expect(parseError("HMSG foo 1a 12 12\r\n")?.reason == "HMSG subscription id is not a number")
        let limit = "MSG size is not a number within 67108864 bytes"
        #expect(parseError("MSG foo 1 5x\r\n")?.reason == limit)
        #expect(parseError("MSG foo 1 -5\r\n")?.reason == limit)
        #expect(parseError("MSG foo 1 +5\r\n")?.reason == limit)
        #expect(parseError("MSG foo 1 reply five\r\n")?.reason == limit)
        #expect(parseError("HMSG foo 1 12 x\r\n")?.reason == "HMSG size is not a number within 67108864 bytes")
        #expect(parseError("HMSG foo 1 x 12\r\n")?.reason == "HMSG header size is not a number between 10 and the total size")
    }

    @Test func sizeOverTheLimit() throws {
        let parser = NATSProtocolParser(maxPayloadLength: 100)
        #expect(parseError("MSG foo 1 101\r\n", parser: parser)?.reason == "MSG size is not a number within 100 bytes")
        #expect(parseError("HMSG foo 1 12 101\r\n", parser: parser)?.reason == "HMSG size is not a number within 100 bytes")
        #expect(parseError("MSG foo 1 99999999999999999999999\r\n")?.reason == "MSG size is not a number within 67108864 bytes")
        #expect(parseError("MSG foo 1 67108865\r\n")?.reason == "MSG size is not a number within 67108864 bytes")
        // At the limit the parser simply waits for the payload.
        var buffer = bytes("MSG foo 1 100\r\n")
        let pending = try parser.parse(&buffer)
        #expect(pending == nil)
        #expect(buffer.readableBytes == 15)
    }

    @Test func payloadNotFollowedByCRLF() {
        #expect(parseError("MSG foo 1 3\r\nhello\r\n")?.reason == "MSG payload not followed by CRLF (announced 3 bytes)")
        #expect(parseError("MSG foo 1 5\r\nhello\n\r")?.reason == "MSG payload not followed by CRLF (announced 5 bytes)")
        #expect(parseError("MSG foo 1 0\r\nx\r\n")?.reason == "MSG payload not followed by CRLF (announced 0 bytes)")
        #expect(
            parseError("HMSG foo 1 12 14\r\nNATS/1.0\r\n\r\nhi!!\r\n")?.reason == "HMSG payload not followed by CRLF (announced 14 bytes)")
    }

    @Test func headerSizeOutOfRange() {
        let reason = "HMSG header size is not a number between 10 and the total size"
        #expect(parseError("HMSG foo 1 30 20\r\n")?.reason == reason)
        #expect(parseError("HMSG foo 1 9 20\r\n")?.reason == reason)
        #expect(parseError("HMSG foo 1 _R 21 20\r\n")?.reason == reason)
    }

    @Test func malformedHeaderBlocks() {
        #expect(
            parseError(hmsgWire("a", sid: 1, headerBlock: "NATS/2.0\r\n\r\n", payload: ""))?.reason
                == "header block does not start with NATS/1.0")
        #expect(
            parseError(hmsgWire("a", sid: 1, headerBlock: "HTTP/1.1 200\r\n\r\n", payload: ""))?.reason
                == "header block does not start with NATS/1.0")
        #expect(
            parseError(hmsgWire("a", sid: 1, headerBlock: "NATS/1.0\r\nNoColon\r\n\r\n", payload: ""))?.reason
                == "header line without a name and colon")
        #expect(
            parseError(hmsgWire("a", sid: 1, headerBlock: "NATS/1.0\r\n: no name\r\n\r\n", payload: ""))?.reason
                == "header line without a name and colon")
        #expect(
            parseError(hmsgWire("a", sid: 1, headerBlock: "NATS/1.0\r\nA: b\nC: d\r\n\r\n", payload: ""))?.reason
                == "header line not terminated by CRLF")
        #expect(
            parseError(hmsgWire("a", sid: 1, headerBlock: "NATS/1.0\r\nA: b\r\n", payload: "x"))?.reason
                == "header block not terminated by an empty line")
        #expect(
            parseError(hmsgWire("a", sid: 1, headerBlock: "NATS/1.0\r\nA: b\r\n\r\nxx", payload: ""))?.reason
                == "header block not terminated by an empty line")
        #expect(
            parseError(hmsgWire("a", sid: 1, headerBlock: "NATS/1.01\r\n\r\n", payload: ""))?.reason == "unknown header version")
        for status in ["50", "5030", "abc", "+12", "-12", " "] {
            #expect(
                parseError(hmsgWire("a", sid: 1, headerBlock: "NATS/1.0 \(status)\r\n\r\n", payload: ""))?.reason
                    == "header status is not a 3-digit code", "status \(status.debugDescription)")
        }
    }

    @Test func controlLineWithoutCR() {
        #expect(parseError("PING\n")?.reason == "control line not terminated by CRLF")
        #expect(parseError("\n")?.reason == "control line not terminated by CRLF")
        #expect(parseError("MSG foo 1 2\nhi\r\n")?.reason == "control line not terminated by CRLF")
        #expect(parseError("PING\r\nPONG\n")?.reason == "control line not terminated by CRLF")
    }

    @Test func controlLineLongerThanTheLimit() throws {
        let parser = NATSProtocolParser(maxControlLineLength: 16)
        // 16 bytes before CRLF is accepted.
        #expect(try parseOne("MSG abcdefgh 1 0\r\n\r\n", parser: parser) == message("abcdefgh", sid: 1, payload: ""))
        #expect("MSG abcdefgh 1 0".utf8.count == 16)
        // 17 bytes without a line end yet may still be a 16-byte line and its CR.
        var waiting = bytes("MSG abcdefghi 1 0")
        let pending = try parser.parse(&waiting)
        #expect(pending == nil)
        #expect(waiting.readableBytes == 17)
        // 18 bytes without LF can no longer be a valid line.
        let reason = "control line longer than 16 bytes"
        #expect(parseError("MSG abcdefghij 1 0", parser: parser)?.reason == reason)
        #expect(parseError("MSG abcdefghi 1 0\r\n\r\n", parser: parser)?.reason == reason)
        #expect(parseError(String(repeating: "x", count: 1000), parser: parser)?.reason == reason)
        #expect(parseError("INFO \(shortInfoJSON)\r\n", parser: parser)?.reason == reason)
        #expect(parseError("MSG abcdefghij 1 0", parser: parser)?.excerpt == "MSG abcdefghij 1 0")
    }

    @Test func infoWithInvalidJSON() {
        for wire in [
            "INFO {not json}\r\n", "INFO\r\n", "INFO \r\n", "INFO {\"server_id\":\"S\"}\r\n",
            #"INFO {"server_id":"S","version":"1","max_payload":"big"}"# + "\r\n", "INFO [1,2]\r\n",
            #"INFO {"server_id":"S","version":"1","max_payload":1} trailing"# + "\r\n",
        ] {
            let error = parseError(wire)
            #expect(error?.reason.hasPrefix("INFO is not valid JSON (") == true, "\(wire.debugDescription): \(String(describing: error))")
        }
    }

    // MARK: Fuzzing

    @Test(.timeLimit(.minutes(2)))
    func randomAndMutatedInputNeverCrashesOrStalls() {
        var random = SplitMix64(seed: 0x5EED_0F_BA70)
        let (sample, _) = sampleStream(includeLongInfo: false)
        let valid = Array(sample.utf8)
        let longValid = Array(sampleStream(includeLongInfo: true).wire.utf8)
        let fragments: [[UInt8]] = [
            "MSG ", "HMSG ", "PING", "PONG", "+OK", "-ERR ", "INFO ", "\r\n", "\r", "\n", " ", "\t", "NATS/1.0", "NATS/1.0 503",
            ": ", "0", "1", "5", "12", "18446744073709551616", "foo", "_INBOX.x", "{", "}", "\"", "\r\n\r\n",
            #"{"server_id":"x","version":"1","max_payload":10}"#,
        ].map { Array($0.utf8) }
        let parsers = [NATSProtocolParser(), NATSProtocolParser(maxControlLineLength: 64, maxPayloadLength: 256)]

        var operations = 0
        var incomplete = 0
        var errors = 0
        var violations = 0
        let cases = 6000
        for index in 0..<cases {
            var input: [UInt8]
            switch index % 3 {
            case 0:
                input = []
                for _ in 0..<Int.random(in: 0...40, using: &random) {
                    if Int.random(in: 0..<3, using: &random) == 0 {
                        input.append(UInt8.random(in: 0...255, using: &random))
                    } else {
                        input += fragments.randomElement(using: &random)!
                    }
                }
            default:
                input = index % 50 == 1 ? longValid : valid
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    let position = Int.random(in: 0..<input.count, using: &random)
                    switch Int.random(in: 0..<4, using: &random) {
                    case 0: input[position] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &random)
                    case 1: input.insert(UInt8.random(in: 0...255, using: &random), at: position)
                    case 2: input.remove(at: position)
                    default: input[position] = [UInt8(ascii: "\r"), UInt8(ascii: "\n"), UInt8(ascii: " "), UInt8(ascii: "9")].randomElement(using: &random)!
                    }
                }
            }
            let parser = parsers[index % 2]
            var buffer = ByteBufferAllocator().buffer(capacity: 64)
            var offset = 0
            var calls = 0
            let maxCalls = 2 * input.count + 10  // each operation consumes a byte; each piece adds one nil
            feeding: while offset < input.count {
                let length = min(input.count - offset, Int.random(in: 1...64, using: &random))
                buffer.writeBytes(input[offset..<(offset + length)])
                offset += length
                while calls < maxCalls {
                    calls += 1
                    let reader = buffer.readerIndex
                    let writer = buffer.writerIndex
                    do throws(NATSProtocolError) {
                        if try parser.parse(&buffer) != nil {
                            operations += 1
                            if buffer.readerIndex <= reader || buffer.readerIndex > writer || buffer.writerIndex != writer { violations += 1 }
                        } else {
                            incomplete += 1
                            if buffer.readerIndex != reader || buffer.writerIndex != writer { violations += 1 }
                            continue feeding
                        }
                    } catch {
                        errors += 1
                        if error.reason.isEmpty { violations += 1 }
                        break feeding
                    }
                }
                violations += 1  // more calls than bytes: the parser is not making progress
                break
            }
        }
        #expect(violations == 0)
        #expect(operations > 1000, "mutated streams still contain many valid operations")
        #expect(errors > 1000, "many inputs are rejected")
        #expect(incomplete > 1000, "many inputs end mid-operation")
    }
}
