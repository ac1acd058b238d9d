#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// RFC 3339 timestamps in UTC (`2026-12-05T18:49:24Z`, `2026-12-05T18:49:24.123Z`), as node
/// records, status and events carry them.
///
/// Written on the C library's calendar functions rather than Foundation's formatters: those look
/// up the host's time zone through ICU on first use, which maps a few megabytes of ICU code and
/// data into every batond for a string that is always UTC.
public enum RFC3339 {
    /// `seconds` since 1970 as `YYYY-MM-DDTHH:MM:SSZ` (the second it falls in), or with the
    /// nearest millisecond (`.fff` before the `Z`) when `milliseconds` is true.
    public static func format(secondsSince1970 seconds: Double, milliseconds: Bool = false) -> String {
        var whole = seconds.rounded(.down)
        var fractionMilliseconds = milliseconds ? Int(((seconds - whole) * 1000).rounded()) : 0
        if fractionMilliseconds == 1000 {
            whole += 1
            fractionMilliseconds = 0
        }
        var time = time_t(whole)
        var fields = tm()
        guard gmtime_r(&time, &fields) != nil else { return "\(seconds)" }
        var text = pad(Int(fields.tm_year) + 1900, 4) + "-" + pad(Int(fields.tm_mon) + 1, 2) + "-" + pad(Int(fields.tm_mday), 2)
        text += "T" + pad(Int(fields.tm_hour), 2) + ":" + pad(Int(fields.tm_min), 2) + ":" + pad(Int(fields.tm_sec), 2)
        if milliseconds {
            text += "." + pad(fractionMilliseconds, 3)
        }
        return text + "Z"
    }

    /// Seconds since 1970 of `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (`t` and `z` accepted too);
    /// nil for anything else.
    public static func parse(_ text: String) -> Double? {
        let bytes = Array(text.utf8)
        var index = 0
        func number(_ digits: Int) -> Int? {
            guard index + digits <= bytes.count else { return nil }
            var value = 0
            for byte in bytes[index..<index + digits] {
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
            }
            index += digits
            return value
        }
        func expect(_ characters: String) -> Bool {
            guard index < bytes.count, characters.utf8.contains(bytes[index]) else { return false }
            index += 1
            return true
        }
        guard let year = number(4), expect("-"), let month = number(2), expect("-"), let day = number(2), expect("Tt"),
            let hour = number(2), expect(":"), let minute = number(2), expect(":"), let second = number(2)
        else { return nil }
        guard (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else { return nil }
        var fraction = 0.0
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            var scale = 0.1
            let start = index
            while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
                fraction += Double(bytes[index] - UInt8(ascii: "0")) * scale
                scale /= 10
                index += 1
            }
            guard index > start else { return nil }
        }
        var offset = 0
        if expect("Zz") {
        } else if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
            let sign = bytes[index] == UInt8(ascii: "-") ? -1 : 1
            index += 1
            guard let hours = number(2), expect(":"), let minutes = number(2), hours < 24, minutes < 60 else { return nil }
            offset = sign * (hours * 3600 + minutes * 60)
        } else {
            return nil
        }
        guard index == bytes.count else { return nil }
        var fields = tm()
        fields.tm_year = Int32(year - 1900)
        fields.tm_mon = Int32(month - 1)
        fields.tm_mday = Int32(day)
        fields.tm_hour = Int32(hour)
        fields.tm_min = Int32(minute)
        fields.tm_sec = Int32(second)
        let utc = timegm(&fields)
        // timegm normalises out-of-range days (February 30th becomes March 2nd): refuse those.
        guard Int(fields.tm_mday) == day, Int(fields.tm_mon) == month - 1 else { return nil }
        return Double(Int(utc) - offset) + fraction
    }

    private static func pad(_ value: Int, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}
