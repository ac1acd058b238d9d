// NATS nkeys: Ed25519 identities encoded as base32 strings with a type prefix and a CRC-16.
//
// Internal helpers defined here for use by other files in the module:
//   - `base32EncodeNoPad(_ bytes: some Collection<UInt8>) -> String`
//       RFC 4648 base32 (alphabet A-Z, 2-7), no `=` padding.
//   - `base32Decode(_ string: some StringProtocol) -> [UInt8]?`
//       Inverse of the above; `nil` on a character outside the alphabet, on `=`, or on an
//       impossible length. Case-sensitive (upper case only), like Go's `base32.StdEncoding`.
//   - `crc16XMODEM(_ bytes: some Sequence<UInt8>) -> UInt16`
//       CRC-16/XMODEM (poly 0x1021, init 0, no reflection); nkeys store it little-endian.
//   - `extension Sequence<UInt8> { func base64URLEncodedString(padded: Bool) -> String }`
//       RFC 4648 §5 base64url. `padded: false` is what CONNECT `sig` and JWT segments use;
//       `padded: true` is what Object Store meta subjects and digests use.
//   - `base64URLDecode(_ string: some StringProtocol) -> [UInt8]?`
//       Accepts base64url with or without padding.
//
// Layout (checked against nats-io/nkeys strkey.go):
//   public key: base32(prefix byte | 32-byte Ed25519 public key | CRC16-LE)  -> 56 characters
//   seed:       base32(b1 | b2 | 32-byte Ed25519 seed | CRC16-LE)            -> 58 characters
//               b1 = seedPrefix | (typePrefix >> 5), b2 = (typePrefix & 31) << 3
//   The CRC covers every byte before it.

import Crypto
import Foundation

/// The type byte that starts every encoded nkey.
///
/// The values are chosen so that the first base32 character of an encoded key names its role:
/// `O`perator, `N` (server), `C`luster, `A`ccount, `U`ser, `S`eed and `P`rivate key.
public enum NKeyPrefix: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// An operator identity (`O...`).
    case `operator` = 112  // 14 << 3
    /// A server identity (`N...`).
    case server = 104  // 13 << 3
    /// A cluster identity (`C...`).
    case cluster = 16  // 2 << 3
    /// An account identity (`A...`).
    case account = 0  // 0 << 3
    /// A user identity (`U...`).
    case user = 160  // 20 << 3
    /// The marker of an encoded seed (`S...`); never the type of a key pair.
    case seed = 144  // 18 << 3
    /// The marker of an encoded 64-byte private key (`P...`); never the type of a key pair.
    case `private` = 120  // 15 << 3

    /// Whether this prefix names an identity that has a public key (operator, server, cluster,
    /// account or user), as opposed to the seed and private-key markers.
    public var isPublicKeyType: Bool {
        switch self {
        case .operator, .server, .cluster, .account, .user: return true
        case .seed, .private: return false
        }
    }

    /// A lower-case English name, used in error messages (`"user"`, `"account"`, ...).
    public var description: String {
        switch self {
        case .operator: return "operator"
        case .server: return "server"
        case .cluster: return "cluster"
        case .account: return "account"
        case .user: return "user"
        case .seed: return "seed"
        case .private: return "private key"
        }
    }
}

/// Why an nkey (seed or public key) could not be decoded or used.
///
/// Descriptions never contain the secret seed.
public enum NKeyError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The text is not valid unpadded upper-case base32, or decodes to too few bytes.
    case invalidEncoding(reason: String)
    /// The CRC-16 at the end of the key does not match its contents (a typo or truncation).
    case invalidChecksum
    /// The key decoded, but its type byte is not what was expected here.
    /// `found` is the raw byte; `expected` describes what was wanted.
    case invalidPrefix(found: UInt8, expected: String)
    /// A seed decoded to the wrong number of key bytes (an Ed25519 seed has 32).
    case invalidSeedLength(Int)
    /// A public key decoded to the wrong number of key bytes (an Ed25519 public key has 32).
    case invalidPublicKeyLength(Int)
    /// The 32 key bytes were rejected by the Ed25519 implementation.
    case invalidKeyMaterial

    /// A human-readable explanation of the failure.
    public var description: String {
        switch self {
        case .invalidEncoding(let reason):
            return "invalid nkey encoding: \(reason)"
        case .invalidChecksum:
            return "invalid nkey: the CRC-16 checksum does not match (the key is mistyped or truncated)"
        case .invalidPrefix(let found, let expected):
            return "invalid nkey prefix: expected \(expected), found \(Self.describePrefix(found))"
        case .invalidSeedLength(let n):
            return "invalid nkey seed: expected 32 key bytes, found \(n)"
        case .invalidPublicKeyLength(let n):
            return "invalid nkey public key: expected 32 key bytes, found \(n)"
        case .invalidKeyMaterial:
            return "invalid nkey: the key bytes are not a valid Ed25519 key"
        }
    }

    /// Names a raw prefix byte: its role if known, and the base32 letter it encodes to.
    static func describePrefix(_ byte: UInt8) -> String {
        let letter = base32Alphabet[Int(byte >> 3)]
        let name: String
        if let known = NKeyPrefix(rawValue: byte & 0b1111_1000), byte & 0b111 == 0 {
            name = known == .seed ? "a seed" : "a \(known) key"
        } else {
            name = "an unknown key type"
        }
        return "\(name) (starting with '\(Character(Unicode.Scalar(letter)))')"
    }
}

/// An Ed25519 key pair in NATS nkey form, created from a seed (`SU...`, `SA...`, ...).
///
/// Used to answer the server's nonce challenge during CONNECT (nkey and JWT authentication)
/// and to sign JWTs in tests. The value keeps the secret seed; its `description`, `debugDescription`
/// and mirror show only the type and the public key.
public struct NKeyPair: Sendable {
    /// The identity type: operator, server, cluster, account or user.
    public let type: NKeyPrefix
    private let privateKey: Curve25519.Signing.PrivateKey

    private init(type: NKeyPrefix, privateKey: Curve25519.Signing.PrivateKey) {
        self.type = type
        self.privateKey = privateKey
    }

    /// Decodes an encoded seed such as `SUACSSL3...`.
    ///
    /// Surrounding whitespace is ignored. The checksum, the seed marker and the identity type are
    /// all verified.
    ///
    /// - Parameter seed: The base32 seed text (58 characters).
    /// - Throws: `NKeyError.invalidEncoding` for text that is not base32,
    ///   `.invalidChecksum` for a mistyped seed, `.invalidPrefix` when the text is not a seed
    ///   (for example a public key) or names an unsupported type, `.invalidSeedLength` when the
    ///   key material is not 32 bytes.
    public init(seed: String) throws(NKeyError) {
        let raw = try decodeChecked(seed.trimmingASCIIWhitespace())
        guard raw.count >= 2 else {
            throw .invalidEncoding(reason: "too short to hold a seed")
        }
        let marker = raw[0] & 0b1111_1000
        guard marker == NKeyPrefix.seed.rawValue else {
            throw .invalidPrefix(found: raw[0], expected: "a seed (starting with 'S')")
        }
        let typeByte = ((raw[0] & 0b0000_0111) << 5) | ((raw[1] & 0b1111_1000) >> 3)
        guard let type = NKeyPrefix(rawValue: typeByte), type.isPublicKeyType else {
            throw .invalidPrefix(
                found: typeByte,
                expected: "a seed of an operator, server, cluster, account or user key"
            )
        }
        let material = raw[2...]
        guard material.count == 32 else {
            throw .invalidSeedLength(material.count)
        }
        do {
            self.privateKey = try Curve25519.Signing.PrivateKey(rawRepresentation: Array(material))
        } catch {
            throw .invalidKeyMaterial
        }
        self.type = type
    }

    /// Creates a new random key pair of the given identity type.
    ///
    /// - Parameter type: One of `.operator`, `.server`, `.cluster`, `.account`, `.user`.
    ///   Passing `.seed` or `.private` is a programming error and traps.
    public static func generate(_ type: NKeyPrefix) -> NKeyPair {
        precondition(type.isPublicKeyType, "NKeyPair.generate needs an identity type, not \(type)")
        return NKeyPair(type: type, privateKey: Curve25519.Signing.PrivateKey())
    }

    /// The encoded public key, for example `UDXU4RCS...` (56 characters).
    ///
    /// This is what the server knows the identity by (the `nkey` CONNECT field, a JWT's
    /// `sub` and `iss`).
    public var publicKey: String {
        var raw: [UInt8] = [type.rawValue]
        raw.append(contentsOf: privateKey.publicKey.rawRepresentation)
        return encodeWithChecksum(raw)
    }

    /// The encoded seed (`S` + type letter + ...). This is the secret: treat it like a password.
    public var seed: String {
        let b1 = NKeyPrefix.seed.rawValue | (type.rawValue >> 5)
        let b2 = (type.rawValue & 0b0001_1111) << 3
        var raw: [UInt8] = [b1, b2]
        raw.append(contentsOf: privateKey.rawRepresentation)
        return encodeWithChecksum(raw)
    }

    /// Signs `bytes` with the Ed25519 private key.
    ///
    /// - Returns: The 64-byte signature.
    public func sign(_ bytes: [UInt8]) -> [UInt8] {
        do {
            return Array(try privateKey.signature(for: bytes))
        } catch {
            // Ed25519 signing with a valid key only fails if the crypto library cannot allocate.
            fatalError("Ed25519 signing failed: \(error)")
        }
    }

    /// Checks an Ed25519 signature against an encoded public key.
    ///
    /// - Parameters:
    ///   - publicKey: An encoded public key of any identity type (`U...`, `A...`, `O...`, `N...`,
    ///     `C...`).
    ///   - signature: The signature bytes (64 for a valid signature).
    ///   - data: The signed bytes.
    /// - Returns: `true` when the signature is valid for `data` under `publicKey`.
    /// - Throws: `NKeyError` when `publicKey` itself cannot be decoded (a bad signature is not an
    ///   error: it returns `false`).
    public static func verify(
        publicKey: String,
        signature: [UInt8],
        data: [UInt8]
    ) throws(NKeyError) -> Bool {
        let raw = try decodeChecked(publicKey.trimmingASCIIWhitespace())
        guard let prefix = NKeyPrefix(rawValue: raw[0]), prefix.isPublicKeyType else {
            throw .invalidPrefix(
                found: raw[0],
                expected: "a public key of an operator, server, cluster, account or user"
            )
        }
        let material = raw[1...]
        guard material.count == 32 else {
            throw .invalidPublicKeyLength(material.count)
        }
        let key: Curve25519.Signing.PublicKey
        do {
            key = try Curve25519.Signing.PublicKey(rawRepresentation: Array(material))
        } catch {
            throw .invalidKeyMaterial
        }
        return key.isValidSignature(signature, for: data)
    }

    /// Checks an encoded public key (prefix, length and checksum) without using it.
    ///
    /// - Returns: The identity type of the key.
    /// - Throws: `NKeyError` describing what is wrong with the key.
    @discardableResult
    public static func validatePublicKey(_ publicKey: String) throws(NKeyError) -> NKeyPrefix {
        let raw = try decodeChecked(publicKey.trimmingASCIIWhitespace())
        guard let prefix = NKeyPrefix(rawValue: raw[0]), prefix.isPublicKeyType else {
            throw .invalidPrefix(
                found: raw[0],
                expected: "a public key of an operator, server, cluster, account or user"
            )
        }
        guard raw.count == 33 else {
            throw .invalidPublicKeyLength(raw.count - 1)
        }
        return prefix
    }
}

extension NKeyPair: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The type and public key; never the seed.
    public var description: String { "NKeyPair(\(type): \(publicKey))" }
    /// The type and public key; never the seed.
    public var debugDescription: String { description }
    /// A mirror that shows the type and public key only, so `dump` does not reveal the seed.
    public var customMirror: Mirror {
        Mirror(self, children: ["type": type, "publicKey": publicKey], displayStyle: .struct)
    }
}

// MARK: - Encoding helpers

/// Appends the little-endian CRC-16/XMODEM of `raw` and encodes the whole as unpadded base32.
private func encodeWithChecksum(_ raw: [UInt8]) -> String {
    var raw = raw
    let crc = crc16XMODEM(raw)
    raw.append(UInt8(truncatingIfNeeded: crc))
    raw.append(UInt8(truncatingIfNeeded: crc >> 8))
    return base32EncodeNoPad(raw)
}

/// Decodes unpadded base32, verifies and strips the trailing CRC-16. The result has at least
/// one byte (the prefix).
private func decodeChecked(_ text: Substring) throws(NKeyError) -> [UInt8] {
    if text.isEmpty {
        throw .invalidEncoding(reason: "the key is empty")
    }
    guard let raw = base32Decode(text) else {
        throw .invalidEncoding(
            reason: "not unpadded upper-case base32 (A-Z, 2-7), or an impossible length"
        )
    }
    guard raw.count >= 4 else {
        throw .invalidEncoding(reason: "too short to be an nkey (\(raw.count) bytes)")
    }
    let body = raw[..<(raw.count - 2)]
    let stored = UInt16(raw[raw.count - 2]) | (UInt16(raw[raw.count - 1]) << 8)
    guard crc16XMODEM(body) == stored else {
        throw .invalidChecksum
    }
    return Array(body)
}

extension String {
    fileprivate func trimmingASCIIWhitespace() -> Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" || $0 == "\r\n" }
        guard let start = firstIndex(where: { !isSpace($0) }) else { return self[endIndex...] }
        let end = lastIndex(where: { !isSpace($0) })!
        return self[start...end]
    }
}

private let base32Alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

/// Maps an ASCII byte to its 5-bit base32 value, or 0xFF.
private let base32Values: [UInt8] = {
    var table = [UInt8](repeating: 0xFF, count: 256)
    for (value, char) in base32Alphabet.enumerated() {
        table[Int(char)] = UInt8(value)
    }
    return table
}()

/// RFC 4648 base32 (alphabet `A-Z2-7`) without `=` padding.
func base32EncodeNoPad(_ bytes: some Collection<UInt8>) -> String {
    var out: [UInt8] = []
    out.reserveCapacity((bytes.count * 8 + 4) / 5)
    var buffer: UInt32 = 0
    var bits = 0
    for byte in bytes {
        buffer = (buffer << 8) | UInt32(byte)
        bits += 8
        while bits >= 5 {
            bits -= 5
            out.append(base32Alphabet[Int((buffer >> UInt32(bits)) & 0x1F)])
        }
        buffer &= (1 << UInt32(bits)) - 1
    }
    if bits > 0 {
        out.append(base32Alphabet[Int((buffer << UInt32(5 - bits)) & 0x1F)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// Decodes unpadded RFC 4648 base32. Returns `nil` for a character outside `A-Z2-7`
/// (including lower case and `=`), or a length no byte string encodes to
/// (1, 3 or 6 characters modulo 8). Unused trailing bits are ignored, as Go does.
func base32Decode(_ string: some StringProtocol) -> [UInt8]? {
    let utf8 = string.utf8
    switch utf8.count % 8 {
    case 1, 3, 6: return nil
    default: break
    }
    var out: [UInt8] = []
    out.reserveCapacity(utf8.count * 5 / 8)
    var buffer: UInt32 = 0
    var bits = 0
    for char in utf8 {
        let value = base32Values[Int(char)]
        if value == 0xFF { return nil }
        buffer = (buffer << 5) | UInt32(value)
        bits += 5
        if bits >= 8 {
            bits -= 8
            out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            buffer &= (1 << UInt32(bits)) - 1
        }
    }
    return out
}

/// CRC-16/XMODEM: polynomial 0x1021, initial value 0, no reflection, no final XOR.
/// (`"123456789"` gives 0x31C3.)
func crc16XMODEM(_ bytes: some Sequence<UInt8>) -> UInt16 {
    var crc: UInt16 = 0
    for byte in bytes {
        crc ^= UInt16(byte) << 8
        for _ in 0..<8 {
            crc = (crc & 0x8000) != 0 ? (crc << 1) ^ 0x1021 : crc << 1
        }
    }
    return crc
}

private let base64URLAlphabet: [UInt8] = Array(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8
)

extension Sequence<UInt8> {
    /// Encodes the bytes as RFC 4648 §5 base64url (`-` and `_` instead of `+` and `/`).
    ///
    /// - Parameter padded: Whether to append `=` up to a multiple of 4 characters. NATS uses
    ///   `false` for CONNECT signatures and JWT segments, `true` for Object Store names and digests.
    func base64URLEncodedString(padded: Bool) -> String {
        var out: [UInt8] = []
        var chunk: (UInt8, UInt8, UInt8) = (0, 0, 0)
        var count = 0
        func flush(_ n: Int) {
            let v = (UInt32(chunk.0) << 16) | (UInt32(chunk.1) << 8) | UInt32(chunk.2)
            for i in 0..<(n + 1) {
                out.append(base64URLAlphabet[Int((v >> UInt32(18 - 6 * i)) & 0x3F)])
            }
            if padded {
                for _ in n..<3 { out.append(UInt8(ascii: "=")) }
            }
        }
        for byte in self {
            switch count {
            case 0: chunk.0 = byte
            case 1: chunk.1 = byte
            default: chunk.2 = byte
            }
            count += 1
            if count == 3 {
                flush(3)
                chunk = (0, 0, 0)
                count = 0
            }
        }
        if count > 0 { flush(count) }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Decodes base64url (RFC 4648 §5), with or without `=` padding. Returns `nil` on any
/// character outside the alphabet or an impossible length.
func base64URLDecode(_ string: some StringProtocol) -> [UInt8]? {
    var chars = Array(string.utf8)
    while chars.last == UInt8(ascii: "=") { chars.removeLast() }
    if chars.count % 4 == 1 { return nil }
    var out: [UInt8] = []
    out.reserveCapacity(chars.count * 3 / 4)
    var buffer: UInt32 = 0
    var bits = 0
    for c in chars {
        let value: UInt32
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = UInt32(c - UInt8(ascii: "A"))
        case UInt8(ascii: "a")...UInt8(ascii: "z"): value = UInt32(c - UInt8(ascii: "a")) + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): value = UInt32(c - UInt8(ascii: "0")) + 52
        case UInt8(ascii: "-"): value = 62
        case UInt8(ascii: "_"): value = 63
        default: return nil
        }
        buffer = (buffer << 6) | value
        bits += 6
        if bits >= 8 {
            bits -= 8
            out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            buffer &= (1 << UInt32(bits)) - 1
        }
    }
    return out
}
