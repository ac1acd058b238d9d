import Foundation

/// The pure parts of a passive replica's lag in bytes and seconds (``ReplicationLag``).
public enum ReplicationLagEstimate {
    /// Bytes of the stream messages beyond the applied position: `messagesBehind` × the
    /// stream's mean stored message size (`streamBytes / streamMessages`, as JetStream's stream
    /// info reports them; stored bytes include subjects and headers). 0 when nothing is behind
    /// or the stream is empty; never more than `streamBytes`.
    public static func bytesBehind(messagesBehind: UInt64, streamMessages: UInt64, streamBytes: UInt64) -> UInt64 {
        guard messagesBehind > 0, streamMessages > 0 else { return 0 }
        let behind = min(messagesBehind, streamMessages)
        // Rounded to the nearest byte; computed in Double so large streams do not overflow.
        return min(streamBytes, UInt64((Double(streamBytes) * Double(behind) / Double(streamMessages)).rounded()))
    }

    /// How far a replica is behind, in seconds, at `now`: 0 when no message is beyond the
    /// applied position, otherwise the age of the oldest transaction the replica lacks (never
    /// negative; nil when that transaction's time is unknown).
    public static func secondsBehind(messagesBehind: UInt64, oldestUnapplied: Date?, now: Date) -> Double? {
        guard messagesBehind > 0 else { return 0 }
        guard let oldestUnapplied else { return nil }
        return max(0, now.timeIntervalSince(oldestUnapplied))
    }

    /// When the active node read the transactions of the record a stream message belongs to:
    /// the record's own timestamp when the message is a record's first chunk (the record header
    /// is at its start), otherwise the time the server stored the message.
    public static func transactionTime(ofChunk bytes: [UInt8], storedAt: Date) -> Date {
        guard let chunk = try? RecordChunk(decoding: bytes), chunk.index == 0 else { return storedAt }
        // The record: magic(4) version(1) kind(1) reserved(2) txid(8) token(8) page size(4)
        // commit pages(4) checksum before(8) checksum after(8), then the timestamp (ns, BE).
        let offset = 48
        guard chunk.bytes.count >= offset + 8, Array(chunk.bytes.prefix(4)) == ReplicationRecordCodec.magic else { return storedAt }
        var nanos: UInt64 = 0
        for byte in chunk.bytes[offset..<offset + 8] { nanos = nanos << 8 | UInt64(byte) }
        return Date(timeIntervalSince1970: Double(Int64(bitPattern: nanos)) / 1e9)
    }
}
