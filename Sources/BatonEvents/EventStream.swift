import BatonCore
import Foundation
import NATS
import NIOCore

/// The cluster's event history in JetStream: stream `BATON_<cluster>_EVENTS` on subjects
/// `baton.<cluster>.events.>`, file storage, bounded by age and size (the oldest events go first).
public enum EventStream {
    /// How long events are kept and how much space they may take.
    public struct Retention: Sendable, Hashable {
        /// Events older than this are removed (default 7 days).
        public var maxAge: Duration
        /// The stream is kept below this many bytes, oldest events removed first (default 64 MiB).
        public var maxBytes: Int64

        /// Creates a retention; the defaults keep a week of history in at most 64 MiB.
        public init(maxAge: Duration = .seconds(7 * 86_400), maxBytes: Int64 = 64 * 1_048_576) {
            self.maxAge = maxAge
            self.maxBytes = maxBytes
        }
    }

    /// The stream's configuration.
    public static func config(cluster: String, retention: Retention, replicas: Int) -> StreamConfig {
        var config = StreamConfig(name: EventSubjects.stream(cluster: cluster), subjects: [EventSubjects.all(cluster: cluster)])
        config.description = "Baton event history of cluster \(cluster)"
        config.retention = .limits
        config.maxAge = retention.maxAge
        config.maxBytes = retention.maxBytes
        config.discard = .old
        config.storage = .file
        config.replicas = replicas
        config.allowDirect = true
        config.duplicateWindow = .seconds(120)
        return config
    }

    /// Creates the stream, or brings an existing one to `retention` and `replicas`.
    @discardableResult
    public static func ensure(jetStream: JetStream, cluster: String, retention: Retention, replicas: Int) async throws -> StreamInfo {
        let wanted = config(cluster: cluster, retention: retention, replicas: replicas)
        do {
            return try await jetStream.createStream(wanted)
        } catch let error as JetStreamAPIError where error.errorCode == .streamNameInUse {
            return try await jetStream.updateStream(wanted)
        }
    }

    /// The JSON form of an event, as stored.
    public static func encode(_ event: BatonEvent) throws -> ByteBuffer {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return ByteBuffer(bytes: try encoder.encode(event))
    }

    /// Decodes a stored event; throws saying where when the body is not one.
    public static func decode(_ payload: ByteBuffer, subject: String, sequence: UInt64) throws -> BatonEvent {
        do {
            return try JSONDecoder().decode(BatonEvent.self, from: Data(payload.readableBytesView))
        } catch {
            throw EventStreamError("message \(sequence) on \(subject) is not a Baton event: \(error)")
        }
    }
}

/// A problem reading or writing the event history.
public struct EventStreamError: Error, CustomStringConvertible, Sendable {
    public var description: String

    /// Creates an error with the sentence that says what went wrong.
    public init(_ description: String) {
        self.description = description
    }
}
