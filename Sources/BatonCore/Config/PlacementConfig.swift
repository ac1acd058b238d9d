import Yams

/// An app's `placement:`: where it may, may not and would rather run.
///
/// Hard constraints (`require`, `avoid`, `with_app`, `away_from_app`) decide whether a node may
/// take the app's lease at all; `prefer` only gives matching nodes a head start on a free lease,
/// as a higher `priority` does. See ``PlacementPolicy`` for the decisions.
public struct AppPlacement: Sendable, Hashable {
    /// Labels the node's `node.labels` must all have, with these values (`require`).
    public var require: [String: String]
    /// Labels that give a node a head start on a free lease when it has them all (`prefer`).
    public var prefer: [String: String]
    /// Labels of which the node must have none with these values (`avoid`).
    public var avoid: [String: String]
    /// Run only on the node where this other app is active (`with_app`).
    public var withApp: String?
    /// Never run on the node where this other app is active (`away_from_app`).
    public var awayFromApp: String?

    /// Creates a placement; the default places the app anywhere.
    public init(
        require: [String: String] = [:], prefer: [String: String] = [:], avoid: [String: String] = [:], withApp: String? = nil,
        awayFromApp: String? = nil
    ) {
        self.require = require
        self.prefer = prefer
        self.avoid = avoid
        self.withApp = withApp
        self.awayFromApp = awayFromApp
    }

    /// Whether anything is constrained or preferred.
    public var isEmpty: Bool { self == AppPlacement() }
}

/// What happens when an app's `prefer_node` becomes eligible again after the app moved away
/// (`failback`).
public enum Failback: String, Sendable, Hashable, CaseIterable {
    /// The app goes back to its preferred node by a graceful switchover.
    case auto
    /// The app stays where it is until an operator moves it (the default).
    case manual
}

/// The top-level `placement:` section: cluster-wide placement switches.
public struct ClusterPlacementConfig: Sendable, Hashable {
    /// Whether active apps are spread across the eligible nodes (`balance`, default true).
    public var balance: Bool
    /// How many apps one node hands over at a time while balancing (`max_moves`, default 1).
    public var maxMoves: Int

    /// Creates the section; the defaults are those of the config file.
    public init(balance: Bool = true, maxMoves: Int = 1) {
        self.balance = balance
        self.maxMoves = maxMoves
    }
}

extension AppPlacement: ConfigSection {
    static let keys = ["require", "prefer", "avoid", "with_app", "away_from_app"]

    init?(fields: ConfigFields) {
        let labels = "a mapping of label names to values, like {zone: a}"
        let require = fields.optional("require", default: [:]) { $0.stringMap(expected: labels) }
        let prefer = fields.optional("prefer", default: [:]) { $0.stringMap(expected: labels) }
        let avoid = fields.optional("avoid", default: [:]) { $0.stringMap(expected: labels) }
        let withApp = fields.optional("with_app").map { $0.name(kind: "app name", example: "db") }
        let awayFromApp = fields.optional("away_from_app").map { $0.name(kind: "app name", example: "db") }
        guard let require, let prefer, let avoid, !withApp.failed, !awayFromApp.failed else { return nil }
        var ok = true
        if let requireValue = fields.optional("require"), let avoidEntry = fields.entry("avoid") {
            for (label, value) in avoid.sorted(by: { $0.key < $1.key }) where require[label] == value {
                avoidEntry.value.error(
                    "avoids \(label)=\(value), which require (at \(requireValue.position.reference(from: avoidEntry.value.position))) asks for: no node can run this app")
                ok = false
            }
        }
        if let withApp = withApp ?? nil, withApp == awayFromApp ?? nil, let entry = fields.entry("away_from_app") {
            entry.value.error("\(quoted(withApp)) is both with_app and away_from_app: no node can run this app")
            ok = false
        }
        guard ok else { return nil }
        self.init(require: require, prefer: prefer, avoid: avoid, withApp: withApp ?? nil, awayFromApp: awayFromApp ?? nil)
    }
}

extension ClusterPlacementConfig: ConfigSection {
    static let keys = ["balance", "max_moves"]

    init?(fields: ConfigFields) {
        let balance = fields.optional("balance", default: true) { $0.bool() }
        let maxMoves = fields.optional("max_moves", default: 1) { $0.integer(in: 1...100) }
        guard let balance, let maxMoves else { return nil }
        self.init(balance: balance, maxMoves: maxMoves)
    }
}

extension Failback {
    /// Reads `auto` or `manual`.
    static func read(_ value: ConfigValue) -> Failback? {
        guard let text = value.scalarText(expected: "auto or manual") else { return nil }
        guard let failback = Failback(rawValue: text) else {
            value.error("expected auto or manual, got \(quoted(text))")
            return nil
        }
        return failback
    }
}

extension BatonConfig {
    /// Checks what one app's placement says about the others: `with_app` and `away_from_app`
    /// name an app of the file other than itself, and `with_app` never loops
    /// (`a` with `b` with `a`). `items` are the `apps:` entries as read, in file order.
    static func checkPlacementReferences(_ apps: [AppConfig], items: [ConfigValue]) -> Bool {
        let names = Set(apps.map(\.name))
        var ok = true
        let byName = Dictionary(apps.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for (app, item) in zip(apps, items) {
            for (key, target) in [("with_app", app.placement.withApp), ("away_from_app", app.placement.awayFromApp)] {
                guard let target, let value = item.child("placement")?.child(key) else { continue }
                if target == app.name {
                    value.error("app \(quoted(app.name)) names itself")
                    ok = false
                } else if !names.contains(target) {
                    let hint = suggestion(for: target, among: Array(names)).map { "; did you mean \(quoted($0))?" } ?? ""
                    value.error("no app named \(quoted(target)) in this file\(hint)")
                    ok = false
                }
            }
            // A with_app chain that comes back to this app: none of them could ever start.
            var seen = [app.name]
            var next = app.placement.withApp
            while let current = next, let other = byName[current], current != app.name {
                if seen.contains(current) { break }  // a loop that does not include this app: reported at its own apps
                seen.append(current)
                next = other.placement.withApp
            }
            if next == app.name, seen.count > 1, let value = item.child("placement")?.child("with_app") {
                value.error("with_app loops: \((seen + [app.name]).joined(separator: " -> ")); each would wait for the other to be active first")
                ok = false
            }
        }
        return ok
    }
}

extension ConfigValue {
    /// The value of `key` when this is a mapping that has it.
    func child(_ key: String) -> ConfigValue? {
        guard case .mapping(let mapping) = node else { return nil }
        for (keyNode, valueNode) in mapping where keyNode.scalar?.string == key {
            let keyPosition = SourcePosition(keyNode.mark, or: position)
            return ConfigValue(valueNode, path: path.appending(key: key), fallback: keyPosition, diagnostics: diagnostics)
        }
        return nil
    }
}
