import ArgumentParser
import BatonCore
import Foundation
import Logging
import NATS
import Supervisor

/// How to reach the cluster: every subcommand that talks to the nodes takes these.
struct ConnectionOptions: ParsableArguments {
    static let defaultServer = "nats://127.0.0.1:4222"
    static let defaultCluster = "demo"

    @Option(
        name: .customLong("config"),
        help: ArgumentHelp(
            "A batond config to take the NATS servers, credentials, TLS files and cluster from (options given here override it).",
            valueName: "file"))
    var configPath: String?

    @Option(
        name: .customLong("nats"),
        help: ArgumentHelp(
            "A NATS server URL; repeat for several (default: the config's servers, or \(defaultServer)).", valueName: "url"))
    var servers: [String] = []

    @Option(help: ArgumentHelp("The cluster name (default: the config's cluster, or \(defaultCluster)).", valueName: "name"))
    var cluster: String?

    @Option(name: .customLong("creds"), help: ArgumentHelp("A NATS credentials (.creds) file.", valueName: "file"))
    var credentials: String?

    @Option(help: ArgumentHelp("A NATS user name (with --password).", valueName: "user"))
    var user: String?

    @Option(help: ArgumentHelp("The password of --user.", valueName: "password"))
    var password: String?

    @Option(help: ArgumentHelp("A NATS authorization token.", valueName: "token"))
    var token: String?

    @Option(name: .customLong("tls-ca"), help: ArgumentHelp("A PEM file of certificate authorities to trust (turns TLS on).", valueName: "file"))
    var tlsCA: String?

    @Option(name: .customLong("tls-cert"), help: ArgumentHelp("A PEM client certificate (with --tls-key).", valueName: "file"))
    var tlsCertificate: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("The PEM private key of --tls-cert.", valueName: "file"))
    var tlsKey: String?

    @Option(help: ArgumentHelp("How long to collect the nodes' status replies.", valueName: "duration"))
    var wait = DurationArgument(.milliseconds(500))

    @Flag(name: .shortAndLong, help: "Log NATS client activity to standard error.")
    var verbose = false

    func validate() throws {
        let methods = [credentials != nil, user != nil || password != nil, token != nil].filter { $0 }.count
        if methods > 1 {
            throw ValidationError("--creds, --user/--password and --token are alternatives: give at most one")
        }
        if (user == nil) != (password == nil) {
            throw ValidationError("--user and --password go together")
        }
        if (tlsCertificate == nil) != (tlsKey == nil) {
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        if let cluster, !ControlSubjects.isValidToken(cluster) {
            throw ValidationError("--cluster \"\(cluster)\" cannot be part of a NATS subject (no '.', '*', '>' or spaces)")
        }
    }

    /// The settings after merging the config file (if any) with the command line.
    struct Resolved {
        var cluster: String
        var clientOptions: NATSClientOptions
    }

    func resolve() throws -> Resolved {
        var config: BatonConfig?
        if let configPath {
            do {
                config = try BatonConfig.load(path: configPath)
            } catch {
                throw CLIError("cannot use --config \(configPath):\n\(error.description)")
            }
        }
        let servers = !servers.isEmpty ? servers : config?.nats.servers ?? [Self.defaultServer]
        var options = NATSClientOptions(servers: servers)
        options.name = "batonctl"
        options.connectTimeout = .seconds(3)
        options.maxReconnectRounds = 3
        if let credentials {
            options.authentication = .credentialsFile(path: credentials)
        } else if let user, let password {
            options.authentication = .userPassword(user: user, password: password)
        } else if let token {
            options.authentication = .token(token)
        } else if let auth = config?.nats.auth {
            options.authentication = try Self.authentication(auth)
        }
        if tlsCA != nil || tlsCertificate != nil {
            options.tls = NATSTLSOptions(caFile: tlsCA, certificateFile: tlsCertificate, keyFile: tlsKey)
        } else if let tls = config?.nats.tls {
            options.tls = NATSTLSOptions(
                caFile: tls.caPath, certificateFile: tls.clientCertificate?.certificatePath, keyFile: tls.clientCertificate?.keyPath)
        }
        return Resolved(cluster: cluster ?? config?.cluster ?? Self.defaultCluster, clientOptions: options)
    }

    private static func authentication(_ auth: NATSAuth) throws -> NATSAuthentication {
        switch auth {
        case .none: return .none
        case .credentials(let path): return .credentialsFile(path: path)
        case .userPassword(let user, let password): return .userPassword(user: user, password: password)
        case .token(let token): return .token(token)
        case .nkeySeedFile(let path):
            do {
                let seed = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                return .nkeySeed(seed)
            } catch {
                throw CLIError("cannot read the nkey seed file \(path): \(error.localizedDescription)")
            }
        }
    }

    /// Sets up logging, connects, and runs `body` with a session; closes the connection after.
    func withSession<T>(_ body: (Session) async throws -> T) async throws -> T {
        bootstrapLogging(verbose: verbose)
        let resolved = try resolve()
        let logger = Logger(label: "batonctl.nats")
        let client: NATSClient
        do {
            client = try await NATSClient.connect(options: resolved.clientOptions, logger: logger)
        } catch {
            throw CLIError("cannot connect to NATS at \(resolved.clientOptions.servers.joined(separator: ", ")): \(error)")
        }
        let session = Session(
            client: client, control: ControlClient(client: client, cluster: resolved.cluster),
            servers: resolved.clientOptions.servers, wait: wait.duration)
        do {
            let result = try await body(session)
            await client.close()
            return result
        } catch {
            await client.close()
            throw error
        }
    }
}

/// A connection to the cluster for one command.
struct Session {
    var client: NATSClient
    var control: ControlClient
    var servers: [String]
    var wait: Duration

    var cluster: String { control.subjects.cluster }

    /// Every node's status; fails when nobody answers. Replies that are not a status are
    /// reported on standard error.
    func statuses() async throws -> [NodeStatus] {
        let replies = try await control.statuses(window: wait)
        for problem in replies.problems {
            printError("warning: \(problem)")
        }
        guard !replies.statuses.isEmpty else {
            throw CLIError(
                "no baton node answered on \(control.subjects.status) (is batond running and connected to \(servers.joined(separator: ", "))?)")
        }
        return replies.statuses
    }

    /// The nodes' reports about `app`, by node; fails with the apps the nodes do run when none
    /// runs `app`.
    func reports(for app: String, in statuses: [NodeStatus]) throws -> [(node: String, app: AppStatus)] {
        let reports = statuses.compactMap { status in status.apps.first { $0.name == app }.map { (node: status.node, app: $0) } }
        guard !reports.isEmpty else {
            let known = Set(statuses.flatMap { $0.apps.map(\.name) }).sorted()
            let nodes = statuses.map(\.node).joined(separator: ", ")
            throw CLIError(
                "no node runs app \"\(app)\" in cluster \(cluster) (nodes that answered: \(nodes); their apps: \(known.isEmpty ? "none" : known.joined(separator: ", ")))")
        }
        return reports
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// Bootstraps swift-log for this process: errors only, or everything with `--verbose`. Each
/// batonctl process runs one command, which calls this once.
func bootstrapLogging(verbose: Bool) {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = verbose ? .debug : .error
        return handler
    }
}
