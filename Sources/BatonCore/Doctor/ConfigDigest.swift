/// Stable digests of an app's config sections, so that nodes can compare their configs
/// (`batonctl doctor`) without sending them.
///
/// A digest is FNV-1a 64 over a canonical text of the value (its fields in declaration order,
/// dictionaries sorted by key): the same config gives the same digest in every process and
/// on every host running the same Baton version.
public enum ConfigDigest {
    /// Digests of the sections that must agree between nodes: `lease` (timing), `backend`,
    /// `health`, `vip` (addresses only: interfaces may differ per host) and `sqlite`.
    /// `priority` and `paused` are left out: they differ per node on purpose.
    public static func sections(of app: AppConfig) -> [String: String] {
        [
            "lease": digest(app.lease),
            "backend": digest(app.backend),
            "health": digest(app.health as Any),
            "vip": digest(app.vips.map(\.cidr).sorted()),
            "sqlite": digest(app.sqlite as Any),
        ]
    }

    /// The digest of any value's canonical text (16 hex digits).
    public static func digest(_ value: Any) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in canonical(value).utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// The canonical text of a value: deterministic whatever the process's hash seed.
    public static func canonical(_ value: Any) -> String {
        let mirror = Mirror(reflecting: value)
        switch mirror.displayStyle {
        case .dictionary:
            let entries = mirror.children.map { child -> (String, String) in
                let pair = Mirror(reflecting: child.value).children.map(\.value)
                return (pair.count == 2 ? canonical(pair[0]) : canonical(child.value), pair.count == 2 ? canonical(pair[1]) : "")
            }
            return "{" + entries.sorted { $0.0 < $1.0 }.map { "\($0.0):\($0.1)" }.joined(separator: ",") + "}"
        case .set:
            return "<" + mirror.children.map { canonical($0.value) }.sorted().joined(separator: ",") + ">"
        case .collection, .tuple:
            return "[" + mirror.children.map { canonical($0.value) }.joined(separator: ",") + "]"
        case .optional:
            guard let some = mirror.children.first else { return "nil" }
            return canonical(some.value)
        case .struct, .class, .enum:
            if mirror.children.isEmpty { return "\(type(of: value)).\(value)" }
            return "\(type(of: value))(" + mirror.children.map { "\($0.label ?? "_")=\(canonical($0.value))" }.joined(separator: ",") + ")"
        default:
            return "\(value)"
        }
    }
}
