import ArgumentParser
import BatonCore
import Foundation
import Permissions

struct PermissionsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "permissions",
        abstract: "Print the NATS permissions a role needs in a cluster, as nats-server config or JWT JSON.",
        discussion: """
            Roles: node (batond: leases, node registry, replication streams and snapshots, the \
            control service), operator (batonctl, every command), observer (batonctl status and \
            replica status only: it cannot stepdown, switchover, pause, resume, snapshot or \
            write any bucket or stream). Every set is scoped to one cluster and is made from the \
            same names batond and batonctl use.

            Bucket and stream names hold the cluster and the app in one subject token, which NATS \
            wildcards cannot match in part, so the set lists the cluster's apps: they come from \
            the batond config (--config, else $BATON_CONFIG, else /etc/baton/baton.yaml when \
            present and of the same cluster) and from --app. Regenerate and reload the server's config before adding an \
            app to the cluster.

            --format conf prints a whole nats-server authorization block with one user per \
            --role (the password defaults to $BATON_<ROLE>_PASSWORD, which nats-server reads \
            from its environment); --format user prints only the users' entries, to paste into \
            an existing users list; --format json prints the permissions claim of a user JWT \
            (pub, sub, resp) for one role. Needs no NATS.
            """
    )

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case conf, user, json
    }

    @Option(name: .long, help: ArgumentHelp("node, operator or observer; repeat for several users (conf and user formats).", valueName: "role"))
    var role: [BatonRole] = []

    @Option(name: .long, help: ArgumentHelp("The cluster (default: the config's).", valueName: "name"))
    var cluster: String?

    @Option(name: .long, help: ArgumentHelp("A batond config to take the cluster and its apps from.", valueName: "file"))
    var config: String?

    @Option(name: .customLong("app"), help: ArgumentHelp("An app of the cluster (besides the config's); repeat for several.", valueName: "name"))
    var apps: [String] = []

    @Option(name: .long, help: ArgumentHelp("conf, user or json.", valueName: "format"))
    var format: Format = .conf

    @Option(name: .long, help: ArgumentHelp("The user name (one --role only; default baton-<role>).", valueName: "name"))
    var user: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "The password as written into the config (one --role only): a literal or bcrypt hash is quoted; default: $BATON_<ROLE>_PASSWORD, from nats-server's environment.",
            valueName: "text"))
    var password: String?

    func validate() throws {
        if role.isEmpty { throw ValidationError("name a role: --role node, --role operator or --role observer") }
        if role.count > 1, user != nil || password != nil { throw ValidationError("--user and --password take one --role") }
        if role.count > 1, format == .json { throw ValidationError("--format json prints one role: give one --role") }
        if let cluster, !ControlSubjects.isValidToken(cluster) {
            throw ValidationError("--cluster \"\(cluster)\" cannot be part of a NATS subject (no '.', '*', '>' or spaces)")
        }
    }

    func run() async throws {
        var loaded: BatonConfig?
        let environment = ProcessInfo.processInfo.environment
        let explicit = config ?? environment["BATON_CONFIG"].flatMap { $0.isEmpty ? nil : $0 }
        let path = explicit ?? (FileManager.default.fileExists(atPath: ConnectionOptions.defaultConfigPath) ? ConnectionOptions.defaultConfigPath : nil)
        if let path {
            do {
                loaded = try BatonConfig.load(path: path)
            } catch {
                throw CLIError("cannot use the config \(path):\n\(error.description)")
            }
        }
        if let cluster, let other = loaded, other.cluster != cluster {
            // Its apps belong to another cluster: never mix them into this one's set.
            if let explicit { throw CLIError("--cluster \(cluster) is not the cluster of \(explicit) (\(other.cluster)): give one or the other") }
            loaded = nil
        }
        guard let cluster = cluster ?? loaded?.cluster else {
            throw CLIError("no cluster: give --cluster NAME, or --config FILE of a batond of the cluster")
        }
        let apps = (loaded?.apps.map(\.name) ?? []) + self.apps
        if apps.isEmpty {
            throw CLIError(
                "no apps: the permissions name each app's buckets and streams; give --config FILE (a batond config of cluster \(cluster)) or --app NAME for each app")
        }
        let sets: [(permissions: BatonPermissions, user: String, password: String)]
        do {
            sets = try role.map { role in
                let permissions = try BatonPermissions(role: role, cluster: cluster, apps: apps)
                let password = self.password.map { BatonPermissions.quotedForConfig($0) } ?? "$BATON_\(role.rawValue.uppercased())_PASSWORD"
                return (permissions, user ?? "baton-\(role.rawValue)", password)
            }
        } catch let error as BatonPermissionsError {
            throw CLIError(error.description)
        }
        switch format {
        case .conf: print(BatonPermissions.confAuthorizationBlock(sets), terminator: "")
        case .user: print(sets.map { $0.permissions.confUserEntry(user: $0.user, password: $0.password) }.joined(separator: "\n"))
        case .json: print(try sets[0].permissions.jwtPermissionsJSON())
        }
    }
}

extension BatonRole: ExpressibleByArgument {}
