import CSystemd
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One field of a journal entry.
public struct JournalField: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }

    public var description: String { "\(name)=\(value)" }
}

/// A swift-log handler that writes structured entries to the systemd journal
/// (`sd_journal_sendv`): `MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER`, `CODE_FILE`/`CODE_LINE`/
/// `CODE_FUNC`, `LOGGER`, and every metadata item as a field of its own, its key upper-cased
/// (`app`, `node`, `epoch` become `APP`, `NODE`, `EPOCH`; see ``fieldName(forMetadataKey:)``), so
/// that `journalctl APP=web` finds an app's lines.
///
/// Install it from the executable, never from a library:
/// ```swift
/// LoggingSystem.bootstrap { JournaldLogHandler(label: $0, identifier: "batond") }
/// ```
/// ``JournalStream/standardErrorIsJournal(environment:)`` tells whether stderr already goes to
/// the journal (the usual reason to choose this handler over a stream handler).
public struct JournaldLogHandler: LogHandler {
    public let label: String
    /// `SYSLOG_IDENTIFIER` of every entry.
    public let identifier: String
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?

    public init(label: String, identifier: String = ProcessInfo.processInfo.processName, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.identifier = identifier
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
        if let error = event.error { merged["error"] = .string("\(error)") }
        let fields = Self.fields(
            level: event.level, message: event.message.description, metadata: merged, identifier: identifier,
            label: label, file: event.file, function: event.function, line: event.line)
        Self.send(fields)
    }

    /// Fields this handler sets itself; metadata keys that map to one of them get a `META_`
    /// prefix instead of duplicating it.
    static let reservedFieldNames: Set<String> = [
        "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "SYSLOG_FACILITY", "SYSLOG_PID", "SYSLOG_TIMESTAMP",
        "CODE_FILE", "CODE_LINE", "CODE_FUNC", "LOGGER",
    ]

    /// The journal entry for one log event, in a stable order (metadata sorted by key).
    public static func fields(
        level: Logger.Level,
        message: String,
        metadata: Logger.Metadata,
        identifier: String,
        label: String,
        file: String,
        function: String,
        line: UInt
    ) -> [JournalField] {
        var fields = [
            JournalField("MESSAGE", message),
            JournalField("PRIORITY", String(priority(for: level))),
            JournalField("SYSLOG_IDENTIFIER", identifier),
            JournalField("LOGGER", label),
            JournalField("CODE_FILE", file),
            JournalField("CODE_LINE", String(line)),
            JournalField("CODE_FUNC", function),
        ]
        for key in metadata.keys.sorted() {
            guard var name = fieldName(forMetadataKey: key), let value = metadata[key] else { continue }
            if reservedFieldNames.contains(name) { name = String("META_\(name)".prefix(64)) }
            fields.append(JournalField(name, value.description))
        }
        return fields
    }

    /// The journal field name for a metadata key: upper-cased, every character outside
    /// `A-Z0-9_` replaced by `_`, leading underscores dropped (they mark fields only journald
    /// may set), `F_` prefixed to a leading digit, at most 64 characters. Nil when nothing is
    /// left.
    public static func fieldName(forMetadataKey key: String) -> String? {
        var name = String(key.uppercased().unicodeScalars.map { scalar -> Character in
            switch scalar {
            case "A"..."Z", "0"..."9", "_": return Character(scalar)
            default: return "_"
            }
        })
        name = String(name.drop { $0 == "_" })
        guard let first = name.first else { return nil }
        if first.isNumber { name = "F_" + name }
        return String(name.prefix(64))
    }

    /// swift-log level → syslog priority: trace and debug 7, info 6, notice 5, warning 4,
    /// error 3, critical 2.
    public static func priority(for level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    /// Sends `fields` with `sd_journal_sendv` (values may hold newlines and any bytes). Errors
    /// are dropped: a logger has nowhere to report its own failure.
    static func send(_ fields: [JournalField]) {
        let encoded = fields.map { Array("\($0.name)=\($0.value)".utf8) }
        var buffers: [UnsafeMutableRawBufferPointer] = []
        buffers.reserveCapacity(encoded.count)
        for bytes in encoded {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
            buffer.copyBytes(from: bytes)
            buffers.append(buffer)
        }
        defer { buffers.forEach { $0.deallocate() } }
        var vectors = zip(buffers, encoded).map { iovec(iov_base: $0.0.baseAddress, iov_len: $0.1.count) }
        _ = sd_journal_sendv(&vectors, Int32(vectors.count))
    }
}

/// Whether this process's stderr is connected to the journal.
public enum JournalStream {
    /// True when `JOURNAL_STREAM` (`<device>:<inode>`, set by systemd for services whose
    /// output goes to the journal) names the file open on descriptor 2. Comparing both
    /// guards against a variable inherited by a child whose stderr was redirected.
    public static func standardErrorIsJournal(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        guard let value = environment["JOURNAL_STREAM"], let (device, inode) = parse(value) else { return false }
        var status = stat()
        guard fstat(2, &status) == 0 else { return false }
        return UInt64(status.st_dev) == device && UInt64(status.st_ino) == inode
    }

    /// Parses `<device>:<inode>` (both decimal).
    public static func parse(_ value: String) -> (device: UInt64, inode: UInt64)? {
        let parts = value.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return nil }
        return (device, inode)
    }
}
