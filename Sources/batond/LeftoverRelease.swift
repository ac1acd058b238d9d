import BatonCore
import Foundation
import Logging
import Backends
import Control
import Supervisor

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// At process start, before NATS: waits for fence keepers a previous batond of this node left
/// running (they are still releasing), then drops every app's VIPs, units and epoch files
/// (``NodeClaimRelease``). Failures are logged; batond goes on (it starts passive, and the passive
/// apps remove their VIPs and stop their units again once set up).
///
/// Skipped when another live batond with this node id runs on this host (a second copy started
/// by mistake): its VIPs and units are not leftovers, and the node registry, consulted next,
/// refuses this process.
func releaseLeftovers(_ config: BatonConfig, logger: Logger) async {
    let siblings = PredecessorKeepers.liveBatonds(nodeID: config.node.id)
    if !siblings.isEmpty {
        logger.warning(
            "another batond with this node id runs on this host: the release of leftovers at start is skipped (the node registry decides which one runs)",
            metadata: ["node": "\(config.node.id)", "pids": "\(siblings)"])
        return
    }
    await PredecessorKeepers.waitUntilGone(apps: Set(config.apps.map(\.name)), logger: logger)
    let outcomes = await NodeClaimRelease(config: config, runtimeDirectory: batondRuntimeDirectory(), logger: logger).run()
    for outcome in outcomes {
        let metadata: Logger.Metadata = ["app": "\(outcome.app)", "claim": "\(outcome.subject)", "detail": "\(outcome.detail)"]
        switch outcome.result {
        case .released: logger.warning("released a claim left behind by a previous batond", metadata: metadata)
        case .alreadyReleased: logger.debug("nothing left behind", metadata: metadata)
        case .failed: logger.error("cannot release a claim a previous batond may have left behind", metadata: metadata)
        }
    }
    let failed = outcomes.filter { $0.result == .failed }.count
    logger.info("claims checked at start, before NATS", metadata: ["checked": "\(outcomes.count)", "failed": "\(failed)"])
}

/// Fence keepers of a batond that is gone. When batond dies outside systemd, each of its keepers
/// notices (end of input, parent-death signal), kills its backend and releases the app's claims
/// (VIPs, unit, epoch file), which takes a few seconds at most. A batond starting in that window
/// must let them finish first: a keeper still at work could remove a VIP (or stop a unit) the new
/// batond has just claimed.
///
/// A predecessor's keeper is a `baton-fence-keeper` process in this network namespace, for an
/// app of this config, whose `--parent` is not a running batond (or is this very process: pids
/// get reused, and this batond has started no keeper yet). Reading `/proc` is quick and happens
/// once per poll, before anything else runs.
enum PredecessorKeepers {
    /// How long the keepers get to finish their release before they are killed.
    static let patience: Duration = .seconds(10)

    /// Polls (every 100 ms) until no predecessor keeper of `apps` is left; after ``patience``
    /// SIGKILLs those still there (the release that follows does their work).
    static func waitUntilGone(apps: Set<String>, patience: Duration = Self.patience, logger: Logger) async {
        var found = find(apps: apps)
        guard !found.isEmpty else { return }
        logger.warning("fence keepers of a previous batond are still releasing; waiting for them", metadata: ["pids": "\(found)"])
        let deadline = ContinuousClock.now + patience
        while !found.isEmpty, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(100))
            found = find(apps: apps)
        }
        guard !found.isEmpty else { return }
        logger.error("fence keepers of a previous batond did not exit within \(patience); killing them", metadata: ["pids": "\(found)"])
        for pid in found { kill(pid, SIGKILL) }
        let killDeadline = ContinuousClock.now + .seconds(2)
        while !find(apps: apps).isEmpty, ContinuousClock.now < killDeadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// The pids of predecessor keepers of `apps`.
    static func find(apps: Set<String>) -> [pid_t] {
        let me = getpid()
        let ownNamespace = namespace(of: me)
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var found: [pid_t] = []
        for entry in entries {
            guard let pid = pid_t(entry), pid != me else { continue }
            let arguments = commandLine(of: pid)
            guard let program = arguments.first, program.split(separator: "/").last == "baton-fence-keeper" else { continue }
            guard let app = value(of: "--app", in: arguments), apps.contains(app) else { continue }
            guard namespace(of: pid) == ownNamespace else { continue }
            if let parent = value(of: "--parent", in: arguments).flatMap(pid_t.init), parent != me, isBatond(parent) { continue }
            // A zombie has already exited.
            if state(of: pid) == "Z" { continue }
            found.append(pid)
        }
        return found.sorted()
    }

    /// Other batond daemons in this network namespace whose config names `nodeID` — or whose
    /// config cannot be read, which counts as the same node (the safe side).
    static func liveBatonds(nodeID: String) -> [pid_t] {
        let me = getpid()
        let ownNamespace = namespace(of: me)
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var found: [pid_t] = []
        for entry in entries {
            guard let pid = pid_t(entry), pid != me, isBatond(pid), namespace(of: pid) == ownNamespace else { continue }
            let arguments = commandLine(of: pid)
            // One-shot runs (`--release-claims`, `--check-config`) are not daemons.
            guard !arguments.contains(where: { $0.hasPrefix("--release-claims") || $0.hasPrefix("--check-config") }) else { continue }
            let inline = arguments.first { $0.hasPrefix("--config=") }.map { String($0.dropFirst("--config=".count)) }
            guard var path = inline ?? value(of: "--config", in: arguments) ?? (arguments.count == 1 ? "/etc/baton/baton.yaml" : nil) else { continue }
            if !path.hasPrefix("/"), let directory = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd") {
                path = directory + "/" + path
            }
            guard let other = try? BatonConfig.load(path: path) else {
                found.append(pid)
                continue
            }
            if other.node.id == nodeID { found.append(pid) }
        }
        return found.sorted()
    }

    private static func commandLine(of pid: pid_t) -> [String] {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8) else { return [] }
        return text.split(separator: "\0").map(String.init)
    }

    private static func value(of option: String, in arguments: [String]) -> String? {
        guard let index = arguments.firstIndex(of: option), index + 1 < arguments.count else { return nil }
        return arguments[index + 1]
    }

    private static func namespace(of pid: pid_t) -> String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net")
    }

    private static func isBatond(_ pid: pid_t) -> Bool {
        guard let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8) else { return false }
        return comm.trimmingCharacters(in: .whitespacesAndNewlines) == "batond" && state(of: pid) != "Z"
    }

    private static func state(of pid: pid_t) -> Character? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return nil }
        guard let close = text.lastIndex(of: ")") else { return nil }
        return text[text.index(after: close)...].first { $0 != " " }
    }
}
