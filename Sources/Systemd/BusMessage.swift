import CSystemd

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One argument of a method call, appended on the bus thread.
enum BusArgument: Sendable {
    case string(String)
    case int32(Int32)
    case uint32(UInt32)
    case boolean(Bool)
}

/// A method call described as data, so that it can be built into an `sd_bus_message` on the bus
/// thread (sd-bus objects must not leave that thread).
struct MethodCall: Sendable, CustomStringConvertible {
    var destination: String
    var path: String
    var interface: String
    var member: String
    var arguments: [BusArgument]
    /// Shown in errors, e.g. `StartUnit(web.service)`.
    var label: String
    /// The unit the call is about, named in ``SystemdError/unknownUnit(unit:bus:)``.
    var unit: String?

    init(
        destination: String = SystemdObjects.service,
        path: String = SystemdObjects.managerPath,
        interface: String = SystemdObjects.managerInterface,
        member: String,
        arguments: [BusArgument] = [],
        label: String? = nil,
        unit: String? = nil
    ) {
        self.unit = unit
        self.destination = destination
        self.path = path
        self.interface = interface
        self.member = member
        self.arguments = arguments
        self.label = label ?? member
    }

    var description: String { label }

    /// Builds the message; returns a negative errno on failure.
    func build(on bus: OpaquePointer) -> (message: OpaquePointer?, error: Int32) {
        var message: OpaquePointer?
        var result = sd_bus_message_new_method_call(bus, &message, destination, path, interface, member)
        guard result >= 0, let message else { return (nil, result) }
        for argument in arguments {
            switch argument {
            case .string(let value):
                result = value.withCString { sd_bus_message_append_basic(message, BusType.string, $0) }
            case .int32(var value):
                result = sd_bus_message_append_basic(message, BusType.int32, &value)
            case .uint32(var value):
                result = sd_bus_message_append_basic(message, BusType.uint32, &value)
            case .boolean(let value):
                var flag: Int32 = value ? 1 : 0
                result = sd_bus_message_append_basic(message, BusType.boolean, &flag)
            }
            if result < 0 {
                sd_bus_message_unref(message)
                return (nil, result)
            }
        }
        return (message, 0)
    }
}

/// D-Bus type codes as `char`.
enum BusType {
    static let string = CChar(UInt8(ascii: "s"))
    static let objectPath = CChar(UInt8(ascii: "o"))
    static let int32 = CChar(UInt8(ascii: "i"))
    static let uint32 = CChar(UInt8(ascii: "u"))
    static let boolean = CChar(UInt8(ascii: "b"))
    static let array = CChar(UInt8(ascii: "a"))
    static let variant = CChar(UInt8(ascii: "v"))
    static let dictEntry = CChar(UInt8(ascii: "e"))
}

/// Names of systemd's D-Bus objects.
enum SystemdObjects {
    static let service = "org.freedesktop.systemd1"
    static let managerPath = "/org/freedesktop/systemd1"
    static let managerInterface = "org.freedesktop.systemd1.Manager"
    static let unitInterface = "org.freedesktop.systemd1.Unit"
    static let serviceInterface = "org.freedesktop.systemd1.Service"
    static let propertiesInterface = "org.freedesktop.DBus.Properties"
    static let unitPathPrefix = "/org/freedesktop/systemd1/unit"

    /// The object path of `unit` (`web.service` → `/org/freedesktop/systemd1/unit/web_2eservice`).
    /// Accessing it makes systemd load the unit if it is not loaded.
    static func unitPath(_ unit: String) -> String {
        var encoded: UnsafeMutablePointer<CChar>?
        guard sd_bus_path_encode(unitPathPrefix, unit, &encoded) >= 0, let encoded else {
            return unitPathPrefix + "/_"
        }
        defer { free(encoded) }
        return String(cString: encoded)
    }
}

/// Reads a received message. Valid only during the callback that received it, on the bus thread.
struct MessageReader {
    struct Failure: Error { var reason: String }

    let message: OpaquePointer

    func string() throws -> String { try text(BusType.string, "string") }
    func objectPath() throws -> String { try text(BusType.objectPath, "object path") }

    func uint32() throws -> UInt32 {
        var value: UInt32 = 0
        let result = sd_bus_message_read_basic(message, BusType.uint32, &value)
        guard result > 0 else { throw Failure(reason: "expected a uint32 (\(describe(result)))") }
        return value
    }

    private func text(_ type: CChar, _ name: String) throws -> String {
        var pointer: UnsafePointer<CChar>?
        let result = sd_bus_message_read_basic(message, type, &pointer)
        guard result > 0, let pointer else { throw Failure(reason: "expected a \(name) (\(describe(result)))") }
        return String(cString: pointer)
    }

    /// Enters a container; returns false at the end of the enclosing array.
    func enter(_ type: CChar, _ contents: String) throws -> Bool {
        let result = sd_bus_message_enter_container(message, type, contents)
        if result < 0 { throw Failure(reason: "cannot enter container \(contents) (\(describe(result)))") }
        return result > 0
    }

    func exit() throws {
        let result = sd_bus_message_exit_container(message)
        if result < 0 { throw Failure(reason: "cannot leave container (\(describe(result)))") }
    }

    func skip(_ types: String) throws {
        let result = sd_bus_message_skip(message, types)
        if result < 0 { throw Failure(reason: "cannot skip \(types) (\(describe(result)))") }
    }

    /// The contents signature of the variant at the read position.
    func peekVariantContents() throws -> String {
        var type: CChar = 0
        var contents: UnsafePointer<CChar>?
        let result = sd_bus_message_peek_type(message, &type, &contents)
        guard result > 0, type == BusType.variant, let contents else {
            throw Failure(reason: "expected a variant (\(describe(result)))")
        }
        return String(cString: contents)
    }

    /// Reads an `a{sv}` dictionary, handing each key to `value`, which must consume the variant
    /// (or return false to have it skipped).
    func dictionary(_ value: (String) throws -> Bool) throws {
        guard try enter(BusType.array, "{sv}") else { throw Failure(reason: "expected a{sv}") }
        while try enter(BusType.dictEntry, "sv") {
            let key = try string()
            if try !value(key) { try skip("v") }
            try exit()
        }
        try exit()
    }

    /// Reads a variant holding a string.
    func variantString() throws -> String? {
        guard try peekVariantContents() == "s" else { return nil }
        _ = try enter(BusType.variant, "s")
        let value = try string()
        try exit()
        return value
    }

    /// Reads `as`.
    func stringArray() throws -> [String] {
        guard try enter(BusType.array, "s") else { throw Failure(reason: "expected an array of strings") }
        var values: [String] = []
        while true {
            var pointer: UnsafePointer<CChar>?
            let result = sd_bus_message_read_basic(message, BusType.string, &pointer)
            if result < 0 { throw Failure(reason: "cannot read a string (\(describe(result)))") }
            guard result > 0, let pointer else { break }
            values.append(String(cString: pointer))
        }
        try exit()
        return values
    }

    private func describe(_ result: Int32) -> String {
        result == 0 ? "end of container" : errnoText(-result)
    }
}
