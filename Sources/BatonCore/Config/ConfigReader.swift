import Yams

// The machinery the config sections are read with. Every reader reports what is wrong to a
// shared `Diagnostics` and returns nil instead of stopping, so one pass finds every error.

/// A 1-based line and column.
struct SourcePosition: Hashable, Comparable {
    var line: Int
    var column: Int

    static let start = SourcePosition(line: 1, column: 1)

    init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    init(_ mark: Mark?, or fallback: SourcePosition) {
        if let mark {
            self.init(line: mark.line, column: mark.column)
        } else {
            self = fallback
        }
    }

    /// How a message at `other` refers to this position: `line 5`, or `line 5, column 14` when
    /// both are on the same line.
    func reference(from other: SourcePosition) -> String {
        other.line == line ? "line \(line), column \(column)" : "line \(line)"
    }

    static func < (lhs: SourcePosition, rhs: SourcePosition) -> Bool {
        (lhs.line, lhs.column) < (rhs.line, rhs.column)
    }
}

/// Where a value is in the config: `apps[1].lease.renew`.
struct ConfigPath: CustomStringConvertible {
    enum Component {
        case key(String)
        case index(Int)
    }

    var components: [Component] = []

    func appending(key: String) -> ConfigPath {
        ConfigPath(components: components + [.key(key)])
    }

    func appending(index: Int) -> ConfigPath {
        ConfigPath(components: components + [.index(index)])
    }

    var description: String {
        var text = ""
        for component in components {
            switch component {
            case .index(let index):
                text += "[\(index)]"
            case .key(let key):
                let plain = !key.isEmpty && key.unicodeScalars.allSatisfy {
                    ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0)
                        || $0 == "_" || $0 == "-"
                }
                if !plain {
                    text += "[\(quoted(key))]"
                } else {
                    text += text.isEmpty ? key : ".\(key)"
                }
            }
        }
        return text
    }
}

/// Collects the errors of one file.
final class Diagnostics {
    let file: String
    private var found: [ConfigError] = []

    init(file: String) {
        self.file = file
    }

    var isEmpty: Bool { found.isEmpty }

    func report(at position: SourcePosition, _ path: ConfigPath, _ message: String) {
        found.append(ConfigError(
            file: file, line: position.line, column: position.column, keyPath: path.description, message: message))
    }

    /// The errors by position; errors at the same position keep the order they were found in.
    var sortedErrors: [ConfigError] {
        found.enumerated()
            .sorted { a, b in
                (a.element.line, a.element.column, a.offset) < (b.element.line, b.element.column, b.offset)
            }
            .map(\.element)
    }
}

/// A YAML node together with where it is.
struct ConfigValue {
    let node: Node
    let path: ConfigPath
    let position: SourcePosition
    let diagnostics: Diagnostics

    init(_ node: Node, path: ConfigPath, fallback: SourcePosition, diagnostics: Diagnostics) {
        self.node = node
        self.path = path
        self.position = SourcePosition(node.mark, or: fallback)
        self.diagnostics = diagnostics
    }

    func error(_ message: String) {
        diagnostics.report(at: position, path, message)
    }

    /// Reports `expected WHAT, got WHAT-IT-IS` and returns nil, for use in `guard ... else`.
    func mismatch<T>(expected: String) -> T? {
        error("expected \(expected), got \(described)")
        return nil
    }

    /// How the value looks, for "got ..." in messages.
    var described: String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .scalar(let scalar): return Self.isNull(scalar) ? "an empty value" : quoted(scalar.string)
        }
    }

    static func isNull(_ scalar: Node.Scalar) -> Bool {
        scalar.style == .plain && ["", "~", "null", "Null", "NULL"].contains(scalar.string)
    }

    // MARK: Scalars

    /// The text of a non-empty scalar, or nil after reporting a mismatch.
    func scalarText(expected: String) -> String? {
        guard case .scalar(let scalar) = node, !Self.isNull(scalar) else { return mismatch(expected: expected) }
        return scalar.string
    }

    /// A string that may not be empty.
    func string(expected: String = "a string") -> String? {
        guard let text = scalarText(expected: expected) else { return nil }
        if text.isEmpty {
            error("must not be empty")
            return nil
        }
        return text
    }

    /// A name made of `[a-z0-9-]`, one or more.
    func name(kind: String, example: String) -> String? {
        guard let text = scalarText(expected: "a name like \(quoted(example))") else { return nil }
        guard isValidName(text) else {
            error("invalid \(kind) \(quoted(text)): use one or more of a-z, 0-9 and \"-\"")
            return nil
        }
        return text
    }

    func absolutePath() -> String? {
        guard let text = scalarText(expected: "an absolute path") else { return nil }
        guard text.hasPrefix("/") else {
            error("expected an absolute path, got \(quoted(text))")
            return nil
        }
        return text
    }

    enum Sign {
        case any
        case positive
        case nonNegative
    }

    func duration(_ sign: Sign) -> Duration? {
        guard let text = scalarText(expected: "a duration like \"3s\"") else { return nil }
        let value: Duration
        do {
            value = try Duration(parsing: text)
        } catch {
            self.error(error.description)
            return nil
        }
        switch sign {
        case .positive where value <= .zero:
            error("must be positive, got \(value.configString)")
            return nil
        case .nonNegative where value < .zero:
            error("must not be negative, got \(value.configString)")
            return nil
        default:
            return value
        }
    }

    func integer(in range: ClosedRange<Int>? = nil, atLeast minimum: Int? = nil) -> Int? {
        guard let text = scalarText(expected: "an integer") else { return nil }
        guard let value = Int(text) else { return mismatch(expected: "an integer") }
        if let range, !range.contains(value) {
            error("must be between \(range.lowerBound) and \(range.upperBound), got \(value)")
            return nil
        }
        if let minimum, value < minimum {
            error("must be at least \(minimum), got \(value)")
            return nil
        }
        return value
    }

    /// A size in bytes: a whole number, optionally with a unit: `K`, `M`, `G`, `T` or `KiB`,
    /// `MiB`, `GiB`, `TiB` (powers of 1024, as in systemd) or `KB`, `MB`, `GB`, `TB` (powers of
    /// 1000); `B` or nothing for bytes.
    func byteSize(atLeast minimum: Int64) -> Int64? {
        let expectation = "a size like \"512MiB\" or \"1GiB\""
        guard let text = scalarText(expected: expectation) else { return nil }
        let compact = text.filter { $0 != " " }
        let digits = compact.prefix { $0.isASCII && $0.isNumber }
        let unit = String(compact.dropFirst(digits.count))
        let multipliers: [String: Int64] = [
            "": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
            "TiB": 1 << 40, "KB": 1_000, "MB": 1_000_000, "GB": 1_000_000_000, "TB": 1_000_000_000_000,
        ]
        guard !digits.isEmpty, let number = Int64(digits), let multiplier = multipliers[unit] else {
            error("expected \(expectation), got \(quoted(text)) (units: K, M, G, T or KiB, MiB, GiB, TiB for powers of 1024; KB, MB, GB, TB for powers of 1000)")
            return nil
        }
        let (value, overflow) = number.multipliedReportingOverflow(by: multiplier)
        guard !overflow else {
            error("\(quoted(text)) is too large")
            return nil
        }
        guard value >= minimum else {
            error("must be at least \(minimum >= 1 << 20 ? "\(minimum >> 20)MiB" : "\(minimum) bytes"), got \(quoted(text))")
            return nil
        }
        return value
    }

    func bool() -> Bool? {
        guard let text = scalarText(expected: "true or false") else { return nil }
        switch text {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default: return mismatch(expected: "true or false")
        }
    }

    // MARK: Collections

    /// The items of a list, or nil after reporting a mismatch.
    func list(expected: String) -> [ConfigValue]? {
        guard case .sequence(let sequence) = node else { return mismatch(expected: expected) }
        return sequence.enumerated().map { index, item in
            ConfigValue(item, path: path.appending(index: index), fallback: position, diagnostics: diagnostics)
        }
    }

    /// A command line: a non-empty list of strings whose first item (the program) is not empty.
    func argv() -> [String]? {
        let expectation = "a list of strings like [\"/usr/bin/myapp\", \"--port\", \"8080\"]"
        guard let items = list(expected: expectation) else { return nil }
        if items.isEmpty {
            error("must not be empty: give the program and its arguments, like [\"/usr/bin/myapp\", \"--port\", \"8080\"]")
            return nil
        }
        var words: [String] = []
        var ok = true
        for (index, item) in items.enumerated() {
            guard let word = item.scalarText(expected: "a string") else {
                ok = false
                continue
            }
            if index == 0, word.isEmpty {
                item.error("the program must not be empty")
                ok = false
            }
            words.append(word)
        }
        return ok ? words : nil
    }

    /// A mapping of strings to strings, such as `labels` or `env`; `checkKey` reports a bad key
    /// name and returns false.
    func stringMap(expected: String, checkKey: (String, ConfigValue) -> Bool = { _, _ in true }) -> [String: String]? {
        guard case .mapping(let mapping) = node else { return mismatch(expected: expected) }
        var result: [String: String] = [:]
        var firstPositions: [String: SourcePosition] = [:]
        var ok = true
        for (keyNode, valueNode) in mapping {
            let key = ConfigValue(keyNode, path: path, fallback: position, diagnostics: diagnostics)
            guard case .scalar(let keyScalar) = keyNode else {
                key.error("expected a key name, got \(key.described)")
                ok = false
                continue
            }
            let name = keyScalar.string
            let keyValue = ConfigValue(
                keyNode, path: path.appending(key: name), fallback: position, diagnostics: diagnostics)
            if let first = firstPositions[name] {
                keyValue.error("duplicate key \(quoted(name)); first given at \(first.reference(from: keyValue.position))")
                ok = false
                continue
            }
            firstPositions[name] = keyValue.position
            if !checkKey(name, keyValue) { ok = false }
            let value = ConfigValue(
                valueNode, path: path.appending(key: name), fallback: keyValue.position, diagnostics: diagnostics)
            guard let text = value.scalarText(expected: "a string") else {
                ok = false
                continue
            }
            result[name] = text
        }
        return ok ? result : nil
    }

    /// The value read as a config section: a mapping with the section's keys.
    func section<Section: ConfigSection>(_: Section.Type) -> Section? {
        guard let fields = ConfigFields(self, keys: Section.keys, expected: Section.expectation) else { return nil }
        return Section(fields: fields)
    }
}

/// One config section (a mapping with a fixed set of keys) and how to read it.
///
/// A new section (for example `vip:` of an app) is one type conforming to this protocol, one key
/// in its parent's `keys`, and one `fields.optional("vip")?.section(VIPConfig.self)` line in its
/// parent's reader.
protocol ConfigSection {
    /// The accepted keys, in the order the documentation lists them.
    static var keys: [String] { get }
    /// What a mismatch says is expected: `a mapping with ttl, renew, fence_budget and skew`.
    static var expectation: String { get }
    /// Reads the section, reporting every problem; nil when there was at least one.
    init?(fields: ConfigFields)
}

extension ConfigSection {
    static var expectation: String { "a mapping with \(listing(keys, "and"))" }
}

/// The keys of one mapping, checked against the keys a section accepts. Creating it reports
/// unknown keys (with a suggestion when one is close), duplicate keys and keys that are not
/// names.
struct ConfigFields {
    struct Entry {
        var key: ConfigValue
        var value: ConfigValue
    }

    let mapping: ConfigValue
    /// The first occurrence of each accepted key, in file order.
    let entries: [Entry]
    private let byName: [String: Entry]

    init?(_ value: ConfigValue, keys allowed: [String], expected: String) {
        guard case .mapping(let mapping) = value.node else {
            value.error("expected \(expected), got \(value.described)")
            return nil
        }
        self.mapping = value
        var entries: [Entry] = []
        var byName: [String: Entry] = [:]
        var firstPositions: [String: SourcePosition] = [:]
        for (keyNode, valueNode) in mapping {
            guard case .scalar(let keyScalar) = keyNode else {
                let key = ConfigValue(keyNode, path: value.path, fallback: value.position, diagnostics: value.diagnostics)
                key.error("expected a key name, got \(key.described)")
                continue
            }
            let name = keyScalar.string
            let path = value.path.appending(key: name)
            let key = ConfigValue(keyNode, path: path, fallback: value.position, diagnostics: value.diagnostics)
            if let first = firstPositions[name] {
                key.error("duplicate key \(quoted(name)); first given at \(first.reference(from: key.position))")
                continue
            }
            firstPositions[name] = key.position
            guard allowed.contains(name) else {
                if name == "<<", keyScalar.style == .plain {
                    key.error("merge keys (\"<<\") are not supported; write the keys out, or reuse a whole section with an alias (lease: *defaults)")
                } else if let suggestion = suggestion(for: name, among: allowed) {
                    key.error("unknown key \(quoted(name)); did you mean \(quoted(suggestion))?")
                } else {
                    key.error("unknown key \(quoted(name)); expected one of \(allowed.joined(separator: ", "))")
                }
                continue
            }
            let entry = Entry(
                key: key,
                value: ConfigValue(valueNode, path: path, fallback: key.position, diagnostics: value.diagnostics))
            entries.append(entry)
            byName[name] = entry
        }
        self.entries = entries
        self.byName = byName
    }

    var diagnostics: Diagnostics { mapping.diagnostics }

    func has(_ key: String) -> Bool { byName[key] != nil }

    func entry(_ key: String) -> Entry? { byName[key] }

    func optional(_ key: String) -> ConfigValue? { byName[key]?.value }

    /// The value of `key`; when it is missing, reports so at the mapping.
    func required(_ key: String) -> ConfigValue? {
        guard let value = byName[key]?.value else {
            mapping.error("missing required key \(quoted(key))")
            return nil
        }
        return value
    }

    /// `read(value)` when `key` is given (nil if that fails), otherwise `defaultValue`.
    func optional<T>(_ key: String, default defaultValue: T, _ read: (ConfigValue) -> T?) -> T? {
        guard let value = byName[key]?.value else { return defaultValue }
        return read(value)
    }

    /// Checks that exactly one of `choices` is given: reports each extra one at its key and a
    /// missing one at the mapping (as `missing WHAT: give exactly one of ...`). Returns the keys
    /// given, in file order.
    func exactlyOne(of choices: [String], missing what: String) -> [String] {
        let given = entries.filter { choices.contains($0.key.pathKey) }
        let alternatives = "give exactly one of \(listing(choices, "or"))"
        if given.isEmpty {
            mapping.error("missing \(what): \(alternatives)")
        }
        if let first = given.first {
            for other in given.dropFirst() {
                other.key.error("\(quoted(other.key.pathKey)) conflicts with \(quoted(first.key.pathKey)) at \(first.key.position.reference(from: other.key.position)); \(alternatives)")
            }
        }
        return given.map(\.key.pathKey)
    }
}

extension ConfigValue {
    /// The last key of the path (for a mapping key's value).
    var pathKey: String {
        if case .key(let key)? = path.components.last { return key }
        return ""
    }
}

/// `a, b and c` (or `a, b or c`).
func listing(_ items: [String], _ conjunction: String) -> String {
    switch items.count {
    case 0: return ""
    case 1: return items[0]
    default: return items.dropLast().joined(separator: ", ") + " \(conjunction) " + items[items.count - 1]
    }
}

/// `[a-z0-9-]+`.
func isValidName(_ text: String) -> Bool {
    !text.isEmpty && text.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
}
