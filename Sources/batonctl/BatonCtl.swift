import ArgumentParser
import BatonCore

/// `batonctl`: the operator's command line for a Baton cluster.
@main
struct BatonCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "batonctl",
        abstract: "Inspect and steer the apps of a Baton cluster.",
        discussion: """
            Every command except validate and permissions talks to the nodes' control services over NATS \
            (subjects baton.<cluster>.*; replica reads and writes Baton's replication bucket \
            and streams directly), so it works from any host that can reach NATS. \
            Name the servers with --nats (or take them, the credentials and the cluster from \
            a batond config with --config; without it, batonctl reads $BATON_CONFIG, else \
            /etc/baton/baton.yaml when present, else uses nats://127.0.0.1:4222 and cluster \
            demo). -v says which it used.
            """,
        version: BatonVersion.current,
        subcommands: [
            StatusCommand.self, NodesCommand.self, StepdownCommand.self, SwitchoverCommand.self, PauseCommand.self, ResumeCommand.self,
            SnapshotCommand.self, ReplicaCommand.self, ValidateCommand.self, PermissionsCommand.self, EventsCommand.self, DoctorCommand.self,
            DrainCommand.self, UndrainCommand.self,
        ]
    )
}
