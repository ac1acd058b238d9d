import ArgumentParser
import BatonCore
import Logging
import NATS
import Control

/// Shell completion of app and node names from the cluster: the completion scripts that
/// swift-argument-parser generates (`batonctl --generate-completion-script bash|zsh|fish`, shipped
/// by the Debian package) call batonctl back for an `app` or `node` argument, and batonctl asks
/// every node for its status, with the connection options already typed on the command line
/// (else the config batonctl reads by default). Bounded by ``timeout``; any failure (no NATS, no
/// node answering) completes nothing instead of printing an error into the shell.
enum ClusterCompletion {
    /// The longest a completion waits for the cluster: connect, ask, collect the replies.
    static let timeout: Duration = .seconds(2)
    /// How long the status replies are collected.
    static let replyWindow: Duration = .milliseconds(300)

    /// Completes the apps the nodes run.
    static let apps = CompletionKind.custom { words, _, _ in
        await names(words: words) { statuses in statuses.flatMap { $0.apps.map(\.name) } }
    }

    /// Completes the nodes that answer.
    static let nodes = CompletionKind.custom { words, _, _ in
        await names(words: words) { statuses in statuses.map(\.node) }
    }

    /// The connection options among `words` (the command line being completed), as arguments
    /// for ``ConnectionOptions``: `--option value` and `--option=value`; everything else is dropped.
    static func connectionArguments(in words: [String]) -> [String] {
        let valued: Set<String> = ["--config", "--nats", "--cluster", "--creds", "--user", "--password", "--token", "--tls-ca", "--tls-cert", "--tls-key"]
        var arguments: [String] = []
        var index = 0
        while index < words.count {
            let word = words[index]
            if valued.contains(word), index + 1 < words.count {
                arguments += [word, words[index + 1]]
                index += 2
                continue
            }
            if let equals = word.firstIndex(of: "="), valued.contains(String(word[..<equals])) {
                arguments.append(word)
            }
            index += 1
        }
        return arguments
    }

    private static func names(words: [String], _ pick: @escaping @Sendable ([NodeStatus]) -> [String]) async -> [String] {
        LoggingSystem.bootstrap { _ in SwiftLogNoOpLogHandler() }
        guard let options = try? ConnectionOptions.parse(connectionArguments(in: words)), var resolved = try? options.resolve() else { return [] }
        resolved.clientOptions.connectTimeout = .seconds(1)
        resolved.clientOptions.maxReconnectRounds = 0
        let clientOptions = resolved.clientOptions
        let cluster = resolved.cluster
        return await withTaskGroup(of: [String]?.self) { group in
            group.addTask {
                guard let client = try? await NATSClient.connect(options: clientOptions, logger: Logger(label: "batonctl.completion")) else { return [] }
                let replies = try? await ControlClient(client: client, cluster: cluster).statuses(window: replyWindow)
                await client.close()
                return Array(Set(pick(replies?.statuses ?? []))).sorted()
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? []
        }
    }
}
