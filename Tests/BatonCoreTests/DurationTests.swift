import BatonCore
import Testing

@Suite("Durations")
struct DurationTests {
    @Test(
        "valid durations parse",
        arguments: [
            ("500ms", Duration.milliseconds(500)),
            ("3s", .seconds(3)),
            ("1m", .seconds(60)),
            ("1h", .seconds(3600)),
            ("1m30s", .seconds(90)),
            ("1h2m3s", .seconds(3723)),
            ("1.5s", .milliseconds(1500)),
            ("0.25s", .milliseconds(250)),
            ("250us", .microseconds(250)),
            ("250µs", .microseconds(250)),
            ("250μs", .microseconds(250)),
            ("10ns", .nanoseconds(10)),
            ("1.5h", .seconds(5400)),
            ("2s500ms", .milliseconds(2500)),
            ("1.000000001s", .nanoseconds(1_000_000_001)),
            ("0", .zero),
            ("0s", .zero),
            ("-1s", .seconds(-1)),
            ("+2m", .seconds(120)),
            ("1.50000000000000000000s", .milliseconds(1500)),
        ])
    func parses(text: String, expected: Duration) throws {
        #expect(try Duration(parsing: text) == expected)
    }

    @Test(
        "invalid durations name the text and the reason",
        arguments: [
            ("", #"invalid duration "": expected a number and a unit, like "500ms" or "3s""#),
            ("-", #"invalid duration "-": expected a number and a unit, like "500ms" or "3s""#),
            ("3", #"invalid duration "3": missing unit after "3" (use h, m, s, ms, us or ns)"#),
            ("1.5", #"invalid duration "1.5": missing unit after "1.5" (use h, m, s, ms, us or ns)"#),
            ("3sec", #"invalid duration "3sec": unknown unit "sec" (use h, m, s, ms, us or ns)"#),
            ("1d", #"invalid duration "1d": unknown unit "d" (use h, m, s, ms, us or ns)"#),
            ("3 s", #"invalid duration "3 s": unknown unit " s" (use h, m, s, ms, us or ns)"#),
            ("s", #"invalid duration "s": expected a number at "s""#),
            ("1m s", #"invalid duration "1m s": unknown unit "m s" (use h, m, s, ms, us or ns)"#),
            (".5s", #"invalid duration ".5s": expected a number at ".5s""#),
            ("1.s", #"invalid duration "1.s": expected a digit after the "." in "1.s""#),
            ("30s1m", #"invalid duration "30s1m": units must go from largest to smallest, each at most once"#),
            ("1s1s", #"invalid duration "1s1s": units must go from largest to smallest, each at most once"#),
            ("0.5ns", #"invalid duration "0.5ns": finer than a nanosecond"#),
            ("1.0000000001s", #"invalid duration "1.0000000001s": finer than a nanosecond"#),
            ("3000000h", #"invalid duration "3000000h": too large"#),
        ])
    func refuses(text: String, message: String) {
        #expect(throws: DurationParseError.self) { try Duration(parsing: text) }
        do {
            _ = try Duration(parsing: text)
        } catch {
            #expect(error.description == message)
            #expect(error.text == text)
        }
    }

    @Test(
        "formatting picks the shortest string",
        arguments: [
            (Duration.zero, "0s"),
            (.milliseconds(500), "500ms"),
            (.milliseconds(100), "100ms"),
            (.seconds(3), "3s"),
            (.milliseconds(1500), "1.5s"),
            (.milliseconds(1250), "1.25s"),
            (.seconds(60), "1m"),
            (.seconds(90), "90s"),
            (.seconds(150), "150s"),
            (.seconds(3600), "1h"),
            (.seconds(3601), "1h1s"),
            (.seconds(5400), "90m"),
            (.seconds(86400), "24h"),
            (.microseconds(250), "250us"),
            (.microseconds(1500), "1.5ms"),
            (.nanoseconds(1), "1ns"),
            (.nanoseconds(1_000_000_001), "1.000000001s"),
            (.seconds(-2), "-2s"),
        ])
    func formats(duration: Duration, text: String) {
        #expect(duration.configString == text)
    }

    @Test("formatting round-trips through parsing")
    func roundTrips() throws {
        var values: [Duration] = [.nanoseconds(7), .microseconds(333), .milliseconds(1001), .seconds(61)]
        var nanoseconds: Int64 = 1
        while nanoseconds < 400 * 3_600_000_000_000 {
            values.append(.nanoseconds(nanoseconds))
            values.append(.nanoseconds(-nanoseconds))
            nanoseconds = nanoseconds * 7 + 3
        }
        for value in values {
            #expect(try Duration(parsing: value.configString) == value, "\(value.configString)")
        }
    }
}
