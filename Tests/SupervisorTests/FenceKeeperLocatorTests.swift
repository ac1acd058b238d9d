import Foundation
import NATSTestSupport
import Testing

@testable import Backends

/// Where batond finds `baton-fence-keeper`: next to itself (a build directory, /usr/local/bin),
/// else in ../libexec/baton/ (the Debian package: /usr/bin/batond, /usr/libexec/baton/).
@Suite struct FenceKeeperLocatorTests {
    static func layout(_ files: [String]) throws -> URL {
        let root = try makeTemporaryDirectory(prefix: "baton-locator")
        for file in files {
            let url = root.appendingPathComponent(file)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data("#!/bin/sh\n".utf8).write(to: url)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: url.path)
        }
        return root
    }

    @Test func packagedLayoutUsesLibexec() throws {
        let root = try Self.layout(["usr/bin/batond", "usr/libexec/baton/baton-fence-keeper"])
        defer { try? FileManager.default.removeItem(at: root) }
        let found = try FenceKeeperLocator.locate(runningExecutable: root.appendingPathComponent("usr/bin/batond").path)
        #expect(found == root.appendingPathComponent("usr/libexec/baton/baton-fence-keeper").path)
    }

    @Test func keeperNextToBatondComesFirst() throws {
        let root = try Self.layout(["bin/batond", "bin/baton-fence-keeper", "libexec/baton/baton-fence-keeper"])
        defer { try? FileManager.default.removeItem(at: root) }
        let found = try FenceKeeperLocator.locate(runningExecutable: root.appendingPathComponent("bin/batond").path)
        #expect(found == root.appendingPathComponent("bin/baton-fence-keeper").path)
    }

    @Test func missingKeeperNamesBothPlaces() throws {
        let root = try Self.layout(["bin/batond"])
        defer { try? FileManager.default.removeItem(at: root) }
        let error = #expect(throws: FenceKeeperError.self) {
            try FenceKeeperLocator.locate(runningExecutable: root.appendingPathComponent("bin/batond").path)
        }
        let text = "\(error.map { "\($0)" } ?? "")"
        #expect(text.contains(root.appendingPathComponent("bin/baton-fence-keeper").path) && text.contains("../libexec/baton"), "\(text)")
    }
}
