import ArgumentParser
import BatonCore

struct ValidateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check a batond config file without starting anything.",
        discussion: """
            Prints every error as file:line:column: key.path: message on standard error and \
            exits with status 1, or prints "FILE: OK (N apps)" and exits with status 0. Needs \
            no NATS.
            """
    )

    @Argument(help: ArgumentHelp("The config file to check.", valueName: "file"))
    var file: String

    func run() async throws {
        let config: BatonConfig
        do {
            config = try BatonConfig.load(path: file)
        } catch {
            for problem in error.errors {
                printError(problem.description)
            }
            printError("\(file): \(error.errors.count) error\(error.errors.count == 1 ? "" : "s")")
            throw ExitCode.failure
        }
        print("\(file): OK (\(config.apps.count) app\(config.apps.count == 1 ? "" : "s"))")
    }
}
