import BatonCore
import Testing

@Suite("RFC 3339 timestamps")
struct RFC3339Tests {
    @Test(
        "formats UTC: the whole second, or the nearest millisecond",
        arguments: [
            (0.0, false, "1970-01-01T00:00:00Z"),
            (1_796_150_964.1234, false, "2026-12-01T18:49:24Z"),
            (1_796_150_964.1234, true, "2026-12-01T18:49:24.123Z"),
            (1_796_150_964.9999, true, "2026-12-01T18:49:25.000Z"),
            (1_796_150_964.9994, true, "2026-12-01T18:49:24.999Z"),
            (1_796_150_964.9999, false, "2026-12-01T18:49:24Z"),
            (951_782_400, false, "2000-02-29T00:00:00Z"),
            (-1, false, "1969-12-31T23:59:59Z"),
            (-0.5, true, "1969-12-31T23:59:59.500Z"),
            (253_402_300_799, false, "9999-12-31T23:59:59Z"),
        ])
    func formats(seconds: Double, milliseconds: Bool, expected: String) {
        #expect(RFC3339.format(secondsSince1970: seconds, milliseconds: milliseconds) == expected)
    }

    @Test(
        "parses Z, offsets and fractions",
        arguments: [
            ("2026-12-01T10:00:00Z", 1_796_119_200.0),
            ("2026-12-01t10:00:00z", 1_796_119_200.0),
            ("2026-12-01T10:00:00.250Z", 1_796_119_200.25),
            ("2026-12-01T12:00:00+02:00", 1_796_119_200.0),
            ("2026-12-01T12:00:00.5+02:00", 1_796_119_200.5),
            ("2026-12-01T05:30:00-04:30", 1_796_119_200.0),
            ("2000-02-29T00:00:00Z", 951_782_400.0),
            ("1969-12-31T23:59:59Z", -1.0),
        ])
    func parses(text: String, expected: Double) {
        #expect(RFC3339.parse(text) == expected)
    }

    @Test(
        "refuses what is not an RFC 3339 date-time",
        arguments: [
            "", "garbage", "2026-12-01", "2026-12-01T10:00:00", "2026-12-01 10:00:00Z", "2026-12-01T10:00Z",
            "2026-02-30T10:00:00Z", "2026-13-01T10:00:00Z", "2026-12-00T10:00:00Z", "2026-12-01T24:00:00Z",
            "2026-12-01T10:60:00Z", "2026-12-01T10:00:00.Z", "2026-12-01T10:00:00Zjunk", "2026-12-01T10:00:00+0200",
            "2026-12-01T10:00:00+24:00", "２０２６-12-01T10:00:00Z",
        ])
    func refuses(text: String) {
        #expect(RFC3339.parse(text) == nil)
    }

    @Test("parse reads back what format wrote, over random instants (seeded)")
    func roundTrip() {
        let seed: UInt64 = 3339
        var state = seed
        for _ in 0..<2000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let milliseconds = Double(Int64(bitPattern: state >> 1) % 253_402_300_799_000) / 1000
            let seconds = milliseconds.rounded(.down)
            let whole = RFC3339.format(secondsSince1970: seconds)
            #expect(RFC3339.parse(whole) == seconds, "seed \(seed): \(whole)")
            let precise = RFC3339.format(secondsSince1970: milliseconds, milliseconds: true)
            let back = RFC3339.parse(precise)
            #expect(back.map { abs($0 - milliseconds) < 0.001 } == true, "seed \(seed): \(precise) read back as \(String(describing: back))")
        }
    }
}
