// Mints NATS v2 JWTs (operator, account, user) so tests can run nats-server in operator mode
// (decentralised JWT authentication) without the `nsc` tool.
//
// JWT = base64url(header) "." base64url(claims) "." base64url(Ed25519 signature of the first two
// segments joined by "."), all base64url without padding; header
// {"typ":"JWT","alg":"ed25519-nkey"}. Claims follow nats-io/jwt v2: the standard fields `jti`,
// `iat`, `iss`, `name`, `sub`, then a `nats` object holding `type` and `version: 2`.
//
// `jti`: nats-io/jwt sets it to base32 (no padding) of SHA-512/256 over the JSON of the
// standard claim fields with `jti` left out (`{"iat":..,"iss":..,"name":..,"sub":..}`).
// nats-server does not check it (jwt.Decode verifies the signature and issuer prefix only), but
// we compute it the same way. swift-crypto's `Crypto` module has no SHA-512/256 (it lives in
// `_CryptoExtras`, which this target does not depend on), so a small SHA-512/256 is implemented
// below and checked in the tests against the FIPS 180-4 "abc" vector.

import Foundation
import NATS

/// Builds and signs NATS v2 JWTs.
public enum JWTMinter {
    /// A self-signed operator JWT.
    ///
    /// - Parameters:
    ///   - operatorKey: The operator's key pair (`O...`); both issuer and subject.
    ///   - name: The operator's display name.
    ///   - systemAccount: The public key of the system account, if any.
    public static func operatorJWT(
        operatorKey: NKeyPair,
        name: String = "baton-test-operator",
        systemAccount: String? = nil
    ) -> String {
        var nats: [(String, String)] = []
        if let systemAccount {
            nats.append(("system_account", json(systemAccount)))
        }
        nats.append(("type", json("operator")))
        nats.append(("version", "2"))
        return encode(subject: operatorKey.publicKey, name: name, nats: nats, signer: operatorKey)
    }

    /// An account JWT issued by an operator.
    ///
    /// The account has no connection, subscription, payload, import or export limits. JetStream is
    /// enabled without limits when `jetStream` is true, and disabled otherwise.
    ///
    /// - Parameters:
    ///   - accountPublicKey: The subject, an account public key (`A...`).
    ///   - name: The account's display name.
    ///   - jetStream: Whether the account may use JetStream.
    ///   - signer: The key that signs the JWT (the operator's, normally).
    ///   - claimedIssuer: The `iss` written into the claims. Defaults to `signer`'s public key;
    ///     pass another key to forge a JWT whose signature does not match its issuer.
    public static func accountJWT(
        accountPublicKey: String,
        name: String = "baton-test-account",
        jetStream: Bool = false,
        signer: NKeyPair,
        claimedIssuer: String? = nil
    ) -> String {
        let js = jetStream ? "-1" : "0"
        let limits = object([
            ("subs", "-1"), ("data", "-1"), ("payload", "-1"),
            ("imports", "-1"), ("exports", "-1"), ("wildcards", "true"),
            ("conn", "-1"), ("leaf", "-1"),
            ("mem_storage", js), ("disk_storage", js), ("streams", js), ("consumer", js),
        ])
        let nats: [(String, String)] = [
            ("limits", limits),
            ("default_permissions", object([("pub", "{}"), ("sub", "{}")])),
            ("type", json("account")),
            ("version", "2"),
        ]
        return encode(
            subject: accountPublicKey, name: name, nats: nats, signer: signer,
            claimedIssuer: claimedIssuer
        )
    }

    /// A user JWT issued by an account: empty `pub`/`sub` permissions (everything allowed),
    /// no limits.
    ///
    /// - Parameters:
    ///   - userPublicKey: The subject, a user public key (`U...`).
    ///   - name: The user's display name.
    ///   - signer: The key that signs the JWT (the account's, normally).
    ///   - claimedIssuer: The `iss` written into the claims. Defaults to `signer`'s public key;
    ///     pass another key to forge a JWT whose signature does not match its issuer.
    public static func userJWT(
        userPublicKey: String,
        name: String = "baton-test-user",
        signer: NKeyPair,
        claimedIssuer: String? = nil
    ) -> String {
        let nats: [(String, String)] = [
            ("pub", "{}"), ("sub", "{}"),
            ("subs", "-1"), ("data", "-1"), ("payload", "-1"),
            ("type", json("user")),
            ("version", "2"),
        ]
        return encode(
            subject: userPublicKey, name: name, nats: nats, signer: signer,
            claimedIssuer: claimedIssuer
        )
    }

    /// Encodes and signs a JWT with the given `nats` claim members (JSON texts, in order).
    ///
    /// - Parameters:
    ///   - subject: The `sub` claim.
    ///   - name: The `name` claim.
    ///   - nats: The members of the `nats` object, each a key and an already-encoded JSON value.
    ///   - signer: The key whose private key signs the token.
    ///   - claimedIssuer: The `iss` claim; `signer.publicKey` when `nil`.
    ///   - issuedAt: The `iat` claim in Unix seconds; now when `nil`.
    public static func encode(
        subject: String,
        name: String,
        nats: [(String, String)],
        signer: NKeyPair,
        claimedIssuer: String? = nil,
        issuedAt: Int? = nil
    ) -> String {
        let issuer = claimedIssuer ?? signer.publicKey
        let iat = issuedAt ?? Int(Date().timeIntervalSince1970)
        let standard: [(String, String)] = [
            ("iat", String(iat)), ("iss", json(issuer)), ("name", json(name)), ("sub", json(subject)),
        ]
        let jti = base32NoPad(SHA512_256.hash(Array(object(standard).utf8)))
        let claims = object([("jti", json(jti))] + standard + [("nats", object(nats))])
        let header = #"{"typ":"JWT","alg":"ed25519-nkey"}"#
        let signingInput = base64URL(Array(header.utf8)) + "." + base64URL(Array(claims.utf8))
        let signature = signer.sign(Array(signingInput.utf8))
        return signingInput + "." + base64URL(signature)
    }

    /// Decodes the claims segment of a JWT into JSON text (no verification), for assertions.
    public static func claimsJSON(of jwt: String) -> String? {
        let parts = jwt.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        var text = parts[1].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while text.count % 4 != 0 { text += "=" }
        guard let data = Data(base64Encoded: text) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    // MARK: JSON text

    /// A JSON string literal.
    public static func json(_ string: String) -> String {
        var out = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "<", ">", "&", "\u{2028}", "\u{2029}":
                // Go's encoding/json escapes these; do the same so `jti` matches Go's bytes.
                out += String(format: "\\u%04x", scalar.value)
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    /// A JSON object from ordered members whose values are already JSON text.
    public static func object(_ members: [(String, String)]) -> String {
        "{" + members.map { json($0.0) + ":" + $0.1 }.joined(separator: ",") + "}"
    }
}

/// The text of a NATS credentials file holding `userJWT` and `userSeed`, in the layout `nsc`
/// writes (note the dashes: five on BEGIN lines, six on END lines).
public func makeCredsFile(userJWT: String, userSeed: String) -> String {
    """
    -----BEGIN NATS USER JWT-----
    \(userJWT)
    ------END NATS USER JWT------

    ************************* IMPORTANT *************************
    NKEY Seed printed below can be used to sign and prove identity.
    NKEYs are sensitive and should be treated as secrets.

    -----BEGIN USER NKEY SEED-----
    \(userSeed)
    ------END USER NKEY SEED------

    *************************************************************

    """
}

/// A complete operator-mode trust chain for a test server: operator → account → user, plus the
/// system account that nats-server needs for JetStream in operator mode.
///
/// ```swift
/// let setup = OperatorModeSetup()
/// try setup.serverConfig().write(toFile: configPath, atomically: true, encoding: .utf8)
/// try setup.credsFile.write(toFile: credsPath, atomically: true, encoding: .utf8)
/// // nats-server -c configPath ; connect with credentials credsPath
/// ```
public struct OperatorModeSetup: Sendable {
    /// The operator key pair (`O...`).
    public let operatorKey: NKeyPair
    /// The system account key pair (`A...`). nats-server refuses to start JetStream in operator
    /// mode without a system account, and warns when there is none.
    public let systemAccountKey: NKeyPair
    /// The system account JWT, signed by the operator.
    public let systemAccountJWT: String
    /// The account key pair (`A...`) the user belongs to.
    public let accountKey: NKeyPair
    /// The user key pair (`U...`).
    public let userKey: NKeyPair
    /// The self-signed operator JWT.
    public let operatorJWT: String
    /// The account JWT, signed by the operator.
    public let accountJWT: String
    /// The user JWT, signed by the account.
    public let userJWT: String
    /// Whether the account may use JetStream.
    public let jetStream: Bool

    /// Generates fresh operator, account and user keys and their JWTs.
    ///
    /// - Parameter jetStream: Enable JetStream (unlimited) for the account. The server also needs
    ///   a `jetstream` block; pass `jetStreamStoreDir` to ``serverConfig(jetStreamStoreDir:)``.
    public init(jetStream: Bool = false) {
        self.jetStream = jetStream
        operatorKey = NKeyPair.generate(.operator)
        systemAccountKey = NKeyPair.generate(.account)
        accountKey = NKeyPair.generate(.account)
        userKey = NKeyPair.generate(.user)
        operatorJWT = JWTMinter.operatorJWT(
            operatorKey: operatorKey, systemAccount: systemAccountKey.publicKey
        )
        systemAccountJWT = JWTMinter.accountJWT(
            accountPublicKey: systemAccountKey.publicKey, name: "SYS", signer: operatorKey
        )
        accountJWT = JWTMinter.accountJWT(
            accountPublicKey: accountKey.publicKey, jetStream: jetStream, signer: operatorKey
        )
        userJWT = JWTMinter.userJWT(userPublicKey: userKey.publicKey, signer: accountKey)
    }

    /// The credentials file text for the user.
    public var credsFile: String {
        makeCredsFile(userJWT: userJWT, userSeed: userKey.seed)
    }

    /// The user's credentials as a value.
    public var credentials: NATSCredentials {
        NATSCredentials(jwt: userJWT, nkey: userKey)
    }

    /// The nats-server configuration that trusts this operator and preloads both accounts:
    /// `operator`, `system_account`, `resolver: MEMORY`, `resolver_preload`, and a `jetstream`
    /// block when `jetStreamStoreDir` is given. Add `port`/`listen` yourself (or pass `-p` on the
    /// command line).
    public func serverConfig(jetStreamStoreDir: String? = nil) -> String {
        var config = """
            operator: \(operatorJWT)
            system_account: \(systemAccountKey.publicKey)
            resolver: MEMORY
            resolver_preload: {
              \(systemAccountKey.publicKey): \(systemAccountJWT)
              \(accountKey.publicKey): \(accountJWT)
            }

            """
        if let jetStreamStoreDir {
            config += "jetstream: {store_dir: \(JWTMinter.json(jetStreamStoreDir))}\n"
        }
        return config
    }

    /// Credentials for another user of the same account.
    public func makeUser(name: String) -> (credentials: NATSCredentials, credsFile: String) {
        let key = NKeyPair.generate(.user)
        let jwt = JWTMinter.userJWT(userPublicKey: key.publicKey, name: name, signer: accountKey)
        return (NATSCredentials(jwt: jwt, nkey: key), makeCredsFile(userJWT: jwt, userSeed: key.seed))
    }

    /// Credentials the server must refuse: the user JWT claims this setup's account as issuer
    /// but is signed by an unrelated account key, so its signature does not verify.
    public func forgedUser() -> (credentials: NATSCredentials, credsFile: String) {
        let key = NKeyPair.generate(.user)
        let impostor = NKeyPair.generate(.account)
        let jwt = JWTMinter.userJWT(
            userPublicKey: key.publicKey, name: "forged", signer: impostor,
            claimedIssuer: accountKey.publicKey
        )
        return (NATSCredentials(jwt: jwt, nkey: key), makeCredsFile(userJWT: jwt, userSeed: key.seed))
    }

    /// Credentials the server must refuse: a valid user JWT paired with the seed of a different
    /// user, so the nonce signature does not match the JWT's subject.
    public func mismatchedSeedUser() -> (credentials: NATSCredentials, credsFile: String) {
        let other = NKeyPair.generate(.user)
        return (NATSCredentials(jwt: userJWT, nkey: other), makeCredsFile(userJWT: userJWT, userSeed: other.seed))
    }
}

// MARK: - Encoding helpers (the NATS module's own helpers are internal)

private func base64URL(_ bytes: [UInt8]) -> String {
    Data(bytes).base64EncodedString()
        .replacingOccurrences(of: "+", with: "-")
        .replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}

private func base32NoPad(_ bytes: [UInt8]) -> String {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    var out = ""
    var buffer: UInt32 = 0
    var bits = 0
    for byte in bytes {
        buffer = (buffer << 8) | UInt32(byte)
        bits += 8
        while bits >= 5 {
            bits -= 5
            out.append(alphabet[Int((buffer >> UInt32(bits)) & 0x1F)])
        }
        buffer &= (1 << UInt32(bits)) - 1
    }
    if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 0x1F)]) }
    return out
}

/// SHA-512/256 (FIPS 180-4 §6.7): SHA-512 with its own initial hash value, truncated to 32 bytes.
public enum SHA512_256 {
    /// The 32-byte digest of `message`.
    public static func hash(_ message: [UInt8]) -> [UInt8] {
        var h: [UInt64] = [
            0x2231_2194_fc2b_f72c, 0x9f55_5fa3_c84c_64c2, 0x2393_b86b_6f53_b151, 0x9638_7719_5940_eabd,
            0x9628_3ee2_a88e_ffe3, 0xbe5e_1e25_5386_3992, 0x2b01_99fc_2c85_b8aa, 0x0eb7_2ddc_81c5_2ca2,
        ]
        var padded = message
        padded.append(0x80)
        while padded.count % 128 != 112 { padded.append(0) }
        let bitLength = UInt64(message.count) &* 8
        padded.append(contentsOf: [UInt8](repeating: 0, count: 8))  // high 64 bits of the length
        for shift in stride(from: 56, through: 0, by: -8) {
            padded.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(shift)))
        }

        var w = [UInt64](repeating: 0, count: 80)
        for blockStart in stride(from: 0, to: padded.count, by: 128) {
            for t in 0..<16 {
                var word: UInt64 = 0
                for b in 0..<8 { word = (word << 8) | UInt64(padded[blockStart + t * 8 + b]) }
                w[t] = word
            }
            for t in 16..<80 {
                let s0 = rotr(w[t - 15], 1) ^ rotr(w[t - 15], 8) ^ (w[t - 15] >> 7)
                let s1 = rotr(w[t - 2], 19) ^ rotr(w[t - 2], 61) ^ (w[t - 2] >> 6)
                w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
            }
            var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7]
            for t in 0..<80 {
                let bigS1 = rotr(e, 14) ^ rotr(e, 18) ^ rotr(e, 41)
                let ch = (e & f) ^ (~e & g)
                let t1 = hh &+ bigS1 &+ ch &+ k[t] &+ w[t]
                let bigS0 = rotr(a, 28) ^ rotr(a, 34) ^ rotr(a, 39)
                let maj = (a & b) ^ (a & c) ^ (b & c)
                let t2 = bigS0 &+ maj
                hh = g; g = f; f = e; e = d &+ t1; d = c; c = b; b = a; a = t1 &+ t2
            }
            h[0] &+= a; h[1] &+= b; h[2] &+= c; h[3] &+= d
            h[4] &+= e; h[5] &+= f; h[6] &+= g; h[7] &+= hh
        }
        var digest: [UInt8] = []
        for word in h.prefix(4) {
            for shift in stride(from: 56, through: 0, by: -8) {
                digest.append(UInt8(truncatingIfNeeded: word >> UInt64(shift)))
            }
        }
        return digest
    }

    private static func rotr(_ x: UInt64, _ n: UInt64) -> UInt64 { (x >> n) | (x << (64 - n)) }

    /// The SHA-512 round constants: the first 64 bits of the fractional parts of the cube roots
    /// of the first 80 primes.
    private static let k: [UInt64] = [
        0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc,
        0x3956c25bf348b538, 0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118,
        0xd807aa98a3030242, 0x12835b0145706fbe, 0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2,
        0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235, 0xc19bf174cf692694,
        0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65,
        0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5,
        0x983e5152ee66dfab, 0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4,
        0xc6e00bf33da88fc2, 0xd5a79147930aa725, 0x06ca6351e003826f, 0x142929670a0e6e70,
        0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed, 0x53380d139d95b3df,
        0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b,
        0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30,
        0xd192e819d6ef5218, 0xd69906245565a910, 0xf40e35855771202a, 0x106aa07032bbd1b8,
        0x19a4c116b8d2d0c8, 0x1e376c085141ab53, 0x2748774cdf8eeb99, 0x34b0bcb5e19b48a8,
        0x391c0cb3c5c95a63, 0x4ed8aa4ae3418acb, 0x5b9cca4f7763e373, 0x682e6ff3d6b2b8a3,
        0x748f82ee5defb2fc, 0x78a5636f43172f60, 0x84c87814a1f0ab72, 0x8cc702081a6439ec,
        0x90befffa23631e28, 0xa4506cebde82bde9, 0xbef9a3f7b2c67915, 0xc67178f2e372532b,
        0xca273eceea26619c, 0xd186b8c721c0c207, 0xeada7dd6cde0eb1e, 0xf57d4f7fee6ed178,
        0x06f067aa72176fba, 0x0a637dc5a2c898a6, 0x113f9804bef90dae, 0x1b710b35131c471b,
        0x28db77f523047d84, 0x32caab7b40c72493, 0x3c9ebe0a15c9bebc, 0x431d67c49c100d4c,
        0x4cc5d4becb3e42b6, 0x597f299cfc657e2a, 0x5fcb6fab3ad6faec, 0x6c44198c4a475817,
    ]
}
