import NIOConcurrencyHelpers

/// Unique identifiers in the NATS style: 22 base-62 characters, a random 12-character prefix
/// followed by a 10-character sequence that advances by a random increment. Used for inbox names,
/// object chunk subjects and message ids.
public struct NUID: Sendable {
    private static let digits = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
    private static let base: UInt64 = 62
    private static let prefixLength = 12
    private static let sequenceLength = 10
    private static let maxSequence: UInt64 = 839_299_365_868_340_224  // 62^10
    private static let minIncrement: UInt64 = 33
    private static let maxIncrement: UInt64 = 333

    private var prefix: [UInt8]
    private var sequence: UInt64
    private var increment: UInt64

    /// Creates a generator with a fresh random prefix.
    public init() {
        prefix = []
        sequence = 0
        increment = 0
        randomize()
    }

    /// Returns the next identifier.
    public mutating func next() -> String {
        sequence += increment
        if sequence >= Self.maxSequence {
            randomize()
        }
        var bytes = prefix
        bytes.reserveCapacity(Self.prefixLength + Self.sequenceLength)
        var tail = [UInt8](repeating: 0, count: Self.sequenceLength)
        var remaining = sequence
        for index in stride(from: Self.sequenceLength - 1, through: 0, by: -1) {
            tail[index] = Self.digits[Int(remaining % Self.base)]
            remaining /= Self.base
        }
        bytes.append(contentsOf: tail)
        return String(decoding: bytes, as: UTF8.self)
    }

    private mutating func randomize() {
        var generator = SystemRandomNumberGenerator()
        prefix = (0..<Self.prefixLength).map { _ in Self.digits[Int.random(in: 0..<62, using: &generator)] }
        sequence = UInt64.random(in: 0..<Self.maxSequence, using: &generator)
        increment = UInt64.random(in: Self.minIncrement..<Self.maxIncrement, using: &generator)
    }

    private static let shared = NIOLockedValueBox(NUID())

    /// A new identifier from a process-wide generator.
    public static func next() -> String {
        shared.withLockedValue { $0.next() }
    }
}
