import Foundation
import NATS

/// When the newest snapshot of an app was stored in its snapshot bucket, for the status and
/// `baton_replication_snapshot_age_seconds`: the bucket's object list (one read of its meta
/// messages, the newest per name) at most every ``refreshInterval``, in the background, so a
/// status request never waits for NATS.
actor SnapshotAgeWatch {
    /// How old the known time may get before the bucket is read again.
    static let refreshInterval: Duration = .seconds(5)

    private let jetStream: JetStream
    private let bucket: String
    private var newest: Date?
    private var checkedAt: ContinuousClock.Instant?
    private var refreshing: Task<Void, Never>?

    init(jetStream: JetStream, bucket: String) {
        self.jetStream = jetStream
        self.bucket = bucket
    }

    /// The newest snapshot's time as last read (nil before the first read found one); starts a
    /// read in the background when that was longer than ``refreshInterval`` ago.
    func newestSnapshotTime() -> Date? {
        let due = checkedAt.map { ContinuousClock.now - $0 >= Self.refreshInterval } ?? true
        if due, refreshing == nil {
            refreshing = Task { [jetStream, bucket] in
                let found = await Self.read(jetStream: jetStream, bucket: bucket)
                self.finish(found)
            }
        }
        return newest
    }

    /// Stops a read in progress.
    func cancel() {
        refreshing?.cancel()
    }

    private func finish(_ found: Date??) {
        // A failed read (nil) keeps what was known; a bucket without snapshots (.some(nil)) clears it.
        if let found { newest = found }
        checkedAt = .now
        refreshing = nil
    }

    /// The newest `snapshot-…` object's time: `.some(nil)` when the bucket holds none (or does
    /// not exist), nil when it could not be read.
    static func read(jetStream: JetStream, bucket: String) async -> Date?? {
        let store: ObjectStore
        do {
            store = try await jetStream.objectStore(bucket)
        } catch let error as ObjectStoreError where error.code == .bucketNotFound {
            return .some(nil)
        } catch {
            return nil
        }
        guard let objects = try? await store.list() else { return nil }
        return .some(newestTime(of: objects.filter { $0.name.hasPrefix("snapshot-") }.map(\.modified)))
    }

    /// The latest of `times` (nil when empty).
    static func newestTime(of times: [Date]) -> Date? { times.max() }
}
