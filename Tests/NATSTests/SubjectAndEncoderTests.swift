import NIOCore
import Testing

@testable import NATS

private func wire(_ write: (inout ByteBuffer) -> Void) -> String {
    var buffer = ByteBufferAllocator().buffer(capacity: 64)
    write(&buffer)
    return String(decoding: buffer.readableBytesView, as: UTF8.self)
}

private func decimal(_ value: Int) -> String {
    wire { ClientOperationEncoder.writeDecimal(value, into: &$0) }
}

private func block(_ headers: NATSHeaders) throws(NATSError) -> String {
    let buffer = try ClientOperationEncoder.headerBlock(headers, allocator: ByteBufferAllocator())
    return String(decoding: buffer.readableBytesView, as: UTF8.self)
}

/// The error `body` throws, or nil (recording an issue) when it does not throw.
private func caught(_ body: () throws(NATSError) -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> NATSError? {
    do throws(NATSError) {
        try body()
        Issue.record("expected an error", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

// MARK: - Encoder

@Suite("Client operation encoder")
struct ClientOperationEncoderTests {
    @Test func publish() {
        let payload = ByteBuffer(string: "hello")
        #expect(
            wire { ClientOperationEncoder.writePublish(into: &$0, subject: "foo.bar", replyTo: nil, headerBlock: nil, payload: payload) }
                == "PUB foo.bar 5\r\nhello\r\n")
        #expect(
            wire { ClientOperationEncoder.writePublish(into: &$0, subject: "foo", replyTo: "_INBOX.a.1", headerBlock: nil, payload: payload) }
                == "PUB foo _INBOX.a.1 5\r\nhello\r\n")
        #expect(
            wire { ClientOperationEncoder.writePublish(into: &$0, subject: "foo", replyTo: nil, headerBlock: nil, payload: ByteBuffer()) }
                == "PUB foo 0\r\n\r\n")
        let crlf = ByteBuffer(string: "a\r\nb\r\n")
        #expect(
            wire { ClientOperationEncoder.writePublish(into: &$0, subject: "x", replyTo: nil, headerBlock: nil, payload: crlf) }
                == "PUB x 6\r\na\r\nb\r\n\r\n")
    }

    @Test func publishWithHeaders() {
        let headerBlock = ByteBuffer(string: "NATS/1.0\r\nA: b\r\n\r\n")
        let payload = ByteBuffer(string: "hello")
        #expect(
            wire { ClientOperationEncoder.writePublish(into: &$0, subject: "foo", replyTo: nil, headerBlock: headerBlock, payload: payload) }
                == "HPUB foo 18 23\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\n")
        #expect(
            wire {
                ClientOperationEncoder.writePublish(into: &$0, subject: "foo", replyTo: "_INBOX.r", headerBlock: headerBlock, payload: ByteBuffer())
            } == "HPUB foo _INBOX.r 18 18\r\nNATS/1.0\r\nA: b\r\n\r\n\r\n")
    }

    @Test func publishAppendsToExistingBytes() {
        var buffer = ByteBuffer(string: "PING\r\n")
        buffer.moveReaderIndex(forwardBy: 2)
        ClientOperationEncoder.writePublish(into: &buffer, subject: "s", replyTo: nil, headerBlock: nil, payload: ByteBuffer(string: "1"))
        #expect(String(decoding: buffer.readableBytesView, as: UTF8.self) == "NG\r\nPUB s 1\r\n1\r\n")
    }

    @Test func subscribeAndUnsubscribe() {
        #expect(wire { ClientOperationEncoder.writeSubscribe(into: &$0, subject: "foo.*", queue: nil, sid: 1) } == "SUB foo.* 1\r\n")
        #expect(wire { ClientOperationEncoder.writeSubscribe(into: &$0, subject: "foo.>", queue: "workers", sid: 42) } == "SUB foo.> workers 42\r\n")
        #expect(
            wire { ClientOperationEncoder.writeSubscribe(into: &$0, subject: "a", queue: nil, sid: UInt64(Int.max)) }
                == "SUB a 9223372036854775807\r\n")
        #expect(wire { ClientOperationEncoder.writeUnsubscribe(into: &$0, sid: 1, max: nil) } == "UNSUB 1\r\n")
        #expect(wire { ClientOperationEncoder.writeUnsubscribe(into: &$0, sid: 7, max: 10) } == "UNSUB 7 10\r\n")
        #expect(wire { ClientOperationEncoder.writeUnsubscribe(into: &$0, sid: 12345, max: 0) } == "UNSUB 12345 0\r\n")
    }

    @Test func pingPongConnect() {
        #expect(wire { ClientOperationEncoder.writePing(into: &$0) } == "PING\r\n")
        #expect(wire { ClientOperationEncoder.writePong(into: &$0) } == "PONG\r\n")
        let json = #"{"verbose":false,"pedantic":false,"protocol":1,"headers":true,"no_responders":true,"lang":"swift"}"#
        #expect(wire { ClientOperationEncoder.writeConnect(into: &$0, json: Array(json.utf8)) } == "CONNECT \(json)\r\n")
    }

    @Test func headerBlockEncoding() throws {
        #expect(try block(NATSHeaders()) == "NATS/1.0\r\n\r\n")
        var headers = NATSHeaders()
        headers.append(name: "Nats-Msg-Id", value: "id:1")
        headers.append(name: "X", value: "1")
        headers.append(name: "x", value: "lower")
        headers.append(name: "X", value: "2")
        headers.append(name: "Empty", value: "")
        headers.append(name: "Tabbed", value: "a\tb")
        headers.append(name: "UTF8", value: "grüße")
        #expect(
            try block(headers)
                == "NATS/1.0\r\nNats-Msg-Id: id:1\r\nX: 1\r\nx: lower\r\nX: 2\r\nEmpty: \r\nTabbed: a\tb\r\nUTF8: grüße\r\n\r\n")
        let literal = NATSHeaders(["KV-Operation": "PURGE", "Nats-Rollup": "sub"])
        #expect(try block(literal) == "NATS/1.0\r\nKV-Operation: PURGE\r\nNats-Rollup: sub\r\n\r\n")
    }

    @Test func invalidHeadersRejected() {
        let badNames = ["", "Has Space", "Has:Colon", "Tab\tName", "New\nLine", "CR\rName", "Del\u{7f}", "Grüße", "\u{0}"]
        for name in badNames {
            let error = caught { () throws(NATSError) in _ = try block(NATSHeaders([name: "v"])) }
            #expect(error?.code == .invalidHeader, "name \(name.debugDescription)")
        }
        for value in ["a\r\nInjected: yes", "a\nb", "a\rb", "\r\n"] {
            let error = caught { () throws(NATSError) in _ = try block(NATSHeaders(["Name": value])) }
            #expect(error?.code == .invalidHeader, "value \(value.debugDescription)")
        }
        // A bad field later in the block is still found.
        var headers = NATSHeaders()
        headers.append(name: "Good", value: "1")
        headers.append(name: "Bad Name", value: "2")
        #expect(caught { () throws(NATSError) in _ = try block(headers) }?.code == .invalidHeader)
        #expect(caught { () throws(NATSError) in try ClientOperationEncoder.validateHeader(.init(name: "", value: "x")) }?.message == "header name is empty")
    }

    @Test func decimalWriter() {
        #expect(decimal(0) == "0")
        #expect(decimal(9) == "9")
        #expect(decimal(10) == "10")
        #expect(decimal(99) == "99")
        #expect(decimal(100) == "100")
        #expect(decimal(1_048_576) == "1048576")
        #expect(decimal(9_999_999_999_999_999) == "9999999999999999")  // 16 digits: the scratch space
        #expect(decimal(10_000_000_000_000_000) == "10000000000000000")  // 17 digits: the fallback
        #expect(decimal(Int.max) == "9223372036854775807")
        var mismatches: [Int] = []
        var value = 1
        while value < Int.max / 10 {
            for candidate in [value - 1, value, value + 1, value * 7 + 3] where decimal(candidate) != String(candidate) {
                mismatches.append(candidate)
            }
            value *= 10
        }
        for candidate in 0...2_000 where decimal(candidate) != String(candidate) { mismatches.append(candidate) }
        #expect(mismatches.isEmpty)
    }

    @Test func headerBlockRoundTrip() throws {
        var headers = NATSHeaders()
        headers.append(name: NATSHeaderName.msgID, value: "abc:def")
        headers.append(name: NATSHeaderName.expectedLastSubjectSequence, value: "0")
        headers.append(name: "X-Multi", value: "1")
        headers.append(name: "X-Multi", value: "2")
        headers.append(name: "x-multi", value: "case")
        headers.append(name: "Empty", value: "")
        let encoded = try ClientOperationEncoder.headerBlock(headers, allocator: ByteBufferAllocator())
        #expect(try NATSProtocolParser.parseHeaders(encoded) == headers)

        // The same block carried in a full HPUB, replayed as the HMSG the server would deliver.
        let payload = ByteBuffer(string: "body\r\n")
        var hpub = ByteBufferAllocator().buffer(capacity: 128)
        ClientOperationEncoder.writePublish(into: &hpub, subject: "orders.new", replyTo: "_INBOX.x", headerBlock: encoded, payload: payload)
        let text = String(decoding: hpub.readableBytesView, as: UTF8.self)
        #expect(text.hasPrefix("HPUB orders.new _INBOX.x \(encoded.readableBytes) \(encoded.readableBytes + 6)\r\n"))
        var delivered = ByteBuffer(string: "HMSG orders.new 3 " + text.dropFirst("HPUB orders.new ".count))
        let operation = try NATSProtocolParser().parse(&delivered)
        #expect(
            operation == .message(NATSMessage(subject: "orders.new", replyTo: "_INBOX.x", headers: headers, payload: payload, sid: 3)))
        #expect(delivered.readableBytes == 0)
    }
}

// MARK: - Subjects

@Suite("Subjects")
struct SubjectTests {
    private func subjectError(_ subject: String, subscribe: Bool) -> NATSError? {
        do throws(NATSError) {
            if subscribe {
                try NATSSubject.validateSubscribe(subject)
            } else {
                try NATSSubject.validatePublish(subject)
            }
            return nil
        } catch {
            return error
        }
    }

    @Test func validPublishSubjects() {
        for subject in ["foo", "foo.bar", "a.b.c.d.e", "$JS.API.STREAM.INFO.orders", "_INBOX.abc123.7", "foo-bar_baz.1", "日本.語", "a#b.c%d"] {
            #expect(subjectError(subject, subscribe: false) == nil, "\(subject)")
            #expect(subjectError(subject, subscribe: true) == nil, "\(subject)")
        }
    }

    @Test func invalidPublishSubjects() {
        let invalid = [
            "", ".", "..", "foo.", ".foo", "foo..bar", "foo bar", " foo", "foo ", "foo\tbar", "foo\r\n", "foo\nbar", "foo\u{7f}",
            "foo\u{0}", "*", ">", "foo.*", "foo.>", "a*", "*.a", "a.>.b",
        ]
        for subject in invalid {
            #expect(subjectError(subject, subscribe: false)?.code == .invalidSubject, "\(subject.debugDescription)")
        }
        #expect(subjectError("foo.*", subscribe: false)?.message.contains("wildcard") == true)
    }

    @Test func validSubscribeSubjects() {
        for subject in ["*", ">", "foo.*", "foo.>", "*.*.>", "foo.*.bar", "*.bar", "$KV.bucket.>", "_INBOX.x.*"] {
            #expect(subjectError(subject, subscribe: true) == nil, "\(subject)")
        }
    }

    @Test func invalidSubscribeSubjects() {
        let invalid = [
            "", ".", "foo.", ".foo", ".>", "a..b", "a b", "a\t*", "*\n", "a*", "*a", "a.b*.c", "a.*b.c", "a>", ">a", "**", ">>", "*>",
            ">.foo", "foo.>.bar", "foo.>.*", ">.*", ">.>", "a.>.", "> ",
        ]
        for subject in invalid {
            #expect(subjectError(subject, subscribe: true)?.code == .invalidSubject, "\(subject.debugDescription)")
        }
        #expect(subjectError(">.foo", subscribe: true)?.message.contains("'>' must be the last token") == true)
        #expect(subjectError(">.*", subscribe: true)?.message.contains("'>' must be the last token") == true)
        #expect(subjectError("a*", subscribe: true)?.message.contains("whole token") == true)
        #expect(subjectError("a..b", subscribe: true)?.message.contains("empty token") == true)
    }

    @Test func queueGroups() {
        for queue in ["workers", "q.1", "a-b_c", "grüße"] {
            #expect(throws: Never.self) { try NATSSubject.validateQueueGroup(queue) }
        }
        for queue in ["", "a b", " ", "a\tb", "a\nb", "a\r", "\u{7f}", "\u{0}"] {
            let error = caught { () throws(NATSError) in try NATSSubject.validateQueueGroup(queue) }
            #expect(error?.code == .invalidQueueGroup, "\(queue.debugDescription)")
        }
    }

    @Test func wildcardMatching() {
        let cases: [(filter: String, subject: String, matches: Bool)] = [
            ("foo", "foo", true),
            ("foo", "foo.bar", false),
            ("foo.bar", "foo", false),
            ("foo.bar", "foo.baz", false),
            ("Foo", "foo", false),
            ("*", "foo", true),
            ("*", "foo.bar", false),
            ("foo.*", "foo.bar", true),
            ("foo.*", "foo", false),
            ("foo.*", "foo.bar.baz", false),
            ("*.bar", "foo.bar", true),
            ("*.bar", "foo.baz", false),
            ("foo.*.baz", "foo.x.baz", true),
            ("foo.*.baz", "foo.x.y.baz", false),
            (">", "foo", true),
            (">", "foo.bar.baz", true),
            ("foo.>", "foo.bar", true),
            ("foo.>", "foo.bar.baz", true),
            ("foo.>", "foo", false),
            ("foo.>", "bar.baz", false),
            ("*.>", "a.b", true),
            ("*.>", "a", false),
            ("*.*.>", "a.b.c.d", true),
            ("$KV.b.>", "$KV.b.key.with.dots", true),
            ("$KV.b.>", "$KV.c.key", false),
            ("foo.*", "foo.*", true),
        ]
        for item in cases {
            #expect(NATSSubject.matches(filter: item.filter, subject: item.subject) == item.matches, "\(item.filter) vs \(item.subject)")
        }
    }
}

// MARK: - NUID

@Suite("NUID")
struct NUIDTests {
    @Test func hundredThousandUniqueBase62Values() {
        let alphabet = Set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
        var generator = NUID()
        var seen = Set<String>()
        seen.reserveCapacity(100_000)
        var malformed: [String] = []
        for _ in 0..<100_000 {
            let value = generator.next()
            if value.utf8.count != 22 || !value.utf8.allSatisfy(alphabet.contains) { malformed.append(value) }
            seen.insert(value)
        }
        #expect(malformed.isEmpty)
        #expect(seen.count == 100_000)
    }

    @Test func sharedGeneratorValues() {
        var seen = Set<String>()
        for _ in 0..<1_000 {
            let value = NUID.next()
            #expect(value.utf8.count == 22)
            seen.insert(value)
        }
        #expect(seen.count == 1_000)
        var first = NUID()
        var second = NUID()
        #expect(first.next().prefix(12) != second.next().prefix(12), "each generator has its own random prefix")
    }
}

@Suite("JetStream ack subject")
struct AckSubjectTests {
    @Test func theShortFormGivesEveryField() throws {
        let metadata = try #require(JetStreamMessageMetadata(ackSubject: "$JS.ACK.KV_leases.ord_1.2.4711.13.1764950000123456789.0"))
        #expect(metadata.domain == nil && metadata.stream == "KV_leases" && metadata.consumer == "ord_1")
        #expect(metadata.deliveries == 2 && metadata.streamSequence == 4711 && metadata.consumerSequence == 13)
        #expect(metadata.timestampNanos == 1_764_950_000_123_456_789 && metadata.pending == 0)
    }

    @Test func theLongFormHasADomainUnlessItIsAnUnderscore() throws {
        let withDomain = try #require(JetStreamMessageMetadata(ackSubject: "$JS.ACK.hub.ACCHASH.S.C.1.2.3.4.5.rnd"))
        #expect(withDomain.domain == "hub")
        #expect(withDomain.stream == "S" && withDomain.consumer == "C" && withDomain.pending == 5 && withDomain.timestampNanos == 4)
        #expect(try #require(JetStreamMessageMetadata(ackSubject: "$JS.ACK._.ACCHASH.S.C.1.2.3.4.5")).domain == nil)
    }

    @Test(arguments: [
        "", "$JS.ACK", "$JS.NAK.S.C.1.2.3.4.5", "$JS.ACK.S.C.1.2.3.4", "$JS.ACK.S.C.1.2.3.4.5.6", "$JS.ACK.S.C.x.2.3.4.5",
        "$JS.ACK.S.C.1..3.4.5", "$JS.ACK.S.C.1.2.3.-4.5", "$JS.ACK.S.C.18446744073709551616.2.3.4.5", "$JS.ACK.S.C.1.2.3.9223372036854775808.5",
        "_INBOX.abc",
    ])
    func anythingElseIsNotAnAckSubject(subject: String) {
        #expect(JetStreamMessageMetadata(ackSubject: subject) == nil)
    }
}
