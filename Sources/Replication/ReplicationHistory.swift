import Foundation

/// What the WAL stream of an app holds, as a promotion sees it.
public enum StreamView: Sendable, Hashable {
    /// The stream does not exist (never created, or deleted).
    case missing
    /// The stream exists.
    case present(StreamState)

    /// The state of an existing stream.
    public struct StreamState: Sendable, Hashable {
        /// Messages in the stream (0 once everything expired by `max_age`).
        public var messages: UInt64
        /// The first sequence still stored.
        public var firstSequence: UInt64
        /// The last sequence ever stored (kept after expiry; 0 for a new stream).
        public var lastSequence: UInt64
        /// The last record's token and txid, when its message is still stored.
        public var lastRecord: (token: UInt64, txid: UInt64)?
        /// Whether a snapshot record is still in the stream (a replica without a usable
        /// position can start from it).
        public var hasSnapshotRecord: Bool
        /// The token and txid of the record stored at this node's position's sequence: nil when
        /// that sequence is not stored (or this node has no position). Tells whether the stream
        /// is the one the replica followed: there, it holds a record the replica applied (or
        /// rejected as stale), never one of a newer token or a later txid of the same token.
        public var recordAtLocalSequence: (token: UInt64, txid: UInt64)?

        /// Creates a stream state.
        public init(
            messages: UInt64, firstSequence: UInt64, lastSequence: UInt64, lastRecord: (token: UInt64, txid: UInt64)?, hasSnapshotRecord: Bool,
            recordAtLocalSequence: (token: UInt64, txid: UInt64)? = nil
        ) {
            self.messages = messages
            self.firstSequence = firstSequence
            self.lastSequence = lastSequence
            self.lastRecord = lastRecord
            self.hasSnapshotRecord = hasSnapshotRecord
            self.recordAtLocalSequence = recordAtLocalSequence
        }

        public static func == (l: StreamState, r: StreamState) -> Bool {
            l.messages == r.messages && l.firstSequence == r.firstSequence && l.lastSequence == r.lastSequence
                && l.lastRecord?.token == r.lastRecord?.token && l.lastRecord?.txid == r.lastRecord?.txid && l.hasSnapshotRecord == r.hasSnapshotRecord
                && l.recordAtLocalSequence?.token == r.recordAtLocalSequence?.token && l.recordAtLocalSequence?.txid == r.recordAtLocalSequence?.txid
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(messages)
            hasher.combine(firstSequence)
            hasher.combine(lastSequence)
            hasher.combine(lastRecord?.token)
            hasher.combine(lastRecord?.txid)
        }
    }

    /// `missing`, `empty`, `expired up to sequence N`, or `sequences A...B, last txid T (epoch E)`.
    public var summary: String {
        switch self {
        case .missing: return "the stream does not exist"
        case .present(let state) where state.lastSequence == 0: return "the stream is empty (new)"
        case .present(let state) where state.messages == 0:
            return "the stream's records expired (retention); it ended at sequence \(state.lastSequence)"
        case .present(let state):
            let last = state.lastRecord.map { "last txid \($0.txid) (epoch \($0.token))" } ?? "last record unreadable"
            return "the stream holds sequences \(state.firstSequence)...\(state.lastSequence), \(last)"
        }
    }
}

/// The decision "may this node promote its SQLite replica, from what, and what does it tell the
/// operator": pure, no I/O. The executor (``ReplicaPromotion``) gathers the inputs and carries
/// out the plan.
///
/// The rule: the newest data Baton knows of — the durable record, this node's own copy — must
/// survive the promotion. The stream is drained when it reaches that data; when it does not (it
/// expired, was deleted or recreated, went backwards), the node promotes its own copy if that
/// is the newest, else the newest snapshot if that is, and otherwise refuses, naming what each
/// node holds and the way out (`batonctl replica promote NODE --force`).
public struct PromotionDecision: Sendable, Hashable {
    /// The app.
    public var app: String
    /// This node's id.
    public var node: String
    /// The fencing token this node promotes under.
    public var token: UInt64
    /// This node's replica (its verified position), if any.
    public var local: DatabaseCopy?
    /// The newest durable record (KV and the state directory's copy, merged).
    public var newest: ReplicationHistoryRecord?
    /// What the stream holds.
    public var stream: StreamView
    /// The newest snapshot in the Object Store bucket, if any.
    public var snapshot: SnapshotCopy?
    /// What the other nodes reported holding (for the refusal's message and the no-record case).
    public var others: [DatabaseCopy]

    /// What to do.
    public enum Plan: Sendable, Hashable {
        /// Nothing was ever replicated: keep (or create) the database at `sqlite.path`.
        case firstStart
        /// The stream reaches the newest data: drain it into the replica and promote.
        case drainStream
        /// The stream cannot deliver the newest data, but this node's replica is it: promote
        /// the replica and start a new history (snapshot) above its txid.
        case promoteLocalCopy(reason: String)
        /// The newest snapshot is the newest data: restore it and promote it.
        case restoreSnapshot(name: String, reason: String)
        /// No safe choice: the app stays down on this node.
        case refuse(reason: String)
    }

    /// Creates the inputs of a decision.
    public init(
        app: String, node: String, token: UInt64, local: DatabaseCopy?, newest: ReplicationHistoryRecord?, stream: StreamView, snapshot: SnapshotCopy?,
        others: [DatabaseCopy] = []
    ) {
        self.app = app
        self.node = node
        self.token = token
        self.local = local
        self.newest = newest
        self.stream = stream
        self.snapshot = snapshot
        self.others = others
    }

    /// The stream's last sequence (0 when missing): where a new history's first write expects
    /// the stream to be.
    public var streamLastSequence: UInt64 {
        if case .present(let state) = stream { return state.lastSequence }
        return 0
    }

    /// Whether the stream's record at the local position's sequence is one this replica
    /// followed (true when that sequence is not in the stream's stored range).
    private func followedByLocal(_ state: StreamView.StreamState) -> Bool {
        guard let local, local.streamSequence >= state.firstSequence, local.streamSequence <= state.lastSequence, local.streamSequence > 0 else {
            return true
        }
        guard let record = state.recordAtLocalSequence else { return false }
        // An older token's record there is a stale writer's, which the replica rejected.
        return record.token < local.token || (record.token == local.token && record.txid <= local.txid)
    }

    /// Decides.
    public var plan: Plan {
        if let newest, newest.newest.token > token, newest.forced == nil {
            return .refuse(reason: "the durable record was written under epoch \(newest.newest.token), newer than this node's \(token)" + holdings)
        }
        if let forced = newest, forced.forced != nil {
            return forcedPlan(forced)
        }
        if streamReachesNewest {
            return .drainStream
        }
        let why = streamShortfall
        // Nothing recorded anywhere and no copy: a first start.
        if newest == nil, local == nil, snapshot == nil, others.isEmpty, streamHoldsNothing {
            return .firstStart
        }
        if let local, isAtLeastNewest(local) {
            return .promoteLocalCopy(reason: "\(why); this node's replica is the newest known data (\(local.summary))")
        }
        if let snapshot, isAtLeastNewest(snapshot.copy) {
            return .restoreSnapshot(name: snapshot.name, reason: "\(why); snapshot \(snapshot.name) is the newest known data (txid \(snapshot.copy.txid))")
        }
        return .refuse(reason: "\(why); no copy this node can reach is the newest data" + holdings)
    }

    /// The operator forced a copy: only exactly that data may be promoted.
    private func forcedPlan(_ record: ReplicationHistoryRecord) -> Plan {
        let forced = record.newest
        if let local, local.sameData(as: forced) {
            return .promoteLocalCopy(reason: "the operator forced \(forced.node)'s copy (txid \(forced.txid)); this node's replica is that copy")
        }
        if let snapshot, snapshot.copy.sameData(as: forced) {
            return .restoreSnapshot(name: snapshot.name, reason: "the operator forced \(forced.node)'s copy (txid \(forced.txid)); snapshot \(snapshot.name) is that copy")
        }
        return .refuse(
            reason: "the operator forced \(forced.node)'s copy (txid \(forced.txid), checksum \(hex(forced.checksum))), which this node does not hold"
                + holdings)
    }

    /// The target every promotion must reach: the newest durable record, and this node's own
    /// copy (a stream behind it went backwards).
    private var target: (txid: UInt64, token: UInt64)? {
        var best: (txid: UInt64, token: UInt64)?
        if let newest { best = (newest.newest.txid, newest.newest.token) }
        if let local, best == nil || local.txid > best!.txid { best = (local.txid, max(local.token, best?.token ?? 0)) }
        if newest == nil, local == nil, let known = others.max(by: { ($0.token, $0.txid) < ($1.token, $1.txid) }) {
            best = (known.txid, known.token)
        }
        return best
    }

    private var streamHoldsNothing: Bool {
        switch stream {
        case .missing: return true
        case .present(let state): return state.lastSequence == 0
        }
    }

    /// Whether draining the stream brings the replica to (at least) the newest known data.
    private var streamReachesNewest: Bool {
        guard case .present(let state) = stream, state.messages > 0, let last = state.lastRecord else { return false }
        // A replica whose record is no longer at its sequence follows another stream.
        guard followedByLocal(state) else { return false }
        if let local, local.streamSequence > state.lastSequence { return false }
        // A replica before the stream's first sequence needs a snapshot record to start from.
        if local == nil || local!.streamSequence + 1 < state.firstSequence {
            guard state.hasSnapshotRecord else { return false }
        }
        guard let target else { return true }
        return last.txid >= target.txid
    }

    private var streamShortfall: String {
        switch stream {
        case .missing:
            return "the WAL stream does not exist (deleted, or lost by NATS)" + newestSuffix
        case .present(let state) where state.lastSequence == 0:
            return "the WAL stream is empty (recreated)" + newestSuffix
        case .present(let state) where state.messages == 0 || state.lastRecord == nil:
            return "the WAL stream's records expired (nobody shipped for longer than its retention)" + newestSuffix
        case .present(let state):
            if let local, local.streamSequence > state.lastSequence || !followedByLocal(state) {
                return "the WAL stream went backwards: it ends at sequence \(state.lastSequence) (txid \(state.lastRecord?.txid ?? 0)), this node's replica applied sequence \(local.streamSequence) (txid \(local.txid))"
            }
            if let target, (state.lastRecord?.txid ?? 0) < target.txid {
                return "the WAL stream ends at txid \(state.lastRecord?.txid ?? 0), behind the newest known txid \(target.txid)" + newestSuffix
            }
            return "the WAL stream starts at sequence \(state.firstSequence) with no snapshot record this node's replica could start from"
        }
    }

    private var newestSuffix: String {
        guard let newest else { return "" }
        return " (the durable record says \(newest.newest.summary), \(newest.event) at \(Self.timestamp(newest.recordedAt)))"
    }

    /// Whether `copy` holds at least the newest known data: the same data as the durable record
    /// or a later transaction of its history (same or newer token), and no older than any copy
    /// another node reported when there is no record.
    private func isAtLeastNewest(_ copy: DatabaseCopy) -> Bool {
        guard let newest else {
            return others.allSatisfy { $0.node == copy.node || ($0.token, $0.txid) <= (copy.token, copy.txid) }
        }
        guard continues(newest.newest, copy) else { return false }
        // A node that reported a later transaction of the same history holds newer data: it
        // (not this copy) is the one to promote.
        return !others.contains { $0.node != copy.node && $0.node != node && continues(newest.newest, $0) && $0.txid > copy.txid }
    }

    /// Whether `copy` is the record's data or a later transaction of its history.
    private func continues(_ record: DatabaseCopy, _ copy: DatabaseCopy) -> Bool {
        if copy.txid == record.txid { return copy.checksum == record.checksum }
        return copy.txid > record.txid && copy.token >= record.token
    }

    private var holdings: String {
        var parts: [String] = []
        if let newest { parts.append("durable record: \(newest.newest.summary) (\(newest.event) at \(Self.timestamp(newest.recordedAt)))") }
        parts.append("this node (\(node)): " + (local.map { "txid \($0.txid) (epoch \($0.token), checksum \(hex($0.checksum)))" } ?? "no replica"))
        for other in others.sorted(by: { $0.node < $1.node }) where other.node != node { parts.append(other.summary) }
        if let snapshot { parts.append("newest snapshot \(snapshot.name): txid \(snapshot.copy.txid) (epoch \(snapshot.copy.token))") } else {
            parts.append("no snapshot")
        }
        parts.append(stream.summary)
        return ". What each holds: " + parts.joined(separator: "; ")
            + ". To accept a node's copy as the truth: batonctl replica promote \(app) NODE --force"
    }

    static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601)
    }
}
