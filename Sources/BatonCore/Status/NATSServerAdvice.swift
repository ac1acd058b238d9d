/// What Baton knows about nats-server versions that matters to its safety.
public enum NATSServerAdvice {
    /// A warning when the lease buckets are replicated on a server whose clustered streams do
    /// not serialize `Nats-Expected-Last-Subject-Sequence` — the compare-and-set every lease
    /// write rests on — so that two nodes can both take one lease (nats-server issues #4320 and
    /// #5794, reported on 2.9; Baton's chaos suite saw two backends run at once on 2.9.10 and
    /// never on 2.15.1). Below 2.11 counts as affected. Nil when the version is newer, the
    /// server runs alone, or the version cannot be parsed.
    public static func clusteredCompareAndSetWarning(serverVersion: String, clustered: Bool, replicas: Int) -> String? {
        guard clustered, replicas > 1, let (major, minor) = majorMinor(serverVersion) else { return nil }
        guard major < 2 || (major == 2 && minor < 11) else { return nil }
        return "nats-server \(serverVersion) may accept two compare-and-set writes at once in a clustered stream "
            + "(nats-server issues #4320, #5794): two nodes can take the same lease. "
            + "Run nats-server 2.11 or later for a cluster (see RELIABILITY.md)"
    }

    private static func majorMinor(_ version: String) -> (Int, Int)? {
        let numbers = version.drop { !$0.isNumber }.split(separator: ".").prefix(2).map { Int($0.prefix { $0.isNumber }) }
        guard numbers.count == 2, let major = numbers[0], let minor = numbers[1] else { return nil }
        return (major, minor)
    }
}
