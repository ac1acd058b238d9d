import BatonCore
import Foundation
import Logging
import Backends
import Control
import Supervisor
import Systemd

/// batond's side of the sd_notify protocol (`Type=notify` in batond.service): `READY=1` once
/// the config is loaded, NATS reached and the apps set up; a `STATUS=` line kept current;
/// `RELOADING=1` / `READY=1` around a SIGHUP reload; `STOPPING=1` on shutdown; and `WATCHDOG=1`
/// only while batond's loops make progress. Every call is a no-op when `NOTIFY_SOCKET` is unset
/// (batond not started by systemd).
struct ServiceManagerLink: Sendable {
    /// An app whose clock loop is this late for one of its deadlines counts as hung (the loop
    /// wakes at each deadline of the app's lifecycle: renews, takeovers, step timeouts).
    static let stallLimit: Duration = .seconds(2)

    let notifier: SystemdNotifier
    let logger: Logger

    init(notifier: SystemdNotifier = SystemdNotifier(), logger: Logger) {
        self.notifier = notifier
        self.logger = logger
    }

    func ready(status: String) {
        send("READY") { () throws(SystemdError) in try notifier.ready(status: status) }
    }

    func status(_ text: String) {
        send("STATUS") { () throws(SystemdError) in try notifier.status(text) }
    }

    func reloading() {
        send("RELOADING") { () throws(SystemdError) in try notifier.reloading() }
    }

    func stopping() {
        send("STOPPING") { () throws(SystemdError) in try notifier.stopping() }
    }

    private func send(_ what: String, _ body: () throws(SystemdError) -> Void) {
        do {
            try body()
        } catch {
            logger.warning("cannot notify the service manager", metadata: ["notification": "\(what)", "error": "\(error)"])
        }
    }

    /// Until cancelled: every `interval` (a quarter of the watchdog timeout, at most 1 s), asks
    /// the node supervisor which app loops are stalled and for its status, bounded in time.
    /// Sends `WATCHDOG=1` only when the node actor answered in time and no app's clock loop is
    /// more than ``stallLimit`` late, so a hung actor lets the watchdog fire; updates `STATUS=`
    /// when the summary changed.
    func supervise(_ node: NodeSupervisor) async {
        guard notifier.isEnabled else { return }
        let watchdog = notifier.watchdogTimeout
        let interval = watchdog.map { max(.milliseconds(100), min(.seconds(1), $0 / 4)) } ?? .seconds(1)
        let answerLimit = watchdog.map { max(.milliseconds(200), min(.seconds(1), $0 / 2)) } ?? .seconds(2)
        if let watchdog { logger.info("systemd watchdog on", metadata: ["timeout": "\(watchdog)", "ping-interval": "\(interval)"]) }
        var lastStatus = ""
        var healthy = true
        while !Task.isCancelled {
            let answer = await withTimeLimit(answerLimit) {
                (await node.stalledApps(maxAge: Self.stallLimit), await node.status())
            }
            var problem: String?
            if let (stalled, status) = answer {
                if !stalled.isEmpty { problem = "the loops of \(stalled.joined(separator: ", ")) made no progress for \(Self.stallLimit)" }
                let line = status.summaryLine
                if line != lastStatus {
                    self.status(line)
                    lastStatus = line
                }
            } else {
                problem = "the node supervisor did not answer within \(answerLimit)"
            }
            if let problem {
                if healthy { logger.critical("withholding the systemd watchdog ping: \(problem)") }
                healthy = false
            } else {
                if !healthy { logger.notice("batond's loops make progress again; watchdog pings resume") }
                healthy = true
                if watchdog != nil { send("WATCHDOG") { () throws(SystemdError) in try notifier.watchdog() } }
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// The service unit batond runs in, when systemd started it (`INVOCATION_ID` set): asked
    /// from the system manager, then (when an app uses it) the user manager. Nil otherwise.
    static func ownUnit(config: BatonConfig, logger: Logger) async -> String? {
        guard ProcessInfo.processInfo.environment["INVOCATION_ID"] != nil else { return nil }
        var buses: [SystemdBusAddress] = [.system]
        let usesUserBus = config.apps.contains { app in
            if case .systemd(let systemd) = app.backend { return systemd.bus == .user }
            return false
        }
        if usesUserBus || ProcessInfo.processInfo.environment["DBUS_SESSION_BUS_ADDRESS"] != nil { buses.append(.user) }
        for bus in buses {
            let found = await withTimeLimit(.seconds(3)) { () -> String? in
                guard let manager = try? await SystemdManager.connect(to: bus, callTimeout: .seconds(2), logger: logger) else { return nil }
                let unit = try? await manager.unit(ofPID: getpid())
                await manager.close()
                return unit ?? nil
            }
            if let unit = found ?? nil, unit.hasSuffix(".service") { return unit }
        }
        return nil
    }
}
