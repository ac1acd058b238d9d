import Foundation
import Logging
import Systemd
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct JournaldLogHandlerTests {
    @Test func buildsMessagePriorityIdentifierCodeLocationAndMetadataFields() {
        let fields = JournaldLogHandler.fields(
            level: .warning, message: "lease lost\nrenew timed out", metadata: ["node": "node-1", "app": "web", "epoch": "42"],
            identifier: "batond", label: "baton.supervisor", file: "Supervisor/App.swift", function: "renew()", line: 17)
        #expect(fields == [
            JournalField("MESSAGE", "lease lost\nrenew timed out"),
            JournalField("PRIORITY", "4"),
            JournalField("SYSLOG_IDENTIFIER", "batond"),
            JournalField("LOGGER", "baton.supervisor"),
            JournalField("CODE_FILE", "Supervisor/App.swift"),
            JournalField("CODE_LINE", "17"),
            JournalField("CODE_FUNC", "renew()"),
            JournalField("APP", "web"),
            JournalField("EPOCH", "42"),
            JournalField("NODE", "node-1"),
        ])
    }

    @Test func metadataKeysBecomeValidJournalFieldNames() {
        #expect(JournaldLogHandler.fieldName(forMetadataKey: "app") == "APP")
        #expect(JournaldLogHandler.fieldName(forMetadataKey: "lease.revision") == "LEASE_REVISION")
        #expect(JournaldLogHandler.fieldName(forMetadataKey: "http-status") == "HTTP_STATUS")
        #expect(JournaldLogHandler.fieldName(forMetadataKey: "_trusted") == "TRUSTED")
        #expect(JournaldLogHandler.fieldName(forMetadataKey: "2fa") == "F_2FA")
        #expect(JournaldLogHandler.fieldName(forMetadataKey: "naïve") == "NA_VE")
        #expect(JournaldLogHandler.fieldName(forMetadataKey: "é") == nil)
        #expect(JournaldLogHandler.fieldName(forMetadataKey: "___") == nil)
        #expect(JournaldLogHandler.fieldName(forMetadataKey: String(repeating: "k", count: 80))?.count == 64)
    }

    @Test func metadataCannotOverrideTheEntrysOwnFields() {
        let fields = JournaldLogHandler.fields(
            level: .info, message: "m", metadata: ["message": "sneaky", "priority": "0"], identifier: "x", label: "l",
            file: "f", function: "g", line: 1)
        #expect(fields.filter { $0.name == "MESSAGE" } == [JournalField("MESSAGE", "m")])
        #expect(fields.contains(JournalField("META_MESSAGE", "sneaky")))
        #expect(fields.contains(JournalField("META_PRIORITY", "0")))
    }

    @Test func nestedMetadataIsWrittenAsText() {
        let fields = JournaldLogHandler.fields(
            level: .info, message: "m", metadata: ["vips": ["192.0.2.10/24"], "health": ["failures": "3"]],
            identifier: "x", label: "l", file: "f", function: "g", line: 1)
        #expect(fields.contains(JournalField("VIPS", "[\"192.0.2.10/24\"]")))
        #expect(fields.contains(JournalField("HEALTH", "[\"failures\": \"3\"]")))
    }

    @Test(arguments: [
        (Logger.Level.trace, 7), (.debug, 7), (.info, 6), (.notice, 5), (.warning, 4), (.error, 3), (.critical, 2),
    ])
    func levelsMapToSyslogPriorities(level: Logger.Level, priority: Int) {
        #expect(JournaldLogHandler.priority(for: level) == priority)
    }

    @Test func handlerMergesHandlerProviderAndCallMetadata() {
        // Logging through the handler must not crash without a journal; the fields are checked
        // through the pure function above.
        var logger = Logger(label: "baton.test") { JournaldLogHandler(label: $0, identifier: "baton-tests") }
        logger[metadataKey: "node"] = "node-1"
        logger.logLevel = .debug
        logger.debug("journald handler smoke test", metadata: ["app": "web"])
        #expect(logger[metadataKey: "node"] == "node-1")
    }

    @Test func journalStreamMatchesTheDeviceAndInodeOfStandardError() throws {
        #expect(JournalStream.parse("8:1234")! == (8, 1234))
        #expect(JournalStream.parse("8:") == nil)
        #expect(JournalStream.parse("x:1") == nil)
        #expect(JournalStream.parse("1:2:3") == nil)
        #expect(!JournalStream.standardErrorIsJournal(environment: [:]))

        var status = stat()
        #expect(fstat(2, &status) == 0)
        let matching = "\(status.st_dev):\(status.st_ino)"
        #expect(JournalStream.standardErrorIsJournal(environment: ["JOURNAL_STREAM": matching]))
        let other = "\(status.st_dev):\(status.st_ino &+ 1)"
        #expect(!JournalStream.standardErrorIsJournal(environment: ["JOURNAL_STREAM": other]))
    }
}
