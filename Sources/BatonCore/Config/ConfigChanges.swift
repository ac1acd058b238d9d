/// What a config reload (SIGHUP) changes, app by app.
///
/// An app has changed when anything in its own section differs (its position in the file does
/// not count), except its placement settings, which apply to the running app. `cluster`, `node` and `nats` cannot change under a running node: when they differ,
/// ``restartRequired`` names them and the daemon should keep the old config and say a restart is
/// needed.
public struct ConfigChanges: Sendable, Hashable {
    /// Apps only in the new config, in its order.
    public var added: [String]
    /// Apps only in the old config, in its order.
    public var removed: [String]
    /// Apps in both whose sections differ, in the new config's order.
    public var changed: [String]
    /// Apps in both with identical sections, in the new config's order.
    public var unchanged: [String]
    /// The top-level sections that differ and need a restart of the node: any of `cluster`,
    /// `node` and `nats`, in that order.
    public var restartRequired: [String]

    /// Creates a change set.
    public init(
        added: [String] = [], removed: [String] = [], changed: [String] = [], unchanged: [String] = [],
        restartRequired: [String] = []
    ) {
        self.added = added
        self.removed = removed
        self.changed = changed
        self.unchanged = unchanged
        self.restartRequired = restartRequired
    }

    /// True when nothing at all differs.
    public var isEmpty: Bool {
        added.isEmpty && removed.isEmpty && changed.isEmpty && restartRequired.isEmpty
    }
}

/// Compares two configs for a reload: which apps were added, removed, changed or left alone,
/// and which node-wide sections changed (those need a restart).
public func changedApps(from old: BatonConfig, to new: BatonConfig) -> ConfigChanges {
    var changes = ConfigChanges()
    let oldApps = Dictionary(old.apps.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    let newNames = Set(new.apps.map(\.name))
    for app in new.apps {
        switch oldApps[app.name] {
        case nil: changes.added.append(app.name)
        case let previous? where previous.withoutPlacement == app.withoutPlacement: changes.unchanged.append(app.name)
        case _?: changes.changed.append(app.name)
        }
    }
    changes.removed = old.apps.map(\.name).filter { !newNames.contains($0) }
    if old.cluster != new.cluster { changes.restartRequired.append("cluster") }
    if old.node != new.node { changes.restartRequired.append("node") }
    if old.nats != new.nats { changes.restartRequired.append("nats") }
    if old.http != new.http { changes.restartRequired.append("http") }
    if old.events != new.events { changes.restartRequired.append("events") }
    return changes
}

extension AppConfig {
    /// The app without its placement settings (`placement`, `prefer_node`, `failback`,
    /// `sticky`): a reload applies those to the running app without restarting it.
    var withoutPlacement: AppConfig {
        var app = self
        app.placement = AppPlacement()
        app.preferNode = nil
        app.failback = .manual
        app.sticky = false
        return app
    }
}
