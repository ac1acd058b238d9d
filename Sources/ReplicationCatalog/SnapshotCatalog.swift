import Foundation
import NATS

/// How snapshots are kept in an app's Object Store bucket (``ReplicationNames/snapshotBucket``):
/// one object per snapshot named `snapshot-<txid, 20 digits>-<token>` (so names sort by txid),
/// whose metadata describe the database it holds (`txid`, `token`, `node`, `checksum` in hex,
/// `page_size`, `commit_pages`).
extension SnapshotCopy {
    /// The prefix of every snapshot object's name.
    public static let namePrefix = "snapshot-"

    /// The object name of the snapshot at `txid` taken under `token`.
    public static func objectName(txid: UInt64, token: UInt64) -> String {
        "\(namePrefix)\(String(format: "%020llu", txid))-\(token)"
    }

    /// The object's metadata describing ``copy``.
    public var metadata: [String: String] {
        [
            "txid": "\(copy.txid)", "token": "\(copy.token)", "node": copy.node, "checksum": hex(copy.checksum), "page_size": "\(copy.pageSize)",
            "commit_pages": "\(copy.commitPages)",
        ]
    }

    /// Reads a snapshot object's description from its name and metadata; nil when the name is
    /// not a snapshot's or a metadata field is missing or malformed.
    public init?(name: String, metadata: [String: String]?) {
        guard name.hasPrefix(Self.namePrefix), let metadata, let txid = metadata["txid"].flatMap(UInt64.init),
            let token = metadata["token"].flatMap(UInt64.init), let checksum = metadata["checksum"].flatMap({ UInt64($0, radix: 16) }),
            let pageSize = metadata["page_size"].flatMap(Int.init), let pages = metadata["commit_pages"].flatMap(UInt32.init)
        else { return nil }
        self.init(
            name: name, copy: DatabaseCopy(node: metadata["node"] ?? "snapshot", token: token, txid: txid, checksum: checksum, pageSize: pageSize, commitPages: pages))
    }

    /// The newest snapshot in `bucket` whose metadata are readable (nil without a bucket or
    /// such a snapshot).
    public static func newest(jetStream: JetStream, bucket: String) async -> SnapshotCopy? {
        guard let store = try? await jetStream.objectStore(bucket), let objects = try? await store.list() else { return nil }
        for object in objects.filter({ $0.name.hasPrefix(namePrefix) }).sorted(by: { $0.name > $1.name }) {
            if let snapshot = SnapshotCopy(name: object.name, metadata: object.metadata) { return snapshot }
        }
        return nil
    }
}
