import Foundation
import NATS
import NATSTestSupport
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - nats-py

/// The Python side of the interop tests: one command per run, answering one JSON line on stdout.
private let natsPyScript = #"""
import asyncio
import base64
import json
import sys

import nats
from nats.js import api
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, ObjectNotFoundError


def out(value):
    print(json.dumps(value), flush=True)


def describe(info):
    options = info.options
    return {
        "name": info.name,
        "bucket": info.bucket,
        "nuid": info.nuid,
        "size": info.size,
        "chunks": info.chunks,
        "digest": info.digest,
        "deleted": bool(info.deleted),
        "description": info.description,
        "headers": info.headers,
        "max_chunk_size": options.max_chunk_size if options else None,
    }


async def run(nc, command, args):
    js = nc.jetstream(timeout=10)
    if command == "kv-create-bucket":
        bucket, history = args
        await js.create_key_value(bucket=bucket, history=int(history))
        out({"ok": True})
    elif command == "kv-put":
        bucket, key, value = args
        kv = await js.key_value(bucket)
        out({"revision": await kv.put(key, value.encode())})
    elif command == "kv-create":
        bucket, key, value = args
        kv = await js.key_value(bucket)
        try:
            out({"revision": await kv.create(key, value.encode())})
        except KeyWrongLastSequenceError:
            out({"error": "exists"})
    elif command == "kv-update":
        bucket, key, value, last = args
        kv = await js.key_value(bucket)
        try:
            out({"revision": await kv.update(key, value.encode(), last=int(last))})
        except KeyWrongLastSequenceError:
            out({"error": "wrong_last_sequence"})
    elif command == "kv-get":
        bucket, key = args
        kv = await js.key_value(bucket)
        try:
            entry = await kv.get(key)
            out({"value": entry.value.decode(), "revision": entry.revision})
        except KeyNotFoundError:
            out({"error": "not_found"})
    elif command == "obj-create-bucket":
        bucket, description = args
        await js.create_object_store(bucket, config=api.ObjectStoreConfig(description=description))
        out({"ok": True})
    elif command == "obj-put":
        bucket, name, path, description, headers = args
        store = await js.object_store(bucket)
        meta = api.ObjectMeta(name=name, description=description or None, headers=json.loads(headers) or None)
        with open(path, "rb") as f:
            info = await store.put(name, f.read(), meta=meta)
        out(describe(info))
    elif command == "obj-get":
        bucket, name, path = args
        store = await js.object_store(bucket)
        try:
            result = await store.get(name)
        except ObjectNotFoundError:
            out({"error": "not_found"})
            return
        with open(path, "wb") as f:
            f.write(result.data)
        described = describe(result.info)
        described["length"] = len(result.data)
        out(described)
    elif command == "obj-delete":
        bucket, name = args
        store = await js.object_store(bucket)
        await store.delete(name)
        out({"ok": True})
    elif command == "obj-raw-meta":
        bucket, name = args
        subject = "$O.%s.M.%s" % (bucket, base64.urlsafe_b64encode(name.encode()).decode())
        msg = await js.get_last_msg("OBJ_" + bucket, subject)
        out({"meta": json.loads(msg.data), "rollup": (msg.headers or {}).get("Nats-Rollup")})
    elif command == "obj-list":
        (bucket,) = args
        store = await js.object_store(bucket)
        out({"names": sorted(info.name for info in await store.list(ignore_deletes=True))})
    else:
        raise SystemExit(f"unknown command {command}")


async def main():
    url, command, *args = sys.argv[1:]
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0, allow_reconnect=False)
    try:
        await run(nc, command, args)
    finally:
        await nc.close()


asyncio.run(main())
"""#

/// Runs the nats-py script with the venv's python, each run bounded by a timeout and killed if
/// it overstays.
struct NatsPy {
    let python: String
    let directory: URL
    let script: URL
    let serverURL: String

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Where the venv's python should be, the way the fixture finds the PyPI server:
    /// `$BATON_PYTHON`, else `$BATON_VENV/bin/python`, else `<package root>/.venv/bin/python`.
    static func candidatePython() -> String {
        let environment = ProcessInfo.processInfo.environment
        if let explicit = environment["BATON_PYTHON"], !explicit.isEmpty { return explicit }
        if let venv = environment["BATON_VENV"], !venv.isEmpty {
            return URL(fileURLWithPath: venv).appendingPathComponent("bin/python").path
        }
        return Integration.packageRoot.appendingPathComponent(".venv/bin/python").path
    }

    /// Finds python with nats-py, or skips the test (fails it with `BATON_REQUIRE_INTEGRATION=1`).
    static func require(server: NATSServerProcess, directory: URL) async throws -> NatsPy {
        let python = candidatePython()
        let remedy = "`python3 -m venv .venv && .venv/bin/pip install nats-py` in the package root (or run scripts/install-prerequisites), or set BATON_VENV to a venv that has it"
        guard FileManager.default.isExecutableFile(atPath: python) else {
            try Integration.missingPrerequisite(MissingPrerequisite(name: "nats-py", reason: "no python at \(python)", remedy: remedy))
        }
        let script = directory.appendingPathComponent("interop.py")
        try Data(natsPyScript.utf8).write(to: script)
        let probe = try await run(python, ["-c", "import importlib.metadata, nats.js.object_store; print(importlib.metadata.version('nats-py'))"], in: directory, timeout: .seconds(30))
        guard probe.status == 0 else {
            try Integration.missingPrerequisite(
                MissingPrerequisite(name: "nats-py", reason: "\(python) cannot import nats: \(probe.stderr.suffix(300))", remedy: remedy))
        }
        return NatsPy(python: python, directory: directory, script: script, serverURL: server.url)
    }

    /// Runs one command of the script and decodes its JSON answer.
    func call(_ command: String, _ arguments: String..., timeout: Duration = .seconds(60)) async throws -> [String: Any] {
        let result = try await Self.run(python, [script.path, serverURL, command] + arguments, in: directory, timeout: timeout)
        guard result.status == 0 else {
            throw Failure(description: "nats-py \(command) exited with \(result.status):\n\(result.stderr)")
        }
        let line = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw Failure(description: "nats-py \(command) answered \(result.stdout.debugDescription); stderr:\n\(result.stderr)")
        }
        return object
    }

    struct RunResult {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs `executable` with output captured in files (no pipe can fill up), polling for its
    /// exit; kills it with SIGKILL after `timeout` or when the task is cancelled.
    static func run(_ executable: String, _ arguments: [String], in directory: URL, timeout: Duration) async throws -> RunResult {
        let id = UUID().uuidString
        let stdoutURL = directory.appendingPathComponent("\(id).out")
        let stderrURL = directory.appendingPathComponent("\(id).err")
        _ = FileManager.default.createFile(atPath: stdoutURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
        let stdout = try FileHandle(forWritingTo: stdoutURL)
        let stderr = try FileHandle(forWritingTo: stderrURL)
        defer {
            try? stdout.close()
            try? stderr.close()
            try? FileManager.default.removeItem(at: stdoutURL)
            try? FileManager.default.removeItem(at: stderrURL)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = directory
        var environment = ProcessInfo.processInfo.environment
        environment["PYTHONDONTWRITEBYTECODE"] = "1"
        environment["PYTHONUNBUFFERED"] = "1"
        process.environment = environment
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        let deadline = ContinuousClock.now + timeout
        var outcome: Failure?
        while process.isRunning {
            if Task.isCancelled {
                outcome = Failure(description: "cancelled while running \(executable) \(arguments.joined(separator: " "))")
                break
            }
            if ContinuousClock.now >= deadline {
                outcome = Failure(description: "\(executable) \(arguments.joined(separator: " ")) ran longer than \(timeout)")
                break
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        let errorText = (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? ""
        if var outcome {
            outcome.description += "; stderr:\n\(errorText)"
            throw outcome
        }
        return RunResult(
            status: process.terminationStatus, stdout: (try? String(contentsOf: stdoutURL, encoding: .utf8)) ?? "", stderr: errorText)
    }
}

/// Runs `body` with a server of `kind`, a temporary directory and nats-py, removing the
/// directory afterwards.
private func withInterop(_ kind: NATSServerKind, _ body: @escaping @Sendable (NATSServerProcess, NatsPy, URL) async throws -> Void) async throws {
    try await withNATSServer(kind) { server in
        let directory = try makeTemporaryDirectory(prefix: "baton-interop")
        defer { try? FileManager.default.removeItem(at: directory) }
        let python = try await NatsPy.require(server: server, directory: directory)
        try await withTimeout(.seconds(240), "the interop scenario") {
            try await body(server, python, directory)
        }
    }
}

private func int(_ value: Any?) -> UInt64? {
    (value as? NSNumber)?.uint64Value
}

// MARK: - Tests

@Suite("Interop with nats-py", .serialized)
struct InteropTests {
    @Test(arguments: NATSServerKind.allCases)
    func keyValueEntriesCrossBothWays(kind: NATSServerKind) async throws {
        try await withInterop(kind) { server, py, _ in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)

            // nats-py writes, we read.
            _ = try await py.call("kv-create-bucket", "shared", "5")
            let pyPut = try await py.call("kv-put", "shared", "config.app", "from python")
            let pyRevision = try #require(int(pyPut["revision"]))
            let kv = try await js.keyValue("shared")
            let entry = try #require(try await kv.get("config.app"))
            #expect(entry.string == "from python")
            #expect(entry.revision == pyRevision)

            // We write, nats-py reads.
            let ourRevision = try await kv.put("config.node", value: ByteBuffer(string: "from swift ✓"))
            let pyGet = try await py.call("kv-get", "shared", "config.node")
            #expect(pyGet["value"] as? String == "from swift ✓")
            #expect(int(pyGet["revision"]) == ourRevision)
            #expect(try await py.call("kv-get", "shared", "missing.key")["error"] as? String == "not_found")
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func keyValueCompareAndSetAcrossClients(kind: NATSServerKind) async throws {
        try await withInterop(kind) { server, py, _ in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)

            // A bucket made by nats-py, bound and updated by us.
            _ = try await py.call("kv-create-bucket", "py_made", "1")
            let first = try #require(int(try await py.call("kv-create", "py_made", "leader", "py-1")["revision"]))
            let kv = try await js.keyValue("py_made")
            let second = try await kv.update("leader", value: ByteBuffer(string: "swift-1"), revision: first)
            let stale = await #expect(throws: KeyValueError.self) { try await kv.update("leader", value: ByteBuffer(string: "swift-x"), revision: first) }
            #expect(stale?.code == .wrongLastRevision)
            #expect(try await py.call("kv-update", "py_made", "leader", "py-x", String(first))["error"] as? String == "wrong_last_sequence")
            let third = try #require(int(try await py.call("kv-update", "py_made", "leader", "py-2", String(second))["revision"]))
            #expect(third > second)
            let current = try #require(try await kv.get("leader"))
            #expect(current.string == "py-2")
            #expect(current.revision == third)
            let exists = await #expect(throws: KeyValueError.self) { try await kv.create("leader", value: ByteBuffer(string: "swift-2")) }
            #expect(exists?.code == .keyExists)

            // A bucket made by us, bound and updated by nats-py.
            let ours = try await js.createKeyValue(KeyValueConfig(bucket: "swift_made", history: 1))
            let mine = try await ours.create("leader", value: ByteBuffer(string: "swift-1"))
            let theirs = try #require(int(try await py.call("kv-update", "swift_made", "leader", "py-1", String(mine))["revision"]))
            #expect(theirs > mine)
            #expect(try await py.call("kv-update", "swift_made", "leader", "py-x", String(mine))["error"] as? String == "wrong_last_sequence")
            #expect(try await py.call("kv-create", "swift_made", "leader", "py-x")["error"] as? String == "exists")
            let stale2 = await #expect(throws: KeyValueError.self) { try await ours.update("leader", value: ByteBuffer(string: "swift-x"), revision: mine) }
            #expect(stale2?.code == .wrongLastRevision)
            let latest = try #require(try await ours.get("leader"))
            #expect(latest.revision == theirs)
            #expect(latest.string == "py-1")
            let mineAgain = try await ours.update("leader", value: ByteBuffer(string: "swift-2"), revision: theirs)
            let seen = try await py.call("kv-get", "swift_made", "leader")
            #expect(seen["value"] as? String == "swift-2")
            #expect(int(seen["revision"]) == mineAgain)

            // Our delete marker lets nats-py create the key again, and the other way round.
            try await ours.delete("leader")
            #expect(try await py.call("kv-get", "swift_made", "leader")["error"] as? String == "not_found")
            let recreated = try #require(int(try await py.call("kv-create", "swift_made", "leader", "py-3")["revision"]))
            #expect(try await ours.get("leader")?.revision == recreated)
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func objectPutByNatsPyIsReadByUs(kind: NATSServerKind) async throws {
        try await withInterop(kind) { server, py, directory in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)
            let data = seededBytes(count: 5 * 1024 * 1024 + 777, seed: 2024)
            let source = directory.appendingPathComponent("py-source.bin")
            try Data(data.readableBytesView).write(to: source)
            let name = "backups/résumé 1.bin"

            _ = try await py.call("obj-create-bucket", "py_objects", "made by nats-py")
            let put = try await py.call(
                "obj-put", "py_objects", name, source.path, "from python", #"{"Content-Type": ["application/octet-stream"]}"#)
            #expect(put["digest"] as? String == objectDigest(data))

            // Creating the same bucket with the same settings binds to it.
            let store = try await js.createObjectStore(ObjectStoreConfig(bucket: "py_objects", description: "made by nats-py"))
            let (info, read) = try await store.get(name)
            #expect(read == data)
            #expect(info.digest == objectDigest(data))
            #expect(info.nuid == put["nuid"] as? String)
            #expect(info.size == UInt64(data.readableBytes))
            #expect(info.chunks == 41)
            #expect(info.description == "from python")
            #expect(info.headers?["Content-Type"] == "application/octet-stream")
            #expect(info.maxChunkSize == 128 * 1024)

            // nats-py replaces it (and purges the old chunks); we see the new version.
            let smaller = seededBytes(count: 1000, seed: 7)
            try Data(smaller.readableBytesView).write(to: source)
            _ = try await py.call("obj-put", "py_objects", name, source.path, "", "{}")
            #expect(try await store.get(name).data == smaller)
            #expect(try await js.streamInfo("OBJ_py_objects").state.messages == 2)

            // nats-py deletes it (writing an empty mtime); we see it deleted.
            _ = try await py.call("obj-delete", "py_objects", name)
            let missing = await #expect(throws: ObjectStoreError.self) { try await store.get(name) }
            #expect(missing?.code == .objectNotFound)
            #expect(try await store.info(name, includeDeleted: true).deleted)
            #expect(try await store.list().isEmpty)
            await client.close()
        }
    }

    @Test(arguments: NATSServerKind.allCases)
    func objectPutByUsIsReadByNatsPy(kind: NATSServerKind) async throws {
        try await withInterop(kind) { server, py, directory in
            let client = try await connectedClient(server)
            let js = JetStream(client: client)
            let store = try await js.createObjectStore(ObjectStoreConfig(bucket: "swift_objects"))
            let data = seededBytes(count: 5 * 1024 * 1024 + 5, seed: 77)
            let name = "snapshots/app db ☃.sqlite"
            var headers = NATSHeaders()
            headers.append(name: "X-Epoch", value: "12")
            headers.append(name: "X-Epoch", value: "13")
            let put = try await store.put(name: name, data: data, description: "ours", headers: headers, metadata: ["node": "n1"])

            let target = directory.appendingPathComponent("py-target.bin")
            let got = try await py.call("obj-get", "swift_objects", name, target.path)  // nats-py verifies the digest
            #expect(got["error"] == nil)
            #expect(try Data(contentsOf: target) == Data(data.readableBytesView))
            #expect(got["digest"] as? String == put.digest)
            #expect(got["nuid"] as? String == put.nuid)
            #expect(int(got["size"]) == UInt64(data.readableBytes))
            #expect(int(got["chunks"]) == UInt64(put.chunks))
            #expect(got["description"] as? String == "ours")
            #expect((got["headers"] as? [String: [String]]) == ["X-Epoch": ["12", "13"]])

            // The meta as stored, read raw: the Go client's field names and types, an `mtime` that
            // Go's time.Time accepts, no `deleted` while live, a rollup header.
            let raw = try await py.call("obj-raw-meta", "swift_objects", name)
            #expect(raw["rollup"] as? String == "sub")
            let meta = try #require(raw["meta"] as? [String: Any])
            #expect(Set(meta.keys) == ["name", "description", "headers", "metadata", "options", "bucket", "nuid", "size", "mtime", "chunks", "digest"])
            #expect(meta["bucket"] as? String == "swift_objects")
            #expect((meta["options"] as? [String: Any])?["max_chunk_size"] as? Int == 128 * 1024)
            #expect((meta["metadata"] as? [String: String]) == ["node": "n1"])
            let mtime = try #require(meta["mtime"] as? String)
            #expect(mtime.wholeMatch(of: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z/) != nil)

            // An empty object and a second one, listed by nats-py.
            try await store.put(name: "empty", data: ByteBuffer())
            let empty = try await py.call("obj-get", "swift_objects", "empty", directory.appendingPathComponent("empty.bin").path)
            #expect(int(empty["length"]) == 0)
            #expect(try await py.call("obj-list", "swift_objects")["names"] as? [String] == ["empty", name].sorted())

            // Our delete is a delete for nats-py.
            try await store.delete(name)
            let tombstone = try #require(try await py.call("obj-raw-meta", "swift_objects", name)["meta"] as? [String: Any])
            #expect(tombstone["deleted"] as? Bool == true)
            #expect(tombstone["digest"] == nil)
            #expect(int(tombstone["size"]) == 0)
            #expect(int(tombstone["chunks"]) == 0)
            #expect(try await py.call("obj-get", "swift_objects", name, target.path)["error"] as? String == "not_found")
            #expect(try await py.call("obj-list", "swift_objects")["names"] as? [String] == ["empty"])
            await client.close()
        }
    }
}
