/// The subject and stream names JetStream, KV and Object Store use on the wire, in one place,
/// so that code deriving NATS permissions from them cannot drift from the client.
public enum JetStreamNames {
    /// The API subject prefix without a domain: `$JS.API`.
    public static let apiPrefix = "$JS.API"
    /// The prefix of consumer acknowledgement subjects: `$JS.ACK`
    /// (`$JS.ACK.<stream>.<consumer>.…`).
    public static let ackPrefix = "$JS.ACK"
    /// The prefix of flow-control reply subjects of push consumers: `$JS.FC`
    /// (`$JS.FC.<stream>.<consumer>.…`).
    public static let flowControlPrefix = "$JS.FC"

    /// The stream behind a KV bucket: `KV_<bucket>`.
    public static func keyValueStream(bucket: String) -> String { "KV_\(bucket)" }
    /// The subject prefix of a KV bucket's keys: `$KV.<bucket>` (keys follow after a dot).
    public static func keyValueSubjectPrefix(bucket: String) -> String { "$KV.\(bucket)" }

    /// The stream behind an Object Store bucket: `OBJ_<bucket>`.
    public static func objectStoreStream(bucket: String) -> String { "OBJ_\(bucket)" }
    /// The subject prefix of an Object Store bucket: `$O.<bucket>` (`.C.<nuid>` chunks,
    /// `.M.<name>` metadata).
    public static func objectStoreSubjectPrefix(bucket: String) -> String { "$O.\(bucket)" }
}
