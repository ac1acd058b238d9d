import BatonCore
import Foundation
import Timestamps

#if canImport(Glibc)
import Glibc
#endif

extension NodeRecord {
    /// The record of this process: host name, pid, boot id and pid namespace read here.
    public static func local(node: String, instance: String, version: String = BatonVersion.current, labels: [String: String]? = nil) -> NodeRecord {
        var buffer = [CChar](repeating: 0, count: 256)
        let hostname =
            gethostname(&buffer, buffer.count) == 0
            ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "unknown"
        let bootID = (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let pidNamespace = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/pid")
        return NodeRecord(
            node: node, instance: instance, hostname: hostname, pid: getpid(), started: RFC3339.format(secondsSince1970: Date().timeIntervalSince1970, fractionDigits: 3), version: version,
            bootID: bootID, pidNamespace: pidNamespace, labels: labels)
    }
}
