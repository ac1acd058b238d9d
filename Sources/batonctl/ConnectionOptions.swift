import ArgumentParser
import BatonCore
import Foundation
import Logging
import NATS
import Control
import Permissions

/// How to reach the cluster: every subcommand that talks to the nodes takes these.
struct ConnectionOptions: ParsableArguments {
    static let defaultServer = "nats://127.0.0.1:4222"
    static let defaultCluster = "demo"

    /// The config batond reads by default, used when present and no --config or $BATON_CONFIG names another.
    static let defaultConfigPath = "/etc/baton/baton.yaml"

    @Option(
        name: .customLong("config"),
        help: ArgumentHelp(
            "A batond config to take the NATS servers, credentials, TLS files and cluster from (options given here override it; default: $BATON_CONFIG, else \(defaultConfigPath) when present).",
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

    @Flag(name: .shortAndLong, help: "Say which config, servers and cluster are used, and log NATS client activity, on standard error.")
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

    /// Where the config comes from: --config, then $BATON_CONFIG, then the default path when
    /// it exists. An unreadable default is an error unless --nats and --cluster say everything
    /// it would have said about where the cluster is.
    enum ConfigSource: Equatable {
        case option(String)
        case environment(String)
        case defaultPath(String)
        case none

        var path: String? {
            switch self {
            case .option(let path), .environment(let path), .defaultPath(let path): path
            case .none: nil
            }
        }

        var origin: String {
            switch self {
            case .option: "--config"
            case .environment: "$BATON_CONFIG"
            case .defaultPath: "the default config"
            case .none: "no config"
            }
        }
    }

    func configSource(environment: [String: String] = ProcessInfo.processInfo.environment, defaultPath: String = defaultConfigPath) -> ConfigSource {
        if let configPath { return .option(configPath) }
        if let path = environment["BATON_CONFIG"], !path.isEmpty { return .environment(path) }
        if FileManager.default.fileExists(atPath: defaultPath) { return .defaultPath(defaultPath) }
        return .none
    }

    func resolve(environment: [String: String] = ProcessInfo.processInfo.environment, defaultPath: String = defaultConfigPath) throws -> Resolved {
        var config: BatonConfig?
        let source = configSource(environment: environment, defaultPath: defaultPath)
        if let path = source.path {
            let skippable = source == .defaultPath(path) && !servers.isEmpty && cluster != nil
            if skippable && access(path, R_OK) != 0 {
                if verbose { printError("batonctl: not reading \(path) (not readable); --nats and --cluster say where the cluster is") }
            } else {
                do {
                    config = try BatonConfig.load(path: path)
                } catch {
                    let remedy = source == .defaultPath(path) ? "\n(batonctl reads \(path) when no --config is given; give --config FILE, or --nats and --cluster)" : ""
                    throw CLIError("cannot use \(source.origin) \(path):\n\(error.description)\(remedy)")
                }
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
        let resolvedCluster = cluster ?? config?.cluster ?? Self.defaultCluster
        // Replies come to batonctl's own inboxes in the cluster, which the operator and observer
        // roles may read (`batonctl permissions`).
        options.inboxPrefix = BatonPermissions.inboxPrefix(cluster: resolvedCluster, role: .operator)
        let resolved = Resolved(cluster: resolvedCluster, clientOptions: options)
        if verbose {
            let from = config != nil ? "config \(source.path ?? "") (\(source.origin))" : "no config"
            printError("batonctl: \(from); servers \(servers.joined(separator: ", ")); cluster \(resolved.cluster)")
        }
        return resolved
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

    /// Who this batonctl is, for the control service's log: the NATS user or credentials file,
    /// the connection name, host, local user and pid. Self-reported.
    static func requester(_ options: NATSClientOptions) -> ControlRequester {
        var natsUser: String?
        var credentials: String?
        switch options.authentication {
        case .userPassword(let user, _): natsUser = user
        case .credentialsFile(let path): credentials = path
        default: break
        }
        let localUser = getpwuid(geteuid()).flatMap { $0.pointee.pw_name.map { String(cString: $0) } }
            ?? ProcessInfo.processInfo.environment["USER"]
        return ControlRequester(
            natsUser: natsUser, credentials: credentials, client: options.name, host: ProcessInfo.processInfo.hostName, localUser: localUser,
            pid: getpid())
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
            client: client, control: ControlClient(client: client, cluster: resolved.cluster, requester: Self.requester(resolved.clientOptions)),
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
