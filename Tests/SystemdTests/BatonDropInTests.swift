import Systemd
import Testing

@Suite struct BatonDropInTests {
    @Test func bindsToBatondsUnitAndReadsTheEpochFile() {
        let dropIn = BatonDropIn(unit: "web.service", boundTo: "batond.service", epochFile: "/run/baton/web/epoch")
        #expect(dropIn.render() == """
            # Written by batond; removed when batond stops managing web.service.

            [Unit]
            BindsTo=batond.service
            After=batond.service
            ConditionPathExists=/run/baton/web/epoch

            [Service]
            EnvironmentFile=/run/baton/web/epoch

            """)
        #expect(dropIn.path(inRuntimeDirectory: "/run/systemd/system") == "/run/systemd/system/web.service.d/50-baton.conf")
    }

    @Test func fixedEpochAndEscapedSpecifiers() {
        let dropIn = BatonDropIn(unit: "db.service", epoch: 42, epochFile: "/run/baton/100%/epoch")
        let text = dropIn.render()
        #expect(text.contains("Environment=BATON_EPOCH=42\n"))
        #expect(text.contains("EnvironmentFile=/run/baton/100%%/epoch\n"))
        #expect(!text.contains("BindsTo="))
        #expect(EpochFile.contents(epoch: 7) == "BATON_EPOCH=7\n")
        #expect(EpochFile.defaultPath(app: "web") == "/run/baton/web/epoch")
    }

    @Test func runtimeUnitDirectoryOfSystemAndUserManagers() {
        let system = [
            "/etc/systemd/system.control", "/run/systemd/system.control", "/run/systemd/transient",
            "/run/systemd/generator.early", "/etc/systemd/system", "/etc/systemd/system.attached", "/run/systemd/system",
            "/run/systemd/system.attached", "/run/systemd/generator", "/usr/lib/systemd/system",
        ]
        #expect(RuntimeUnitDirectory.find(in: system) == "/run/systemd/system")
        let user = [
            "/home/u/.config/systemd/user.control", "/run/user/1000/systemd/user.control", "/run/user/1000/systemd/transient",
            "/run/user/1000/systemd/generator.early", "/home/u/.config/systemd/user", "/etc/systemd/user",
            "/run/user/1000/systemd/user", "/run/systemd/user", "/usr/lib/systemd/user",
        ]
        #expect(RuntimeUnitDirectory.find(in: user) == "/run/user/1000/systemd/user")
        #expect(RuntimeUnitDirectory.find(in: ["/etc/systemd/system"]) == nil)
    }

    @Test func errorsNameWhatFailed() {
        #expect(SystemdError.unknownUnit(unit: "nope.service", bus: .system).description.contains("nope.service"))
        let denied = SystemdError.permissionDenied(bus: .system, call: "StartUnit(web.service)", message: "Access denied")
        #expect(denied.description.contains("the system bus") && denied.description.contains("StartUnit(web.service)"))
        let noBus = SystemdError.noBus(bus: .address("unix:path=/x/bus"), errno: 2, reason: "No such file or directory")
        #expect(noBus.description.contains("unix:path=/x/bus") && noBus.description.contains("No such file"))
        let failed = SystemdError.jobFailed(unit: "web.service", operation: "start", result: .dependency)
        #expect(failed.description.contains("web.service") && failed.description.contains("dependency"))
        #expect(SystemdError.callTimeout(bus: .user, call: "Reload", timeout: .seconds(5)).description.contains("5"))
    }
}
