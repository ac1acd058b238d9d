import Foundation

/// How far a snapshot restore has come: the initial sync of a new or empty standby, or a
/// resynchronisation of one whose position left the stream. A pure value: the applier feeds it
/// byte counts and instants, and it says when a log line is due (every ``logInterval``, not per
/// chunk).
public struct SyncProgress: Sendable, Hashable {
    /// What the restore is doing.
    public enum Phase: String, Sendable, Hashable {
        /// Downloading the snapshot from the Object Store into a temporary file.
        case downloading
        /// Reading the downloaded file back to check its page checksums against the record.
        case verifying
    }

    /// True when the replica had no position (a new or empty standby); false for a
    /// resynchronisation.
    public var initial: Bool
    /// The snapshot object's name.
    public var snapshot: String
    /// The transaction id the snapshot holds.
    public var txid: UInt64
    /// The snapshot's size in bytes (0 until the Object Store's meta was read).
    public var bytesTotal: UInt64
    /// Bytes downloaded so far.
    public var bytesDone: UInt64
    /// What the restore is doing.
    public var phase: Phase
    /// When the restore started.
    public var startedAt: ContinuousClock.Instant
    /// The latest instant the progress was updated.
    public var updatedAt: ContinuousClock.Instant
    /// When the last log line was due.
    public var lastLoggedAt: ContinuousClock.Instant
    /// How often a progress line is logged.
    public var logInterval: Duration

    /// Starts tracking a restore of `snapshot` (holding transaction `txid`) at `now`.
    public init(initial: Bool, snapshot: String, txid: UInt64, now: ContinuousClock.Instant, logInterval: Duration = .seconds(5)) {
        self.initial = initial
        self.snapshot = snapshot
        self.txid = txid
        bytesTotal = 0
        bytesDone = 0
        phase = .downloading
        startedAt = now
        updatedAt = now
        lastLoggedAt = now
        self.logInterval = logInterval
    }

    /// Records that `bytesDone` of `bytesTotal` bytes were downloaded at `now`. Returns true when
    /// a progress line is due (``logInterval`` since the last one).
    public mutating func update(bytesDone: UInt64, bytesTotal: UInt64, now: ContinuousClock.Instant) -> Bool {
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
        updatedAt = now
        guard now - lastLoggedAt >= logInterval else { return false }
        lastLoggedAt = now
        return true
    }

    /// Moves to ``Phase/verifying`` at `now`.
    public mutating func verifying(now: ContinuousClock.Instant) {
        phase = .verifying
        bytesDone = bytesTotal
        updatedAt = now
    }

    /// Seconds since the restore started, as of the last update.
    public var elapsedSeconds: Double {
        let elapsed = updatedAt - startedAt
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    /// Download rate in bytes per second since the start (0 before any time passed).
    public var bytesPerSecond: Double {
        let seconds = elapsedSeconds
        return seconds > 0 ? Double(bytesDone) / seconds : 0
    }

    /// Percent downloaded (0 while the size is unknown).
    public var percent: Double {
        bytesTotal > 0 ? min(100, Double(bytesDone) * 100 / Double(bytesTotal)) : 0
    }

    /// `41% (105.0 of 256.0 MiB, 98.2 MiB/s)`, or `verifying 256.0 MiB` in that phase.
    public var summary: String {
        let mib = 1024.0 * 1024.0
        switch phase {
        case .downloading:
            return String(
                format: "%.0f%% (%.1f of %.1f MiB, %.1f MiB/s)", percent, Double(bytesDone) / mib, Double(bytesTotal) / mib, bytesPerSecond / mib)
        case .verifying:
            return String(format: "verifying %.1f MiB", Double(bytesTotal) / mib)
        }
    }
}
