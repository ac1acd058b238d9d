// `ReplicationBenchmark size`: replication at database sizes (100 MB, 1 GB, 4 GB): the initial
// sync of a new standby, a graceful switchover and a crash failover, each node's peak RSS, the
// NATS storage used, and Litestream 0.5's restore of the same database side by side.
//
// Every node is a process of its own (this executable in `node` mode, driven by one-line
// commands on its stdin, answering one line on stdout), so its VmHWM is one node's peak RSS, as
// batond's would be: the node runs the shipper, the applier and the promotion, as batond does;
// the "app" (the writes) is this parent process with its own SQLite connection. The lease and
// the backend are not part of it: the times are replication's own share of a failover.
//
// Measured, per size:
//   - fill: the database is filled with 1 MiB random blobs, 16 per transaction;
//   - opening snapshot: node A starts shipping (the snapshot is copied and uploaded);
//   - initial sync: node B starts with an empty state directory, restores the newest snapshot
//     from the Object Store and applies the stream after it; MB/s = database bytes / time;
//   - switchover: from A's stepdown command to B's first commit shipped (A: final flush +
//     marker; B: applier stop, promotion, shipper continuing the stream, one INSERT shipped);
//   - crash failover: kill -9 of the active node (B) to the first commit shipped by A
//     (promotion without a final marker, the new shipper, one INSERT shipped);
//   - peak RSS: the VmHWM of each node process (A and B);
//   - NATS storage: the size of the server's store directory after the initial sync;
//   - slow consumers: "Slow Consumer" lines in the server's log;
//   - Litestream: `litestream replicate` to a file replica of the same database, then
//     `litestream restore -o` timed (its peak RSS from /usr/bin/time).
// Usage: ReplicationBenchmark size --server PATH [--sizes 100,1024,4096] [--work DIR]
//        [--litestream PATH]   (a PATH that is not an executable skips Litestream)

import ArgumentParser
import BenchmarkSupport
import CBatonProcess
import CSQLite
import Foundation
import Logging
import NATS
import Replication
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// MARK: - The node process

/// Lines of stdin, read on a thread of their own (never blocking the cooperative pool).
func stdinLines() -> AsyncStream<String> {
    let (stream, continuation) = AsyncStream.makeStream(of: String.self)
    Thread {
        while let line = readLine() { continuation.yield(line) }
        continuation.finish()
    }.start()
    return stream
}

func reply(_ text: String) {
    FileHandle.standardOutput.write(Data("\(text)\n".utf8))
}

/// `node NATS_URL APP NODE_ID DB_PATH STATE_DIR`: one node, driven by commands on stdin.
func nodeMain(arguments: [String]) async -> Never {
    _ = cbp_set_parent_death_signal(SIGKILL)
    guard arguments.count == 5 else {
        log("usage: node NATS_URL APP NODE_ID DB_PATH STATE_DIR")
        exit(64)
    }
    let (url, app, nodeID, database, state) = (arguments[0], arguments[1], arguments[2], arguments[3], arguments[4])
    var logger = Logger(label: "node-\(nodeID)", factory: { StreamLogHandler.standardError(label: $0) })
    logger.logLevel = .info
    var configuration = ReplicationConfiguration(cluster: "bench", app: app, nodeID: nodeID, databasePath: database, stateDirectory: state)
    // `sqlite.promotion_check: full` for a side-by-side run (BATON_BENCH_PROMOTION_CHECK=full).
    configuration.promotionReadsReplica = ProcessInfo.processInfo.environment["BATON_BENCH_PROMOTION_CHECK"] == "full"
    do {
        let client = try await NATSClient.connect(options: NATSClientOptions(servers: [url]))
        let jetStream = JetStream(client: client, timeout: .seconds(30))
        var shipper: WALShipper?
        var applier: WALApplier?
        var handoff: HandoffReport?
        var resume: ShipperResumePoint?
        /// The shipper (`ship` started it) or applier (`follow` started it) a command needs.
        func running(_ command: String) throws -> WALShipper {
            guard let shipper else { throw BenchmarkError("\(command) on node \(nodeID): not shipping (no ship, or stepped down)") }
            return shipper
        }
        func following(_ command: String) throws -> WALApplier {
            guard let applier else { throw BenchmarkError("\(command) on node \(nodeID): not following (no follow, or promoted)") }
            return applier
        }
        reply("ready")
        for await line in stdinLines() {
            let words = line.split(separator: " ").map(String.init)
            guard let command = words.first else { continue }
            do {
                switch command {
                case "ship":
                    let token = UInt64(words[1]) ?? 1
                    let started = try await WALShipper.start(
                        configuration: configuration, token: token, jetStream: jetStream, logger: logger,
                        resumingFrom: words.count > 2 && words[2] == "resume" ? resume : nil)
                    shipper = started
                    let status = await started.status()
                    reply("ok txid=\(status.lastTxid) seq=\(status.lastStreamSequence) snapshots=\(status.snapshots)")
                case "shipped":
                    let status = try await running(command).status()
                    reply("ok txid=\(status.lastTxid) seq=\(status.lastStreamSequence)")
                case "wait-shipped":
                    let target = UInt64(words[1]) ?? 0
                    let deadline = ContinuousClock.now + .seconds(600)
                    let shipping = try running(command)
                    while await shipping.status().lastTxid < target {
                        guard ContinuousClock.now < deadline else { throw BenchmarkError("txid \(target) not shipped") }
                        try await Task.sleep(for: .microseconds(200))
                    }
                    let status = await shipping.status()
                    reply("ok txid=\(status.lastTxid) seq=\(status.lastStreamSequence)")
                case "stepdown":
                    let report = try await running(command).stepDown()
                    handoff = report
                    shipper = nil
                    reply("ok txid=\(report.txid) seq=\(report.markerSequence)")
                case "follow":
                    applier = try await WALApplier.start(
                        configuration: configuration, jetStream: jetStream, logger: logger,
                        adoptingLocalDatabaseAt: words.count > 1 && words[1] == "adopt" ? handoff : nil)
                    reply("ok")
                case "wait-seq":
                    let replica = try following(command)
                    let position = try await replica.waitForStreamSequence(UInt64(words[1]) ?? 0, timeout: .seconds(3600))
                    let status = await replica.status()
                    reply("ok txid=\(position.txid) restored=\(status.snapshotsRestored) adopted=\(status.localDatabasesAdopted)")
                case "promote":
                    // As batond does: the stopped applier's verified page hashes go to the promotion.
                    let handover = await applier?.stop()
                    applier = nil
                    let report = try await ReplicaPromotion.promote(
                        configuration: configuration, jetStream: jetStream, logger: logger, timeout: .seconds(600), handover: handover)
                    resume = report.resumePoint
                    reply("ok txid=\(report.txid ?? 0) graceful=\(report.finalMarkerToken != nil)")
                case "quit":
                    if let shipper { await shipper.stop() }
                    if let applier { await applier.stop() }
                    await client.close()
                    reply("ok")
                    exit(0)
                default:
                    reply("error unknown command \(command)")
                }
            } catch {
                reply("error \(error)".replacingOccurrences(of: "\n", with: " "))
            }
        }
        exit(0)
    } catch {
        log("node \(nodeID) failed: \(error)")
        exit(1)
    }
}

// MARK: - The parent's view of a node

/// A node process: sends a command, reads its one-line answer.
final class NodeProcess: @unchecked Sendable {
    let child: Child
    let name: String
    private let output: FileHandle
    private var buffer = Data()

    init(me: String, name: String, url: String, app: String, database: String, state: String, logPath: String) throws {
        self.name = name
        let pipeIn = Pipe()
        let pipeOut = Pipe()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: me)
        process.arguments = ["node", url, app, name, database, state]
        process.standardInput = pipeIn
        process.standardOutput = pipeOut
        _ = FileManager.default.createFile(atPath: logPath, contents: Data())
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        child = try Child(wrapping: process, name: name, logPath: logPath)
        input = pipeIn.fileHandleForWriting
        output = pipeOut.fileHandleForReading
    }

    private let input: FileHandle

    /// The next line on the node's stdout (blocking; the parent runs one step at a time).
    private func readLine() throws -> String {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
                buffer.removeSubrange(buffer.startIndex...newline)
                return line
            }
            let chunk = output.availableData
            if chunk.isEmpty { throw BenchmarkError("node \(name) exited: \(child.logTail)") }
            buffer.append(chunk)
        }
    }

    func waitReady() throws {
        let line = try readLine()
        guard line == "ready" else { throw BenchmarkError("node \(name): \(line)") }
    }

    /// Sends `command`; returns the answer's `key=value` fields.
    @discardableResult
    func send(_ command: String) throws -> [String: String] {
        input.write(Data("\(command)\n".utf8))
        let line = try readLine()
        guard line.hasPrefix("ok") else { throw BenchmarkError("node \(name), \(command): \(line)") }
        var fields: [String: String] = [:]
        for word in line.split(separator: " ").dropFirst() {
            let parts = word.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        return fields
    }

    /// The process's peak resident set (VmHWM) so far, in MiB.
    var peakRSSMiB: Double {
        guard let text = try? String(contentsOfFile: "/proc/\(child.pid)/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0").map { $0 / 1024 } ?? 0
        }
        return 0
    }

    func crash() {
        kill(child.pid, SIGKILL)
        child.process.waitUntilExit()
        Children.shared.remove(child.pid)
    }

    func quit() async {
        _ = try? send("quit")
        await child.stop()
    }
}

extension Child {
    /// Takes over an already configured process and runs it.
    convenience init(wrapping process: Process, name: String, logPath: String) throws {
        self.init(process: process, name: name, logPath: logPath)
        try process.run()
        Children.shared.add(process.processIdentifier, name: name)
    }
}

// MARK: - The scenario

func directorySize(_ path: String) -> Int64 {
    guard let enumerator = FileManager.default.enumerator(atPath: path) else { return 0 }
    var total: Int64 = 0
    for case let file as String in enumerator {
        var info = stat()
        if lstat("\(path)/\(file)", &info) == 0, (info.st_mode & S_IFMT) == S_IFREG { total += Int64(info.st_blocks) * 512 }
    }
    return total
}

func fileBytes(_ path: String) -> Int64 {
    var info = stat()
    return stat(path, &info) == 0 ? Int64(info.st_size) : 0
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func insertRow(_ path: String) throws {
    let db = try Connection(path: path, flags: SQLITE_OPEN_READWRITE)
    try db.execute("PRAGMA busy_timeout=5000")
    try db.execute("INSERT INTO t(payload) VALUES (x'01')")
}

struct SizeResult {
    var megabytes: Int
    var fill: Double = 0
    var openingSnapshot: Double = 0
    var initialSync: Double = 0
    var databaseBytes: Int64 = 0
    var switchover: Double = 0
    var crashFailover: Double = 0
    var rssA: Double = 0
    var rssB: Double = 0
    var natsStore: Int64 = 0
    var slowConsumers = 0
    var litestreamReplicate: Double = 0
    var litestreamRestore: Double = 0
    var litestreamRSS: Double = 0
    var litestreamStore: Int64 = 0

    var row: String {
        let mb = Double(databaseBytes) / 1_048_576
        func f(_ value: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", value) }
        return "| \(megabytes) MB | \(f(initialSync, 2)) s | \(f(mb / max(initialSync, 1e-9), 0)) MB/s | \(f(switchover * 1000, 0)) ms | "
            + "\(f(crashFailover * 1000, 0)) ms | \(f(rssA, 0)) / \(f(rssB, 0)) MiB | \(f(Double(natsStore) / 1_048_576, 0)) MiB | \(slowConsumers) | "
            + (litestreamRestore > 0 ? "\(f(litestreamRestore, 2)) s (\(f(mb / litestreamRestore, 0)) MB/s, \(f(litestreamRSS, 0)) MiB)" : "not run")
            + " | \(f(openingSnapshot, 2)) s | \(f(fill, 1)) s |"
    }
}

/// `ReplicationBenchmark size`'s command line (flags as before ArgumentParser).
struct SizeArguments: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ReplicationBenchmark size",
        abstract: "Initial sync, switchover, crash failover, each node's peak RSS, NATS storage, and Litestream's restore, at database sizes.")

    @Option(help: "nats-server.")
    var server = "/usr/bin/nats-server"
    @Option(help: ArgumentHelp("Database sizes in MiB, comma separated (default 100,1024,4096).", valueName: "list"),
        transform: commaSeparated("--sizes", "a size in MiB", { Int($0) }))
    var sizes = [100, 1024, 4096]
    @Option(help: "Where the work directory goes.")
    var work = "/work/tmp-bench"
    @Option(help: "litestream binary (default: $BATON_VENV/bin/litestream, else .venv/bin/litestream).")
    var litestream = ProcessInfo.processInfo.environment["BATON_VENV"].map { "\($0)/bin/litestream" } ?? ".venv/bin/litestream"
}

func sizeMain(arguments: [String]) async -> Int32 {
    let parsed = SizeArguments.parseOrExit(arguments)
    let (server, sizes, work, litestream) = (parsed.server, parsed.sizes, parsed.work, parsed.litestream)
    installKillers(timeLimit: 4 * 3600)
    let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
    let root = "\(work)/replbench-size-\(getpid())"
    Children.shared.setWorkDirectory(root, remove: true)
    var results: [SizeResult] = []
    var serverVersion = "?"
    do {
        for size in sizes {
            let directory = "\(root)/\(size)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let nats = try await NATSServer(path: server, directory: directory)
            serverVersion = nats.version
            var result = SizeResult(megabytes: size)
            let app = "size\(size)"
            let dbA = "\(directory)/a/app.db"
            let dbB = "\(directory)/b/app.db"
            var started = ContinuousClock.now
            try fillDatabase(dbA, megabytes: size)
            result.fill = seconds(ContinuousClock.now - started)
            result.databaseBytes = fileBytes(dbA)
            log("\(size) MB: filled in \(String(format: "%.1f", result.fill)) s")

            // Litestream first, on the same file, while nothing else runs.
            if FileManager.default.isExecutableFile(atPath: litestream) {
                (result.litestreamReplicate, result.litestreamRestore, result.litestreamRSS, result.litestreamStore) = try await litestreamRestore(
                    binary: litestream, database: dbA, directory: "\(directory)/litestream")
                log("\(size) MB: litestream restore \(String(format: "%.2f", result.litestreamRestore)) s")
            }

            let a = try NodeProcess(
                me: me, name: "node-a", url: nats.url, app: app, database: dbA, state: "\(directory)/a/state", logPath: "\(directory)/node-a.log")
            try a.waitReady()
            started = ContinuousClock.now
            try a.send("ship 1")
            result.openingSnapshot = seconds(ContinuousClock.now - started)
            try insertRow(dbA)
            let shipped = try a.send("wait-shipped 2")
            log("\(size) MB: opening snapshot \(String(format: "%.2f", result.openingSnapshot)) s; A peak RSS \(Int(a.peakRSSMiB)) MiB")

            // A new, empty standby.
            let b = try NodeProcess(
                me: me, name: "node-b", url: nats.url, app: app, database: dbB, state: "\(directory)/b/state", logPath: "\(directory)/node-b.log")
            try b.waitReady()
            started = ContinuousClock.now
            try b.send("follow")
            try b.send("wait-seq \(shipped["seq"] ?? "0")")
            result.initialSync = seconds(ContinuousClock.now - started)
            result.natsStore = directorySize("\(directory)/store")
            log("\(size) MB: initial sync \(String(format: "%.2f", result.initialSync)) s; B peak RSS \(Int(b.peakRSSMiB)) MiB")

            // Graceful switchover A → B.
            try insertRow(dbA)
            let before = try a.send("wait-shipped 3")
            try b.send("wait-seq \(before["seq"] ?? "0")")
            started = ContinuousClock.now
            let marker = try a.send("stepdown")
            try b.send("promote")
            let resumed = try b.send("ship 2 resume")
            try insertRow(dbB)
            let first = try b.send("wait-shipped \((UInt64(resumed["txid"] ?? "0") ?? 0) + 1)")
            result.switchover = seconds(ContinuousClock.now - started)
            log("\(size) MB: switchover \(String(format: "%.0f", result.switchover * 1000)) ms (marker at txid \(marker["txid"] ?? "?"))")
            try a.send("follow adopt")
            try a.send("wait-seq \(first["seq"] ?? "0")")

            // Crash of B; A takes over.
            try insertRow(dbB)
            let last = try b.send("wait-shipped \((UInt64(first["txid"] ?? "0") ?? 0) + 1)")
            try a.send("wait-seq \(last["seq"] ?? "0")")
            result.rssB = b.peakRSSMiB
            started = ContinuousClock.now
            b.crash()
            try a.send("promote")
            let crashResumed = try a.send("ship 3 resume")
            try insertRow(dbA)
            try a.send("wait-shipped \((UInt64(crashResumed["txid"] ?? "0") ?? 0) + 1)")
            result.crashFailover = seconds(ContinuousClock.now - started)
            result.rssA = a.peakRSSMiB
            await a.quit()
            await nats.child.stop()
            let serverLog = (try? String(contentsOfFile: "\(directory)/nats-server.log", encoding: .utf8)) ?? ""
            result.slowConsumers = serverLog.components(separatedBy: "Slow Consumer").count - 1
            log(result.row)
            results.append(result)
            try? FileManager.default.removeItem(atPath: directory)
        }
    } catch {
        log("size benchmark failed: \(error)")
        Children.shared.abort()
        return 1
    }
    try? FileManager.default.removeItem(atPath: root)
    print("nats-server: \(serverVersion); Litestream: \(capture(litestream, ["version"]))")
    print(
        "| size | initial sync | initial sync rate | switchover | crash failover | peak RSS node A / B | NATS store | slow consumers | Litestream restore (rate, peak RSS) | opening snapshot | fill |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for result in results { print(result.row) }
    return 0
}

/// Replicates `database` with `litestream replicate` to a file replica until the replica holds
/// it, then times `litestream restore` of it. Returns (replicate seconds, restore seconds,
/// restore peak RSS MiB, replica bytes).
func litestreamRestore(binary: String, database: String, directory: String) async throws -> (Double, Double, Double, Int64) {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let config = "\(directory)/litestream.yml"
    try "logging:\n  level: warn\n  stderr: true\ndbs:\n  - path: \(database)\n    replica:\n      type: file\n      path: \(directory)/replica\n"
        .write(toFile: config, atomically: true, encoding: .utf8)
    let databaseBytes = fileBytes(database)
    let started = ContinuousClock.now
    let replicate = try Child(
        name: "litestream-replicate", executable: binary, arguments: ["replicate", "-config", config], logPath: "\(directory)/replicate.log")
    // Done when the replica holds the database (random blobs do not compress) and stopped growing.
    var lastSize: Int64 = -1
    var stableSince = ContinuousClock.now
    let deadline = ContinuousClock.now + .seconds(1800)
    while true {
        guard ContinuousClock.now < deadline, replicate.isRunning else { throw BenchmarkError("litestream replicate: \(replicate.logTail)") }
        try await Task.sleep(for: .milliseconds(200))
        let size = directorySize("\(directory)/replica")
        if size != lastSize {
            lastSize = size
            stableSince = .now
        } else if size >= databaseBytes * 9 / 10, ContinuousClock.now - stableSince >= .seconds(2) {
            break
        }
    }
    let replicated = seconds(ContinuousClock.now - started - .seconds(2))
    await replicate.stop()
    let output = "\(directory)/restored.db"
    let restoreStart = ContinuousClock.now
    let text = capture("/usr/bin/time", ["-f", "maxrss=%M", binary, "restore", "-config", config, "-o", output, database])
    let restoreSeconds = seconds(ContinuousClock.now - restoreStart)
    guard FileManager.default.fileExists(atPath: output) else { throw BenchmarkError("litestream restore wrote nothing: \(text)") }
    let rss = text.split(separator: "\n").last { $0.hasPrefix("maxrss=") }.flatMap { Double($0.dropFirst(7)) }.map { $0 / 1024 } ?? 0
    let store = directorySize("\(directory)/replica")
    try? FileManager.default.removeItem(atPath: directory)
    return (replicated, restoreSeconds, rss, store)
}
