import NIOCore

/// Writes client operations (`PUB`, `HPUB`, `SUB`, `UNSUB`, `PING`, `PONG`, `CONNECT`) into a
/// buffer. Callers validate subjects and headers first.
enum ClientOperationEncoder {
    static let crlf: StaticString = "\r\n"

    static func writePublish(
        into buffer: inout ByteBuffer, subject: String, replyTo: String?, headerBlock: ByteBuffer?, payload: ByteBuffer
    ) {
        let headerLength = headerBlock?.readableBytes ?? 0
        let payloadLength = payload.readableBytes
        // One capacity check for the whole operation: the hot path of every publish.
        let controlLength = 5 + subject.utf8.count + 1 + (replyTo.map { $0.utf8.count + 1 } ?? 0) + 42
        buffer.reserveCapacity(minimumWritableBytes: controlLength + headerLength + payloadLength + 2)
        if headerBlock != nil {
            buffer.writeStaticString("HPUB ")
        } else {
            buffer.writeStaticString("PUB ")
        }
        buffer.writeString(subject)
        buffer.writeInteger(UInt8(ascii: " "))
        if let replyTo {
            buffer.writeString(replyTo)
            buffer.writeInteger(UInt8(ascii: " "))
        }
        if let headerBlock {
            writeDecimal(headerLength, into: &buffer)
            buffer.writeInteger(UInt8(ascii: " "))
            writeDecimal(headerLength + payloadLength, into: &buffer)
            buffer.writeStaticString(crlf)
            buffer.writeImmutableBuffer(headerBlock)
        } else {
            writeDecimal(payloadLength, into: &buffer)
            buffer.writeStaticString(crlf)
        }
        buffer.writeImmutableBuffer(payload)
        buffer.writeStaticString(crlf)
    }

    static func writeSubscribe(into buffer: inout ByteBuffer, subject: String, queue: String?, sid: UInt64) {
        buffer.writeStaticString("SUB ")
        buffer.writeString(subject)
        buffer.writeInteger(UInt8(ascii: " "))
        if let queue {
            buffer.writeString(queue)
            buffer.writeInteger(UInt8(ascii: " "))
        }
        writeDecimal(Int(sid), into: &buffer)
        buffer.writeStaticString(crlf)
    }

    static func writeUnsubscribe(into buffer: inout ByteBuffer, sid: UInt64, max: Int?) {
        buffer.writeStaticString("UNSUB ")
        writeDecimal(Int(sid), into: &buffer)
        if let max {
            buffer.writeInteger(UInt8(ascii: " "))
            writeDecimal(max, into: &buffer)
        }
        buffer.writeStaticString(crlf)
    }

    static func writePing(into buffer: inout ByteBuffer) { buffer.writeStaticString("PING\r\n") }
    static func writePong(into buffer: inout ByteBuffer) { buffer.writeStaticString("PONG\r\n") }

    static func writeConnect(into buffer: inout ByteBuffer, json: [UInt8]) {
        buffer.writeStaticString("CONNECT ")
        buffer.writeBytes(json)
        buffer.writeStaticString(crlf)
    }

    /// Encodes a client header block. Throws when a name or value cannot be carried.
    static func headerBlock(_ headers: NATSHeaders, allocator: ByteBufferAllocator) throws(NATSError) -> ByteBuffer {
        var block = allocator.buffer(capacity: 64)
        block.writeStaticString("NATS/1.0\r\n")
        for field in headers.fields {
            try validateHeader(field)
            block.writeString(field.name)
            block.writeStaticString(": ")
            block.writeString(field.value)
            block.writeStaticString(crlf)
        }
        block.writeStaticString(crlf)
        return block
    }

    static func validateHeader(_ field: NATSHeaders.Field) throws(NATSError) {
        if field.name.isEmpty {
            throw NATSError(.invalidHeader, "header name is empty")
        }
        for byte in field.name.utf8 where byte <= 0x20 || byte == UInt8(ascii: ":") || byte >= 0x7f {
            throw NATSError(.invalidHeader, "header name \"\(field.name)\" contains a space, colon or control character")
        }
        for byte in field.value.utf8 where byte == 0x0d || byte == 0x0a {
            throw NATSError(.invalidHeader, "value of header \"\(field.name)\" contains CR or LF")
        }
    }

    static func writeDecimal(_ value: Int, into buffer: inout ByteBuffer) {
        precondition(value >= 0)
        if value < 10 {
            buffer.writeInteger(UInt8(ascii: "0") + UInt8(value))
            return
        }
        var digits: (UInt64, UInt64) = (0, 0)  // up to 16 digits of scratch space
        var count = 0
        var remaining = value
        withUnsafeMutableBytes(of: &digits) { scratch in
            while remaining > 0 && count < 16 {
                scratch[15 - count] = UInt8(ascii: "0") + UInt8(remaining % 10)
                remaining /= 10
                count += 1
            }
            if remaining == 0 {
                buffer.writeBytes(UnsafeRawBufferPointer(rebasing: scratch[(16 - count)...]))
            }
        }
        if remaining != 0 { buffer.writeString(String(value)) }
    }
}
