import Testing

@testable import Timestamps

@Suite("RFC 3339 timestamps")
struct RFC3339Tests {
    @Test(
        "formats UTC: the whole second, or rounded to the fractional digits asked for",
        arguments: [
            (0.0, 0, "1970-01-01T00:00:00Z"),
            (0.0, 6, "1970-01-01T00:00:00.000000Z"),
            (1_796_150_964.1234, 0, "2026-12-01T18:49:24Z"),
            (1_796_150_964.1234, 3, "2026-12-01T18:49:24.123Z"),
            (1_796_150_964.9999, 3, "2026-12-01T18:49:25.000Z"),
            (1_796_150_964.9994, 3, "2026-12-01T18:49:24.999Z"),
            (1_796_150_964.9999, 0, "2026-12-01T18:49:24Z"),
            (951_827_696.5, 6, "2000-02-29T12:34:56.500000Z"),
            (1_709_211_909.25, 6, "2024-02-29T13:05:09.250000Z"),
            (-1, 0, "1969-12-31T23:59:59Z"),
            (-0.5, 3, "1969-12-31T23:59:59.500Z"),
            (4_102_444_799, 6, "2099-12-31T23:59:59.000000Z"),
            (253_402_300_799, 0, "9999-12-31T23:59:59Z"),
            (-62_135_596_800, 0, "0001-01-01T00:00:00Z"),
            (1_714_566_896.5, 9, "2024-05-01T12:34:56.500000000Z"),
        ])
    func formats(seconds: Double, fractionDigits: Int, expected: String) {
        #expect(RFC3339.format(secondsSince1970: seconds, fractionDigits: fractionDigits) == expected)
    }

    @Test(
        "parses Z, offsets and any number of fractional digits",
        arguments: [
            ("2026-12-01T10:00:00Z", 1_796_119_200.0),
            ("2026-12-01t10:00:00z", 1_796_119_200.0),
            ("2026-12-01 10:00:00Z", 1_796_119_200.0),
            ("2026-12-01T10:00:00.250Z", 1_796_119_200.25),
            ("2026-12-01T12:00:00+02:00", 1_796_119_200.0),
            ("2026-12-01T12:00:00.5+02:00", 1_796_119_200.5),
            ("2026-12-01T05:30:00-04:30", 1_796_119_200.0),
            ("2000-02-29T00:00:00Z", 951_782_400.0),
            ("1969-12-31T23:59:59Z", -1.0),
            // Go's zero time, which nats-server writes for times never set.
            ("0001-01-01T00:00:00Z", -62_135_596_800.0),
        ])
    func parses(text: String, expected: Double) {
        #expect(RFC3339.parse(text) == expected)
    }

    @Test("the same instant in every spelling micro services use")
    func parsesVariantsOfOneInstant() throws {
        for text in [
            "2024-02-29T13:05:09.123Z", "2024-02-29T13:05:09.123000Z", "2024-02-29T13:05:09.123000000Z",
            "2024-02-29T15:05:09.123+02:00", "2024-02-29T08:35:09.123-04:30", "2024-02-29t13:05:09.123z",
        ] {
            let seconds = try #require(RFC3339.parse(text), "\(text)")
            #expect(abs(seconds - 1_709_211_909.123) < 0.000_001, "\(text)")
        }
    }

    @Test(
        "refuses what is not an RFC 3339 date-time",
        arguments: [
            "", "garbage", "yesterday", "2026-12-01", "2026-12-01T10:00:00", "2026-12-01T10:00Z",
            "2026-02-29T10:00:00Z", "2100-02-29T10:00:00Z", "2026-04-31T10:00:00Z", "2026-13-01T10:00:00Z",
            "2026-12-00T10:00:00Z", "2026-12-01T24:00:00Z", "2026-12-01T10:60:00Z", "2026-12-01T10:00:00.Z",
            "2026-12-01T10:00:00Zjunk", "2026-12-01T10:00:00+0200", "2026-12-01T10:00:00+24:00", "２０２６-12-01T10:00:00Z",
        ])
    func refuses(text: String) {
        #expect(RFC3339.parse(text) == nil)
    }

    @Test("parse reads back what format wrote, across centuries (seeded)")
    func roundTrip() {
        let seed: UInt64 = 3339
        var state = seed
        for _ in 0..<2000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            // Microseconds between 1900 and 2200.
            let microseconds = Int64(state >> 20) % 9_467_107_200_000_000 - 2_208_988_800_000_000
            let seconds = Double(microseconds) / 1_000_000
            for digits in [0, 3, 6] {
                let text = RFC3339.format(secondsSince1970: seconds, fractionDigits: digits)
                let back = RFC3339.parse(text)
                let tolerance = digits == 0 ? 1.0 : digits == 3 ? 0.0005 : 0.000_002
                #expect(back.map { abs($0 - seconds) <= tolerance } == true, "seed \(seed): \(seconds) as \(text) read back as \(String(describing: back))")
            }
        }
    }

    @Test("the calendar arithmetic inverts itself")
    func calendar() {
        for days: Int64 in [-719_468, -1, 0, 59, 60, 10_956, 11_016, 2_932_896] {
            let (year, month, day) = RFC3339.civilDate(fromDaysSinceEpoch: days)
            #expect(RFC3339.daysSinceEpoch(year: year, month: month, day: day) == days)
        }
    }
}
