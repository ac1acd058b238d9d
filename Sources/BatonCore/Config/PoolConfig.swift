import Yams

/// How many nodes run an app at once (`instances:`).
public enum AppInstances: Sendable, Hashable, CustomStringConvertible {
    /// This many instances, each on its own node, each with its own lease (`instances: 3`). One is
    /// the ordinary single-active app.
    case count(Int)
    /// One instance on every node whose config declares the app (`instances: all`).
    case everyNode

    /// One instance: the default.
    public static let one = AppInstances.count(1)

    /// Whether the app runs on more than one node at once.
    public var isPool: Bool { self != .one }

    public var description: String {
        switch self {
        case .count(let count): "\(count)"
        case .everyNode: "all"
        }
    }
}

/// What makes an app of `apps:` one instance of a pool (an app with `instances:` other than 1).
///
/// A pool is run as one app per instance: instance `i` of `web` is the app `web-i` (with
/// `instances: all`, the app `web-<node id>`), with its own lease bucket, fencing token and
/// backend, so every single-active rule holds for each instance. A node runs at most one
/// instance of a pool (see ``PlacementPolicy``).
public struct PoolMember: Sendable, Hashable {
    /// The pool's name as written in `apps:` (`web`).
    public var pool: String
    /// The instance: `1`…`N` for `instances: N`, the node id for `instances: all`
    /// (`BATON_INSTANCE` in the backend's environment).
    public var instance: String
    /// Every instance's app name in instance order, this one included; empty for
    /// `instances: all` (each node runs only its own instance).
    public var siblings: [String]

    /// Creates a pool member.
    public init(pool: String, instance: String, siblings: [String]) {
        self.pool = pool
        self.instance = instance
        self.siblings = siblings
    }

    /// The instances before this one (a node holding one of them gives this one up).
    public var earlierSiblings: ArraySlice<String> {
        guard let index = siblings.firstIndex(of: "\(pool)-\(instance)") else { return [] }
        return siblings[..<index]
    }
}

extension AppConfig {
    /// The app name of instance `instance` of pool `pool`.
    public static func instanceName(pool: String, instance: String) -> String { "\(pool)-\(instance)" }

    /// The apps that run this entry of `apps:` on node `node`: itself when it is not a pool,
    /// else one app per instance (only this node's own for `instances: all`), each with
    /// ``pool`` set, `BATON_INSTANCE` in a process backend's environment, and a systemd
    /// template unit instantiated (`worker@.service` → `worker@2.service`).
    public func instances(onNode node: String) -> [AppConfig] {
        let names: [String]
        let siblings: [String]
        switch instances {
        case .count(1): return [self]
        case .count(let count):
            names = (1...count).map(String.init)
            siblings = names.map { Self.instanceName(pool: name, instance: $0) }
        case .everyNode:
            names = [node]
            siblings = []
        }
        return names.map { instance in
            var app = self
            app.name = Self.instanceName(pool: name, instance: instance)
            app.pool = PoolMember(pool: name, instance: instance, siblings: siblings)
            switch backend {
            case .process(var process):
                process.environment["BATON_INSTANCE"] = instance
                app.backend = .process(process)
            case .systemd(var systemd):
                systemd.unit = Self.instantiate(template: systemd.unit, instance: instance) ?? systemd.unit
                app.backend = .systemd(systemd)
            }
            return app
        }
    }

    /// `worker@.service` with instance `2` → `worker@2.service`; nil when `unit` is not a
    /// template.
    static func instantiate(template unit: String, instance: String) -> String? {
        guard let at = unit.range(of: "@."), SystemdBackendConfig.unitSuffixes.contains(where: { unit.hasSuffix($0) }) else { return nil }
        return unit.replacingCharacters(in: at, with: "@\(instance).")
    }
}

extension AppInstances {
    /// Reads `instances:`: a count from 1 to 1000, or `all`.
    static func read(_ value: ConfigValue) -> AppInstances? {
        if case .scalar(let scalar) = value.node {
            if scalar.string == "all" { return .everyNode }
            if Int(scalar.string) != nil { return value.integer(in: 1...1000).map(AppInstances.count) }
            value.error("expected a number of instances from 1 to 1000, or all, got \(quoted(scalar.string))")
            return nil
        }
        value.error("expected a number of instances from 1 to 1000, or all")
        return nil
    }
}

extension BatonConfig {
    /// Checks what a pool may not have, at the app's `instances:`: a VIP or a SQLite database
    /// (those follow one active node), `prefer_node` or `with_app` (one node), a systemd unit that
    /// is not a template, and instance names that collide with another app. Also refuses
    /// `with_app`/`away_from_app` naming a pool (they name one app's active node).
    static func checkPools(_ apps: [AppConfig], items: [ConfigValue]) -> Bool {
        var ok = true
        let declared = Dictionary(zip(apps.map(\.name), items), uniquingKeysWith: { first, _ in first })
        let pools = Dictionary(apps.filter { $0.instances.isPool }.map { ($0.name, $0.instances) }, uniquingKeysWith: { first, _ in first })
        for (app, item) in zip(apps, items) {
            for (key, target) in [("with_app", app.placement.withApp), ("away_from_app", app.placement.awayFromApp)] {
                guard let target, let instances = pools[target], let value = item.child("placement")?.child(key) else { continue }
                value.error("\(quoted(target)) is a pool (instances: \(instances)); \(key) names an app that runs on one node")
                ok = false
            }
            guard app.instances.isPool, let value = item.child("instances") else { continue }
            var problems: [String] = []
            if !app.vips.isEmpty { problems.append("a vip follows the one active node") }
            if app.sqlite != nil { problems.append("a sqlite database has one writer") }
            if app.preferNode != nil { problems.append("prefer_node names one node") }
            if app.placement.withApp != nil { problems.append("with_app puts the app on one node") }
            if case .systemd(let systemd) = app.backend, AppConfig.instantiate(template: systemd.unit, instance: "1") == nil {
                problems.append(
                    "each instance runs its own unit: use a template unit like \(quoted(systemd.unit.split(separator: ".").first.map { "\($0)@.service" } ?? "worker@.service")) (instance i runs as name@i.service)")
            }
            if !problems.isEmpty {
                value.error("an app with instances: \(app.instances) cannot have this: \(problems.joined(separator: "; "))")
                ok = false
                continue
            }
            if case .count(let count) = app.instances {
                for index in 1...count {
                    let name = AppConfig.instanceName(pool: app.name, instance: "\(index)")
                    if let other = declared[name] {
                        value.error("instance \(index) would be the app \(quoted(name)), which is also defined at line \(other.position.line); rename one of them")
                        ok = false
                        break
                    }
                }
            }
        }
        return ok
    }

    /// `apps` with every pool replaced by the instances node `node` runs (see
    /// ``AppConfig/instances(onNode:)``); nil, with the error at `value`, when a node's own
    /// instance of an `instances: all` pool collides with an app.
    static func expandPools(_ apps: [AppConfig], onNode node: String, value: ConfigValue?) -> [AppConfig]? {
        let expanded = apps.flatMap { $0.instances(onNode: node) }
        var seen: Set<String> = []
        for app in expanded where !seen.insert(app.name).inserted {
            value?.error("app \(quoted(app.name)) is defined twice once the pools are expanded on node \(node) (an instances: all pool names its instance after the node)")
            return nil
        }
        return expanded
    }
}
