import Foundation
import Testing

@testable import NATS
import NATSTestSupport

/// The user seed and public key used as an example throughout the NATS documentation and in
/// nats-server's test configurations.
private let docSeed = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"
private let docPublicKey = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"

@Suite("NKeys")
struct NKeysTests {
    // MARK: Encodings

    @Test func crc16XMODEMCheckValue() {
        #expect(crc16XMODEM(Array("123456789".utf8)) == 0x31C3)
        #expect(crc16XMODEM([UInt8]()) == 0)
    }

    @Test func base32RFC4648Vectors() {
        let vectors: [(String, String)] = [
            ("", ""), ("f", "MY"), ("fo", "MZXQ"), ("foo", "MZXW6"), ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"), ("foobar", "MZXW6YTBOI"),
        ]
        for (plain, encoded) in vectors {
            #expect(base32EncodeNoPad(Array(plain.utf8)) == encoded)
            #expect(base32Decode(encoded) == Array(plain.utf8))
        }
        #expect(base32Decode("MZXW6===") == nil, "padding is rejected")
        #expect(base32Decode("mzxw6") == nil, "lower case is rejected")
        #expect(base32Decode("MZXW1") == nil, "'1' is not in the alphabet")
        #expect(base32Decode("M") == nil, "impossible length")
    }

    @Test func base64URLVectors() {
        let vectors: [(String, String, String)] = [
            ("", "", ""), ("f", "Zg", "Zg=="), ("fo", "Zm8", "Zm8="), ("foo", "Zm9v", "Zm9v"),
            ("foob", "Zm9vYg", "Zm9vYg=="), ("fooba", "Zm9vYmE", "Zm9vYmE="),
        ]
        for (plain, unpadded, padded) in vectors {
            #expect(Array(plain.utf8).base64URLEncodedString(padded: false) == unpadded)
            #expect(Array(plain.utf8).base64URLEncodedString(padded: true) == padded)
            #expect(base64URLDecode(unpadded) == Array(plain.utf8))
            #expect(base64URLDecode(padded) == Array(plain.utf8))
        }
        // The URL alphabet: 0xFB 0xFF -> "-_8" (standard base64 would be "+/8").
        #expect([UInt8]([0xFB, 0xFF]).base64URLEncodedString(padded: false) == "-_8")
        #expect(base64URLDecode("-_8") == [0xFB, 0xFF])
        #expect(base64URLDecode("+/8") == nil)
    }

    // MARK: Known key

    @Test func decodesTheDocumentedSeed() throws {
        let pair = try NKeyPair(seed: docSeed)
        #expect(pair.type == .user)
        #expect(pair.publicKey == docPublicKey)
        #expect(pair.seed == docSeed)
        #expect(try NKeyPair.validatePublicKey(docPublicKey) == .user)
    }

    @Test func seedWithSurroundingWhitespaceDecodes() throws {
        let pair = try NKeyPair(seed: "  \(docSeed)\r\n")
        #expect(pair.publicKey == docPublicKey)
    }

    /// Ed25519 signatures are deterministic, so the nonce signature of a known seed is fixed.
    /// The expected value was computed independently (Python `nkeys` / PyNaCl).
    @Test func signNonceKnownAnswer() throws {
        let pair = try NKeyPair(seed: docSeed)
        let sig = pair.signNonce("DhXdTMAeiHhLDig")
        #expect(sig == "WosANJXgeyxerXFo0twRiMG-_ZjYp1K_46bFeFax705yFTCTjM18jWl01gGYk4KKbadiHd-hP3WgUQ2iLZUAAA")
    }

    @Test func nonceSignatureVerifiesWithThePublicKey() throws {
        let pair = try NKeyPair(seed: docSeed)
        let nonce = "PXoWU7zWAMt75FY"
        let sig = try #require(base64URLDecode(pair.signNonce(nonce)))
        #expect(sig.count == 64)
        #expect(try NKeyPair.verify(publicKey: docPublicKey, signature: sig, data: Array(nonce.utf8)))
        #expect(try !NKeyPair.verify(publicKey: docPublicKey, signature: sig, data: Array("other".utf8)))
        let other = NKeyPair.generate(.user)
        #expect(try !NKeyPair.verify(publicKey: other.publicKey, signature: sig, data: Array(nonce.utf8)))
    }

    // MARK: Round trips

    @Test(arguments: [NKeyPrefix.operator, .server, .cluster, .account, .user])
    func generateSignVerifyRoundTrip(type: NKeyPrefix) throws {
        let pair = NKeyPair.generate(type)
        #expect(pair.type == type)

        let letter: Character = switch type {
        case .operator: "O"
        case .server: "N"
        case .cluster: "C"
        case .account: "A"
        case .user: "U"
        default: "?"
        }
        #expect(pair.publicKey.count == 56)
        #expect(pair.publicKey.first == letter)
        #expect(pair.seed.count == 58)
        #expect(pair.seed.hasPrefix("S\(letter)"))

        let decoded = try NKeyPair(seed: pair.seed)
        #expect(decoded.type == type)
        #expect(decoded.publicKey == pair.publicKey)
        #expect(decoded.seed == pair.seed)

        let data = Array("hello \(type)".utf8)
        let sig = decoded.sign(data)
        #expect(sig.count == 64)
        #expect(try NKeyPair.verify(publicKey: pair.publicKey, signature: sig, data: data))
        var tampered = sig
        tampered[10] ^= 0x01
        #expect(try !NKeyPair.verify(publicKey: pair.publicKey, signature: tampered, data: data))
        #expect(try !NKeyPair.verify(publicKey: pair.publicKey, signature: Array(sig.prefix(10)), data: data))
    }

    @Test func descriptionNeverShowsTheSeed() throws {
        let pair = try NKeyPair(seed: docSeed)
        var dumped = ""
        dump(pair, to: &dumped)
        for text in [pair.description, pair.debugDescription, String(reflecting: pair), dumped] {
            #expect(!text.contains(docSeed))
            #expect(text.contains(docPublicKey))
        }
    }

    // MARK: Errors

    @Test func flippedCharacterFailsTheChecksum() {
        // Change one character in the middle (the last character also carries unused bits).
        var chars = Array(docSeed)
        chars[20] = chars[20] == "A" ? "B" : "A"
        #expect(throws: NKeyError.invalidChecksum) { try NKeyPair(seed: String(chars)) }

        var pub = Array(docPublicKey)
        pub[30] = pub[30] == "A" ? "B" : "A"
        #expect(throws: NKeyError.invalidChecksum) {
            try NKeyPair.verify(publicKey: String(pub), signature: [], data: [])
        }
    }

    @Test func publicKeyGivenAsSeedIsAWrongPrefix() {
        #expect(throws: NKeyError.invalidPrefix(found: NKeyPrefix.user.rawValue, expected: "a seed (starting with 'S')")) {
            try NKeyPair(seed: docPublicKey)
        }
        do {
            _ = try NKeyPair(seed: docPublicKey)
        } catch {
            #expect(error.description.contains("user key"))
            #expect(error.description.contains("seed"))
        }
    }

    @Test func seedGivenAsPublicKeyIsAWrongPrefix() {
        #expect {
            try NKeyPair.verify(publicKey: docSeed, signature: [], data: [])
        } throws: { error in
            guard case NKeyError.invalidPrefix = error else { return false }
            return true
        }
    }

    @Test func malformedSeeds() {
        #expect(throws: NKeyError.self) { try NKeyPair(seed: "") }
        #expect {
            try NKeyPair(seed: docSeed.lowercased())
        } throws: { error in
            guard case NKeyError.invalidEncoding = error else { return false }
            return true
        }
        #expect {
            try NKeyPair(seed: "SUACSS")
        } throws: { error in
            guard case NKeyError.invalidEncoding = error else { return false }
            return true
        }
        // A well-formed seed (right checksum) whose key material is 31 bytes.
        let short = encodeRaw([0x90 | (NKeyPrefix.user.rawValue >> 5), (NKeyPrefix.user.rawValue & 31) << 3]
            + [UInt8](repeating: 7, count: 31))
        #expect(throws: NKeyError.invalidSeedLength(31)) { try NKeyPair(seed: short) }
        // A seed marker with the private-key type inside.
        let privateSeed = encodeRaw([0x90 | (NKeyPrefix.private.rawValue >> 5), (NKeyPrefix.private.rawValue & 31) << 3]
            + [UInt8](repeating: 7, count: 32))
        #expect {
            try NKeyPair(seed: privateSeed)
        } throws: { error in
            guard case NKeyError.invalidPrefix = error else { return false }
            return true
        }
    }

    @Test func errorDescriptionsDoNotEchoTheSeed() {
        var chars = Array(docSeed)
        chars[20] = chars[20] == "A" ? "B" : "A"
        let mistyped = String(chars)
        for candidate in [mistyped, docSeed.lowercased(), String(docSeed.dropLast(3))] {
            do {
                _ = try NKeyPair(seed: candidate)
                Issue.record("expected an error")
            } catch {
                #expect(!error.description.contains(candidate))
                #expect(!error.description.contains(String(candidate.prefix(12))))
            }
        }
    }

    // MARK: Credentials

    private static let sampleJWT = JWTMinter.userJWT(
        userPublicKey: docPublicKey, signer: NKeyPair.generate(.account)
    )

    @Test func parsesAGoodCredsFile() throws {
        let text = makeCredsFile(userJWT: Self.sampleJWT, userSeed: docSeed)
        let creds = try NATSCredentials.parse(text, source: "/etc/x.creds")
        #expect(creds.jwt == Self.sampleJWT)
        #expect(creds.nkey.publicKey == docPublicKey)
        #expect(!String(describing: creds).contains(docSeed))
    }

    @Test func parsesCRLFAndExtraWhitespace() throws {
        let text = """
            \r\n\r\n   -----BEGIN NATS USER JWT-----   \r\n\r\n\t\(Self.sampleJWT)  \r\n\r\n---END NATS USER JWT---\r\n\
            \r\n-----BEGIN USER NKEY SEED-----\r\n   \(docSeed)\t\r\n--------END USER NKEY SEED--------\r\n
            """
        let creds = try NATSCredentials.parse(text, source: "crlf.creds")
        #expect(creds.jwt == Self.sampleJWT)
        #expect(creds.nkey.publicKey == docPublicKey)

        let oldMac = makeCredsFile(userJWT: Self.sampleJWT, userSeed: docSeed)
            .replacingOccurrences(of: "\n", with: "\r")
        #expect(try NATSCredentials.parse(oldMac, source: "cr.creds").nkey.publicKey == docPublicKey)
    }

    @Test func unlabelledBlocksAreTakenInOrder() throws {
        let text = "---- a ----\n\(Self.sampleJWT)\n---- /a ----\n---- b ----\n\(docSeed)\n---- /b ----\n"
        let creds = try NATSCredentials.parse(text, source: "order.creds")
        #expect(creds.jwt == Self.sampleJWT)
        #expect(creds.nkey.publicKey == docPublicKey)
    }

    @Test func missingBlocks() {
        let full = makeCredsFile(userJWT: Self.sampleJWT, userSeed: docSeed)
        let seedOnly = "-----BEGIN USER NKEY SEED-----\n\(docSeed)\n------END USER NKEY SEED------\n"
        #expect(throws: CredentialsError.missingJWT(source: "/a/b.creds")) {
            try NATSCredentials.parse(seedOnly, source: "/a/b.creds")
        }
        let jwtOnly = String(full.prefix(upTo: full.range(of: "****")!.lowerBound))
        #expect(throws: CredentialsError.missingSeed(source: "/a/b.creds")) {
            try NATSCredentials.parse(jwtOnly, source: "/a/b.creds")
        }
        #expect(throws: CredentialsError.missingJWT(source: "empty")) {
            try NATSCredentials.parse("", source: "empty")
        }
        #expect(CredentialsError.missingJWT(source: "/a/b.creds").description.contains("missing JWT block"))
        #expect(CredentialsError.missingJWT(source: "/a/b.creds").description.contains("/a/b.creds"))

        let unterminated = "-----BEGIN NATS USER JWT-----\n\(Self.sampleJWT)\n"
        #expect(throws: CredentialsError.unterminatedBlock(source: "u", block: "BEGIN NATS USER JWT")) {
            try NATSCredentials.parse(unterminated, source: "u")
        }
        let empty = "-----BEGIN NATS USER JWT-----\n------END NATS USER JWT------\n"
        #expect(throws: CredentialsError.unterminatedBlock(source: "e", block: "BEGIN NATS USER JWT")) {
            try NATSCredentials.parse(empty, source: "e")
        }
    }

    @Test func badContentsInsideBlocks() throws {
        let badJWT = makeCredsFile(userJWT: "not-a-jwt", userSeed: docSeed)
        #expect(throws: CredentialsError.malformedJWT(source: "j")) {
            try NATSCredentials.parse(badJWT, source: "j")
        }
        var chars = Array(docSeed)
        chars[20] = chars[20] == "A" ? "B" : "A"
        let badSeed = makeCredsFile(userJWT: Self.sampleJWT, userSeed: String(chars))
        #expect(throws: CredentialsError.invalidSeed(source: "s", .invalidChecksum)) {
            try NATSCredentials.parse(badSeed, source: "s")
        }
        let accountSeed = makeCredsFile(userJWT: Self.sampleJWT, userSeed: NKeyPair.generate(.account).seed)
        #expect(throws: CredentialsError.notAUserSeed(source: "a", found: .account)) {
            try NATSCredentials.parse(accountSeed, source: "a")
        }
        do {
            _ = try NATSCredentials.parse(badSeed, source: "s")
        } catch {
            #expect(!error.description.contains(String(chars)))
        }
    }

    @Test func loadReadsFilesAndReportsErrors() throws {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("nkeys-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }

        let path = dir.appendingPathComponent("user.creds").path
        try makeCredsFile(userJWT: Self.sampleJWT, userSeed: docSeed)
            .write(toFile: path, atomically: true, encoding: .utf8)
        let creds = try NATSCredentials.load(path: path)
        #expect(creds.nkey.publicKey == docPublicKey)

        let missing = dir.appendingPathComponent("nope.creds").path
        #expect(throws: CredentialsError.fileNotFound(path: missing)) {
            try NATSCredentials.load(path: missing)
        }
        #expect {
            try NATSCredentials.load(path: dir.path)
        } throws: { error in
            guard case CredentialsError.unreadable(let p, let reason) = error else { return false }
            return p == dir.path && reason.lowercased().contains("directory")
        }

        let empty = dir.appendingPathComponent("empty.creds").path
        try "".write(toFile: empty, atomically: true, encoding: .utf8)
        #expect(throws: CredentialsError.missingJWT(source: empty)) {
            try NATSCredentials.load(path: empty)
        }
    }

    // MARK: JWT minting (the server-side check is done against nats-server elsewhere)

    @Test func sha512_256KnownAnswers() {
        func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }
        #expect(hex(SHA512_256.hash(Array("abc".utf8)))
            == "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23")
        // Two-block message from FIPS 180-4 examples.
        let long = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
        #expect(hex(SHA512_256.hash(Array(long.utf8)))
            == "3928e184fb8690f840da3988121d31be65cb9d3ef83ee6146feac861e19b563a")
    }

    @Test func mintedJWTsAreSignedByTheirIssuer() throws {
        let setup = OperatorModeSetup()
        for (jwt, issuer, subject, type) in [
            (setup.operatorJWT, setup.operatorKey.publicKey, setup.operatorKey.publicKey, "operator"),
            (setup.accountJWT, setup.operatorKey.publicKey, setup.accountKey.publicKey, "account"),
            (setup.userJWT, setup.accountKey.publicKey, setup.userKey.publicKey, "user"),
        ] {
            let parts = jwt.split(separator: ".").map(String.init)
            #expect(parts.count == 3)
            let header = try #require(base64URLDecode(parts[0]))
            #expect(String(decoding: header, as: UTF8.self) == #"{"typ":"JWT","alg":"ed25519-nkey"}"#)
            let sig = try #require(base64URLDecode(parts[2]))
            #expect(try NKeyPair.verify(publicKey: issuer, signature: sig, data: Array("\(parts[0]).\(parts[1])".utf8)))

            let claimsData = try #require(base64URLDecode(parts[1]))
            let claims = try #require(try JSONSerialization.jsonObject(with: Data(claimsData)) as? [String: Any])
            #expect(claims["iss"] as? String == issuer)
            #expect(claims["sub"] as? String == subject)
            let nats = try #require(claims["nats"] as? [String: Any])
            #expect(nats["type"] as? String == type)
            #expect(nats["version"] as? Int == 2)
            // jti = base32(SHA-512/256 of the standard claims without jti), as nats-io/jwt does.
            let iat = try #require(claims["iat"] as? Int)
            let name = try #require(claims["name"] as? String)
            let standard = JWTMinter.object([
                ("iat", String(iat)), ("iss", JWTMinter.json(issuer)), ("name", JWTMinter.json(name)),
                ("sub", JWTMinter.json(subject)),
            ])
            #expect(claims["jti"] as? String == base32EncodeNoPad(SHA512_256.hash(Array(standard.utf8))))
        }
        let forged = setup.forgedUser().credentials.jwt
        let parts = forged.split(separator: ".").map(String.init)
        let sig = try #require(base64URLDecode(parts[2]))
        #expect(try !NKeyPair.verify(
            publicKey: setup.accountKey.publicKey, signature: sig, data: Array("\(parts[0]).\(parts[1])".utf8)
        ))
    }
}

/// Encodes raw bytes as an nkey string (CRC appended), to build malformed-but-checksummed keys.
private func encodeRaw(_ raw: [UInt8]) -> String {
    var bytes = raw
    let crc = crc16XMODEM(bytes)
    bytes.append(UInt8(crc & 0xFF))
    bytes.append(UInt8(crc >> 8))
    return base32EncodeNoPad(bytes)
}
