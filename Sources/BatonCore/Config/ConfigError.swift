/// One mistake in a config file, with where it is.
///
/// Its ``description`` is what an editor or a terminal can jump to:
/// `baton.yaml:12:7: apps[0].lease.renew: unsafe lease timing: ...`.
public struct ConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file, as it was named to ``BatonConfig/parse(yaml:file:)`` or ``BatonConfig/load(path:)``.
    public var file: String
    /// The 1-based line, as editors count; 0 when the error is about the whole file (it could
    /// not be read).
    public var line: Int
    /// The 1-based column, counted in Unicode scalars; 0 together with `line`.
    public var column: Int
    /// Where in the config the error is, such as `apps[1].lease.renew` (list indexes count from
    /// 0); empty for the file's top level and for YAML syntax errors.
    public var keyPath: String
    /// What is wrong, as a sentence without a final period.
    public var message: String

    /// Creates an error.
    public init(file: String, line: Int, column: Int, keyPath: String, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.keyPath = keyPath
        self.message = message
    }

    /// `file:line:column: keyPath: message`, leaving out the parts that are empty or 0.
    public var description: String {
        var text = file
        if line > 0 { text += ":\(line):\(column)" }
        if !keyPath.isEmpty { text += ": \(keyPath)" }
        return text + ": " + message
    }
}

/// Every mistake found in a config file, in file order (by line, then column).
public struct ConfigErrors: Error, Sendable, Hashable, CustomStringConvertible {
    /// The errors, never empty when thrown.
    public var errors: [ConfigError]

    /// Wraps `errors`.
    public init(_ errors: [ConfigError]) {
        self.errors = errors
    }

    /// One error per line, as ``ConfigError/description`` formats it.
    public var description: String {
        errors.map(\.description).joined(separator: "\n")
    }
}
