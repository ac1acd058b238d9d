import FenceKeeper
import Testing

@Suite("Keeper protocol")
struct KeeperProtocolTests {
    @Test("commands survive a round trip through their line")
    func commandRoundTrip() throws {
        let commands: [KeeperCommand] = [
            .arm(token: 42, deadline: 1_234_567_890_123),
            .arm(token: UInt64.max, deadline: Int64.max),
            .disarm,
            .start(
                StartSpec(
                    token: 7, arguments: ["/bin/sh", "-c", "echo 'hello world' 100% \n\ttabs", ""],
                    environment: ["A=b c", "EMPTY=", "UNICODE=héllo ✓", "EQ=a=b"], workingDirectory: "/tmp/with space",
                    user: "nobody", group: "nogroup")),
            .start(StartSpec(token: 0, arguments: ["app"])),
            .signal(.term), .signal(.usr2),
            .kill,
            .ping(3),
        ]
        for command in commands {
            let line = command.line
            #expect(!line.contains("\n"))
            #expect(try KeeperCommand.parse(line) == command, "line: \(line)")
        }
    }

    @Test("START encodes spaces, percent signs and control characters, and nothing else")
    func startEncoding() {
        let line = KeeperCommand.start(StartSpec(token: 1, arguments: ["a b%c\nd", "é=x"])).line
        #expect(line == "START token=1 arg=a%20b%25c%0Ad arg=é=x")
    }

    @Test("reports survive a round trip through their line")
    func reportRoundTrip() throws {
        let reports: [KeeperReport] = [
            .ready(version: 1, pid: 12),
            .started(pid: 99),
            .startFailed("command /usr/bin/nope not found"),
            .killed(pid: 5, .deadline(token: 3, deadline: 100, now: 150)),
            .killed(pid: 5, .requested),
            .killed(pid: 5, .batondGone("end of input: batond closed the pipe")),
            .expired(token: 3, deadline: 100, now: 101),
            .exited(pid: 8, .exited(0)),
            .exited(pid: 8, .exited(255)),
            .exited(pid: 8, .signaled(9)),
            .pong(77),
            .error("malformed line \"x y\": 100%"),
        ]
        for report in reports {
            #expect(try KeeperReport.parse(report.line) == report, "line: \(report.line)")
        }
    }

    @Test(
        "malformed command lines are rejected with a clear reason",
        arguments: [
            ("", "empty line"),
            ("FOO", "unknown command 'FOO' (expected ARM, DISARM, START, SIGNAL, KILL or PING)"),
            ("arm 1 2", "unknown command 'arm' (expected ARM, DISARM, START, SIGNAL, KILL or PING)"),
            ("ARM 1", "expected ARM <token> <deadline-ns>"),
            ("ARM 1 2 3", "expected ARM <token> <deadline-ns>"),
            ("ARM x 2", "token 'x' is not a decimal number"),
            ("ARM -1 2", "token '-1' is not a decimal number"),
            ("ARM 1 +2", "deadline '+2' is not a decimal number"),
            ("ARM 1 9223372036854775808", "deadline '9223372036854775808' is too large"),
            ("ARM 18446744073709551616 1", "token '18446744073709551616' is too large"),
            ("ARM  1 2", "fields must be separated by exactly one space, with none leading or trailing"),
            ("ARM 1 2 ", "fields must be separated by exactly one space, with none leading or trailing"),
            ("ARM 1 2\r", "a carriage return in the line (fields must be %-escaped)"),
            ("ARM 1\t2", "control character 0x9 in the line (fields must be %-escaped)"),
            ("DISARM now", "expected DISARM with nothing after it"),
            ("KILL -9", "expected KILL with nothing after it"),
            ("SIGNAL", "expected SIGNAL <name>"),
            ("SIGNAL KILL", "unknown signal 'KILL' (expected one of TERM, INT, HUP, QUIT, USR1, USR2; use KILL to kill)"),
            ("SIGNAL 15", "unknown signal '15' (expected one of TERM, INT, HUP, QUIT, USR1, USR2; use KILL to kill)"),
            ("PING", "expected PING <number>"),
            ("START", "START needs token=<n>"),
            ("START token=1", "START needs at least one arg="),
            ("START arg=/bin/true", "START needs token=<n>"),
            ("START token=1 token=2 arg=x", "START field token given twice"),
            ("START token=one arg=x", "token 'one' is not a decimal number"),
            ("START token=1 arg=", "START's first arg (the program) is empty"),
            ("START token=1 arg=x bogus", "START field 'bogus' is not key=value"),
            ("START token=1 arg=x shell=/bin/sh", "unknown START field 'shell' (expected token, arg, env, cwd, user or group)"),
            ("START token=1 arg=x env=NOVALUE", "START env entry 'NOVALUE' is not NAME=value"),
            ("START token=1 arg=x env==v", "START env entry '=v' is not NAME=value"),
            ("START token=1 arg=a%2", "START field arg: a % must be followed by two hex digits"),
            ("START token=1 arg=a%zz", "START field arg: a % must be followed by two hex digits"),
            ("START token=1 arg=a%00b", "START field arg: NUL bytes (%00) are not allowed"),
            ("START token=1 arg=%FF", "START field arg: the decoded bytes are not UTF-8"),
            ("START token=1 arg=x cwd=/a cwd=/b", "START field cwd given twice"),
            ("START token=1 arg=x user=", "START field user is empty"),
        ])
    func malformedCommand(line: String, reason: String) {
        #expect(throws: KeeperProtocolError(line: line, reason: reason)) {
            try KeeperCommand.parse(line)
        }
    }

    @Test("the error names the offending line, shortened")
    func errorDescription() {
        let error = KeeperProtocolError(line: "FOO bar", reason: "unknown command 'FOO'")
        #expect(error.description == "malformed keeper line \"FOO bar\": unknown command 'FOO'")
        let long = KeeperProtocolError(line: String(repeating: "x", count: 500), reason: "r")
        #expect(long.line.count == 120)
        #expect(long.line.hasSuffix("..."))
    }

    @Test(
        "malformed report lines are rejected",
        arguments: [
            ("STARTED", "expected STARTED <pid>"),
            ("STARTED 0", "pid '0' out of range"),
            ("STARTED 4294967296", "pid '4294967296' out of range"),
            ("EXITED 5 core 1", "expected exit or signal, not 'core'"),
            ("EXITED 5 exit 256", "status 256 out of range"),
            ("KILLED 5 boredom", "unknown kill cause 'boredom'"),
            ("KILLED 5 deadline 1 2", "expected KILLED <pid> deadline <token> <deadline-ns> <now-ns>"),
            ("ERROR a b", "expected ERROR <message>"),
            ("HELLO", "unknown report 'HELLO'"),
        ])
    func malformedReport(line: String, reason: String) {
        #expect(throws: KeeperProtocolError(line: line, reason: reason)) {
            try KeeperReport.parse(line)
        }
    }

    @Test("exit statuses describe themselves")
    func exitStatusDescriptions() {
        #expect(ExitStatus.exited(3).description == "exited with status 3")
        #expect(ExitStatus.signaled(9).description == "killed by signal 9 (SIGKILL)")
        #expect(ExitStatus.signaled(40).description == "killed by signal 40")
        #expect(ExitStatus.exited(0).isSuccess)
    }
}
