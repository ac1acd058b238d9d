import Foundation
import Replication
import Testing

/// The snapshot objects' names and metadata (ReplicationCatalog): the shipper writes them, the
/// promotion and `batonctl replica status` read them, so both ends use this one definition.
@Suite("Snapshot catalog: object names and metadata")
struct SnapshotCatalogTests {
    let copy = DatabaseCopy(node: "node-a", token: 12, txid: 4711, checksum: 0x00AB_CDEF_0123_4567, pageSize: 4096, commitPages: 250)

    @Test func metadataRoundTripsAndKeepsTheFormatReadersKnow() throws {
        let name = SnapshotCopy.objectName(txid: copy.txid, token: copy.token)
        #expect(name == "snapshot-00000000000000004711-12")
        let snapshot = SnapshotCopy(name: name, copy: copy)
        #expect(
            snapshot.metadata == [
                "txid": "4711", "token": "12", "node": "node-a", "checksum": "00abcdef01234567", "page_size": "4096", "commit_pages": "250",
            ])
        #expect(SnapshotCopy(name: name, metadata: snapshot.metadata) == snapshot)
    }

    @Test func namesSortByTxid() {
        let names = [UInt64(10), 9, 100, 2].map { SnapshotCopy.objectName(txid: $0, token: 1) }
        #expect(names.sorted() == [UInt64(2), 9, 10, 100].map { SnapshotCopy.objectName(txid: $0, token: 1) })
    }

    @Test func anObjectThatIsNotADescribedSnapshotIsNotOne() {
        let name = SnapshotCopy.objectName(txid: 1, token: 1)
        let good = SnapshotCopy(name: name, copy: copy).metadata
        #expect(SnapshotCopy(name: "backup-1", metadata: good) == nil, "not a snapshot's name")
        #expect(SnapshotCopy(name: name, metadata: nil) == nil, "no metadata")
        for field in ["txid", "token", "checksum", "page_size", "commit_pages"] {
            var missing = good
            missing[field] = nil
            #expect(SnapshotCopy(name: name, metadata: missing) == nil, "without \(field)")
            var malformed = good
            malformed[field] = "x"
            #expect(SnapshotCopy(name: name, metadata: malformed) == nil, "with a malformed \(field)")
        }
        // The node is informative: without it the snapshot still describes its database.
        var anonymous = good
        anonymous["node"] = nil
        #expect(SnapshotCopy(name: name, metadata: anonymous)?.copy.node == "snapshot")
    }
}
