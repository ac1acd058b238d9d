/// How requests to an endpoint are spread over the instances of a service.
///
/// With a queue group (the default, `q`) each request goes to one instance; with
/// ``disabled`` every instance receives every request (a plain subscription).
public enum MicroQueueGroup: Sendable, Hashable, ExpressibleByStringLiteral, CustomStringConvertible {
    /// A queue subscription in the named group.
    case named(String)
    /// A plain subscription: every instance receives each request.
    case disabled

    /// The queue group every micro service uses unless told otherwise: `q`.
    public static let `default` = MicroQueueGroup.named("q")

    /// A named queue group, written as a string literal.
    public init(stringLiteral value: String) {
        self = .named(value)
    }

    /// The group name to subscribe with, or nil for a plain subscription.
    public var name: String? {
        if case .named(let name) = self { return name }
        return nil
    }

    public var description: String { name ?? "(no queue group)" }
}

/// The configuration of a micro service instance (NATS ADR-32).
///
/// Every instance of a service shares the ``name`` and normally the ``version``; each instance
/// gets its own id when started.
public struct MicroServiceConfig: Sendable, Hashable {
    /// The kind of the service, shared by all its instances: letters, digits, `-` and `_`.
    public var name: String
    /// The version of the service, a semantic version such as `1.4.0` or `2.0.0-rc.1+build.5`.
    public var version: String
    /// A human-readable description, reported by `INFO`.
    public var description: String
    /// Free-form metadata about this instance, reported by `PING`, `INFO` and `STATS`.
    public var metadata: [String: String]
    /// The queue group endpoints use unless their group or the endpoint itself says otherwise.
    public var queueGroup: MicroQueueGroup
    /// How many requests each endpoint handles at the same time. Further requests wait in the
    /// subscription's buffer (they never block the connection) until a handler finishes.
    public var maxConcurrentRequestsPerEndpoint: Int

    /// Creates a configuration. Nothing is checked until ``validate()`` (which
    /// ``MicroService/start(client:config:logger:)`` calls).
    public init(
        name: String,
        version: String,
        description: String = "",
        metadata: [String: String] = [:],
        queueGroup: MicroQueueGroup = .default,
        maxConcurrentRequestsPerEndpoint: Int = 64
    ) {
        self.name = name
        self.version = version
        self.description = description
        self.metadata = metadata
        self.queueGroup = queueGroup
        self.maxConcurrentRequestsPerEndpoint = maxConcurrentRequestsPerEndpoint
    }

    /// Checks the name, version, queue group and concurrency limit, throwing the first problem.
    public func validate() throws(MicroValidationError) {
        try MicroValidation.checkName(name, field: .serviceName)
        try MicroValidation.checkSemanticVersion(version)
        try MicroValidation.checkQueueGroup(queueGroup)
        if maxConcurrentRequestsPerEndpoint < 1 {
            throw MicroValidationError(
                .maxConcurrentRequests, value: String(maxConcurrentRequestsPerEndpoint), reason: "must be at least 1")
        }
    }
}

/// A service, endpoint or group setting that NATS micro services do not accept.
public struct MicroValidationError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Which setting was rejected.
    public enum Field: String, Hashable, Sendable {
        /// ``MicroServiceConfig/name`` (or a name given to ``MicroServiceDiscovery``).
        case serviceName = "service name"
        /// ``MicroServiceConfig/version``.
        case version = "service version"
        /// A queue group of the service, a group or an endpoint.
        case queueGroup = "queue group"
        /// ``MicroServiceConfig/maxConcurrentRequestsPerEndpoint``.
        case maxConcurrentRequests = "maximum concurrent requests"
        /// The name of an endpoint.
        case endpointName = "endpoint name"
        /// The subject of an endpoint, group prefix included.
        case endpointSubject = "endpoint subject"
        /// The prefix of an endpoint group.
        case groupPrefix = "group prefix"
    }

    /// Which setting was rejected.
    public var field: Field
    /// The rejected value.
    public var value: String
    /// Why it was rejected.
    public var reason: String

    /// Creates an error.
    public init(_ field: Field, value: String, reason: String) {
        self.field = field
        self.value = value
        self.reason = reason
    }

    public var description: String { "invalid \(field.rawValue) \"\(value)\": \(reason)" }
}

/// The checks ADR-32 asks for, written out by hand so each failure can say what is wrong.
enum MicroValidation {
    static func isNameCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"):
            return true
        default:
            return false
        }
    }

    /// Service and endpoint names: `^[a-zA-Z0-9_-]+$`.
    static func checkName(_ name: String, field: MicroValidationError.Field) throws(MicroValidationError) {
        if name.isEmpty {
            throw MicroValidationError(field, value: name, reason: "must not be empty")
        }
        if let bad = name.unicodeScalars.first(where: { !$0.isASCII || !isNameCharacter(UInt8($0.value)) }) {
            throw MicroValidationError(
                field, value: name,
                reason: "may contain only letters A-Z and a-z, digits, '-' and '_' (found \"\(bad)\")")
        }
    }

    /// A semantic version 2.0.0 string: `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`.
    static func checkSemanticVersion(_ version: String) throws(MicroValidationError) {
        func fail(_ reason: String) -> MicroValidationError {
            MicroValidationError(.version, value: version, reason: reason + " (expected a semantic version such as 1.2.3, 1.2.3-rc.1 or 1.2.3+build.7)")
        }
        if version.isEmpty { throw fail("must not be empty") }
        var rest = Substring(version)
        var build: Substring?
        if let plus = rest.firstIndex(of: "+") {
            build = rest[rest.index(after: plus)...]
            rest = rest[..<plus]
        }
        var prerelease: Substring?
        if let dash = rest.firstIndex(of: "-") {
            prerelease = rest[rest.index(after: dash)...]
            rest = rest[..<dash]
        }
        let core = rest.split(separator: ".", omittingEmptySubsequences: false)
        guard core.count == 3 else {
            throw fail("needs exactly three dot-separated numbers, found \(core.count) part\(core.count == 1 ? "" : "s")")
        }
        for (label, part) in zip(["major", "minor", "patch"], core) {
            if part.isEmpty { throw fail("the \(label) version is empty") }
            if !part.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) {
                throw fail("the \(label) version \"\(part)\" is not a number")
            }
            if part.count > 1 && part.first == "0" {
                throw fail("the \(label) version \"\(part)\" has a leading zero")
            }
        }
        if let prerelease {
            for identifier in prerelease.split(separator: ".", omittingEmptySubsequences: false) {
                try checkIdentifier(identifier, in: "pre-release", numericMayNotHaveLeadingZero: true, fail: fail)
            }
        }
        if let build {
            for identifier in build.split(separator: ".", omittingEmptySubsequences: false) {
                try checkIdentifier(identifier, in: "build metadata", numericMayNotHaveLeadingZero: false, fail: fail)
            }
        }
    }

    private static func checkIdentifier(
        _ identifier: Substring,
        in part: String,
        numericMayNotHaveLeadingZero: Bool,
        fail: (String) -> MicroValidationError
    ) throws(MicroValidationError) {
        if identifier.isEmpty { throw fail("the \(part) has an empty identifier") }
        let allowed = identifier.utf8.allSatisfy { byte in
            byte != UInt8(ascii: "_") && isNameCharacter(byte)
        }
        if !allowed {
            throw fail("the \(part) identifier \"\(identifier)\" may contain only letters, digits and '-'")
        }
        let numeric = identifier.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        if numericMayNotHaveLeadingZero && numeric && identifier.count > 1 && identifier.first == "0" {
            throw fail("the \(part) identifier \"\(identifier)\" is a number with a leading zero")
        }
    }

    static func checkQueueGroup(_ queueGroup: MicroQueueGroup) throws(MicroValidationError) {
        guard case .named(let name) = queueGroup else { return }
        do {
            try NATSSubject.validateQueueGroup(name)
        } catch {
            throw MicroValidationError(.queueGroup, value: name, reason: error.message)
        }
    }

    /// An endpoint subject: a valid subscription subject (`*` anywhere, `>` last), outside the
    /// `$SRV` namespace the control handlers own.
    static func checkEndpointSubject(_ subject: String) throws(MicroValidationError) {
        do {
            try NATSSubject.validateSubscribe(subject)
        } catch {
            throw MicroValidationError(.endpointSubject, value: subject, reason: error.message)
        }
        if subject == MicroService.controlPrefix || subject.hasPrefix(MicroService.controlPrefix + ".") {
            throw MicroValidationError(
                .endpointSubject, value: subject, reason: "the \(MicroService.controlPrefix) prefix is reserved for discovery")
        }
    }

    /// A group prefix: a valid subject without `>` (it is followed by more tokens).
    static func checkGroupPrefix(_ prefix: String) throws(MicroValidationError) {
        do {
            try NATSSubject.validateSubscribe(prefix)
        } catch {
            throw MicroValidationError(.groupPrefix, value: prefix, reason: error.message)
        }
        if prefix.split(separator: ".").contains(">") {
            throw MicroValidationError(.groupPrefix, value: prefix, reason: "must not contain the '>' wildcard")
        }
    }
}
