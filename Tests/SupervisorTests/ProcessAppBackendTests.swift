import BatonCore
import Foundation
import Logging
import Testing

@testable import Backends
@testable import Control
@testable import Supervisor

#if canImport(Glibc)
import Glibc
#endif

/// The process backend as the app supervisor drives it: whatever ends the backend while the
/// node holds the lease is a backend failure (issue 18). Real processes, real keeper.
@Suite("Process app backend", .serialized, .timeLimit(.minutes(1)))
struct ProcessAppBackendTests {
    let logs = Recorder<LogLine>()

    func makeBackend(restart: RestartPolicy) -> ProcessAppBackend {
        let process = ProcessBackendConfig(command: ["/bin/sh", "-c", "exec sleep 1000"], stopTimeout: .seconds(5), restart: restart)
        let app = AppConfig(
            name: "probe", lease: LeaseTiming(ttl: .seconds(3), renew: .seconds(1), fenceBudget: .milliseconds(600), skew: .milliseconds(100)),
            backend: .process(process))
        return ProcessAppBackend(app: app, node: "node-1", process: process, logger: recordingLogger(logs))
    }

    func record<Element: Sendable>(_ stream: AsyncStream<Element>) -> Recorder<Element> {
        let recorder = Recorder<Element>()
        Task { for await element in stream { recorder.record(element) } }
        return recorder
    }

    /// Polls (bounded) for a backend pid other than `previous`: the restart has no event of its
    /// own outside the notices, which are checked separately.
    func newPID(of backend: ProcessAppBackend, other previous: Int32) async -> Int32? {
        for _ in 0..<250 {
            if let pid = await backend.backendPID, pid != previous { return pid }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    @Test("the keeper killed from outside while active: the backend restarts under a new keeper, with the same epoch")
    func keeperKilledRestarts() async throws {
        let backend = makeBackend(restart: RestartPolicy(maxRestarts: 3, window: .seconds(60), backoff: .milliseconds(50)))
        let notices = record(backend.notices())
        let failures = record(backend.failures())
        await backend.armFence(token: 1048, deadline: MonotonicClock.now() + .seconds(60))
        try await backend.start(token: 1048)
        let pid = try #require(await backend.backendPID)
        let keeper = try #require(await backend.keeperProcessID)
        kill(keeper, SIGKILL)

        let restarted = try #require(await newPID(of: backend, other: pid), "the backend was not restarted")
        #expect(processIsGone(pid))
        let newKeeper = try #require(await backend.keeperProcessID)
        #expect(newKeeper != keeper)
        let environment = try String(contentsOfFile: "/proc/\(restarted)/environ", encoding: .utf8)
        #expect(environment.split(separator: "\0").contains("BATON_EPOCH=1048"))
        let down = try #require(await notices.first(within: .seconds(5)) { if case .backendDown = $0 { true } else { false } })
        #expect(down.description.contains("lost with its fence keeper"))
        #expect(await notices.first(within: .seconds(5)) { if case .backendRestarted = $0 { true } else { false } } != nil)
        #expect(failures.values.isEmpty)
        await backend.fence()
        await backend.dispose()
        #expect(processIsGone(restarted))
    }

    @Test("the keeper killed with the restart budget spent: a failure, so the app steps down")
    func keeperKilledBudgetSpent() async throws {
        let backend = makeBackend(restart: RestartPolicy(maxRestarts: 0, window: .seconds(60), backoff: .milliseconds(50)))
        let notices = record(backend.notices())
        let failures = record(backend.failures())
        await backend.armFence(token: 7, deadline: MonotonicClock.now() + .seconds(60))
        try await backend.start(token: 7)
        let keeper = try #require(await backend.keeperProcessID)
        kill(keeper, SIGKILL)
        let failure = try #require(await failures.first(within: .seconds(5)) { _ in true })
        guard case .exhausted = failure else {
            Issue.record("unexpected failure \(failure)")
            return
        }
        let down = try #require(await notices.first(within: .seconds(5)) { if case .backendDown = $0 { true } else { false } })
        #expect(down.description.contains("not restarted"))
        #expect(await backend.backendPID == nil)
        await backend.dispose()
    }

    @Test("a backend killed by a stray signal while active is restarted")
    func strayKillRestarts() async throws {
        let backend = makeBackend(restart: RestartPolicy(maxRestarts: 3, window: .seconds(60), backoff: .milliseconds(50)))
        let failures = record(backend.failures())
        await backend.armFence(token: 3, deadline: MonotonicClock.now() + .seconds(60))
        try await backend.start(token: 3)
        let pid = try #require(await backend.backendPID)
        kill(pid, SIGKILL)
        let restarted = try #require(await newPID(of: backend, other: pid), "the backend was not restarted")
        #expect(failures.values.isEmpty)
        await backend.fence()
        await backend.dispose()
        #expect(processIsGone(restarted))
    }
}
