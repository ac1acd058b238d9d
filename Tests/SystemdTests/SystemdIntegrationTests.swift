import Foundation
import Logging
import NATSTestSupport
import Systemd
import SystemdTestSupport
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Against a real `systemd --user` (see SystemdTestSupport).
@Suite(.serialized, .timeLimit(.minutes(2))) struct SystemdIntegrationTests {
    static let sleeper = "[Service]\nExecStart=/bin/sleep 1000\n"

    /// Iterates `states` until one satisfies `predicate`, or fails after `timeout`.
    func waitFor(
        _ states: AsyncStream<UnitState>, timeout: Duration = .seconds(15), sourceLocation: SourceLocation = #_sourceLocation,
        _ predicate: @escaping @Sendable (UnitState) -> Bool
    ) async throws -> [UnitState] {
        try await withThrowingTaskGroup(of: [UnitState]?.self) { group in
            group.addTask {
                var seen: [UnitState] = []
                for await state in states {
                    seen.append(state)
                    if predicate(state) { return seen }
                }
                return nil
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            let result = try await group.next()!
            group.cancelAll()
            return try #require(result, "no matching state within \(timeout)", sourceLocation: sourceLocation)
        }
    }

    /// Whether the file at `path` has a line `line` (the unit writes it after systemd already
    /// reported it active: wait for it with `eventually`).
    func hasLine(_ line: String, in path: String) -> Bool {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return false }
        return text.split(separator: "\n").contains(Substring(line))
    }

    @Test func startStopRestartReportJobResultsAndState() async throws {
        try await withSystemdUserInstance { systemd in
            try systemd.writeUnit("demo.service", Self.sleeper)
            let manager = try await systemd.connect()
            try await manager.reload()

            #expect(try await manager.startUnit("demo.service", timeout: .seconds(20)) == .done)
            let running = try await manager.unitState("demo.service")
            #expect(running == UnitState(loadState: "loaded", activeState: .active, subState: "running"))
            let firstPID = try #require(try await manager.mainPID(of: "demo.service"))

            #expect(try await manager.restartUnit("demo.service", timeout: .seconds(20)) == .done)
            let secondPID = try #require(try await manager.mainPID(of: "demo.service"))
            #expect(secondPID != firstPID)
            #expect(kill(firstPID, 0) != 0)

            #expect(try await manager.stopUnit("demo.service", timeout: .seconds(20)) == .done)
            #expect(try await manager.unitState("demo.service").activeState == .inactive)
            #expect(try await manager.mainPID(of: "demo.service") == nil)
            await manager.close()
        }
    }

    @Test func aUnitThatFailsToStartEndsItsJobFailed() async throws {
        try await withSystemdUserInstance { systemd in
            try systemd.writeUnit("broken.service", "[Service]\nType=oneshot\nExecStart=/bin/false\n")
            let manager = try await systemd.connect()
            try await manager.reload()
            await #expect(throws: SystemdError.jobFailed(unit: "broken.service", operation: "start", result: .failed)) {
                try await manager.startUnit("broken.service", timeout: .seconds(20))
            }
            #expect(try await manager.unitState("broken.service").activeState == .failed)
            try await manager.resetFailedUnit("broken.service")
            #expect(try await manager.unitState("broken.service").activeState == .inactive)
            await manager.close()
        }
    }

    @Test func unknownUnitsAreNamed() async throws {
        try await withSystemdUserInstance { systemd in
            let manager = try await systemd.connect()
            await #expect(throws: SystemdError.unknownUnit(unit: "no-such-app.service", bus: systemd.bus)) {
                try await manager.startUnit("no-such-app.service")
            }
            await #expect(throws: SystemdError.unknownUnit(unit: "no-such-app.service", bus: systemd.bus)) {
                try await manager.unitState("no-such-app.service")
            }
            await manager.close()
        }
    }

    @Test func noBusIsReportedWithTheAddress() async throws {
        let address = "unix:path=/nonexistent/baton-test/bus"
        do {
            _ = try await SystemdManager.connect(to: .address(address), logger: Logger(label: "test"))
            Issue.record("connected to a bus that does not exist")
        } catch let error as SystemdError {
            guard case .noBus(let bus, let code, _) = error else { throw error }
            #expect(bus == .address(address))
            #expect(code == ENOENT)
            #expect(error.description.contains(address))
        }
    }

    @Test func stateChangesArriveThroughPropertiesChanged() async throws {
        try await withSystemdUserInstance { systemd in
            try systemd.writeUnit("demo.service", Self.sleeper)
            let manager = try await systemd.connect()
            try await manager.reload()
            try await manager.startUnit("demo.service")
            let pid = try #require(try await manager.mainPID(of: "demo.service"))

            let states = manager.unitStates("demo.service")
            var iterator = states.makeAsyncIterator()
            let first = await iterator.next()
            #expect(first?.activeState == .active)

            // Killed from outside systemd: a SIGKILLed main process makes the service fail.
            #expect(kill(pid, SIGKILL) == 0)
            var seen: [UnitState] = []
            while let state = await iterator.next() {
                seen.append(state)
                if state.activeState == .failed || state.activeState == .inactive { break }
            }
            #expect(seen.last == UnitState(loadState: "loaded", activeState: .failed, subState: "failed"), "\(seen)")
            await manager.close()
            // The stream finishes with the connection.
            #expect(await iterator.next() == nil)
        }
    }

    @Test func killUnitSendsSIGKILLToEveryProcessOfTheUnit() async throws {
        try await withSystemdUserInstance { systemd in
            // A main process with a child of its own: KillUnit(all) must reach both.
            try systemd.writeUnit(
                "tree.service", "[Service]\nExecStart=/bin/sh -c '/bin/sleep 1000 & echo $! > %t/tree-child.pid; wait'\n")
            let manager = try await systemd.connect()
            try await manager.reload()
            try await manager.startUnit("tree.service")
            let main = try #require(try await manager.mainPID(of: "tree.service"))
            let childFile = "\(systemd.runtimeDirectory)/tree-child.pid"
            try await eventually("the unit's child writing \(childFile)", timeout: .seconds(10), every: .milliseconds(20)) {
                FileManager.default.fileExists(atPath: childFile)
            }
            let child = try #require(pid_t(try String(contentsOfFile: childFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))

            let states = manager.unitStates("tree.service")
            try await manager.killUnit("tree.service")
            let seen = try await waitFor(states) { $0.activeState == .failed }
            #expect(seen.last?.subState == "failed")
            #expect(kill(main, 0) != 0)
            #expect(kill(child, 0) != 0)
            await manager.close()
        }
    }

    @Test func runtimeDropInBindsTheUnitToBatondsUnitAndHandsOverTheEpoch() async throws {
        try await withSystemdUserInstance { systemd in
            let envFile = "\(systemd.directory)/app.env"
            let epochFile = "\(systemd.directory)/baton/app/epoch"
            try systemd.writeUnit("batond-like.service", Self.sleeper)
            try systemd.writeUnit("app.service", "[Service]\nExecStart=/bin/sh -c 'env > \(envFile); exec /bin/sleep 1000'\n")
            let manager = try await systemd.connect()

            let runtime = try await manager.runtimeUnitDirectory()
            #expect(runtime == "\(systemd.runtimeDirectory)/systemd/user")
            let path = try await manager.installDropIn(
                BatonDropIn(unit: "app.service", boundTo: "batond-like.service", epochFile: epochFile))
            #expect(path == "\(runtime)/app.service.d/50-baton.conf")
            try EpochFile.write(epoch: 42, to: epochFile)

            try await manager.startUnit("batond-like.service")
            try await manager.startUnit("app.service")
            #expect(try await manager.unitState("app.service").activeState == .active)
            try await eventually("BATON_EPOCH=42 in \(envFile)", timeout: .seconds(10), every: .milliseconds(20)) { hasLine("BATON_EPOCH=42", in: envFile) }

            // The bound unit is found through the manager (what batond does for itself).
            let batondPID = try #require(try await manager.mainPID(of: "batond-like.service"))
            #expect(try await manager.unit(ofPID: batondPID) == "batond-like.service")
            #expect(try await manager.unit(ofPID: getpid()) == nil)

            // batond stopped: the app goes down.
            let states = manager.unitStates("app.service")
            try await manager.stopUnit("batond-like.service")
            _ = try await waitFor(states) { $0.activeState == .inactive }

            // batond crashed: the app goes down too.
            try EpochFile.write(epoch: 43, to: epochFile)
            try await manager.startUnit("app.service")  // BindsTo= pulls batond-like.service back up
            #expect(try await manager.unitState("batond-like.service").activeState == .active)
            try await eventually("BATON_EPOCH=43 in \(envFile)", timeout: .seconds(10), every: .milliseconds(20)) { hasLine("BATON_EPOCH=43", in: envFile) }
            let crashStates = manager.unitStates("app.service")
            try await manager.killUnit("batond-like.service")
            _ = try await waitFor(crashStates) { $0.activeState == .inactive }
            try await manager.resetFailedUnit("batond-like.service")

            // Without the epoch file (batond is passive) nothing starts the app: not a manual
            // start, not the restart systemd propagates from batond's unit.
            try EpochFile.remove(at: epochFile)
            try await manager.startUnit("batond-like.service")
            #expect(try await manager.startUnit("app.service") == .done)
            #expect(try await manager.unitState("app.service").activeState == .inactive)
            try await manager.restartUnit("batond-like.service")
            #expect(try await manager.unitState("app.service").activeState == .inactive)

            // Removed: the binding is gone.
            try await manager.removeDropIn(for: "app.service")
            #expect(!FileManager.default.fileExists(atPath: path))
            try await manager.startUnit("app.service")
            try await manager.stopUnit("batond-like.service")
            #expect(try await manager.unitState("app.service").activeState == .active)
            try await manager.stopUnit("app.service")
            await manager.close()
        }
    }

    @Test func fixtureGivesSystemctlAccess() async throws {
        try await withSystemdUserInstance { systemd in
            try systemd.writeUnit("demo.service", Self.sleeper)
            let reload = try await systemd.systemctl(["daemon-reload"])
            #expect(reload.status == 0, "\(reload)")
            let start = try await systemd.systemctl(["start", "demo.service"])
            #expect(start.status == 0, "\(start)")
            let active = try await systemd.systemctl(["is-active", "demo.service"])
            #expect(active.output.trimmingCharacters(in: .whitespacesAndNewlines) == "active", "\(active)")
        }
    }
}
