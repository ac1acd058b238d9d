import Foundation
import NIOCore

/// Parses the server side of the NATS protocol from a byte stream that may arrive split at any
/// point.
///
/// ``parse(_:)`` consumes one complete operation from the front of the buffer and returns it, or
/// returns nil and consumes nothing when the operation is not complete yet. Payloads are parsed by
/// their announced length, so they may contain CRLF. Anything malformed throws
/// ``NATSProtocolError``; the caller must then close the connection, since the stream position is
/// lost.
public struct NATSProtocolParser: Sendable {
    /// The longest control line accepted (INFO lines with many `connect_urls` are the longest).
    public var maxControlLineLength: Int
    /// The largest payload (header block plus body) accepted. The server never sends more than its
    /// `max_payload`, which cannot exceed 64 MiB.
    public var maxPayloadLength: Int

    /// Creates a parser with the given limits.
    public init(maxControlLineLength: Int = 64 * 1024, maxPayloadLength: Int = 64 * 1024 * 1024) {
        self.maxControlLineLength = maxControlLineLength
        self.maxPayloadLength = maxPayloadLength
    }

    private static let cr = UInt8(ascii: "\r")
    private static let lf = UInt8(ascii: "\n")
    private static let space = UInt8(ascii: " ")
    private static let tab = UInt8(ascii: "\t")

    /// Parses one operation from the front of `buffer`.
    public func parse(_ buffer: inout ByteBuffer) throws(NATSProtocolError) -> ServerOperation? {
        let readable = buffer.readableBytes
        guard readable > 0 else { return nil }
        let searchLength = min(readable, maxControlLineLength + 2)
        let lfOffset: Int? = buffer.withUnsafeReadableBytes { raw in
            guard let base = raw.baseAddress else { return nil }
            guard let found = memchr(base, Int32(Self.lf), searchLength) else { return nil }
            return base.distance(to: UnsafeRawPointer(found))
        }
        guard let lfOffset else {
            if readable > maxControlLineLength + 1 {
                throw NATSProtocolError(
                    "control line longer than \(maxControlLineLength) bytes",
                    excerpt: Self.excerpt(buffer, length: 40))
            }
            return nil
        }
        let start = buffer.readerIndex
        guard lfOffset > 0, buffer.getInteger(at: start + lfOffset - 1, as: UInt8.self) == Self.cr else {
            throw NATSProtocolError("control line not terminated by CRLF", excerpt: Self.excerpt(buffer, length: lfOffset))
        }
        let lineLength = lfOffset - 1
        let line = buffer.getSlice(at: start, length: lineLength)!
        let afterLine = start + lfOffset + 1

        guard let first = line.getInteger(at: line.readerIndex, as: UInt8.self) else {
            throw NATSProtocolError("empty control line")
        }
        switch first | 0x20 {  // ASCII lower-case
        case UInt8(ascii: "m"):
            return try parseMessage(line: line, afterLine: afterLine, buffer: &buffer, withHeaders: false)
        case UInt8(ascii: "h"):
            return try parseMessage(line: line, afterLine: afterLine, buffer: &buffer, withHeaders: true)
        case UInt8(ascii: "p"):
            if Self.equalsIgnoringCase(line, "PING") {
                buffer.moveReaderIndex(to: afterLine)
                return .ping
            }
            if Self.equalsIgnoringCase(line, "PONG") {
                buffer.moveReaderIndex(to: afterLine)
                return .pong
            }
        case UInt8(ascii: "+"):
            if Self.equalsIgnoringCase(line, "+OK") {
                buffer.moveReaderIndex(to: afterLine)
                return .ok
            }
        case UInt8(ascii: "-"):
            if Self.hasPrefixIgnoringCase(line, "-ERR") {
                var text = String(decoding: line.readableBytesView.dropFirst(4), as: UTF8.self)
                text = text.trimmingCharacters(in: .whitespaces)
                if text.count >= 2, text.hasPrefix("'"), text.hasSuffix("'") {
                    text = String(text.dropFirst().dropLast())
                }
                buffer.moveReaderIndex(to: afterLine)
                return .error(text)
            }
        case UInt8(ascii: "i"):
            if Self.hasPrefixIgnoringCase(line, "INFO"),
                lineLength == 4 || [Self.space, Self.tab].contains(line.getInteger(at: line.readerIndex + 4, as: UInt8.self)!)
            {
                let json = line.getSlice(at: line.readerIndex + 4, length: lineLength - 4)!
                let info: ServerInfo
                do {
                    info = try JSONDecoder().decode(ServerInfo.self, from: Data(json.readableBytesView))
                } catch {
                    throw NATSProtocolError("INFO is not valid JSON (\(error))", excerpt: Self.excerpt(line, length: 60))
                }
                buffer.moveReaderIndex(to: afterLine)
                return .info(info)
            }
        default:
            break
        }
        throw NATSProtocolError("unknown operation", excerpt: Self.excerpt(line, length: 40))
    }

    private func parseMessage(
        line: ByteBuffer, afterLine: Int, buffer: inout ByteBuffer, withHeaders: Bool
    ) throws(NATSProtocolError) -> ServerOperation? {
        let name = withHeaders ? "HMSG" : "MSG"
        guard Self.hasPrefixIgnoringCase(line, name) else {
            throw NATSProtocolError("unknown operation", excerpt: Self.excerpt(line, length: 40))
        }
        guard line.readableBytes > name.utf8.count,
            let separator = line.getInteger(at: line.readerIndex + name.utf8.count, as: UInt8.self),
            separator == Self.space || separator == Self.tab
        else {
            throw NATSProtocolError("\(name) without arguments", excerpt: Self.excerpt(line, length: 60))
        }
        let tokens = Self.tokens(line, from: name.utf8.count)
        let fixed = withHeaders ? 4 : 3
        guard tokens.count == fixed || tokens.count == fixed + 1 else {
            throw NATSProtocolError("\(name) needs \(fixed) or \(fixed + 1) arguments, got \(tokens.count)", excerpt: Self.excerpt(line, length: 60))
        }
        let hasReply = tokens.count == fixed + 1
        guard let sid = Self.number(line, tokens[1]) else {
            throw NATSProtocolError("\(name) subscription id is not a number", excerpt: Self.excerpt(line, length: 60))
        }
        let sizeTokens = Array(tokens.suffix(withHeaders ? 2 : 1))
        guard let total = Self.number(line, sizeTokens.last!), total <= UInt64(maxPayloadLength) else {
            throw NATSProtocolError("\(name) size is not a number within \(maxPayloadLength) bytes", excerpt: Self.excerpt(line, length: 60))
        }
        var headerLength: UInt64 = 0
        if withHeaders {
            guard let length = Self.number(line, sizeTokens[0]), length <= total, length >= 10 else {
                throw NATSProtocolError("HMSG header size is not a number between 10 and the total size", excerpt: Self.excerpt(line, length: 60))
            }
            headerLength = length
        }
        let totalLength = Int(total)
        let end = afterLine + totalLength
        guard buffer.writerIndex >= end + 2 else { return nil }
        guard buffer.getInteger(at: end, as: UInt8.self) == Self.cr, buffer.getInteger(at: end + 1, as: UInt8.self) == Self.lf else {
            throw NATSProtocolError("\(name) payload not followed by CRLF (announced \(totalLength) bytes)", excerpt: Self.excerpt(line, length: 60))
        }
        let subject = Self.string(line, tokens[0])
        let replyTo = hasReply ? Self.string(line, tokens[2]) : nil
        var headers: NATSHeaders?
        if withHeaders {
            let block = buffer.getSlice(at: afterLine, length: Int(headerLength))!
            headers = try Self.parseHeaders(block)
        }
        let payload = buffer.getSlice(at: afterLine + Int(headerLength), length: totalLength - Int(headerLength))!
        buffer.moveReaderIndex(to: end + 2)
        return .message(NATSMessage(subject: subject, replyTo: replyTo, headers: headers, payload: payload, sid: sid))
    }

    /// Parses a header block (`NATS/1.0[ status[ description]]\r\n(Name: value\r\n)*\r\n`).
    public static func parseHeaders(_ block: ByteBuffer) throws(NATSProtocolError) -> NATSHeaders {
        let bytes = block.readableBytesView
        let prefix = "NATS/1.0".utf8
        guard bytes.starts(with: prefix) else {
            throw NATSProtocolError("header block does not start with NATS/1.0", excerpt: excerpt(block, length: 40))
        }
        var headers = NATSHeaders()
        var lines: [ByteBufferView.SubSequence] = []
        var lineStart = bytes.startIndex
        var index = bytes.startIndex
        while index < bytes.endIndex {
            if bytes[index] == lf {
                guard index > lineStart, bytes[index - 1] == cr else {
                    throw NATSProtocolError("header line not terminated by CRLF", excerpt: excerpt(block, length: 40))
                }
                lines.append(bytes[lineStart..<(index - 1)])
                lineStart = index + 1
            }
            index += 1
        }
        guard lineStart == bytes.endIndex, lines.count >= 2, lines.last!.isEmpty else {
            throw NATSProtocolError("header block not terminated by an empty line", excerpt: excerpt(block, length: 40))
        }
        let statusLine = lines[0].dropFirst(prefix.count)
        if !statusLine.isEmpty {
            guard statusLine.first == space || statusLine.first == tab else {
                throw NATSProtocolError("unknown header version", excerpt: excerpt(block, length: 40))
            }
            let text = String(decoding: statusLine, as: UTF8.self).trimmingCharacters(in: .whitespaces)
            let code = text.prefix { $0 != " " && $0 != "\t" }
            guard code.utf8.count == 3, code.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }), let status = Int(code) else {
                throw NATSProtocolError("header status is not a 3-digit code", excerpt: excerpt(block, length: 40))
            }
            headers.status = status
            let rest = text.dropFirst(3).trimmingCharacters(in: .whitespaces)
            if !rest.isEmpty { headers.statusDescription = rest }
        }
        for line in lines.dropFirst().dropLast() {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex else {
                throw NATSProtocolError("header line without a name and colon", excerpt: String(decoding: line.prefix(40), as: UTF8.self))
            }
            let name = String(decoding: line[line.startIndex..<colon], as: UTF8.self)
            let value = String(decoding: line[(colon + 1)...], as: UTF8.self).trimmingCharacters(in: .whitespaces)
            headers.append(name: name, value: value)
        }
        return headers
    }

    // MARK: helpers

    private struct Token {
        var start: Int
        var length: Int
    }

    private static func tokens(_ line: ByteBuffer, from offset: Int) -> [Token] {
        var result: [Token] = []
        result.reserveCapacity(5)
        let view = line.readableBytesView
        var index = view.startIndex + offset
        while index < view.endIndex {
            while index < view.endIndex, view[index] == space || view[index] == tab { index += 1 }
            let start = index
            while index < view.endIndex, view[index] != space, view[index] != tab { index += 1 }
            if index > start { result.append(Token(start: start, length: index - start)) }
        }
        return result
    }

    private static func number(_ line: ByteBuffer, _ token: Token) -> UInt64? {
        guard token.length > 0, token.length <= 19 else { return nil }
        var value: UInt64 = 0
        for offset in 0..<token.length {
            let byte = line.getInteger(at: token.start + offset, as: UInt8.self)!
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + UInt64(byte - UInt8(ascii: "0"))
        }
        return value
    }

    private static func string(_ line: ByteBuffer, _ token: Token) -> String {
        line.getString(at: token.start, length: token.length) ?? String(decoding: line.getBytes(at: token.start, length: token.length)!, as: UTF8.self)
    }

    private static func equalsIgnoringCase(_ line: ByteBuffer, _ word: String) -> Bool {
        line.readableBytes == word.utf8.count && hasPrefixIgnoringCase(line, word)
    }

    private static func hasPrefixIgnoringCase(_ line: ByteBuffer, _ word: String) -> Bool {
        guard line.readableBytes >= word.utf8.count else { return false }
        for (offset, expected) in word.utf8.enumerated() {
            let byte = line.getInteger(at: line.readerIndex + offset, as: UInt8.self)!
            // Fold case for letters only: for other bytes `| 0x20` maps CR to '-' and VT to '+'.
            let isLetter = (expected | 0x20) >= UInt8(ascii: "a") && (expected | 0x20) <= UInt8(ascii: "z")
            if byte != expected && !(isLetter && byte | 0x20 == expected | 0x20) { return false }
        }
        return true
    }

    static func excerpt(_ buffer: ByteBuffer, length: Int) -> String {
        let bytes = buffer.readableBytesView.prefix(max(0, length))
        var text = ""
        for byte in bytes {
            switch byte {
            case 0x20..<0x7f: text.append(Character(UnicodeScalar(byte)))
            case cr: text += "\\r"
            case lf: text += "\\n"
            default: text += "\\x" + String(byte, radix: 16)
            }
        }
        return text
    }
}
