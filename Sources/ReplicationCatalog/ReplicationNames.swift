/// Stream, subject, bucket and consumer names of one app's replication.
public struct ReplicationNames: Sendable, Hashable {
    /// The JetStream stream: `BATON_<cluster>_<app>_WAL`.
    public var stream: String
    /// Where transaction records and final markers go: `baton.<cluster>.<app>.wal.tx`.
    public var transactionSubject: String
    /// Where snapshot records go: `baton.<cluster>.<app>.wal.snapshot` (the last one is found
    /// with a last-by-subject get).
    public var snapshotSubject: String
    /// The stream's subjects: `baton.<cluster>.<app>.wal.>`.
    public var subjects: String
    /// The Object Store bucket of snapshots: `BATON_<cluster>_<app>_SNAPSHOTS`.
    public var snapshotBucket: String
    /// This node's durable consumer: `applier_<node>`.
    public var consumer: String

    /// Derives the names.
    public init(cluster: String, app: String, nodeID: String) {
        stream = "BATON_\(cluster)_\(app)_WAL"
        transactionSubject = "baton.\(cluster).\(app).wal.tx"
        snapshotSubject = "baton.\(cluster).\(app).wal.snapshot"
        subjects = "baton.\(cluster).\(app).wal.>"
        snapshotBucket = "BATON_\(cluster)_\(app)_SNAPSHOTS"
        consumer = "applier_\(nodeID)"
    }
}
