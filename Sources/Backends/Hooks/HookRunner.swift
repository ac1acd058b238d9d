import BatonCore
import Foundation
import Logging
import NIOPosix
import Subprocess

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// How running the hooks of one point ended.
public struct HookOutcome: Sendable, Hashable {
    /// The point.
    public var point: HookPoint
    /// How many hooks ran (a failing before_active hook stops the ones after it).
    public var ran: Int
    /// How many the point has.
    public var configured: Int
    /// What went wrong, one sentence per failed hook (`on_fence hook 2 (/usr/bin/x): exited
    /// with status 3`).
    public var failures: [String]

    /// Whether every hook ran and succeeded.
    public var succeeded: Bool { failures.isEmpty && ran == configured }

    /// `after_active hooks: 2 of 2 ran, ok`, or the failures.
    public var summary: String {
        failures.isEmpty
            ? "\(point.rawValue) hooks: \(ran) of \(configured) ran, ok"
            : "\(point.rawValue) hooks: \(failures.joined(separator: "; "))"
    }
}

/// Runs an app's hooks (`hooks:`): each command with swift-subprocess, in a process group of its
/// own, killed with that group at its timeout; one at a time, in order. Their output (stdout and
/// stderr together) goes to the logger line by line after the hook ended, with the app's
/// metadata plus `hook` and `epoch` (journal fields under journald).
///
/// The environment is batond's (minus `BATON_*`) under the app's process `env:`, plus
/// `BATON_APP`, `BATON_NODE`, `BATON_ROLE` (``HookPoint/role``), `BATON_EPOCH` and
/// `BATON_HOOK` (the point's name). Hooks run as batond's user, in batond's working directory.
public struct HookRunner: Sendable {
    /// The hooks.
    public var hooks: HooksConfig
    public var app: String
    public var node: String
    /// The app's environment (a process backend's `env:`; empty for a systemd backend).
    public var environment: [String: String]
    /// The most output kept per hook, in bytes; the rest is dropped (and said so).
    public var maxOutput: Int
    private let logger: Logger

    /// Creates a runner. `logger` should carry the app's metadata.
    public init(hooks: HooksConfig, app: String, node: String, environment: [String: String], maxOutput: Int = 64 * 1024, logger: Logger) {
        self.hooks = hooks
        self.app = app
        self.node = node
        self.environment = environment
        self.maxOutput = maxOutput
        self.logger = logger
    }

    /// Runs the hooks of `point` under `epoch`, one at a time, in order. With
    /// `stopAtFirstFailure` (before_active), a failure skips the hooks after it.
    public func run(_ point: HookPoint, epoch: UInt64, stopAtFirstFailure: Bool = false) async -> HookOutcome {
        let commands = hooks[point]
        var outcome = HookOutcome(point: point, ran: 0, configured: commands.count, failures: [])
        for (index, hook) in commands.enumerated() {
            var logger = logger
            logger[metadataKey: "hook"] = "\(point.rawValue)[\(index + 1)]"
            logger[metadataKey: "epoch"] = "\(epoch)"
            let started = ContinuousClock.now
            let failure = await runOne(hook, point: point, epoch: epoch, logger: logger)
            outcome.ran += 1
            let took = ContinuousClock.now - started
            if let failure {
                let text = "\(point.rawValue) hook \(index + 1) (\(hook.command[0])): \(failure)"
                logger.error("hook failed", metadata: ["reason": "\(failure)", "took": "\(took)"])
                outcome.failures.append(text)
                if stopAtFirstFailure { break }
            } else {
                logger.info("hook succeeded", metadata: ["took": "\(took)"])
            }
        }
        return outcome
    }

    /// The environment of a hook of `point` under `epoch`.
    public func environment(for point: HookPoint, epoch: UInt64, inherited: [String: String] = ProcessInfo.processInfo.environment) -> [String: String] {
        var result = inherited.filter { !$0.key.hasPrefix("BATON_") }
        for (key, value) in environment { result[key] = value }
        result["BATON_APP"] = app
        result["BATON_NODE"] = node
        result["BATON_ROLE"] = point.role
        result["BATON_EPOCH"] = "\(epoch)"
        result["BATON_HOOK"] = point.rawValue
        return result
    }

    /// Runs one hook; nil when it exited 0 within its timeout, else why not.
    private func runOne(_ hook: HookCommand, point: HookPoint, epoch: UInt64, logger: Logger) async -> String? {
        let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("baton-hook-\(app)-\(UUID().uuidString)").path
        let output: FileDescriptor
        do {
            output = try FileDescriptor.open(
                FilePath(outputPath), .readWrite, options: [.create, .truncate, .exclusiveCreate], permissions: [.ownerReadWrite])
        } catch {
            return "cannot create its output file \(outputPath): \(error)"
        }
        defer {
            try? output.close()
            try? FileManager.default.removeItem(atPath: outputPath)
        }
        let variables = environment(for: point, epoch: epoch)
        let executable: Executable = hook.command[0].contains("/") ? .path(FilePath(hook.command[0])) : .name(hook.command[0])
        let timeout = hook.timeout
        let status: Result<TerminationStatus?, any Error>
        do {
            status = .success(
                // A group of its own: the timeout kills the hook and whatever it started.
                try await terminationStatus(within: timeout) { options in
                    try await Subprocess.run(
                        executable, arguments: Arguments(Array(hook.command.dropFirst())),
                        environment: .custom(Dictionary(uniqueKeysWithValues: variables.map { (Environment.Key(stringLiteral: $0.key), $0.value) })),
                        platformOptions: options, input: .none, output: .fileDescriptor(output, closeAfterSpawningProcess: false),
                        error: .combinedWithOutput
                    ).terminationStatus
                })
        } catch {
            status = .failure(error)
        }
        await logOutput(path: outputPath, logger: logger)
        switch status {
        case .failure(let error): return "could not run: \(error)"
        case .success(nil): return "did not finish within its timeout of \(timeout.configString); killed with its process group"
        case .success(.exited(0)): return nil
        case .success(.exited(let code)): return "exited with status \(code)"
        case .success(.signaled(let signal)): return "was killed by signal \(signal)"
        }
    }

    /// Logs what the hook wrote, line by line (at most ``maxOutput`` bytes). The file is read on
    /// NIO's thread pool, not the cooperative pool.
    private func logOutput(path: String, logger: Logger) async {
        let limit = maxOutput
        let data =
            (try? await NIOThreadPool.singleton.runIfActive { () -> Data in
                guard let handle = FileHandle(forReadingAtPath: path) else { return Data() }
                defer { try? handle.close() }
                return (try? handle.read(upToCount: limit + 1)) ?? Data()
            }) ?? Data()
        guard !data.isEmpty else { return }
        let text = String(decoding: data.prefix(maxOutput), as: UTF8.self)
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) where !line.isEmpty {
            logger.info("\(line)", metadata: ["stream": "hook-output"])
        }
        if data.count > maxOutput { logger.warning("hook output longer than \(maxOutput) bytes; the rest was not logged") }
    }
}
