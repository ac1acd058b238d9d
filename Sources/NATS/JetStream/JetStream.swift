import Foundation
import NIOCore

/// JetStream on top of a ``NATSClient``: streams, publishes with acknowledgement and
/// expectations, message gets, and consumers.
public struct JetStream: Sendable {
    /// The client used for every request.
    public let client: NATSClient
    /// The API subject prefix (`$JS.API`, or `$JS.<domain>.API`).
    public let apiPrefix: String
    /// How long API requests and publishes wait for their answer.
    public let timeout: Duration

    /// Creates a JetStream context.
    public init(client: NATSClient, domain: String? = nil, timeout: Duration = .seconds(5)) {
        self.client = client
        self.apiPrefix = domain.map { "$JS.\($0).API" } ?? JetStreamNames.apiPrefix
        self.timeout = timeout
    }

    // MARK: - API plumbing

    private struct ErrorEnvelope: Decodable {
        struct Body: Decodable {
            var code: Int
            var err_code: Int?
            var description: String?
        }
        var error: Body?
    }

    /// Sends a JetStream API request and decodes the answer, turning `{"error":...}` into
    /// ``JetStreamAPIError``.
    func apiRequest<Response: Decodable>(_ suffix: String, body: ByteBuffer = ByteBuffer(), as: Response.Type) async throws -> Response {
        let subject = "\(apiPrefix).\(suffix)"
        let reply: NATSMessage
        do {
            reply = try await client.request(subject, payload: body, timeout: timeout)
        } catch let error as NATSError where error.code == .noResponders {
            throw JetStreamError(.notEnabled, "JetStream is not enabled for this account or server (no responders on \(subject))")
        }
        return try Self.decodeAPIResponse(reply.payload, as: Response.self, subject: subject)
    }

    func apiRequest<Request: Encodable, Response: Decodable>(_ suffix: String, json: Request, as: Response.Type) async throws -> Response {
        let data = try JetStreamJSON.encoder().encode(json)
        return try await apiRequest(suffix, body: ByteBuffer(bytes: data), as: Response.self)
    }

    static func decodeAPIResponse<Response: Decodable>(_ payload: ByteBuffer, as: Response.Type, subject: String) throws -> Response {
        let data = Data(payload.readableBytesView)
        let decoder = JetStreamJSON.decoder()
        if let envelope = try? decoder.decode(ErrorEnvelope.self, from: data), let error = envelope.error {
            throw JetStreamAPIError(
                code: error.code, errorCode: JetStreamErrorCode(rawValue: error.err_code ?? 0), description: error.description ?? "unknown error")
        }
        do {
            return try decoder.decode(Response.self, from: data)
        } catch {
            let excerpt = String(decoding: payload.readableBytesView.prefix(200), as: UTF8.self)
            throw JetStreamError(.invalidResponse, "cannot decode the answer to \(subject): \(error); got \(excerpt)")
        }
    }

    static func validateName(_ name: String, what: String) throws {
        guard !name.isEmpty, name.utf8.allSatisfy({ $0 > 0x20 && $0 != UInt8(ascii: ".") && $0 != UInt8(ascii: "*") && $0 != UInt8(ascii: ">") && $0 < 0x7f }) else {
            throw JetStreamError(.invalidName, "\(what) name \"\(name)\" must be non-empty without spaces, '.', '*' or '>'")
        }
    }

    private struct SuccessResponse: Decodable {
        var success: Bool
    }

    // MARK: - Account

    /// The account's JetStream usage and limits.
    public func accountInfo() async throws -> AccountInfo {
        try await apiRequest("INFO", as: AccountInfo.self)
    }

    // MARK: - Streams

    /// Creates a stream. Creating one that exists with the same configuration succeeds;
    /// with a different one fails with ``JetStreamErrorCode/streamNameInUse``.
    @discardableResult
    public func createStream(_ config: StreamConfig) async throws -> StreamInfo {
        try Self.validateName(config.name, what: "stream")
        return try await apiRequest("STREAM.CREATE.\(config.name)", json: config, as: StreamInfo.self)
    }

    /// Changes a stream's configuration.
    @discardableResult
    public func updateStream(_ config: StreamConfig) async throws -> StreamInfo {
        try Self.validateName(config.name, what: "stream")
        return try await apiRequest("STREAM.UPDATE.\(config.name)", json: config, as: StreamInfo.self)
    }

    /// A stream's configuration and state.
    public func streamInfo(_ name: String) async throws -> StreamInfo {
        try Self.validateName(name, what: "stream")
        return try await apiRequest("STREAM.INFO.\(name)", as: StreamInfo.self)
    }

    /// Deletes a stream and its messages.
    public func deleteStream(_ name: String) async throws {
        try Self.validateName(name, what: "stream")
        _ = try await apiRequest("STREAM.DELETE.\(name)", as: SuccessResponse.self)
    }

    private struct PurgeRequest: Encodable {
        var filter: String?
        var seq: UInt64?
        var keep: UInt64?
    }

    private struct PurgeResponse: Decodable {
        var success: Bool
        var purged: UInt64
    }

    /// Removes messages from a stream: all of them, those on `subject`, those below `sequence`,
    /// or all but the last `keep`. Returns how many were removed.
    @discardableResult
    public func purgeStream(_ name: String, subject: String? = nil, upToSequence sequence: UInt64? = nil, keep: UInt64? = nil) async throws -> UInt64 {
        try Self.validateName(name, what: "stream")
        let request = PurgeRequest(filter: subject, seq: sequence, keep: keep)
        return try await apiRequest("STREAM.PURGE.\(name)", json: request, as: PurgeResponse.self).purged
    }

    // MARK: - Publishing

    /// Publishes to a stream and waits for the server's acknowledgement.
    ///
    /// Expectation failures throw ``JetStreamAPIError`` (``JetStreamErrorCode/wrongLastSequence``
    /// for a lost compare-and-set); a subject no stream captures throws
    /// ``JetStreamError/Code/noStreamForSubject``.
    @discardableResult
    public func publish(_ subject: String, payload: ByteBuffer = ByteBuffer(), headers: NATSHeaders? = nil, options: PublishOptions = PublishOptions()) async throws -> PubAck {
        var allHeaders = headers ?? NATSHeaders()
        options.apply(to: &allHeaders)
        let reply: NATSMessage
        do {
            reply = try await client.request(subject, payload: payload, headers: allHeaders.isEmpty ? nil : allHeaders, timeout: timeout)
        } catch let error as NATSError where error.code == .noResponders {
            throw JetStreamError(.noStreamForSubject, "no stream captures subject \"\(subject)\"")
        }
        return try Self.decodeAPIResponse(reply.payload, as: PubAck.self, subject: subject)
    }

    // MARK: - Getting messages

    private struct MessageGetRequest: Encodable {
        var seq: UInt64?
        var last_by_subj: String?
        var next_by_subj: String?
    }

    private struct MessageGetResponse: Decodable {
        struct Message: Decodable {
            var subject: String
            var seq: UInt64
            var hdrs: String?
            var data: String?
            var time: Date
        }
        var message: Message
    }

    /// Reads a message by sequence through the stream leader (`STREAM.MSG.GET`).
    public func getMessage(stream: String, sequence: UInt64) async throws -> StoredMessage {
        try await getMessage(stream: stream, request: MessageGetRequest(seq: sequence))
    }

    /// Reads the last message on a subject through the stream leader (`STREAM.MSG.GET`).
    public func getLastMessage(stream: String, subject: String) async throws -> StoredMessage {
        try await getMessage(stream: stream, request: MessageGetRequest(last_by_subj: subject))
    }

    /// Reads the first message on `subject` at or after sequence `sequence` through the stream
    /// leader (`STREAM.MSG.GET` with `seq` and `next_by_subj`); nil when there is none. The
    /// leader answers from its applied state, which holds every message up to any write it
    /// has acknowledged.
    public func getNextMessage(stream: String, subject: String, fromSequence sequence: UInt64) async throws -> StoredMessage? {
        do {
            return try await getMessage(stream: stream, request: MessageGetRequest(seq: max(sequence, 1), next_by_subj: subject))
        } catch let error as JetStreamAPIError where error.errorCode == .noMessageFound || error.code == 404 {
            return nil
        }
    }

    private func getMessage(stream: String, request: MessageGetRequest) async throws -> StoredMessage {
        try Self.validateName(stream, what: "stream")
        let response = try await apiRequest("STREAM.MSG.GET.\(stream)", json: request, as: MessageGetResponse.self)
        let message = response.message
        var headers: NATSHeaders?
        if let encoded = message.hdrs, !encoded.isEmpty {
            guard let data = Data(base64Encoded: encoded) else {
                throw JetStreamError(.invalidResponse, "message \(message.seq) of \(stream) has headers that are not base64")
            }
            headers = try NATSProtocolParser.parseHeaders(ByteBuffer(bytes: data))
        }
        var payload = ByteBuffer()
        if let encoded = message.data, !encoded.isEmpty {
            guard let data = Data(base64Encoded: encoded) else {
                throw JetStreamError(.invalidResponse, "message \(message.seq) of \(stream) has data that is not base64")
            }
            payload = ByteBuffer(bytes: data)
        }
        return StoredMessage(subject: message.subject, sequence: message.seq, headers: headers, payload: payload, time: message.time)
    }

    /// Reads a message by sequence with direct get (any replica may answer; the stream must
    /// allow direct access).
    public func directGet(stream: String, sequence: UInt64) async throws -> StoredMessage {
        try Self.validateName(stream, what: "stream")
        let body = try JetStreamJSON.encoder().encode(MessageGetRequest(seq: sequence))
        return try await directGet(subject: "\(apiPrefix).DIRECT.GET.\(stream)", body: ByteBuffer(bytes: body), stream: stream)
    }

    /// Reads the last message on `subject` with direct get.
    public func directGetLast(stream: String, subject: String) async throws -> StoredMessage {
        try Self.validateName(stream, what: "stream")
        return try await directGet(subject: "\(apiPrefix).DIRECT.GET.\(stream).\(subject)", body: ByteBuffer(), stream: stream)
    }

    private func directGet(subject: String, body: ByteBuffer, stream: String) async throws -> StoredMessage {
        let reply: NATSMessage
        do {
            reply = try await client.request(subject, payload: body, timeout: timeout)
        } catch let error as NATSError where error.code == .noResponders {
            throw JetStreamError(.notEnabled, "direct get is not enabled on stream \(stream) (no responders on \(subject))")
        }
        if let status = reply.headers?.status {
            if status == 404 {
                throw JetStreamAPIError(code: 404, errorCode: .noMessageFound, description: reply.headers?.statusDescription ?? "no message found")
            }
            throw JetStreamAPIError(code: status, errorCode: JetStreamErrorCode(rawValue: 0), description: reply.headers?.statusDescription ?? "direct get failed")
        }
        guard let headers = reply.headers, let storedSubject = headers[NATSHeaderName.subject],
            let sequenceText = headers[NATSHeaderName.sequence], let sequence = UInt64(sequenceText)
        else {
            throw JetStreamError(.invalidResponse, "direct get answer from \(stream) lacks Nats-Subject or Nats-Sequence")
        }
        let time = headers[NATSHeaderName.timeStamp].flatMap(Self.parseGoTime) ?? Date(timeIntervalSince1970: 0)
        var userHeaders = NATSHeaders()
        for field in headers where ![NATSHeaderName.stream, NATSHeaderName.subject, NATSHeaderName.sequence, NATSHeaderName.timeStamp, NATSHeaderName.lastSequence].contains(field.name) {
            userHeaders.append(name: field.name, value: field.value)
        }
        return StoredMessage(subject: storedSubject, sequence: sequence, headers: userHeaders.fields.isEmpty ? nil : userHeaders, payload: reply.payload, time: time)
    }

    /// Parses `Nats-Time-Stamp`, which the server writes in RFC 3339 or in Go's default
    /// `2006-01-02 15:04:05.999999999 +0000 UTC` form depending on version.
    static func parseGoTime(_ text: String) -> Date? {
        if let date = JetStreamJSON.parseRFC3339(text) { return date }
        let parts = text.split(separator: " ")
        guard parts.count >= 3 else { return nil }
        let offset = parts[2]
        guard offset.count == 5 else { return nil }
        let rfc = "\(parts[0])T\(parts[1])\(offset.prefix(3)):\(offset.suffix(2))"
        return JetStreamJSON.parseRFC3339(rfc)
    }

    // MARK: - Consumers

    private struct CreateConsumerRequest: Encodable {
        var stream_name: String
        var config: ConsumerConfig
    }

    /// Creates (or updates, if the change is allowed) a consumer. Named when the configuration
    /// has a `name` or `durableName`, ephemeral otherwise.
    @discardableResult
    public func createConsumer(stream: String, config: ConsumerConfig) async throws -> ConsumerInfo {
        try Self.validateName(stream, what: "stream")
        let request = CreateConsumerRequest(stream_name: stream, config: config)
        if let name = config.name ?? config.durableName {
            try Self.validateName(name, what: "consumer")
            if config.durableName != nil {
                return try await apiRequest("CONSUMER.DURABLE.CREATE.\(stream).\(name)", json: request, as: ConsumerInfo.self)
            }
            return try await apiRequest("CONSUMER.CREATE.\(stream).\(name)", json: request, as: ConsumerInfo.self)
        }
        return try await apiRequest("CONSUMER.CREATE.\(stream)", json: request, as: ConsumerInfo.self)
    }

    /// A consumer's configuration and progress.
    public func consumerInfo(stream: String, name: String) async throws -> ConsumerInfo {
        try Self.validateName(stream, what: "stream")
        try Self.validateName(name, what: "consumer")
        return try await apiRequest("CONSUMER.INFO.\(stream).\(name)", as: ConsumerInfo.self)
    }

    /// Deletes a consumer.
    public func deleteConsumer(stream: String, name: String) async throws {
        try Self.validateName(stream, what: "stream")
        try Self.validateName(name, what: "consumer")
        _ = try await apiRequest("CONSUMER.DELETE.\(stream).\(name)", as: SuccessResponse.self)
    }
}
