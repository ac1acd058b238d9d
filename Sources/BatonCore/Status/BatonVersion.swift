/// The version of Baton, reported by every node's control service and by `batonctl --version`.
public enum BatonVersion {
    /// This build's version, a semantic version.
    public static let current = "0.1.0"
}
