import BatonCore
import FenceKeeper
import Testing

/// The plan a node derives from an app's config: every timeout, argv and keeper claim, checked
/// without I/O.
@Suite("App plan")
struct AppPlanTests {
    func app(_ yaml: String) throws -> AppConfig {
        let config = try BatonConfig.parse(
            yaml: """
                cluster: demo
                node: {id: node-1}
                nats: {servers: ["nats://127.0.0.1:4222"]}
                apps:
                \(yaml)
                """, file: "plan.yaml")
        return try #require(config.apps.first)
    }

    @Test func aProcessAppRunsItsArgvAndStopsWithinItsStopTimeoutPlusTheMargin() throws {
        let config = try app(
            """
              - name: web
                lease: {ttl: 3s, renew: 1s}
                backend: {process: {command: [/usr/bin/web, --port, "8080"], env: {MODE: ha}, stop_timeout: 7s}}
                vip: {address: 192.0.2.10/24, interface: eth0}
            """)
        let plan = AppPlan(app: config, node: "node-1")
        guard case .process(let process) = plan.backend else {
            Issue.record("expected a process backend, got \(plan.backend)")
            return
        }
        #expect(process.command == ["/usr/bin/web", "--port", "8080"])
        #expect(process.environment == ["MODE": "ha"])
        #expect(plan.backendStopTimeout == .seconds(7))
        #expect(plan.stopTimeout == .seconds(9))
        #expect(plan.stepTimeout == .seconds(30))
        #expect(plan.priorityHoldback == .zero)
        #expect(plan.flushTimeout == .seconds(15))
        #expect(plan.keeperClaims == FenceKeeperClaims(addresses: [.init(cidr: "192.0.2.10/24", interface: "eth0")]))

        let lifecycle = plan.lifecycle(instance: "i-1", hasReplica: false, hasAddresses: true, wallClockOffset: .zero)
        #expect(lifecycle.node == "node-1")
        #expect(lifecycle.instance == "i-1")
        #expect(lifecycle.timing == config.lease)
        #expect(lifecycle.stopTimeout == .seconds(9))
        #expect(lifecycle.stepTimeout == .seconds(30))
        #expect(lifecycle.hasHealthCheck == false)
        #expect(lifecycle.hasAddresses)
        #expect(!lifecycle.hasReplica)
        #expect(lifecycle.flushTimeout == .seconds(15))
    }

    @Test func aSystemdAppStopsWithinTheJobTimeoutAndItsKeeperReleasesUnitEpochFileAndVIPs() throws {
        let config = try app(
            """
              - name: db
                lease: {ttl: 3s, renew: 1s}
                priority: 50
                backend: {systemd: {unit: postgresql.service, bus: user}}
                health: {tcp: "127.0.0.1:5432", interval: 5s, timeout: 2s, failures: 4, grace: 20s}
                vip: {address: 10.0.0.5/32, interface: br-lan}
                sqlite: {path: /var/lib/db/app.db, flush_timeout: 40s}
            """)
        let plan = AppPlan(app: config, node: "node-2", runtimeDirectory: "/run/user/1000/baton")
        guard case .systemd(let systemd) = plan.backend else {
            Issue.record("expected a systemd backend, got \(plan.backend)")
            return
        }
        #expect(systemd.unit == "postgresql.service")
        #expect(systemd.bus == .user)
        #expect(systemd.epochFile == "/run/user/1000/baton/db/epoch")
        #expect(systemd.startTimeout == .seconds(90))
        #expect(systemd.stopTimeout == .seconds(90))
        #expect(systemd.callTimeout == .seconds(10))
        // The lifecycle's bound follows the backend's own stop timeout (no hard-coded 100 s).
        #expect(plan.stopTimeout == .seconds(92))
        // grace 20 s + 5 intervals of 5 s + a probe's 2 s
        #expect(plan.stepTimeout == .seconds(47))
        // priority 50 waits half a renew interval for higher priorities
        #expect(plan.priorityHoldback == .milliseconds(500))
        #expect(plan.flushTimeout == .seconds(40))
        #expect(
            plan.keeperClaims
                == FenceKeeperClaims(
                    addresses: [.init(cidr: "10.0.0.5/32", interface: "br-lan")], units: [.init(name: "postgresql.service", bus: "user")],
                    files: ["/run/user/1000/baton/db/epoch"]))
        let lifecycle = plan.lifecycle(instance: "i-2", hasReplica: true, hasAddresses: true, wallClockOffset: .seconds(1_764_950_000) + .milliseconds(123))
        #expect(lifecycle.hasHealthCheck)
        #expect(lifecycle.hasReplica)
        #expect(lifecycle.stopTimeout == .seconds(92))
        #expect(lifecycle.stepTimeout == .seconds(47))
        #expect(lifecycle.priorityHoldback == .milliseconds(500))
        #expect(lifecycle.flushTimeout == .seconds(40))
        #expect(lifecycle.renewPhase == AppPlan.renewPhase(renew: plan.timing.renew, wallClockOffset: .seconds(1_764_950_000) + .milliseconds(123)))
    }

    @Test func priorityHoldbackIsProportionalAndClamped() {
        #expect(AppPlan.priorityHoldback(priority: 100, renew: .seconds(1)) == .zero)
        #expect(AppPlan.priorityHoldback(priority: 250, renew: .seconds(1)) == .zero)
        #expect(AppPlan.priorityHoldback(priority: 0, renew: .seconds(1)) == .seconds(1))
        #expect(AppPlan.priorityHoldback(priority: -5, renew: .seconds(1)) == .seconds(1))
        #expect(AppPlan.priorityHoldback(priority: 75, renew: .seconds(2)) == .milliseconds(500))
    }

    /// The grid is at whole multiples of `renew` on the wall clock, whatever the monotonic
    /// clock's origin: nodes whose wall clocks agree renew at the same instants.
    @Test func theRenewGridFallsOnWholeMultiplesOfTheIntervalOnTheWallClock() {
        let renew = Duration.milliseconds(750)
        for offset in [Duration.zero, .milliseconds(300), .milliseconds(-300), .seconds(1_764_950_000) + .nanoseconds(123_456_789), .seconds(-42)] {
            let phase = AppPlan.renewPhase(renew: renew, wallClockOffset: offset)
            #expect(phase >= .zero && phase < renew, "offset \(offset)")
            // A grid instant, read on the wall clock, is a whole multiple of the interval.
            let wall = (phase + offset).totalNanoseconds
            #expect(wall % renew.totalNanoseconds == 0, "offset \(offset): phase \(phase)")
        }
        #expect(AppPlan.renewPhase(renew: .seconds(1), wallClockOffset: .milliseconds(300)) == .milliseconds(700))
    }

    /// Node registry heartbeats wait for the wall clock's next whole interval.
    @Test func theWallClockGridDelayEndsOnTheNextWholeInterval() {
        let second = Duration.seconds(1)
        #expect(WallClockGrid.delay(toNextMultipleOf: second, wallClock: 1_764_950_000_250_000_000) == .milliseconds(750))
        #expect(WallClockGrid.delay(toNextMultipleOf: second, wallClock: 1_764_950_000_000_000_000) == second)
        #expect(WallClockGrid.delay(toNextMultipleOf: second, wallClock: -250_000_000) == .milliseconds(250))
        var random = SplitMix64(seed: 7)
        for _ in 0..<1000 {
            let wall = Int64(bitPattern: random.next() >> 1)
            let delay = WallClockGrid.delay(toNextMultipleOf: .milliseconds(750), wallClock: wall)
            #expect(delay > .zero && delay <= .milliseconds(750), "wall \(wall)")
            #expect((wall + delay.totalNanoseconds) % 750_000_000 == 0, "wall \(wall)")
        }
    }

    @Test func theStepTimeoutIsAtLeastThirtySeconds() {
        #expect(AppPlan.stepTimeout(health: nil) == .seconds(30))
        let quick = HealthCheckConfig(probe: .tcp(HostPort(host: "127.0.0.1", port: 80)), interval: .seconds(1), timeout: .milliseconds(500), failures: 3)
        #expect(AppPlan.stepTimeout(health: quick) == .seconds(30))
    }
}
