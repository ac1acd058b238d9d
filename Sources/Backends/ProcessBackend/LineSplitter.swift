/// Cuts a byte stream into lines of at most `maxLength` bytes: a longer line comes out in
/// pieces of `maxLength` bytes, so memory stays bounded and nothing is lost. A trailing `\r` is
/// dropped; bytes that are not UTF-8 are replaced.
struct LineSplitter: Sendable {
    let maxLength: Int
    private var pending: [UInt8] = []

    init(maxLength: Int) {
        precondition(maxLength > 0)
        self.maxLength = maxLength
    }

    /// Feeds `bytes`; returns the complete lines (and full-length pieces) they finish.
    mutating func append(_ bytes: some Sequence<UInt8>) -> [String] {
        var lines: [String] = []
        for byte in bytes {
            if byte == UInt8(ascii: "\n") {
                lines.append(Self.text(pending))
                pending.removeAll(keepingCapacity: true)
            } else {
                pending.append(byte)
                if pending.count >= maxLength {
                    lines.append(Self.text(pending))
                    pending.removeAll(keepingCapacity: true)
                }
            }
        }
        return lines
    }

    /// The unterminated rest, if any (at end of stream).
    mutating func finish() -> String? {
        defer { pending.removeAll() }
        return pending.isEmpty ? nil : Self.text(pending)
    }

    private static func text(_ bytes: [UInt8]) -> String {
        var slice = bytes[...]
        if slice.last == UInt8(ascii: "\r") { slice = slice.dropLast() }
        return String(decoding: slice, as: UTF8.self)
    }
}
