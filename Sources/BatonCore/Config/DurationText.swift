/// Durations as they are written in Baton's config: `500ms`, `3s`, `1m30s`, `1.5s`, `250us`.
///
/// Grammar (close to Go's `time.ParseDuration`, which NATS users know, but stricter):
///
/// - An optional sign (`-` or `+`), then one or more parts, each a number and a unit, with no
///   spaces: `1h`, `1m30s`, `1.5s`, `2h45m`.
/// - A number is digits with an optional fraction (`1.5`); digits are required on both sides of
///   the point (`.5s` and `1.s` are refused).
/// - Units, largest first: `h`, `m`, `s`, `ms`, `us` (also `µs` or `μs`), `ns`. Each unit may
///   appear once, and units go from largest to smallest (`30s1m` is refused as a likely typo).
///   There are no days: write `24h`.
/// - A lone `0` needs no unit.
/// - The value must be a whole number of nanoseconds and fit in 64 bits of nanoseconds (about
///   292 years).
///
/// Whether a negative or zero value is acceptable is up to the caller (the config validation
/// refuses it where it makes no sense).
extension Duration {
    /// Parses a duration written as in Baton's config, such as `500ms`, `3s` or `1m30s`.
    ///
    /// - Throws: ``DurationParseError`` quoting the text and saying what is wrong with it.
    public init(parsing text: String) throws(DurationParseError) {
        self = .nanoseconds(try DurationText.parseNanoseconds(text))
    }

    /// The shortest string that ``init(parsing:)`` reads back as this duration, such as `90s`,
    /// `1.5s` or `250ms`. Parts smaller than a nanosecond are dropped.
    ///
    /// Among representations of equal length, one with fewer than four leading digits wins
    /// (`1.000000001s`, not `1000000001ns`), then one without a decimal point (150 seconds is
    /// `150s`, not `2.5m`), then one with fewer parts, then one with the larger unit.
    public var configString: String {
        DurationText.format(nanoseconds: DurationText.nanoseconds(of: self))
    }
}

/// A duration that could not be parsed. Its description quotes the text and gives the reason,
/// for example `invalid duration "3": missing unit after "3" (use h, m, s, ms, us or ns)`.
public struct DurationParseError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The text that was parsed.
    public var text: String
    /// Why the text is not a duration.
    public var reason: String

    /// Creates an error for `text`.
    public init(text: String, reason: String) {
        self.text = text
        self.reason = reason
    }

    /// `invalid duration "TEXT": REASON`.
    public var description: String { "invalid duration \(quoted(text)): \(reason)" }
}

enum DurationText {
    struct Unit {
        let names: [String]
        let nanoseconds: Int128
        var name: String { names[0] }
    }

    /// Largest first; the index is the unit's rank.
    static let units: [Unit] = [
        Unit(names: ["h"], nanoseconds: 3_600_000_000_000),
        Unit(names: ["m"], nanoseconds: 60_000_000_000),
        Unit(names: ["s"], nanoseconds: 1_000_000_000),
        Unit(names: ["ms"], nanoseconds: 1_000_000),
        Unit(names: ["us", "\u{00B5}s", "\u{03BC}s"], nanoseconds: 1_000),
        Unit(names: ["ns"], nanoseconds: 1),
    ]

    static let unitList = "use h, m, s, ms, us or ns"

    static func parseNanoseconds(_ text: String) throws(DurationParseError) -> Int64 {
        func fail(_ reason: String) -> DurationParseError { DurationParseError(text: text, reason: reason) }

        let scalars = Array(text.unicodeScalars)
        var index = 0
        var negative = false
        if index < scalars.count, scalars[index] == "-" || scalars[index] == "+" {
            negative = scalars[index] == "-"
            index += 1
        }
        if index == scalars.count {
            throw fail("expected a number and a unit, like \"500ms\" or \"3s\"")
        }
        if scalars[index...].elementsEqual(["0"]) { return 0 }

        func isDigit(_ scalar: Unicode.Scalar) -> Bool { ("0"..."9").contains(scalar) }
        func rest(from start: Int) -> String {
            var string = ""
            string.unicodeScalars.append(contentsOf: scalars[start...])
            return string
        }

        var total: Int128 = 0
        var previousRank = -1
        while index < scalars.count {
            let numberStart = index
            var integer: Int128 = 0
            var integerDigits = 0
            while index < scalars.count, isDigit(scalars[index]) {
                integerDigits += 1
                if integerDigits > 24 { throw fail("too large") }
                integer = integer * 10 + Int128(scalars[index].value - 48)
                index += 1
            }
            if integerDigits == 0 {
                throw fail("expected a number at \(quoted(rest(from: numberStart)))")
            }
            var fractionDigits: [UInt32] = []
            if index < scalars.count, scalars[index] == "." {
                index += 1
                while index < scalars.count, isDigit(scalars[index]) {
                    fractionDigits.append(scalars[index].value - 48)
                    index += 1
                }
                if fractionDigits.isEmpty {
                    throw fail("expected a digit after the \".\" in \(quoted(rest(from: numberStart)))")
                }
            }
            var numberText = ""
            numberText.unicodeScalars.append(contentsOf: scalars[numberStart..<index])

            let unitStart = index
            while index < scalars.count, !isDigit(scalars[index]), scalars[index] != "." {
                index += 1
            }
            var unitText = ""
            unitText.unicodeScalars.append(contentsOf: scalars[unitStart..<index])
            if unitText.isEmpty {
                throw fail("missing unit after \(quoted(numberText)) (\(unitList))")
            }
            guard let rank = units.firstIndex(where: { $0.names.contains(unitText) }) else {
                throw fail("unknown unit \(quoted(unitText)) (\(unitList))")
            }
            if rank <= previousRank {
                throw fail("units must go from largest to smallest, each at most once")
            }
            previousRank = rank
            let unit = units[rank].nanoseconds

            while fractionDigits.last == 0 { fractionDigits.removeLast() }
            // A fraction of more than 13 significant digits is never a whole number of
            // nanoseconds, even in hours (3.6e12 ns).
            if fractionDigits.count > 13 { throw fail("finer than a nanosecond") }
            var fraction: Int128 = 0
            var scale: Int128 = 1
            for digit in fractionDigits {
                fraction = fraction * 10 + Int128(digit)
                scale *= 10
            }
            let fractionNanoseconds = fraction * unit
            if !fractionNanoseconds.isMultiple(of: scale) { throw fail("finer than a nanosecond") }

            total += integer * unit + fractionNanoseconds / scale
            if total > Int128(Int64.max) { throw fail("too large") }
        }
        return Int64(negative ? -total : total)
    }

    static func nanoseconds(of duration: Duration) -> Int128 {
        let (seconds, attoseconds) = duration.components
        return Int128(seconds) * 1_000_000_000 + Int128(attoseconds / 1_000_000_000)
    }

    static func format(nanoseconds value: Int128) -> String {
        if value == 0 { return "0s" }
        if value < 0 { return "-" + format(nanoseconds: -value) }

        struct Candidate {
            var text: String
            var hasPoint: Bool
            var parts: Int
            var unitRank: Int
            /// Fewer than four digits before the point or the first unit.
            var readable: Bool { text.prefix { $0.isNumber }.count < 4 }
        }
        var candidates: [Candidate] = []

        // One part in a single unit, with a fraction when it is a finite decimal (never "0.5s":
        // the unit must fit at least once).
        for (rank, unit) in units.enumerated() where value >= unit.nanoseconds {
            if let number = decimal(value, per: unit.nanoseconds) {
                candidates.append(Candidate(
                    text: number + unit.name, hasPoint: number.contains("."), parts: 1, unitRank: rank))
            }
        }

        // Several parts: whole hours and minutes, then the remainder in the largest unit that fits.
        var parts: [String] = []
        var rest = value
        for unit in units.prefix(2) where rest >= unit.nanoseconds {
            parts.append("\(rest / unit.nanoseconds)\(unit.name)")
            rest %= unit.nanoseconds
        }
        var lastRank = 1
        if rest > 0, let rank = units.indices.dropFirst(2).first(where: { rest >= units[$0].nanoseconds }),
           let number = decimal(rest, per: units[rank].nanoseconds) {
            parts.append(number + units[rank].name)
            lastRank = rank
        }
        if parts.count > 1 {
            let text = parts.joined()
            candidates.append(Candidate(
                text: text, hasPoint: text.contains("."), parts: parts.count, unitRank: lastRank))
        }

        let best = candidates.min { a, b in
            if a.text.count != b.text.count { return a.text.count < b.text.count }
            if a.readable != b.readable { return a.readable }
            if a.hasPoint != b.hasPoint { return !a.hasPoint }
            if a.parts != b.parts { return a.parts < b.parts }
            return a.unitRank < b.unitRank
        }
        // Nanoseconds always divide evenly, so there is at least one candidate.
        return best?.text ?? "\(value)ns"
    }

    /// `value / unit` as a decimal without trailing zeros, or nil when it does not end within
    /// 13 digits after the point.
    private static func decimal(_ value: Int128, per unit: Int128) -> String? {
        let whole = value / unit
        var remainder = value % unit
        if remainder == 0 { return "\(whole)" }
        var digits = ""
        for _ in 0..<13 {
            remainder *= 10
            digits.append(String(remainder / unit))
            remainder %= unit
            if remainder == 0 { return "\(whole).\(digits)" }
        }
        return nil
    }
}

/// `text` in double quotes, with quotes, backslashes and control characters escaped, and cut to
/// 60 characters so one bad value cannot flood a message.
func quoted(_ text: String) -> String {
    var body = ""
    var count = 0
    for character in text {
        if count == 60 {
            body += "…"
            break
        }
        count += 1
        switch character {
        case "\"": body += "\\\""
        case "\\": body += "\\\\"
        case "\n": body += "\\n"
        case "\t": body += "\\t"
        case "\r": body += "\\r"
        default:
            if character.unicodeScalars.allSatisfy({ $0.value < 0x20 || $0.value == 0x7F }) {
                body += character.unicodeScalars.map { "\\u{\(String($0.value, radix: 16))}" }.joined()
            } else {
                body.append(character)
            }
        }
    }
    return "\"\(body)\""
}
