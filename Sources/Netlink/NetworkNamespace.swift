/// The network namespace a ``VIPAddressManager`` or ``VIPAnnouncer`` works in.
///
/// A socket stays in the namespace it was created in, so a manager for another namespace opens
/// its sockets on a thread of its own that first called `setns(fd, CLONE_NEWNET)`. Interface
/// names are looked up there too.
public struct NetworkNamespace: Sendable, Hashable, CustomStringConvertible {
    /// The namespace file to enter, or `nil` for the process's own namespace.
    public let path: String?

    /// The namespace the process runs in (the default).
    public static let current = NetworkNamespace(path: nil)

    /// A namespace created with `ip netns add NAME`: `/var/run/netns/NAME`.
    public static func named(_ name: String) -> NetworkNamespace {
        NetworkNamespace(path: "/var/run/netns/" + name)
    }

    /// A namespace file, e.g. `/proc/1234/ns/net`.
    public static func path(_ path: String) -> NetworkNamespace {
        NetworkNamespace(path: path)
    }

    private init(path: String?) {
        self.path = path
    }

    public var description: String { path ?? "the current network namespace" }
}
