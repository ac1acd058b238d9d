import Foundation
import NATSTestSupport
import Testing

/// `batonctl` talks to nodes and reads NATS only: it must not link the C libraries of the
/// node's runtime (libsystemd, libmnl through Backends/Netlink/Systemd; libsqlite3 through
/// Replication — its `replica` commands use ReplicationCatalog instead). `batond`, built from
/// the same tree, links all three, which shows that the check sees them when they are there.
@Suite("Batonctl linkage: no libsystemd, libmnl or libsqlite3")
struct BatonctlLinkageTests {
    static let runtimeLibraries = ["libsystemd", "libmnl", "libsqlite3"]

    /// The shared libraries `ldd` lists for `binary` (their sonames, e.g. `libc.so.6`).
    static func linkedLibraries(_ binary: String) async throws -> [String] {
        guard let ldd = ["/usr/bin/ldd", "/bin/ldd"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            try Integration.missingPrerequisite(MissingPrerequisite(name: "ldd", reason: "no ldd in /usr/bin or /bin", remedy: "apt-get install libc-bin"))
        }
        let result = try await runProgram(ldd, [binary])
        guard result.status == 0 else { throw LinkageError(message: "ldd \(binary) failed: \(result)") }
        return result.stdout.split(separator: "\n").compactMap { line in
            line.split(whereSeparator: { $0 == " " || $0 == "\t" }).first.map(String.init)
        }
    }

    struct LinkageError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    @Test("batonctl links none of the node runtime's C libraries; batond links all of them")
    func batonctlLinksNoRuntimeLibraries() async throws {
        let batonctl = try batonctlPath()
        let batond = URL(fileURLWithPath: batonctl).deletingLastPathComponent().appendingPathComponent("batond").path
        guard FileManager.default.isExecutableFile(atPath: batond) else {
            try Integration.missingPrerequisite(
                MissingPrerequisite(name: "batond", reason: "no built batond at \(batond)", remedy: "build it first: swift build --build-tests"))
        }

        let daemon = try await Self.linkedLibraries(batond)
        for library in Self.runtimeLibraries {
            #expect(daemon.contains { $0.hasPrefix(library + ".so") }, "batond should link \(library); ldd listed \(daemon)")
        }

        let cli = try await Self.linkedLibraries(batonctl)
        #expect(cli.contains { $0.hasPrefix("libc.so") }, "ldd listed no libc for \(batonctl): \(cli)")
        for library in Self.runtimeLibraries {
            #expect(!cli.contains { $0.hasPrefix(library + ".so") }, "\(batonctl) links \(library) (ldd listed \(cli))")
        }
    }
}
