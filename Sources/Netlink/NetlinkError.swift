#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Every failure of the Netlink module: what went wrong, during which operation, on which
/// interface and address, and the errno when the kernel reported one.
///
/// The ``description`` is a complete sentence for an operator, e.g.
/// `cannot add 192.0.2.10/24 to eth0: permission denied (EPERM: Operation not permitted); adding
/// and removing addresses needs CAP_NET_ADMIN`.
public struct NetlinkError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure this is; switch on it to react (the description is for people).
    public enum Kind: Sendable, Hashable {
        /// The address text is not an IPv4 or IPv6 address with an optional prefix length.
        case malformedAddress
        /// The interface name cannot name a Linux interface (empty, too long, bad characters).
        case invalidInterfaceName
        /// No interface has this name (in the namespace the operation ran in).
        case unknownInterface
        /// The IPv4 label breaks the kernel's rules (see ``VIPAddressManager/add(_:to:label:)``).
        case invalidLabel
        /// The address is already on the interface with another prefix length.
        case conflictingPrefixLength
        /// The kernel refused for lack of a capability: CAP_NET_ADMIN for addresses,
        /// CAP_NET_RAW for announcements, CAP_SYS_ADMIN to enter a namespace.
        case permissionDenied
        /// The network namespace could not be entered.
        case namespaceUnavailable
        /// The interface cannot send announcements (no Ethernet address).
        case unsupportedInterface
        /// Any other error the kernel returned (``NetlinkError/errno`` holds it), or no reply
        /// within the timeout.
        case kernel
        /// The kernel's reply could not be understood (truncated, wrong sequence, bad attribute).
        case malformedReply
        /// The manager or announcer was shut down.
        case shutDown
    }

    /// What the module was doing.
    public enum Operation: String, Sendable, Hashable {
        case parseAddress = "parse address"
        case addAddress = "add"
        case removeAddress = "remove"
        case listAddresses = "list addresses on"
        case resolveInterface = "look up interface"
        case announce = "announce"
        case probe = "probe for other owners of"
        case enterNamespace = "enter network namespace"
    }

    public var kind: Kind
    public var operation: Operation
    /// The interface name the operation was about, if any.
    public var interface: String?
    /// The address (as given or as formatted) the operation was about, if any.
    public var address: String?
    /// The errno the kernel or libc reported, if any.
    public var errno: Int32?
    /// The specific reason, e.g. `prefix length 33 is greater than 32`.
    public var reason: String

    public init(
        _ kind: Kind, operation: Operation, interface: String? = nil, address: String? = nil,
        errno: Int32? = nil, reason: String
    ) {
        self.kind = kind
        self.operation = operation
        self.interface = interface
        self.address = address
        self.errno = errno
        self.reason = reason
    }

    public var description: String {
        var text: String
        switch operation {
        case .parseAddress:
            text = "malformed address \(quoted(address ?? ""))"
        case .addAddress:
            text = "cannot add \(address ?? "address") to \(interface ?? "interface")"
        case .removeAddress:
            text = "cannot remove \(address ?? "address") from \(interface ?? "interface")"
        case .listAddresses:
            text = "cannot list addresses on \(interface ?? "interface")"
        case .resolveInterface:
            text = "cannot look up interface \(quoted(interface ?? ""))"
        case .announce:
            text = "cannot announce \(address ?? "address") on \(interface ?? "interface")"
        case .probe:
            text = "cannot probe for other owners of \(address ?? "address") on \(interface ?? "interface")"
        case .enterNamespace:
            text = "cannot enter network namespace"
        }
        text += ": " + reason
        if let errno {
            text += " (\(Self.errnoName(errno)): \(Self.errnoText(errno)))"
        }
        if kind == .permissionDenied {
            switch operation {
            case .addAddress, .removeAddress, .listAddresses, .resolveInterface:
                text += "; adding and removing addresses needs CAP_NET_ADMIN"
            case .announce:
                text += "; sending announcements needs CAP_NET_RAW"
            case .probe:
                text += "; sending ARP probes needs CAP_NET_RAW"
            case .enterNamespace:
                text += "; entering a network namespace needs CAP_SYS_ADMIN"
            case .parseAddress:
                break
            }
        }
        return text
    }

    static func errnoText(_ code: Int32) -> String {
        guard let text = strerror(code) else { return "errno \(code)" }
        return String(cString: text)
    }

    static func errnoName(_ code: Int32) -> String {
        switch code {
        case EPERM: "EPERM"
        case EACCES: "EACCES"
        case ENOENT: "ENOENT"
        case ENODEV: "ENODEV"
        case EEXIST: "EEXIST"
        case EINVAL: "EINVAL"
        case EADDRNOTAVAIL: "EADDRNOTAVAIL"
        case EOPNOTSUPP: "EOPNOTSUPP"
        case ENETDOWN: "ENETDOWN"
        case ENOBUFS: "ENOBUFS"
        case EAGAIN: "EAGAIN"
        case EBUSY: "EBUSY"
        case ERANGE: "ERANGE"
        case ENXIO: "ENXIO"
        default: "errno \(code)"
        }
    }

    /// Maps an errno from the kernel to the error kind: permission errors get their own kind so
    /// the description can name the missing capability.
    static func kernel(
        _ code: Int32, operation: Operation, interface: String?, address: String?, reason: String
    ) -> NetlinkError {
        let kind: Kind
        switch code {
        case EPERM, EACCES: kind = .permissionDenied
        default: kind = .kernel
        }
        let text = kind == .permissionDenied ? "permission denied" : reason
        return NetlinkError(
            kind, operation: operation, interface: interface, address: address, errno: code, reason: text)
    }
}

func quoted(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\t": result += "\\t"
        default:
            if scalar.value < 0x20 || scalar.value == 0x7F {
                result += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
    }
    return result + "\""
}
