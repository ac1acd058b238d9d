import Foundation
import Testing

@testable import BatonCore

/// docs/baton.yaml.md is the config reference that the man page baton.yaml(5) is generated from
/// (scripts/package): it must describe every key the config reader accepts.
@Suite struct ConfigReferenceTests {
    static let sections: [(name: String, keys: [String])] = [
        ("top level", BatonConfig.keys), ("node", NodeConfig.keys), ("nats", NATSConfig.keys), ("nats.tls", TLSConfig.keys),
        ("apps", AppConfig.keys), ("vip", VIPConfig.keys), ("vip.announce", AnnounceConfig.keys),
        ("sqlite", SQLiteReplicaConfig.keys), ("lease", LeaseTiming.keys), ("backend", BackendConfig.keys),
        ("backend.process", ProcessBackendConfig.keys), ("restart", RestartPolicy.keys),
        ("backend.systemd", SystemdBackendConfig.keys), ("health", HealthCheckConfig.keys),
        ("http", HTTPConfig.keys), ("http.tls", HTTPTLSConfig.keys), ("events", EventsConfig.keys),
        ("apps.placement", AppPlacement.keys), ("placement", ClusterPlacementConfig.keys),
        ("hooks", HooksConfig.keys), ("hooks.<point>[]", HookCommand.keys),
    ]

    static func reference() throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return try String(contentsOf: root.appendingPathComponent("docs/baton.yaml.md"), encoding: .utf8)
    }

    @Test func everyKeyIsDescribed() throws {
        let text = try Self.reference()
        var missing: [String] = []
        for section in Self.sections {
            for key in section.keys where !text.contains("`\(key)`") {
                missing.append("\(section.name).\(key)")
            }
        }
        #expect(missing.isEmpty, "docs/baton.yaml.md does not describe: \(missing.joined(separator: ", "))")
        #expect(Self.sections.map(\.keys.count).reduce(0, +) > 50)
    }

    @Test func exampleInTheReferenceIsValid() throws {
        let text = try Self.reference()
        let example = try #require(text.components(separatedBy: "## EXAMPLE").last?.components(separatedBy: "```").dropFirst().first)
        let config = try BatonConfig.parse(yaml: example, file: "docs/baton.yaml.md")
        #expect(config.apps.map(\.name) == ["web"])
        #expect(config.nats.replicas == 3)
    }

    /// The Debian package's /etc/baton/baton.yaml: valid, and it runs no app until edited.
    @Test func packagedConfigIsValidAndSupervisesNothing() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let config = try BatonConfig.load(path: root.appendingPathComponent("packaging/deb/baton.yaml").path)
        #expect(config.apps.isEmpty)
        #expect(config.node.stateDirectory == "/var/lib/baton")
        #expect(config.http?.listen.hasPrefix("127.0.0.1:") == true)
    }
}
