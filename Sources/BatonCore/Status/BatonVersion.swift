import CBatonVersion

/// The version of Baton, reported by every node's control service and node registry entry, and
/// by `batond --version` and `batonctl --version`.
public enum BatonVersion {
    /// This build's version: the base version in `Sources/CBatonVersion/version.c`, or what
    /// `BATON_VERSION` said when the build was made (scripts/package sets it from the git
    /// tag/commit, e.g. `0.1.0+git245.068428e`); always a semantic version.
    public static let current = String(cString: baton_version_string())
}
