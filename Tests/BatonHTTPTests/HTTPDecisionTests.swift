import BatonCore
import BatonHTTP
import Testing

private func app(
    _ name: String, _ role: AppStatus.Role, token: UInt64? = 7, running: Bool? = nil, replication: ReplicationStatus? = nil
) -> AppStatus {
    var status = AppStatus(
        name: name, role: role, paused: false, priority: 100, leader: nil, token: token, backendRunning: running ?? (role == .active),
        lastEvent: nil)
    status.replication = replication
    return status
}

private func node(_ id: String, _ apps: AppStatus...) -> NodeStatus {
    NodeStatus(node: id, instance: "i-\(id)", cluster: "demo", version: "test", natsConnected: true, apps: apps)
}

@Suite("HTTP: load-balancer checks")
struct AppCheckTests {
    @Test("active answers ok only where the app is active with its backend running")
    func active() {
        #expect(AppCheck.active.evaluate(app: "web", in: node("a", app("web", .active)))?.ok == true)
        #expect(AppCheck.active.evaluate(app: "web", in: node("a", app("web", .active, running: false)))?.ok == false)
        for role in [AppStatus.Role.passive, .acquiring, .promoting, .demoting, .fencing, .stopped] {
            let outcome = AppCheck.active.evaluate(app: "web", in: node("a", app("web", role)))
            #expect(outcome?.ok == false, "\(role)")
            #expect(outcome?.reason == "web is \(role.rawValue) on a")
        }
        #expect(AppCheck.active.evaluate(app: "db", in: node("a", app("web", .active))) == nil)
    }

    @Test("passive answers ok only on a standby")
    func passive() {
        #expect(AppCheck.passive.evaluate(app: "web", in: node("a", app("web", .passive)))?.ok == true)
        #expect(AppCheck.passive.evaluate(app: "web", in: node("a", app("web", .active)))?.ok == false)
        #expect(AppCheck.passive.evaluate(app: "web", in: node("a", app("web", .acquiring)))?.ok == false)
    }

    @Test("replica: applying, in sync, without errors, within max_lag")
    func replica() {
        var applying = ReplicationStatus(role: .applying, txid: 40, lagTransactions: 3)
        let check = { (status: AppStatus, lag: UInt64?) in AppCheck.replica.evaluate(app: "db", in: node("b", status), maxLag: lag) }
        #expect(check(app("db", .passive, replication: applying), nil)?.ok == true)
        #expect(check(app("db", .passive, replication: applying), 3)?.ok == true)
        #expect(check(app("db", .passive, replication: applying), 2)?.reason == "the replica on b is 3 transactions behind (max_lag=2)")
        #expect(check(app("db", .active, replication: ReplicationStatus(role: .shipping)), nil)?.ok == false)
        #expect(check(app("db", .passive), nil)?.reason == "db has no sqlite: section, so no replica")
        #expect(check(app("db", .passive, replication: ReplicationStatus(role: .idle)), nil)?.ok == false)
        applying.lastError = "checksum mismatch"
        #expect(check(app("db", .passive, replication: applying), nil)?.ok == false)
        var syncing = ReplicationStatus(role: .applying, txid: 1, lagTransactions: 0)
        syncing.sync = .init(initial: true, txid: 90, phase: "downloading", bytesDone: 1, bytesTotal: 4, bytesPerSecond: 1)
        #expect(check(app("db", .passive, replication: syncing), nil)?.ok == false)
        #expect(check(app("db", .passive, replication: ReplicationStatus(role: .applying, txid: 1)), 5)?.ok == false)
    }

    @Test("max_lag must be a non-negative number")
    func maxLagParameter() throws {
        #expect(try AppCheck.maxLag(nil).get() == nil)
        #expect(try AppCheck.maxLag("0").get() == 0)
        #expect(throws: AppCheck.BadParameter.self) { try AppCheck.maxLag("-1").get() }
        #expect(throws: AppCheck.BadParameter.self) { try AppCheck.maxLag("5s").get() }
    }

    @Test("replica with max_lag_seconds: within the bound in seconds, unknown lag refused")
    func replicaMaxLagSeconds() throws {
        var applying = ReplicationStatus(role: .applying, txid: 40, lagTransactions: 3)
        let check = { (status: ReplicationStatus, lag: UInt64?, seconds: Double?) in
            AppCheck.replica.evaluate(app: "db", in: node("b", app("db", .passive, replication: status)), maxLag: lag, maxLagSeconds: seconds)
        }
        #expect(check(applying, nil, 1)?.reason == "the replica's lag in seconds on b is not known yet (max_lag_seconds=1)")
        #expect(check(applying, nil, 1)?.ok == false)
        applying.lagSeconds = 2.5
        applying.lagBytes = 12_000
        #expect(check(applying, nil, 3)?.ok == true)
        #expect(check(applying, nil, 3)?.reason == "the replica on b is 2.5s behind (max_lag_seconds=3)")
        #expect(check(applying, nil, 2)?.ok == false)
        #expect(check(applying, nil, 2)?.reason == "the replica on b is 2.5s behind (max_lag_seconds=2)")
        // Both bounds: each must hold.
        #expect(check(applying, 2, 3)?.ok == false)
        #expect(check(applying, 3, 3)?.ok == true)
        #expect(check(applying, 3, 0.5)?.ok == false)
        applying.lagSeconds = 0
        #expect(check(applying, nil, 0)?.ok == true)
    }

    @Test("max_lag_seconds must be a non-negative number of seconds")
    func maxLagSecondsParameter() throws {
        #expect(try AppCheck.maxLagSeconds(nil).get() == nil)
        #expect(try AppCheck.maxLagSeconds("0").get() == 0)
        #expect(try AppCheck.maxLagSeconds("2.5").get() == 2.5)
        #expect(throws: AppCheck.BadParameter.self) { try AppCheck.maxLagSeconds("-1").get() }
        #expect(throws: AppCheck.BadParameter.self) { try AppCheck.maxLagSeconds("5s").get() }
        #expect(throws: AppCheck.BadParameter.self) { try AppCheck.maxLagSeconds("inf").get() }
    }
}

@Suite("HTTP: control authorization")
struct ControlAuthorizationTests {
    @Test("401 without a bearer token, 403 with a wrong one, refused without a token file")
    func decisions() {
        #expect(ControlAuthorization.decide(authorization: "Bearer s3cret", expected: "s3cret") == .allowed)
        #expect(ControlAuthorization.decide(authorization: "bearer s3cret", expected: "s3cret") == .allowed)
        #expect(ControlAuthorization.decide(authorization: nil, expected: "s3cret") == .missingToken)
        #expect(ControlAuthorization.decide(authorization: "Basic czNjcmV0", expected: "s3cret") == .missingToken)
        #expect(ControlAuthorization.decide(authorization: "Bearer", expected: "s3cret") == .missingToken)
        #expect(ControlAuthorization.decide(authorization: "Bearer s3cre", expected: "s3cret") == .wrongToken)
        #expect(ControlAuthorization.decide(authorization: "Bearer s3cret2", expected: "s3cret") == .wrongToken)
        #expect(ControlAuthorization.decide(authorization: "Bearer S3CRET", expected: "s3cret") == .wrongToken)
        #expect(ControlAuthorization.decide(authorization: "Bearer s3cret", expected: nil) == .disabled)
        #expect(ControlAuthorization.decide(authorization: nil, expected: "") == .disabled)
    }
}

@Suite("HTTP: where control commands go")
struct CommandPlanTests {
    let cluster = [
        node("a", app("web", .active, token: 9), app("db", .passive)),
        node("b", app("web", .passive, token: 9), app("db", .active)),
        node("c", app("web", .passive, token: 9)),
    ]

    @Test("switchover and stepdown go to the active node; pause and resume to every node running the app")
    func targets() {
        #expect(CommandPlan.make(.switchover, app: "web", to: "c", statuses: cluster) == .send(to: ["a"]))
        #expect(CommandPlan.make(.stepdown, app: "db", to: nil, statuses: cluster) == .send(to: ["b"]))
        #expect(CommandPlan.make(.pause, app: "web", to: nil, statuses: cluster) == .send(to: ["a", "b", "c"]))
        #expect(CommandPlan.make(.resume, app: "db", to: nil, statuses: cluster) == .send(to: ["a", "b"]))
    }

    @Test("refusals name what is wrong")
    func refusals() {
        #expect(CommandPlan.make(.pause, app: "cache", to: nil, statuses: cluster) == .refuse(status: 404, message: "no node runs app \"cache\" (nodes that answered: a, b, c)"))
        #expect(CommandPlan.make(.switchover, app: "web", to: nil, statuses: cluster) == .refuse(status: 400, message: "switchover needs ?to=NODE: the node to hand web to"))
        #expect(CommandPlan.make(.switchover, app: "db", to: "c", statuses: cluster) == .refuse(status: 404, message: "node c does not run db (it runs on a, b)"))
        #expect(CommandPlan.make(.switchover, app: "web", to: "a", statuses: cluster) == .refuse(status: 409, message: "web is already active on a"))
        #expect(CommandPlan.make(.stepdown, app: "web", to: "b", statuses: cluster) == .refuse(status: 400, message: "\"to\" only applies to switchover"))
        let noActive = [node("a", app("web", .passive)), node("b", app("web", .acquiring))]
        #expect(CommandPlan.make(.stepdown, app: "web", to: nil, statuses: noActive) == .refuse(status: 409, message: "no node reports web active"))
        let two = [node("a", app("web", .active)), node("b", app("web", .active))]
        #expect(CommandPlan.make(.stepdown, app: "web", to: nil, statuses: two) == .refuse(status: 409, message: "more than one node reports web active (a, b); try again"))
    }
}

@Suite("HTTP: liveness")
struct LivenessTests {
    @Test("healthy only when the node answered and no app loop stalled")
    func liveness() {
        #expect(Liveness(stalledApps: [], nodeAnswered: true, limit: "5s").ok)
        let stalled = Liveness(stalledApps: ["web", "db"], nodeAnswered: true, limit: "5s")
        #expect(!stalled.ok)
        #expect(stalled.message == "the loops of db, web made no progress for 5s")
        #expect(!Liveness(stalledApps: [], nodeAnswered: false, limit: "2s").ok)
    }
}
