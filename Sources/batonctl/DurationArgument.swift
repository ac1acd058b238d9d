import ArgumentParser
import BatonCore

/// A positive duration on the command line, written as in the config: `500ms`, `2s`, `1m`.
struct DurationArgument: ExpressibleByArgument, Sendable {
    var duration: Duration

    init(_ duration: Duration) {
        self.duration = duration
    }

    init?(argument: String) {
        guard let duration = try? Duration(parsing: argument), duration > .zero else { return nil }
        self.duration = duration
    }

    var defaultValueDescription: String { duration.configString }
}
