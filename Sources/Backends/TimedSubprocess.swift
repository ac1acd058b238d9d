import Subprocess

/// Runs a command in a process group of its own and gives up after `timeout`: `run` gets the
/// platform options to pass to `Subprocess.run` (a new group, torn down by SIGKILL to the whole
/// group when the run is cancelled), and the result is its termination status, or nil when
/// `timeout` passed first (the command and whatever it started are killed then).
func terminationStatus(
    within timeout: Duration, _ run: @escaping @Sendable (PlatformOptions) async throws -> TerminationStatus
) async throws -> TerminationStatus? {
    try await withThrowingTaskGroup(of: TerminationStatus?.self) { group in
        group.addTask {
            var options = PlatformOptions()
            options.processGroupID = 0
            options.teardownSequence = [.send(signal: .kill, toProcessGroup: true, allowedDurationToNextStep: .milliseconds(100))]
            return try await run(options)
        }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        let first = try await group.next() ?? nil
        group.cancelAll()
        return first
    }
}
