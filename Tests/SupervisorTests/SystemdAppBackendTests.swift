import BatonCore
import Foundation
import Logging
import Systemd
import SystemdTestSupport
import TestSupport
import Testing

@testable import Backends
@testable import Control
@testable import Supervisor

#if canImport(Glibc)
import Glibc
#endif

/// ``SystemdAppBackend`` against a real `systemd --user` (see SystemdTestSupport).
@Suite("systemd unit backend", .serialized, .timeLimit(.minutes(2)))
struct SystemdAppBackendTests {
    /// A unit that records the epoch it was started with, then sleeps.
    static func sleeper(_ directory: String, name: String = "web") -> String {
        """
        [Service]
        ExecStart=/bin/sh -c 'echo "$BATON_EPOCH" >> \(directory)/\(name).epochs; exec /bin/sleep 1000'
        Restart=no

        """
    }

    func configuration(
        _ systemd: SystemdUserInstance, unit: String = "web.service", restart: RestartPolicy = RestartPolicy(maxRestarts: 1, window: .seconds(60), backoff: .milliseconds(100))
    ) throws -> SystemdAppBackend.Configuration {
        SystemdAppBackend.Configuration(
            app: "web", unit: unit, bus: systemd.bus, restart: restart, fenceBudget: .milliseconds(500),
            epochFile: "\(systemd.directory)/baton/web/epoch", binding: .none, keeperPath: try keeperPath(),
            startTimeout: .seconds(20), stopTimeout: .seconds(20), callTimeout: .seconds(5))
    }

    /// Waits (bounded) until the unit's state satisfies `predicate`; returns that state.
    func waitForState(
        _ manager: SystemdManager, _ unit: String, timeout: Duration = .seconds(10), _ predicate: (UnitState) -> Bool
    ) async throws -> UnitState {
        var state = try await manager.unitState(unit)
        try await eventually("\(unit) in the awaited state (last seen: \(state))", timeout: timeout, every: .milliseconds(25)) {
            state = try await manager.unitState(unit)
            return predicate(state)
        }
        return state
    }

    func epochs(_ directory: String, _ name: String = "web") -> [String] {
        ((try? String(contentsOfFile: "\(directory)/\(name).epochs", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    func collect<T: Sendable>(_ stream: AsyncStream<T>) -> Recorder<T> {
        let recorder = Recorder<T>()
        Task { for await value in stream { recorder.record(value) } }
        return recorder
    }

    @Test func startStopAndRestartsThroughTheRestartPolicy() async throws {
        try await withSystemdUserInstance { systemd in
            try systemd.writeUnit("web.service", Self.sleeper(systemd.directory))
            let checker = try await systemd.connect()
            try await checker.reload()
            let logs = Recorder<LogLine>()
            let configuration = try configuration(systemd)
            let backend = try await SystemdAppBackend.connect(configuration: configuration, logger: recordingLogger(logs))
            let failures = collect(backend.failures())
            let dropIn = "\(systemd.runtimeDirectory)/systemd/user/web.service.d/50-baton.conf"
            #expect(FileManager.default.fileExists(atPath: dropIn))

            // A unit starts only under a fence deadline.
            await #expect { try await backend.start(token: 6) } throws: { "\($0)".contains("not armed") }
            #expect(try await checker.unitState("web.service").activeState == .inactive)

            // Start: the job is done, the unit is active and saw its epoch.
            await backend.armFence(token: 7, deadline: MonotonicClock.now() + .seconds(120))
            try await backend.start(token: 7)
            #expect(try await checker.unitState("web.service").activeState == .active)
            // The unit is active once forked; its shell writes the epoch a moment later.
            try await eventually("the epochs file listing 7 (it lists \(epochs(systemd.directory)))", timeout: .seconds(5), every: .milliseconds(20)) { epochs(systemd.directory) == ["7"] }
            #expect(try String(contentsOfFile: configuration.epochFile, encoding: .utf8) == "BATON_EPOCH=7\n")

            // Stop: the epoch file goes first, then the unit.
            await backend.stop()
            #expect(try await checker.unitState("web.service").activeState == .inactive)
            #expect(!FileManager.default.fileExists(atPath: configuration.epochFile))

            // Without the epoch file a start by hand starts nothing (ConditionPathExists).
            let byHand = try await systemd.systemctl(["start", "web.service"])
            #expect(byHand.status == 0, "\(byHand)")
            #expect(try await checker.unitState("web.service").activeState == .inactive)

            // Killed from outside while active: restarted under the same epoch, then the budget
            // (1 restart) is spent and the failure names the unit.
            await backend.armFence(token: 8, deadline: MonotonicClock.now() + .seconds(120))
            try await backend.start(token: 8)
            let firstPID = try #require(try await checker.mainPID(of: "web.service"))
            // Killed before its shell wrote the epoch, the run would leave one "8" fewer.
            try await eventually("the epochs file listing 7, 8 (it lists \(epochs(systemd.directory)))", timeout: .seconds(5), every: .milliseconds(20)) { epochs(systemd.directory) == ["7", "8"] }
            kill(firstPID, SIGKILL)
            var secondPID: pid_t?
            try await eventually("web.service restarted with a new main pid; logs: \(logs.values.map(\.message))", timeout: .seconds(10), every: .milliseconds(25)) {
                guard let pid = try await checker.mainPID(of: "web.service"), pid != firstPID else { return false }
                secondPID = pid
                return true
            }
            let second = try #require(secondPID)
            // The new main process writes its epoch a moment after systemd reports its pid.
            try await eventually("a third epoch line (the file lists \(epochs(systemd.directory)))", timeout: .seconds(10), every: .milliseconds(25)) {
                epochs(systemd.directory).count >= 3
            }
            #expect(epochs(systemd.directory) == ["7", "8", "8"])
            #expect(failures.values.isEmpty)
            kill(second, SIGKILL)
            let failure = await failures.first(within: .seconds(10)) { _ in true }
            guard case .exhausted(let reason) = try #require(failure) else {
                Issue.record("expected .exhausted, got \(String(describing: failure))")
                return
            }
            #expect(reason.contains("web.service") && reason.contains("restart budget spent"), "\(reason)")
            #expect(try await checker.unitState("web.service").activeState != .active)

            await backend.stop()
            await backend.dispose()
            #expect(!FileManager.default.fileExists(atPath: dropIn))
            await checker.close()
        }
    }

    @Test func unknownUnitsAndUnitsThatFailToStartAreReportedByName() async throws {
        try await withSystemdUserInstance { systemd in
            try systemd.writeUnit("broken.service", "[Service]\nType=oneshot\nExecStart=/bin/false\n")
            let checker = try await systemd.connect()
            try await checker.reload()
            let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

            await #expect {
                _ = try await SystemdAppBackend.connect(configuration: try configuration(systemd, unit: "nope.service"), logger: logger)
            } throws: { error in
                "\(error)".contains("nope.service") && "\(error)".contains("not known")
            }

            let backend = try await SystemdAppBackend.connect(configuration: try configuration(systemd, unit: "broken.service"), logger: logger)
            await backend.armFence(token: 1, deadline: MonotonicClock.now() + .seconds(120))
            await #expect {
                try await backend.start(token: 1)
            } throws: { error in
                let text = "\(error)"
                return text.contains("cannot start unit broken.service") && text.contains("'failed'")
            }
            await backend.stop()
            await backend.dispose()

            // No systemd on the bus.
            var missing = try configuration(systemd)
            missing.bus = .address("unix:path=\(systemd.directory)/no-such-bus")
            await #expect {
                _ = try await SystemdAppBackend.connect(configuration: missing, logger: logger)
            } throws: { error in
                "\(error)".contains("cannot reach the systemd manager of unit web.service")
            }
            await checker.close()
        }
    }

    @Test func aUnitStartedWhilePassiveIsStoppedAndFencingKillsTheUnit() async throws {
        try await withSystemdUserInstance { systemd in
            try systemd.writeUnit("web.service", Self.sleeper(systemd.directory))
            let checker = try await systemd.connect()
            try await checker.reload()
            let logs = Recorder<LogLine>()
            let configuration = try configuration(systemd)
            let backend = try await SystemdAppBackend.connect(configuration: configuration, logger: recordingLogger(logs))
            let notices = collect(backend.notices())

            // Someone fakes the epoch file and starts the unit while this node is passive.
            try EpochFile.write(epoch: 99, to: configuration.epochFile)
            let byHand = try await systemd.systemctl(["start", "web.service"])
            #expect(byHand.status == 0, "\(byHand)")
            let notice = await notices.first(within: .seconds(10)) { _ in true }
            guard case .strayStopped(let text) = try #require(notice) else {
                Issue.record("expected .strayStopped, got \(String(describing: notice))")
                return
            }
            #expect(text.contains("web.service"))
            let stopped = try await waitForState(checker, "web.service") { $0.activeState == .inactive }
            #expect(stopped.activeState == .inactive)
            #expect(!FileManager.default.fileExists(atPath: configuration.epochFile))
            #expect(logs.values.contains { $0.level == .warning && $0.message.contains("started outside Baton") })

            // Fencing: SIGKILL to the cgroup, within the fence budget (plus the stop job).
            await backend.armFence(token: 3, deadline: MonotonicClock.now() + .seconds(120))
            try await backend.start(token: 3)
            let pid = try #require(try await checker.mainPID(of: "web.service"))
            let before = ContinuousClock.now
            await backend.fence()
            let took = ContinuousClock.now - before
            #expect(took < .seconds(2), "fencing took \(took)")
            #expect(processIsGone(pid))
            #expect(try await checker.unitState("web.service").activeState != .active)
            #expect(!FileManager.default.fileExists(atPath: configuration.epochFile))
            #expect(logs.values.contains { $0.message.contains("unit killed") })

            await backend.dispose()
            await checker.close()
        }
    }

    @Test func theFenceKeeperKillsTheUnitAtItsDeadline() async throws {
        try await withSystemdUserInstance { systemd in
            try systemd.writeUnit("web.service", Self.sleeper(systemd.directory))
            let checker = try await systemd.connect()
            try await checker.reload()
            let logs = Recorder<LogLine>()
            // No restarts: the keeper's kill is reported as a failure, not undone.
            let configuration = try configuration(systemd, restart: RestartPolicy(maxRestarts: 0, window: .seconds(60), backoff: .milliseconds(100)))
            let backend = try await SystemdAppBackend.connect(configuration: configuration, logger: recordingLogger(logs))
            let failures = collect(backend.failures())

            // Arming needs no process: the keeper only holds the deadline.
            await backend.armFence(token: 4, deadline: MonotonicClock.now() + .seconds(60))
            #expect(await backend.keeperRoundTrip())
            try await backend.start(token: 4)
            let pid = try #require(try await checker.mainPID(of: "web.service"))

            // batond stops renewing: the last deadline passes.
            let deadline = MonotonicClock.now() + .milliseconds(300)
            await backend.armFence(token: 4, deadline: deadline)
            let down = try await waitForState(checker, "web.service") { $0.activeState != .active }
            #expect(down.activeState != .active, "the keeper did not kill the unit")
            #expect(MonotonicClock.now() - deadline < .seconds(3))
            #expect(processIsGone(pid))
            #expect(!FileManager.default.fileExists(atPath: configuration.epochFile))
            let failure = await failures.first(within: .seconds(10)) { _ in true }
            #expect(failure != nil)
            // The keeper's own lines go to batond's stderr (the journal); batond logs the expiry.
            let keeperLine = await logs.first(within: .seconds(5)) { $0.message.contains("fence deadline passed") }
            #expect(keeperLine != nil, "\(logs.values.map(\.message))")

            await backend.stop()
            await backend.dispose()
            await checker.close()
        }
    }
}
