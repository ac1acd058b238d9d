import BatonCore
import Foundation
import Testing

@Suite("Config: http section")
struct HTTPConfigTests {
    private static let base = """
        cluster: demo
        node: {id: node-1}
        nats: {servers: ["nats://127.0.0.1:4222"]}
        apps: []

        """

    private func outcome(_ http: String) -> Result<BatonConfig, ConfigErrors> {
        Result { try BatonConfig.parse(yaml: Self.base + http, file: "test.yaml") }.mapError { $0 as! ConfigErrors }
    }

    private func errors(_ http: String) -> [String] {
        if case .failure(let errors) = outcome(http) { return errors.errors.map(\.description) }
        return []
    }

    @Test("no http section: the server is off")
    func absent() throws {
        #expect(try outcome("").get().http == nil)
    }

    @Test("listen, tls and control_token_file are read")
    func full() throws {
        let config = try outcome("""
            http:
              listen: "0.0.0.0:9443"
              tls: {cert: /etc/baton/http.pem, key: /etc/baton/http.key}
              control_token_file: /etc/baton/http.token
            """).get()
        #expect(
            config.http
                == HTTPConfig(
                    host: "0.0.0.0", port: 9443, tls: HTTPTLSConfig(certificatePath: "/etc/baton/http.pem", keyPath: "/etc/baton/http.key"),
                    controlTokenFile: "/etc/baton/http.token"))
    }

    @Test("an empty mapping listens on 127.0.0.1:9180; IPv6 hosts go in brackets")
    func defaultsAndIPv6() throws {
        #expect(try outcome("http: {}").get().http == HTTPConfig(host: "127.0.0.1", port: 9180))
        let v6 = try outcome("http: {listen: \"[::1]:9180\"}").get().http
        #expect(v6?.host == "::1")
        #expect(v6?.listen == "[::1]:9180")
    }

    @Test("bad values are reported with file:line:column and the key path, all at once")
    func badValues() {
        let found = errors("""
            http:
              listen: "localhost"
              tls: {cert: /etc/baton/http.pem}
              control_token_file: token.txt
              listne: x
            """)
        #expect(found.count == 4, "\(found)")
        #expect(found.contains { $0.hasPrefix("test.yaml:6:11: http.listen:") && $0.contains("expected host:port") }, "\(found)")
        #expect(found.contains { $0.hasPrefix("test.yaml:7:8: http.tls:") && $0.contains("missing required key \"key\"") }, "\(found)")
        #expect(found.contains { $0.hasPrefix("test.yaml:8:23: http.control_token_file:") && $0.contains("absolute path") }, "\(found)")
        #expect(found.contains { $0.contains("unknown key \"listne\"; did you mean \"listen\"?") }, "\(found)")
    }

    @Test("the example configs turn the HTTP server on")
    func examples() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        for file in ["examples/baton.yaml", "examples/systemd/baton.yaml"] {
            #expect(try BatonConfig.load(path: root + "/" + file).http == HTTPConfig(host: "127.0.0.1", port: 9180), "\(file)")
        }
    }

    @Test("a changed http section needs a restart; a reload reports it")
    func reloadNeedsRestart() throws {
        let old = try outcome("http: {listen: \"127.0.0.1:9180\"}").get()
        let new = try outcome("http: {listen: \"127.0.0.1:9181\"}").get()
        #expect(changedApps(from: old, to: new).restartRequired == ["http"])
        #expect(changedApps(from: old, to: old).restartRequired.isEmpty)
    }

    @Test("listen: ports out of range, an empty host and an unbracketed IPv6 address are refused")
    func listenErrors() {
        for (text, reason) in [
            ("127.0.0.1:0", "from 1 to 65535"), ("127.0.0.1:70000", "from 1 to 65535"), (":9180", "host is empty"),
            ("::1:9180", "brackets"), ("[::1:9180", "closing"), ("127.0.0.1:http", "from 1 to 65535"),
        ] {
            let found = errors("http: {listen: \"\(text)\"}")
            #expect(found.count == 1 && found[0].contains(reason), "\(text): \(found)")
        }
    }
}
