import Foundation

extension Array where Element == UInt8 {
    /// Appends `value` in big-endian byte order (the record formats and the WAL are big-endian).
    @inline(__always) package mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }
}

/// A checksum or hash as 16 lower-case hex digits, as messages, snapshot metadata and
/// `batonctl replica status` show it.
package func hex(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
}
