import HTTPTypes
import Testing
import RoutingFixtures

@testable import Hub
@testable import Routing
@testable import Server
@testable import Wire

/// What `/health/ready` and a request with no worker to take it say while workers drain.
@Suite("Readiness and draining")
struct ReadinessTests {
    @Test("ready only while a live worker that is not draining serves a model; a 503 names the draining workers")
    func drainingIsNotReady() {
        let state = HubState(registry: Registry(expiry: .seconds(60)))
        #expect(ReadyStatus(state.liveWorkers()).status == "no_live_workers")
        state.register(report("idle", models: []))
        #expect(ReadyStatus(state.liveWorkers()).status == "no_models", "a worker with no model cannot serve")
        for name in ["a", "b"] { state.register(report(name, models: [ModelReport(name: "m", state: .ready, slotsTotal: 1)])) }
        #expect(state.setDrained("a", true))
        let one = ReadyStatus(state.liveWorkers())
        #expect(one.isReady && one.drainingWorkers == 1 && one.liveWorkers == 3)
        #expect(state.setDrained("b", true))
        let none = ReadyStatus(state.liveWorkers())
        #expect(!none.isReady && none.status == "no_models", "the idle worker is live but serves nothing")
        #expect(state.drainingWorkers(serving: "m") == ["a", "b"])
        let answer = OpenAIError.noWorker("m", draining: state.drainingWorkers(serving: "m"))
        #expect(answer.status == .serviceUnavailable && answer.message.contains("is draining (a, b)") && answer.headers[.retryAfter] == "5")
        #expect(!OpenAIError.noWorker("m").message.contains("draining"))
        // Only draining workers left: `draining`.
        let drainingOnly = HubState(registry: Registry(expiry: .seconds(60)))
        drainingOnly.register(report("c", models: [ModelReport(name: "m", state: .ready, slotsTotal: 1)]))
        #expect(drainingOnly.setDrained("c", true))
        #expect(ReadyStatus(drainingOnly.liveWorkers()).status == "draining")
    }
}
