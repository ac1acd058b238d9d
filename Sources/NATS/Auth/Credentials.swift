// NATS credentials files (`.creds`): a user JWT and the user's nkey seed.
//
//   -----BEGIN NATS USER JWT-----
//   eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ...
//   ------END NATS USER JWT------
//
//   ************************* IMPORTANT *************************
//   ...
//
//   -----BEGIN USER NKEY SEED-----
//   SUAC...
//   ------END USER NKEY SEED------
//
// Parsing is line-based and tolerant in the way the Go tools are: a marker line is any line that
// starts and ends with at least three dashes (the count varies between tools), the block's value
// is the first non-empty line after its BEGIN marker, and a closing marker line must follow it.
// Blocks are recognised by their label (`JWT`, `SEED`); unlabelled blocks are taken in order
// (first = JWT, second = seed), as nats.go does. CRLF and CR line endings are accepted.


#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a credentials file could not be read or understood.
///
/// Every case names the file (or the `source` given to `NATSCredentials.parse`); none echoes
/// the secret seed.
public enum CredentialsError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file does not exist.
    case fileNotFound(path: String)
    /// The process may not read the file.
    case permissionDenied(path: String)
    /// The file could not be read for another reason; `reason` is the system's error text.
    case unreadable(path: String, reason: String)
    /// No `BEGIN ... JWT` block was found.
    case missingJWT(source: String)
    /// No `BEGIN ... SEED` block was found.
    case missingSeed(source: String)
    /// A block's BEGIN line is not followed by a value and then a closing dashes line.
    /// `block` is the marker text, for example `BEGIN NATS USER JWT`.
    case unterminatedBlock(source: String, block: String)
    /// The JWT block does not hold three dot-separated base64url segments.
    case malformedJWT(source: String)
    /// The seed block does not hold a valid nkey seed.
    case invalidSeed(source: String, NKeyError)
    /// The seed is valid but not a user seed (`SU...`); the server only accepts user keys here.
    case notAUserSeed(source: String, found: NKeyPrefix)

    /// A human-readable explanation that names the file.
    public var description: String {
        switch self {
        case .fileNotFound(let path):
            return "credentials file \(path) does not exist"
        case .permissionDenied(let path):
            return "permission denied reading credentials file \(path)"
        case .unreadable(let path, let reason):
            return "cannot read credentials file \(path): \(reason)"
        case .missingJWT(let source):
            return "missing JWT block (-----BEGIN NATS USER JWT-----) in \(source)"
        case .missingSeed(let source):
            return "missing nkey seed block (-----BEGIN USER NKEY SEED-----) in \(source)"
        case .unterminatedBlock(let source, let block):
            return "block '\(block)' in \(source) is empty or has no closing ------END ...------ line"
        case .malformedJWT(let source):
            return "the JWT in \(source) is malformed: expected three base64url segments separated by '.'"
        case .invalidSeed(let source, let error):
            return "the nkey seed in \(source) is invalid: \(error)"
        case .notAUserSeed(let source, let found):
            return "the nkey seed in \(source) is \(found == .account || found == .operator ? "an" : "a") \(found) seed; a credentials file needs a user seed (SU...)"
        }
    }
}

/// A user JWT and the user's key pair, as read from a NATS `.creds` file.
///
/// During CONNECT the client sends `jwt` and the signature of the server's nonce made with
/// `nkey` (see ``NKeyPair/signNonce(_:)``).
public struct NATSCredentials: Sendable, CustomStringConvertible {
    /// The user JWT (three base64url segments).
    public var jwt: String
    /// The user's key pair; its public key is the JWT's subject.
    public var nkey: NKeyPair

    /// Creates credentials from a JWT and a key pair already in hand.
    public init(jwt: String, nkey: NKeyPair) {
        self.jwt = jwt
        self.nkey = nkey
    }

    /// The user's public key; never the seed.
    public var description: String { "NATSCredentials(user: \(nkey.publicKey))" }

    /// Parses the text of a credentials file.
    ///
    /// - Parameters:
    ///   - contents: The file's text.
    ///   - source: A name for the text used in error messages, normally the file's path.
    /// - Throws: `CredentialsError` naming `source` and what is missing or wrong.
    public static func parse(_ contents: String, source: String) throws(CredentialsError) -> NATSCredentials {
        let blocks = try decoratedBlocks(in: contents, source: source)

        let jwtBlock = blocks.first(where: { $0.label.contains("JWT") })
            ?? (blocks.first.flatMap { $0.isLabelled ? nil : $0 })
        guard let jwtBlock else { throw .missingJWT(source: source) }

        let seedBlock = blocks.first(where: { $0.label.contains("SEED") })
            ?? (blocks.count > 1 && !blocks[1].isLabelled ? blocks[1] : nil)
        guard let seedBlock else { throw .missingSeed(source: source) }

        let jwt = jwtBlock.value
        let segments = jwt.split(separator: ".", omittingEmptySubsequences: false)
        guard segments.count == 3, segments.allSatisfy({ !$0.isEmpty && isBase64URL($0) }) else {
            throw .malformedJWT(source: source)
        }

        let pair: NKeyPair
        do {
            pair = try NKeyPair(seed: seedBlock.value)
        } catch {
            throw .invalidSeed(source: source, error)
        }
        guard pair.type == .user else {
            throw .notAUserSeed(source: source, found: pair.type)
        }
        return NATSCredentials(jwt: jwt, nkey: pair)
    }

    /// Reads and parses a credentials file.
    ///
    /// - Parameter path: The file's path.
    /// - Throws: `CredentialsError.fileNotFound`, `.permissionDenied` or `.unreadable` when the
    ///   file cannot be read, otherwise the errors of ``parse(_:source:)`` with `path` as source.
    public static func load(path: String) throws(CredentialsError) -> NATSCredentials {
        let bytes = try readFile(path)
        return try parse(String(decoding: bytes, as: UTF8.self), source: path)
    }
}

extension NKeyPair {
    /// Signs the server's CONNECT nonce.
    ///
    /// - Parameter nonce: The `nonce` string from the server's INFO.
    /// - Returns: The Ed25519 signature of the nonce's UTF-8 bytes, base64url-encoded without
    ///   padding: the value of CONNECT's `sig` field.
    public func signNonce(_ nonce: String) -> String {
        sign(Array(nonce.utf8)).base64URLEncodedString(padded: false)
    }
}

// MARK: - Parsing

private struct DecoratedBlock {
    /// The marker text without dashes, upper-cased: `BEGIN NATS USER JWT`.
    var label: String
    var value: String
    /// Whether the label says which block this is.
    var isLabelled: Bool { label.contains("JWT") || label.contains("SEED") || label.contains("NKEY") }
}

/// Whether `line` (already trimmed) is a marker: three or more dashes, some text, three or more
/// dashes.
private func isMarkerLine(_ line: Substring) -> Bool {
    line.count >= 6 && line.hasPrefix("---") && line.hasSuffix("---")
}

private func markerText(_ line: Substring) -> String {
    String(line.drop(while: { $0 == "-" }).reversed().drop(while: { $0 == "-" }).reversed())
        .trimmingSpaces()
        .uppercased()
}

private func decoratedBlocks(in contents: String, source: String) throws(CredentialsError) -> [DecoratedBlock] {
    // Split on LF, CR and CRLF (a Character "\r\n" is one grapheme, so split on scalars).
    var lines: [Substring] = []
    var start = contents.unicodeScalars.startIndex
    var i = start
    let scalars = contents.unicodeScalars
    while i < scalars.endIndex {
        let c = scalars[i]
        if c == "\n" || c == "\r" {
            lines.append(Substring(scalars[start..<i]))
            var next = scalars.index(after: i)
            if c == "\r", next < scalars.endIndex, scalars[next] == "\n" {
                next = scalars.index(after: next)
            }
            start = next
            i = next
        } else {
            i = scalars.index(after: i)
        }
    }
    lines.append(Substring(scalars[start..<scalars.endIndex]))

    var blocks: [DecoratedBlock] = []
    var index = 0
    while index < lines.count {
        let line = lines[index].trimmingSpacesSubstring()
        index += 1
        guard isMarkerLine(line) else { continue }
        let label = markerText(line)
        if label.hasPrefix("END") { continue }
        // The value: the first non-empty line after the BEGIN marker.
        while index < lines.count, lines[index].trimmingSpacesSubstring().isEmpty { index += 1 }
        guard index < lines.count else {
            throw .unterminatedBlock(source: source, block: label)
        }
        let value = lines[index].trimmingSpacesSubstring()
        guard !isMarkerLine(value) else {
            throw .unterminatedBlock(source: source, block: label)
        }
        index += 1
        // The closing marker: the next non-empty line.
        while index < lines.count, lines[index].trimmingSpacesSubstring().isEmpty { index += 1 }
        guard index < lines.count, isMarkerLine(lines[index].trimmingSpacesSubstring()) else {
            throw .unterminatedBlock(source: source, block: label)
        }
        index += 1
        blocks.append(DecoratedBlock(label: label, value: String(value)))
    }
    return blocks
}

private func isBase64URL(_ s: Substring) -> Bool {
    s.utf8.allSatisfy { c in
        (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z")) || (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z"))
            || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "-") || c == UInt8(ascii: "_")
    }
}

extension StringProtocol {
    fileprivate func trimmingSpacesSubstring() -> Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        let s = self[...]
        guard let first = s.firstIndex(where: { !isSpace($0) }) else { return Substring(s[s.endIndex...]) }
        let last = s.lastIndex(where: { !isSpace($0) })!
        return Substring(s[first...last])
    }

    fileprivate func trimmingSpaces() -> String { String(trimmingSpacesSubstring()) }
}

// MARK: - File reading

private func readFile(_ path: String) throws(CredentialsError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 {
        throw fileError(path: path, errno: errno)
    }
    defer { close(fd) }
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw fileError(path: path, errno: errno)
        }
        if n == 0 { break }
        result.append(contentsOf: chunk[0..<n])
        if result.count > 1 << 20 {
            throw .unreadable(path: path, reason: "larger than 1 MiB, not a credentials file")
        }
    }
    return result
}

private func fileError(path: String, errno code: Int32) -> CredentialsError {
    switch code {
    case ENOENT: return .fileNotFound(path: path)
    case EACCES, EPERM: return .permissionDenied(path: path)
    default:
        let text = strerror(code).map { String(cString: $0) } ?? "error \(code)"
        return .unreadable(path: path, reason: text)
    }
}
