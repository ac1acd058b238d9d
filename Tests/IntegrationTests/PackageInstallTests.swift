import Foundation
import NATSTestSupport
import SystemdTestSupport
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

private struct PackageTestFailure: Error, CustomStringConvertible {
    var description: String
}

/// The Debian package built by scripts/package, installed on this machine with `dpkg -i`: its
/// files, maintainer scripts, installed binaries, man pages and bash completion, batond.service
/// from the installed unit under a test `systemd --user`, then `dpkg -r` and `dpkg -P`.
///
/// scripts/test builds the package (scripts/package) and names it in `BATON_PACKAGE_DEB`; without
/// it the test is skipped, or fails under `BATON_REQUIRE_INTEGRATION=1`. It refuses to run when a
/// baton package is already installed (it would replace and purge it).
@Suite("Debian package", .serialized, .timeLimit(.minutes(5)))
struct PackageInstallTests {
    static let systemctlShim = """
        #!/bin/sh
        echo "$*" >> "$BATON_TEST_SYSTEMCTL_LOG"
        exit 0
        """

    /// Runs `dpkg ARGUMENTS` the way a machine booted with systemd would see it (a private mount
    /// namespace with /run/systemd/system), with `systemctl` replaced by a shim that logs its
    /// arguments to `systemctlLog`: the maintainer scripts' systemctl calls are what is checked.
    /// A /usr/sbin/policy-rc.d that refuses every action (as Docker images ship, and this machine
    /// may have) is replaced by one that allows them, in that namespace only.
    static func dpkg(_ arguments: [String], shimDirectory: String, systemctlLog: String) async throws -> SystemdCommandResult {
        let quoted = arguments.map { "'\($0)'" }.joined(separator: " ")
        let policy = "\(shimDirectory)/policy-rc.d"
        try "#!/bin/sh\nexit 0\n".write(toFile: policy, atomically: true, encoding: .utf8)
        chmod(policy, 0o755)
        let allow = "if [ -e /usr/sbin/policy-rc.d ]; then mount --bind '\(policy)' /usr/sbin/policy-rc.d; fi"
        return try await runOnThread(
            "/usr/bin/unshare",
            ["--mount", "/bin/sh", "-c", "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && \(allow) && exec dpkg \(quoted)"],
            environment: ["PATH": "\(shimDirectory):/usr/sbin:/usr/bin:/sbin:/bin", "BATON_TEST_SYSTEMCTL_LOG": systemctlLog])
    }

    static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) async throws -> SystemdCommandResult {
        try await runOnThread(executable, arguments, environment: environment)
    }

    static func packageStatus() async throws -> String {
        let result = try await run("/usr/bin/dpkg-query", ["-W", "-f=${Status}", "baton"])
        return result.status == 0 ? result.output : "not-installed"
    }

    /// Completions bash offers for `words` (the last one being completed), from the installed
    /// completion script.
    static func bashCompletions(_ words: [String]) async throws -> [String] {
        let array = words.map { "'\($0)'" }.joined(separator: " ")
        let script = """
            source /usr/share/bash-completion/completions/batonctl
            COMP_WORDS=(\(array)); COMP_CWORD=\(words.count - 1)
            COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
            complete -p batonctl >/dev/null || exit 3
            _batonctl batonctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            printf '%s\\n' "${COMPREPLY[@]}"
            """
        let result = try await run("/bin/bash", ["--norc", "--noprofile", "-c", script])
        guard result.status == 0 else { throw PackageTestFailure(description: "bash completion failed: \(result)") }
        return result.output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    static func requirePackage() throws -> String {
        guard let deb = ProcessInfo.processInfo.environment["BATON_PACKAGE_DEB"], !deb.isEmpty else {
            try Integration.missingPrerequisite(
                MissingPrerequisite(
                    name: "baton .deb", reason: "BATON_PACKAGE_DEB names no package",
                    remedy: "run scripts/test (it builds the package with scripts/package), or BATON_PACKAGE_DEB=$(scripts/package | tail -n 1)"))
        }
        guard FileManager.default.fileExists(atPath: deb) else {
            throw PackageTestFailure(description: "BATON_PACKAGE_DEB=\(deb) does not exist")
        }
        if geteuid() != 0 {
            try Integration.missingPrerequisite(MissingPrerequisite(name: "root", reason: "dpkg -i needs root", remedy: "run the tests as root"))
        }
        for tool in ["dpkg", "man", "bash", "unshare"] {
            _ = try Integration.requireExecutable(tool, remedy: "`apt-get install dpkg man-db bash util-linux` (or run scripts/install-prerequisites)")
        }
        return deb
    }

    @Test func installRunRemovePurge() async throws {
        let deb = try Self.requirePackage()
        let before = try await Self.packageStatus()
        guard before == "not-installed" else {
            throw PackageTestFailure(description: "a baton package is already on this machine (\(before)); remove it (dpkg -P baton) to run this test")
        }
        let directory = try makeTemporaryDirectory(prefix: "baton-package")
        defer { try? FileManager.default.removeItem(at: directory) }
        let shims = directory.appendingPathComponent("shims").path
        try FileManager.default.createDirectory(atPath: shims, withIntermediateDirectories: true)
        try Self.systemctlShim.write(toFile: "\(shims)/systemctl", atomically: true, encoding: .utf8)
        chmod("\(shims)/systemctl", 0o755)
        let systemctlLog = directory.appendingPathComponent("systemctl.log").path
        let calls = { (try? String(contentsOfFile: systemctlLog, encoding: .utf8)) ?? "" }

        do {
            try await Self.exercise(deb: deb, directory: directory.path, shims: shims, systemctlLog: systemctlLog, calls: calls)
        } catch {
            // Leave nothing installed, whatever failed.
            _ = try? await Self.dpkg(["-P", "baton"], shimDirectory: shims, systemctlLog: systemctlLog)
            throw error
        }
        if try await Self.packageStatus() != "not-installed" {
            _ = try? await Self.dpkg(["-P", "baton"], shimDirectory: shims, systemctlLog: systemctlLog)
        }
    }

    static func exercise(deb: String, directory: String, shims: String, systemctlLog: String, calls: () -> String) async throws {
        let files = FileManager.default

        // Install: files in place, the unit neither enabled nor started, daemon-reload.
        let install = try await dpkg(["-i", deb], shimDirectory: shims, systemctlLog: systemctlLog)
        try #require(install.status == 0, "dpkg -i: \(install)")
        #expect(install.output.contains("batond.service is not enabled or started"), "\(install.output)")
        #expect(calls().contains("--system daemon-reload"), "systemctl calls: \(calls())")
        #expect(!calls().contains("enable") && !calls().contains("start"), "systemctl calls: \(calls())")
        for path in [
            "/usr/bin/batond", "/usr/bin/batonctl", "/usr/libexec/baton/baton-fence-keeper", "/lib/systemd/system/batond.service",
            "/etc/baton/baton.yaml", "/usr/share/man/man8/batond.8.gz", "/usr/share/man/man8/batonctl.8.gz",
            "/usr/share/man/man5/baton.yaml.5.gz", "/usr/share/bash-completion/completions/batonctl",
            "/usr/share/zsh/vendor-completions/_batonctl", "/usr/share/fish/vendor_completions.d/batonctl.fish",
            "/usr/share/doc/baton/copyright", "/usr/share/doc/baton/changelog.gz",
        ] {
            #expect(files.fileExists(atPath: path), "\(path) is not installed")
        }
        let state = try files.attributesOfItem(atPath: "/var/lib/baton")
        #expect((state[.posixPermissions] as? Int) == 0o750, "/var/lib/baton: \(state[.posixPermissions] ?? "?")")
        let unit = try String(contentsOfFile: "/lib/systemd/system/batond.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/bin/batond --config /etc/baton/baton.yaml") && !unit.contains("/usr/local"))

        // The installed binaries: versions agree with the package's, the shipped config passes.
        let version = try await run("/usr/bin/dpkg-query", ["-W", "-f=${Version}", "baton"]).output
        #expect(try await run("/usr/bin/batonctl", ["--version"]).output == version + "\n")
        #expect(try await run("/usr/bin/batond", ["--version"]).output == version + "\n")
        let check = try await run("/usr/bin/batond", ["--check-config", "/etc/baton/baton.yaml"])
        #expect(check.status == 0 && check.output.contains("OK (0 apps)"), "\(check)")

        // Function names are in each binary's symbol table (backtraces, core dumps), none in the
        // dynamic symbol table, which every process would map (BENCHMARKS.md, "Resident memory").
        // The names are mangled: `$s10Supervisor` begins those of module Supervisor.
        for (binary, module) in [
            ("/usr/bin/batond", "Supervisor"), ("/usr/bin/batonctl", "batonctl"),
            ("/usr/libexec/baton/baton-fence-keeper", "FenceKeeper"),
        ] {
            let function = "$s\(module.utf8.count)\(module)"
            let exported = try await run("/bin/sh", ["-c", "nm --dynamic --defined-only '\(binary)' | wc -l"])
            #expect(exported.status == 0 && Int(exported.output.trimmingCharacters(in: .whitespacesAndNewlines)) == 0, "\(binary) exports symbols: \(exported)")
            let named = try await run("/bin/sh", ["-c", "nm --defined-only '\(binary)' | grep -c -F '\(function)'"])
            #expect(named.status == 0 && (Int(named.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 100, "\(binary) names no functions of \(module): \(named)")
            let sections = try await run("/usr/bin/readelf", ["--section-headers", "--wide", binary])
            #expect(sections.status == 0 && !sections.output.contains(".debug_"), "\(binary) keeps debug information")
        }

        // The man pages render.
        for (page, phrase) in [
            ("/usr/share/man/man8/batond.8.gz", "--check-config"), ("/usr/share/man/man8/batonctl.8.gz", "switchover"),
            ("/usr/share/man/man5/baton.yaml.5.gz", "fence_budget"),
        ] {
            let man = try await run("/usr/bin/man", ["-l", page], environment: ["MANPAGER": "cat", "MANWIDTH": "100", "MAN_KEEP_FORMATTING": ""])
            #expect(man.status == 0, "man -l \(page): \(man)")
            #expect(man.output.contains(phrase) && man.output.contains("NAME"), "man -l \(page) lacks \(phrase):\n\(man.output.prefix(2000))")
            #expect(!man.output.contains("troff:"), "man -l \(page) warns: \(man.output.prefix(2000))")
        }

        // bash completion: subcommands at once.
        let subcommands = try await bashCompletions(["batonctl", "st"])
        #expect(subcommands.contains("status") && subcommands.contains("stepdown"), "\(subcommands)")

        // The operator edits the config (a real NATS server, one app) and starts batond.service
        // from the installed unit, under a test systemd (a user manager in a private mount
        // namespace: the system manager is not PID 1 here).
        try await withNATSServer(.pypi) { server in
            let appName = "pkgapp"
            try """
                cluster: pkgtest
                node: {id: pkg-node, state_dir: /var/lib/baton}
                nats: {servers: ["nats://127.0.0.1:\(server.port)"]}
                apps:
                  - name: \(appName)
                    lease: {ttl: 3s}
                    backend:
                      process: {command: ["/bin/sleep", "1000"]}

                """.write(toFile: "/etc/baton/baton.yaml", atomically: true, encoding: .utf8)
            try await withSystemdUserInstance { systemd in
                let log = "\(systemd.directory)/batond.log"
                try systemd.writeUnit("batond.service", unit)
                // What differs under the test manager: no journal (output to a file), the user
                // bus, StateDirectory= (a user manager would put it under ~/.local/state;
                // /var/lib/baton comes from the package), and the sandboxing that needs a mount
                // or UTS namespace per unit, which this manager (itself in an unshared mount
                // namespace, without systemd as PID 1) cannot set up: the unit's processes fail
                // with 226/NAMESPACE. Capabilities, NoNewPrivileges and the seccomp filters stay.
                let dropIn = "\(systemd.unitDirectory)/batond.service.d"
                try files.createDirectory(atPath: dropIn, withIntermediateDirectories: true)
                try """
                    [Service]
                    ProtectSystem=no
                    ProtectHome=no
                    PrivateTmp=no
                    ProtectKernelTunables=no
                    ProtectKernelModules=no
                    ProtectKernelLogs=no
                    ProtectControlGroups=no
                    ProtectHostname=no
                    StateDirectory=
                    Environment=DBUS_SESSION_BUS_ADDRESS=\(systemd.busAddress)
                    StandardOutput=append:\(log)
                    StandardError=append:\(log)

                    """.write(toFile: "\(dropIn)/test.conf", atomically: true, encoding: .utf8)
                let logTail = { ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").suffix(30).joined(separator: "\n") }
                let reload = try await systemd.systemctl(["daemon-reload"])
                try #require(reload.status == 0, "\(reload)")
                let start = try await systemd.systemctl(["start", "batond.service"])
                if start.status != 0 {
                    let status = try await systemd.systemctl(["status", "batond.service", "--no-pager", "-l"])
                    Issue.record("systemctl start: \(start)\n\(status)\n\(logTail())\n\(systemd.logTail())")
                    return
                }

                // The app runs here (its backend under the installed fence keeper), and the
                // installed batonctl sees it through the default /etc/baton/baton.yaml.
                var status = try await run("/usr/bin/batonctl", ["status", "--json"])
                // A timeout is reported by the expectation below, with the last answer and the log.
                try? await eventually("batonctl status to show the app active", timeout: .seconds(20), every: .milliseconds(200)) {
                    status = try await run("/usr/bin/batonctl", ["status", "--json"])
                    return status.status == 0 && status.output.contains("\"role\" : \"active\"")
                }
                #expect(status.output.contains("\"role\" : \"active\"") && status.output.contains(appName), "\(status)\n\(logTail())")
                let keepers = try await run("/usr/bin/pgrep", ["-f", "/usr/libexec/baton/baton-fence-keeper"])
                #expect(keepers.status == 0, "no fence keeper from /usr/libexec/baton runs\n\(logTail())")

                // App and node names are completed from the cluster.
                let apps = try await bashCompletions(["batonctl", "stepdown", ""])
                #expect(apps.contains(appName), "completions for an app: \(apps)")
                let nodes = try await bashCompletions(["batonctl", "switchover", appName, "--to", ""])
                #expect(nodes.contains("pkg-node"), "completions for a node: \(nodes)")

                let stop = try await systemd.systemctl(["stop", "batond.service"])
                #expect(stop.status == 0, "\(stop)")
                #expect(try await run("/usr/bin/pgrep", ["-f", "/usr/libexec/baton/baton-fence-keeper"]).status != 0)
            }
        }

        // Upgrade (the same package again): the operator's config stays, a running batond would
        // be restarted (try-restart leaves a stopped one stopped), nothing is enabled.
        try Data().write(to: URL(fileURLWithPath: systemctlLog))
        let upgrade = try await dpkg(["-i", deb], shimDirectory: shims, systemctlLog: systemctlLog)
        try #require(upgrade.status == 0, "dpkg -i again: \(upgrade)")
        #expect(calls().contains("try-restart batond.service") && !calls().contains("enable"), "systemctl calls: \(calls())")
        #expect(try String(contentsOfFile: "/etc/baton/baton.yaml", encoding: .utf8).contains("cluster: pkgtest"), "the edited config was replaced")
        #expect(!upgrade.output.contains("is not enabled or started"), "\(upgrade.output)")

        // Remove: binaries gone, config and state kept, daemon-reload.
        try Data().write(to: URL(fileURLWithPath: systemctlLog))
        let remove = try await dpkg(["-r", "baton"], shimDirectory: shims, systemctlLog: systemctlLog)
        try #require(remove.status == 0, "dpkg -r: \(remove)")
        #expect(calls().contains("stop batond.service") && calls().contains("--system daemon-reload"), "systemctl calls: \(calls())")
        #expect(try await packageStatus() == "deinstall ok config-files")
        #expect(!files.fileExists(atPath: "/usr/bin/batond") && !files.fileExists(atPath: "/usr/libexec/baton"))
        #expect(files.fileExists(atPath: "/etc/baton/baton.yaml"), "the config went with dpkg -r")
        #expect(files.fileExists(atPath: "/var/lib/baton"), "the state directory went with dpkg -r")

        // Purge: config and state gone; nothing of the package left.
        let purge = try await dpkg(["-P", "baton"], shimDirectory: shims, systemctlLog: systemctlLog)
        try #require(purge.status == 0, "dpkg -P: \(purge)")
        #expect(try await packageStatus() == "not-installed")
        for path in [
            "/etc/baton", "/var/lib/baton", "/usr/share/doc/baton", "/lib/systemd/system/batond.service", "/usr/share/man/man8/batond.8.gz",
            "/var/lib/systemd/deb-systemd-helper-enabled/batond.service.dsh-also",
        ] {
            #expect(!files.fileExists(atPath: path), "\(path) is left after dpkg -P")
        }
    }
}
