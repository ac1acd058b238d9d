/// The line protocol between batond and `baton-fence-keeper`.
///
/// batond writes commands to the keeper's stdin and reads reports from its stdout, one per line,
/// each ending in `\n`. A line is a verb followed by fields separated by single spaces. Free text
/// and values (arguments, environment entries, paths, messages) are *field-encoded*: the bytes
/// `%`, space, and every control character (below 0x21, and 0x7F) are written as `%XX` (two hex
/// digits); everything else, UTF-8 included, is written as is. Numbers are plain decimal digits.
///
/// Commands (batond → keeper):
/// - `ARM <token> <deadline-ns>`: kill the backend's process group at `deadline-ns` on the node's
///   `CLOCK_MONOTONIC` unless a later `ARM` or a `DISARM` comes first. The last `ARM` wins.
/// - `DISARM`: no deadline.
/// - `START token=<n> arg=<a> [arg=<a>...] [env=<NAME=value>...] [cwd=<dir>] [user=<u>]
///   [group=<g>]`: spawn the backend (refused unless armed with a deadline still ahead).
/// - `SIGNAL <TERM|INT|HUP|QUIT|USR1|USR2>`: send a signal to the backend's process group.
/// - `KILL`: SIGKILL the backend's process group and every other descendant, now.
/// - `PING <n>`: answered by `PONG <n>` once every earlier line has been handled.
///
/// Reports (keeper → batond):
/// - `READY <version> <keeper-pid>` once, first.
/// - `STARTED <pid>` / `START-FAILED <message>`.
/// - `KILLED <pid> deadline <token> <deadline-ns> <now-ns>`, `KILLED <pid> request`,
///   `KILLED <pid> batond-gone <reason>`: the keeper sent SIGKILL.
/// - `EXPIRED <token> <deadline-ns> <now-ns>`: a deadline passed with no backend to kill.
/// - `EXITED <pid> exit <code>` / `EXITED <pid> signal <number>`: the backend's main process
///   ended *and* every process it left behind is gone; a new `START` is accepted from here on.
/// - `PONG <n>`, and `ERROR <message>` for a line the keeper rejected.
public enum KeeperProtocol {
    /// The protocol version the keeper announces in `READY`.
    public static let version = 1
    /// The longest command line the keeper accepts, newline excluded.
    public static let maxCommandLineBytes = 1 << 20
    /// The longest report line batond accepts, newline excluded.
    public static let maxReportLineBytes = 64 << 10
}

/// A line that does not follow the keeper protocol, with the reason.
public struct KeeperProtocolError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The offending line, cut to 120 characters.
    public var line: String
    /// What is wrong with it.
    public var reason: String

    /// Creates an error for `line`.
    public init(line: some StringProtocol, reason: String) {
        let text = String(line)
        self.line = text.count > 120 ? String(text.prefix(117)) + "..." : text
        self.reason = reason
    }

    public var description: String { "malformed keeper line \"\(line)\": \(reason)" }
}

/// Field encoding of values and free text (see ``KeeperProtocol``).
public enum KeeperField {
    /// Encodes `value` so it contains no space, no control character and no bare `%`.
    public static func encode(_ value: String) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(value.utf8.count)
        let hex = Array("0123456789ABCDEF".utf8)
        for byte in value.utf8 {
            if byte <= 0x20 || byte == 0x7F || byte == UInt8(ascii: "%") {
                bytes.append(UInt8(ascii: "%"))
                bytes.append(hex[Int(byte >> 4)])
                bytes.append(hex[Int(byte & 0x0F)])
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Decodes a field; fails on a bad `%` escape, on bytes that should have been escaped, and on
    /// a result that is not UTF-8. `allowNUL` false (the default) also refuses `%00`.
    public static func decode(_ field: Substring, allowNUL: Bool = false) throws(FieldError) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(field.utf8.count)
        var iterator = field.utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    throw .badEscape
                }
                let decoded = high << 4 | low
                if decoded == 0 && !allowNUL { throw .nul }
                bytes.append(decoded)
            } else if byte <= 0x20 || byte == 0x7F {
                throw .unescapedControl
            } else {
                bytes.append(byte)
            }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw .notUTF8 }
        return text
    }

    /// Why a field did not decode.
    public enum FieldError: Error, Sendable, Hashable, CustomStringConvertible {
        /// A `%` not followed by two hex digits.
        case badEscape
        /// `%00` where NUL is not allowed.
        case nul
        /// A space or control character that should have been escaped.
        case unescapedControl
        /// The decoded bytes are not UTF-8.
        case notUTF8

        public var description: String {
            switch self {
            case .badEscape: "a % must be followed by two hex digits"
            case .nul: "NUL bytes (%00) are not allowed"
            case .unescapedControl: "control characters must be %-escaped"
            case .notUTF8: "the decoded bytes are not UTF-8"
            }
        }
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// How a process ended.
public enum ExitStatus: Sendable, Hashable, CustomStringConvertible {
    /// It called exit with this status.
    case exited(Int32)
    /// A signal (by number) killed it.
    case signaled(Int32)

    /// True for `exited(0)`.
    public var isSuccess: Bool { self == .exited(0) }

    public var description: String {
        switch self {
        case .exited(let code): "exited with status \(code)"
        case .signaled(let number):
            if let name = KeeperSignalNames.name(of: number) {
                "killed by signal \(number) (SIG\(name))"
            } else {
                "killed by signal \(number)"
            }
        }
    }
}

/// Signal names for messages (Linux numbering).
enum KeeperSignalNames {
    static func name(of number: Int32) -> String? {
        switch number {
        case 1: "HUP"
        case 2: "INT"
        case 3: "QUIT"
        case 4: "ILL"
        case 6: "ABRT"
        case 7: "BUS"
        case 8: "FPE"
        case 9: "KILL"
        case 10: "USR1"
        case 11: "SEGV"
        case 12: "USR2"
        case 13: "PIPE"
        case 14: "ALRM"
        case 15: "TERM"
        default: nil
        }
    }
}

/// The signals batond may forward to the backend's process group with `SIGNAL`. SIGKILL is
/// not among them: killing is ``KeeperCommand/kill``, which also sweeps stray descendants.
public enum KeeperSignal: String, Sendable, Hashable, CaseIterable {
    /// SIGTERM: the graceful stop.
    case term = "TERM"
    /// SIGINT.
    case int = "INT"
    /// SIGHUP (many daemons reload on it).
    case hup = "HUP"
    /// SIGQUIT.
    case quit = "QUIT"
    /// SIGUSR1.
    case usr1 = "USR1"
    /// SIGUSR2.
    case usr2 = "USR2"
}

/// What to run: the fields of a `START` line.
public struct StartSpec: Sendable, Hashable {
    /// The fencing token the backend runs under (reported back, not interpreted).
    public var token: UInt64
    /// argv; the first element is the program: a path, or a name looked up in the `PATH` of
    /// ``environment`` (the keeper's own `PATH` when it has none).
    public var arguments: [String]
    /// The backend's whole environment, as `NAME=value` entries.
    public var environment: [String]
    /// The working directory; the keeper's when nil.
    public var workingDirectory: String?
    /// A user name or numeric uid to run as; the keeper's user when nil.
    public var user: String?
    /// A group name or numeric gid; the user's primary group (or the keeper's) when nil.
    public var group: String?

    /// Creates a spec.
    public init(
        token: UInt64, arguments: [String], environment: [String] = [], workingDirectory: String? = nil,
        user: String? = nil, group: String? = nil
    ) {
        self.token = token
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.user = user
        self.group = group
    }
}

/// A command batond sends the keeper.
public enum KeeperCommand: Sendable, Hashable {
    /// Kill the backend at `deadline` (nanoseconds on `CLOCK_MONOTONIC`) unless re-armed.
    case arm(token: UInt64, deadline: Int64)
    /// Forget the deadline.
    case disarm
    /// Spawn the backend.
    case start(StartSpec)
    /// Forward a signal to the backend's process group.
    case signal(KeeperSignal)
    /// SIGKILL the backend's process group and every other descendant now.
    case kill
    /// Answered with `PONG`: a barrier.
    case ping(UInt64)

    /// The line, without its newline.
    public var line: String {
        switch self {
        case .arm(let token, let deadline): return "ARM \(token) \(deadline)"
        case .disarm: return "DISARM"
        case .start(let spec):
            var fields = ["START", "token=\(spec.token)"]
            fields += spec.arguments.map { "arg=" + KeeperField.encode($0) }
            fields += spec.environment.map { "env=" + KeeperField.encode($0) }
            if let directory = spec.workingDirectory { fields.append("cwd=" + KeeperField.encode(directory)) }
            if let user = spec.user { fields.append("user=" + KeeperField.encode(user)) }
            if let group = spec.group { fields.append("group=" + KeeperField.encode(group)) }
            return fields.joined(separator: " ")
        case .signal(let signal): return "SIGNAL \(signal.rawValue)"
        case .kill: return "KILL"
        case .ping(let number): return "PING \(number)"
        }
    }

    /// Parses one line (without its newline). Every way a line can be wrong gets its own reason.
    public static func parse(_ line: some StringProtocol) throws(KeeperProtocolError) -> KeeperCommand {
        let text = Substring(line)
        let words = try LineWords.split(text)
        let arguments = words.dropFirst()
        func expect(_ count: Int, _ usage: String) throws(KeeperProtocolError) {
            guard arguments.count == count else {
                throw KeeperProtocolError(line: text, reason: "expected \(usage)")
            }
        }
        switch words[0] {
        case "ARM":
            try expect(2, "ARM <token> <deadline-ns>")
            let token = try LineWords.unsigned(arguments[arguments.startIndex], name: "token", line: text)
            let deadline = try LineWords.nonNegative(arguments[arguments.startIndex + 1], name: "deadline", line: text)
            return .arm(token: token, deadline: deadline)
        case "DISARM":
            try expect(0, "DISARM with nothing after it")
            return .disarm
        case "START":
            return .start(try parseStart(arguments, line: text))
        case "SIGNAL":
            try expect(1, "SIGNAL <name>")
            let name = arguments[arguments.startIndex]
            guard let signal = KeeperSignal(rawValue: String(name)) else {
                let names = KeeperSignal.allCases.map(\.rawValue).joined(separator: ", ")
                throw KeeperProtocolError(line: text, reason: "unknown signal '\(name)' (expected one of \(names); use KILL to kill)")
            }
            return .signal(signal)
        case "KILL":
            try expect(0, "KILL with nothing after it")
            return .kill
        case "PING":
            try expect(1, "PING <number>")
            return .ping(try LineWords.unsigned(arguments[arguments.startIndex], name: "number", line: text))
        default:
            throw KeeperProtocolError(
                line: text, reason: "unknown command '\(words[0])' (expected ARM, DISARM, START, SIGNAL, KILL or PING)")
        }
    }

    private static func parseStart(_ fields: ArraySlice<Substring>, line: Substring) throws(KeeperProtocolError) -> StartSpec {
        var token: UInt64?
        var arguments: [String] = []
        var environment: [String] = []
        var directory: String?
        var user: String?
        var group: String?
        for field in fields {
            guard let equals = field.firstIndex(of: "=") else {
                throw KeeperProtocolError(line: line, reason: "START field '\(field)' is not key=value")
            }
            let key = field[..<equals]
            let rawValue = field[field.index(after: equals)...]
            let value: String
            do {
                value = try KeeperField.decode(rawValue)
            } catch {
                throw KeeperProtocolError(line: line, reason: "START field \(key): \(error)")
            }
            func once(_ slot: inout String?) throws(KeeperProtocolError) {
                guard slot == nil else { throw KeeperProtocolError(line: line, reason: "START field \(key) given twice") }
                guard !value.isEmpty else { throw KeeperProtocolError(line: line, reason: "START field \(key) is empty") }
                slot = value
            }
            switch key {
            case "token":
                guard token == nil else { throw KeeperProtocolError(line: line, reason: "START field token given twice") }
                token = try LineWords.unsigned(rawValue, name: "token", line: line)
            case "arg":
                arguments.append(value)
            case "env":
                guard let nameEnd = value.firstIndex(of: "="), nameEnd != value.startIndex else {
                    throw KeeperProtocolError(line: line, reason: "START env entry '\(value)' is not NAME=value")
                }
                environment.append(value)
            case "cwd": try once(&directory)
            case "user": try once(&user)
            case "group": try once(&group)
            default:
                throw KeeperProtocolError(
                    line: line, reason: "unknown START field '\(key)' (expected token, arg, env, cwd, user or group)")
            }
        }
        guard let token else { throw KeeperProtocolError(line: line, reason: "START needs token=<n>") }
        guard let program = arguments.first else { throw KeeperProtocolError(line: line, reason: "START needs at least one arg=") }
        guard !program.isEmpty else { throw KeeperProtocolError(line: line, reason: "START's first arg (the program) is empty") }
        return StartSpec(
            token: token, arguments: arguments, environment: environment, workingDirectory: directory, user: user, group: group)
    }
}

/// Why the keeper sent SIGKILL.
public enum KillCause: Sendable, Hashable, CustomStringConvertible {
    /// The armed deadline passed; `now` is when the keeper noticed (nanoseconds, CLOCK_MONOTONIC).
    case deadline(token: UInt64, deadline: Int64, now: Int64)
    /// batond sent `KILL`.
    case requested
    /// batond went away (end of input, or the keeper's parent died).
    case batondGone(String)

    public var description: String {
        switch self {
        case .deadline(let token, let deadline, let now):
            "the fence deadline for epoch \(token) passed (\(now - deadline) ns late)"
        case .requested: "batond asked for it"
        case .batondGone(let reason): "batond is gone (\(reason))"
        }
    }
}

/// A report the keeper sends batond.
public enum KeeperReport: Sendable, Hashable {
    /// The keeper runs and speaks protocol `version`; sent once, first.
    case ready(version: Int, pid: Int32)
    /// The backend runs as `pid` (also its process group id).
    case started(pid: Int32)
    /// The backend could not be started; the message says why, for operators.
    case startFailed(String)
    /// The keeper sent SIGKILL to the backend's group and every other descendant.
    case killed(pid: Int32, KillCause)
    /// The armed deadline passed with no backend running.
    case expired(token: UInt64, deadline: Int64, now: Int64)
    /// The backend's main process ended and nothing of it is left.
    case exited(pid: Int32, ExitStatus)
    /// The answer to `PING`.
    case pong(UInt64)
    /// A line the keeper rejected, and why.
    case error(String)

    /// The line, without its newline.
    public var line: String {
        switch self {
        case .ready(let version, let pid): "READY \(version) \(pid)"
        case .started(let pid): "STARTED \(pid)"
        case .startFailed(let message): "START-FAILED \(KeeperField.encode(message))"
        case .killed(let pid, .deadline(let token, let deadline, let now)): "KILLED \(pid) deadline \(token) \(deadline) \(now)"
        case .killed(let pid, .requested): "KILLED \(pid) request"
        case .killed(let pid, .batondGone(let reason)): "KILLED \(pid) batond-gone \(KeeperField.encode(reason))"
        case .expired(let token, let deadline, let now): "EXPIRED \(token) \(deadline) \(now)"
        case .exited(let pid, .exited(let code)): "EXITED \(pid) exit \(code)"
        case .exited(let pid, .signaled(let number)): "EXITED \(pid) signal \(number)"
        case .pong(let number): "PONG \(number)"
        case .error(let message): "ERROR \(KeeperField.encode(message))"
        }
    }

    /// Parses one report line (without its newline).
    public static func parse(_ line: some StringProtocol) throws(KeeperProtocolError) -> KeeperReport {
        let text = Substring(line)
        let words = try LineWords.split(text)
        let fields = Array(words.dropFirst())
        func expect(_ count: Int, _ usage: String) throws(KeeperProtocolError) {
            guard fields.count == count else { throw KeeperProtocolError(line: text, reason: "expected \(usage)") }
        }
        func message(_ field: Substring) throws(KeeperProtocolError) -> String {
            do {
                return try KeeperField.decode(field)
            } catch {
                throw KeeperProtocolError(line: text, reason: "message: \(error)")
            }
        }
        switch words[0] {
        case "READY":
            try expect(2, "READY <version> <pid>")
            let version = try LineWords.unsigned(fields[0], name: "version", line: text)
            guard version <= 1_000_000 else { throw KeeperProtocolError(line: text, reason: "version out of range") }
            return .ready(version: Int(version), pid: try LineWords.pid(fields[1], line: text))
        case "STARTED":
            try expect(1, "STARTED <pid>")
            return .started(pid: try LineWords.pid(fields[0], line: text))
        case "START-FAILED":
            try expect(1, "START-FAILED <message>")
            return .startFailed(try message(fields[0]))
        case "KILLED":
            guard fields.count >= 2 else { throw KeeperProtocolError(line: text, reason: "expected KILLED <pid> <cause> ...") }
            let pid = try LineWords.pid(fields[0], line: text)
            switch fields[1] {
            case "deadline":
                try expect(5, "KILLED <pid> deadline <token> <deadline-ns> <now-ns>")
                return .killed(
                    pid: pid,
                    .deadline(
                        token: try LineWords.unsigned(fields[2], name: "token", line: text),
                        deadline: try LineWords.nonNegative(fields[3], name: "deadline", line: text),
                        now: try LineWords.nonNegative(fields[4], name: "now", line: text)))
            case "request":
                try expect(2, "KILLED <pid> request")
                return .killed(pid: pid, .requested)
            case "batond-gone":
                try expect(3, "KILLED <pid> batond-gone <reason>")
                return .killed(pid: pid, .batondGone(try message(fields[2])))
            default:
                throw KeeperProtocolError(line: text, reason: "unknown kill cause '\(fields[1])'")
            }
        case "EXPIRED":
            try expect(3, "EXPIRED <token> <deadline-ns> <now-ns>")
            return .expired(
                token: try LineWords.unsigned(fields[0], name: "token", line: text),
                deadline: try LineWords.nonNegative(fields[1], name: "deadline", line: text),
                now: try LineWords.nonNegative(fields[2], name: "now", line: text))
        case "EXITED":
            try expect(3, "EXITED <pid> exit|signal <number>")
            let pid = try LineWords.pid(fields[0], line: text)
            let number = try LineWords.unsigned(fields[2], name: "status", line: text)
            guard number <= 255 else { throw KeeperProtocolError(line: text, reason: "status \(number) out of range") }
            switch fields[1] {
            case "exit": return .exited(pid: pid, .exited(Int32(number)))
            case "signal": return .exited(pid: pid, .signaled(Int32(number)))
            default: throw KeeperProtocolError(line: text, reason: "expected exit or signal, not '\(fields[1])'")
            }
        case "PONG":
            try expect(1, "PONG <number>")
            return .pong(try LineWords.unsigned(fields[0], name: "number", line: text))
        case "ERROR":
            try expect(1, "ERROR <message>")
            return .error(try message(fields[0]))
        default:
            throw KeeperProtocolError(line: text, reason: "unknown report '\(words[0])'")
        }
    }
}

/// Splitting and number rules shared by commands and reports.
enum LineWords {
    static func split(_ line: Substring) throws(KeeperProtocolError) -> [Substring] {
        guard !line.isEmpty else { throw KeeperProtocolError(line: line, reason: "empty line") }
        if let control = line.unicodeScalars.first(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            let shown = control == "\r" ? "a carriage return" : "control character 0x\(String(control.value, radix: 16))"
            throw KeeperProtocolError(line: line, reason: "\(shown) in the line (fields must be %-escaped)")
        }
        let words = line.split(separator: " ", omittingEmptySubsequences: false)
        if words.contains(where: \.isEmpty) {
            throw KeeperProtocolError(line: line, reason: "fields must be separated by exactly one space, with none leading or trailing")
        }
        return words
    }

    static func unsigned(_ word: Substring, name: String, line: Substring) throws(KeeperProtocolError) -> UInt64 {
        guard !word.isEmpty, word.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
            throw KeeperProtocolError(line: line, reason: "\(name) '\(word)' is not a decimal number")
        }
        guard let value = UInt64(word) else { throw KeeperProtocolError(line: line, reason: "\(name) '\(word)' is too large") }
        return value
    }

    static func nonNegative(_ word: Substring, name: String, line: Substring) throws(KeeperProtocolError) -> Int64 {
        let value = try unsigned(word, name: name, line: line)
        guard value <= UInt64(Int64.max) else { throw KeeperProtocolError(line: line, reason: "\(name) '\(word)' is too large") }
        return Int64(value)
    }

    static func pid(_ word: Substring, line: Substring) throws(KeeperProtocolError) -> Int32 {
        let value = try unsigned(word, name: "pid", line: line)
        guard value > 0, value <= UInt64(Int32.max) else { throw KeeperProtocolError(line: line, reason: "pid '\(word)' out of range") }
        return Int32(value)
    }
}
