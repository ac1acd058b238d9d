import NIOConcurrencyHelpers
import NIOCore

/// The idle-heartbeat check of every ordered consumer of one client, in one task: a consumer
/// that heard nothing (no message, no heartbeat) for three of its heartbeat intervals is told
/// to reset. The task wakes once per the shortest interval registered, for all consumers
/// together, rather than a timer per consumer (a node with a hundred lease watches would
/// otherwise wake its threads dozens of times a second for nothing). It ends when no consumer
/// is left, and starts again with the next one.
final class ConsumerHeartbeatMonitor: Sendable {
    private struct Watched {
        weak var core: OrderedConsumerCore?
        var interval: Duration
    }

    private struct State {
        var watched: [ObjectIdentifier: Watched] = [:]
        var running = false
    }

    private let state = NIOLockedValueBox(State())

    /// Checks `core` every `interval` (or more often, when another consumer's is shorter) until
    /// ``forget(_:)`` or until it is deallocated.
    func watch(_ core: OrderedConsumerCore, interval: Duration) {
        let start = state.withLockedValue { state -> Bool in
            state.watched[ObjectIdentifier(core)] = Watched(core: core, interval: interval)
            defer { state.running = true }
            return !state.running
        }
        if start { Task { await self.run() } }
    }

    /// Stops checking `core`.
    func forget(_ core: OrderedConsumerCore) {
        state.withLockedValue { _ = $0.watched.removeValue(forKey: ObjectIdentifier(core)) }
    }

    /// How many consumers are checked (for tests).
    var count: Int { state.withLockedValue { $0.watched.values.count { $0.core != nil } } }

    private func run() async {
        while true {
            let round = state.withLockedValue { state -> (cores: [(OrderedConsumerCore, Duration)], tick: Duration)? in
                state.watched = state.watched.filter { $0.value.core != nil }
                guard let shortest = state.watched.values.map(\.interval).min() else {
                    state.running = false
                    return nil
                }
                return (state.watched.values.compactMap { watched in watched.core.map { ($0, watched.interval) } }, max(shortest, .milliseconds(100)))
            }
            guard let round else { return }
            for (core, interval) in round.cores { core.checkHeartbeats(silenceLimit: interval * 3) }
            try? await Task.sleep(for: round.tick)
        }
    }
}
