import Foundation

/// Runs `body` with a cluster of `size` servers of `kind` (JetStream on, routes between all of
/// them on reserved loopback ports), then stops them all, whether `body` returns or throws.
///
/// The servers are started one after another and are ready for clients when `body` runs; a
/// JetStream meta leader may still be being elected: create the first stream with retries.
///
/// A missing binary skips the test, or fails it when `BATON_REQUIRE_INTEGRATION=1`.
public func withNATSCluster<T>(
    _ kind: NATSServerKind,
    size: Int = 3,
    isolation: isolated (any Actor)? = #isolation,
    fileID: String = #fileID,
    filePath: String = #filePath,
    line: Int = #line,
    column: Int = #column,
    _ body: ([NATSServerProcess]) async throws -> T
) async throws -> T {
    precondition(size >= 1, "a cluster has at least one server")
    let routePorts = try (0..<size).map { _ in try reserveLoopbackPort() }
    let clusterName = "baton-test-\(UUID().uuidString.prefix(8).lowercased())"
    func config(_ index: Int) -> NATSServerConfig {
        let routes = routePorts.map { "\"nats://127.0.0.1:\($0)\"" }.joined(separator: ", ")
        return NATSServerConfig(
            jetStream: true,
            extraConfig: """
                server_name: s\(index + 1)
                cluster { name: \(clusterName), listen: "127.0.0.1:\(routePorts[index])", routes: [\(routes)] }
                """)
    }
    func start(_ index: Int, _ started: [NATSServerProcess]) async throws -> T {
        if index == size { return try await body(started) }
        return try await withNATSServer(
            kind, config: config(index), fileID: fileID, filePath: filePath, line: line, column: column
        ) { server in
            try await start(index + 1, started + [server])
        }
    }
    return try await start(0, [])
}
