// `ReplicationBenchmark switchover`: the cost of a graceful switchover at several database
// sizes, with promotion continuing the stream (`fast`, this release) and with the opening
// snapshot + snapshot restore of earlier releases (`legacy`: no resume point, no adoption of the
// old active node's own database).
//
// Two "nodes" in this process, each with its own NATS connection and state directory, against
// one nats-server started here. The database is filled with 1 MiB blobs to the size asked for.
// Measured:
//   - switchover: from the old active node's final flush (its backend already stopped) to the
//     first commit on the new node being shipped: final marker, applier stop, promotion (drain,
//     checksum, quick_check, move into place), shipper start, one INSERT shipped. The backend's
//     own start is not included.
//   - old active caught up: from the old active node starting to follow to its replica holding
//     the new node's first commit (a local copy of its own database, or a snapshot restore).
// Usage: ReplicationBenchmark switchover --server PATH [--sizes 20,200] [--modes fast,legacy]

import ArgumentParser
import BenchmarkSupport
import CSQLite
import Foundation
import Logging
import NATS
import Replication

func peakRSSMiB() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0
        return kib / 1024
    }
    return 0
}

func fillDatabase(_ path: String, megabytes: Int) throws {
    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    let db = try Connection(path: path, flags: SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
    guard try db.integer("SELECT 1") == 1 else { throw BenchmarkError("sqlite") }
    try db.execute("PRAGMA journal_mode=WAL")
    try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    var written = 0
    while written < megabytes {
        let batch = min(16, megabytes - written)
        try db.execute("BEGIN")
        for _ in 0..<batch { try db.execute("INSERT INTO t(payload) VALUES (randomblob(1048576))") }
        try db.execute("COMMIT")
        written += batch
    }
    try db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
}

func commitOne(_ path: String) throws {
    let db = try Connection(path: path, flags: SQLITE_OPEN_READWRITE)
    try db.execute("PRAGMA busy_timeout=5000")
    try db.execute("INSERT INTO t(payload) VALUES (x'01')")
}

/// `ReplicationBenchmark switchover`'s command line (flags as before ArgumentParser).
struct SwitchoverArguments: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ReplicationBenchmark switchover",
        abstract: "Graceful switchover cost at database sizes (one process).")

    @Option(help: "nats-server.")
    var server = "/usr/bin/nats-server"
    @Option(help: ArgumentHelp("Database sizes in MiB, comma separated (default 20,200).", valueName: "list"),
        transform: commaSeparated("--sizes", "a size in MiB", { Int($0) }))
    var sizes = [20, 200]
    @Option(help: ArgumentHelp("legacy,fast (default both).", valueName: "list"), transform: commaSeparated("--modes", "a mode", { $0 }))
    var modes = ["legacy", "fast"]
}

func switchoverMain(arguments: [String]) async -> Int32 {
    let parsed = SwitchoverArguments.parseOrExit(arguments)
    let (server, sizes, modes) = (parsed.server, parsed.sizes, parsed.modes)
    let work = FileManager.default.temporaryDirectory.appendingPathComponent("replbench-switchover-\(getpid())").path
    defer { try? FileManager.default.removeItem(atPath: work) }
    var logger = Logger(label: "replbench-switchover", factory: { StreamLogHandler.standardError(label: $0) })
    logger.logLevel = .warning
    var rows: [String] = []
    var natsServer: NATSServer?
    do {
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let nats = try await NATSServer(path: server, directory: work)
        natsServer = nats
        for size in sizes {
            for mode in modes {
                let app = "sw\(size)\(mode)"
                let directory = "\(work)/\(app)"
                let a = ReplicationConfiguration(
                    cluster: "bench", app: app, nodeID: "node-a", databasePath: "\(directory)/a/app.db", stateDirectory: "\(directory)/a/state")
                let b = ReplicationConfiguration(
                    cluster: "bench", app: app, nodeID: "node-b", databasePath: "\(directory)/b/app.db", stateDirectory: "\(directory)/b/state")
                try fillDatabase(a.databasePath, megabytes: size)
                let clientA = try await NATSClient.connect(options: NATSClientOptions(servers: [nats.url]))
                let clientB = try await NATSClient.connect(options: NATSClientOptions(servers: [nats.url]))
                let jsA = JetStream(client: clientA, timeout: .seconds(30))
                let jsB = JetStream(client: clientB, timeout: .seconds(30))
                // Setup (not measured): node-a ships, node-b follows and catches up.
                let shipperA = try await WALShipper.start(configuration: a, token: 1, jetStream: jsA, logger: logger)
                let applierB = try await WALApplier.start(configuration: b, jetStream: jsB, logger: logger)
                try commitOne(a.databasePath)
                try await Task.sleep(for: .milliseconds(300))
                _ = try await applierB.waitForTxid(await shipperA.status().lastTxid, timeout: .seconds(600))

                // The switchover.
                let start = ContinuousClock.now
                let handoff = try await shipperA.stepDown()
                let flushed = ContinuousClock.now
                await applierB.stop()
                let stopped = ContinuousClock.now
                let report = try await ReplicaPromotion.promote(configuration: b, jetStream: jsB, logger: logger, timeout: .seconds(600))
                let promoted = ContinuousClock.now
                let shipperB = try await WALShipper.start(
                    configuration: b, token: 2, jetStream: jsB, logger: logger, resumingFrom: mode == "fast" ? report.resumePoint : nil)
                let shipping = ContinuousClock.now
                let before = await shipperB.status().lastTxid
                try commitOne(b.databasePath)
                while await shipperB.status().lastTxid == before { try await Task.sleep(for: .milliseconds(1)) }
                let firstCommit = ContinuousClock.now
                let snapshotsAtPromotion = await shipperB.status().snapshots

                // The old active node turns passive.
                let followStart = ContinuousClock.now
                let applierA = try await WALApplier.start(
                    configuration: a, jetStream: jsA, logger: logger, adoptingLocalDatabaseAt: mode == "fast" ? handoff : nil)
                _ = try await applierA.waitForStreamSequence(await shipperB.status().lastStreamSequence, timeout: .seconds(600))
                let caughtUp = ContinuousClock.now
                let applied = await applierA.status()
                await applierA.stop()
                await shipperB.stop()
                await clientA.close()
                await clientB.close()

                func msText(_ duration: Duration) -> String {
                    String(format: "%.0f", Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15)
                }
                let row =
                    "| \(size) MB | \(mode) | \(msText(firstCommit - start)) | \(msText(flushed - start)) | \(msText(stopped - flushed)) | \(msText(promoted - stopped)) | \(msText(shipping - promoted)) | "
                    + "\(snapshotsAtPromotion) | \(msText(caughtUp - followStart)) | \(applied.snapshotsRestored) | \(applied.localDatabasesAdopted) | \(peakRSSMiB()) |"
                log(row)
                rows.append(row)
                try? FileManager.default.removeItem(atPath: directory)
            }
        }
    } catch {
        log("switchover benchmark failed: \(error)")
        await natsServer?.child.stop()
        return 1
    }
    await natsServer?.child.stop()
    print(
        "| size | mode | switchover (ms) | final flush | applier stop | promotion | shipper start | snapshots published | old active caught up (ms) | snapshots restored | local DB adopted | peak RSS so far (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows { print(row) }
    return 0
}
