import Prometheus
import Config
import Operations
import Server
import Wire

/// The worker's Prometheus series (`GET /metrics`): engine lifecycle counters and load
/// times, model states read at scrape time, and each running llama-server's own `/metrics`
/// re-exported with a `model` label, so one scrape per worker covers everything.
final class WorkerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    static let loadBuckets: [Duration] = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300].map { .milliseconds(Int64($0 * 1000)) }

    init() {
        registry.gauge("caravan_worker_build_info", labels: [("version", caravanVersion)],
                       help: "Always 1; the version label says which build runs").set(to: 1.0)
    }

    func engineStarted(_ model: String) {
        registry.counter("caravan_worker_engine_starts_total", labels: [("model", model)], help: "Engine processes launched").increment()
    }

    func engineCrashed(_ model: String) {
        registry.counter("caravan_worker_engine_crashes_total", labels: [("model", model)],
                         help: "Engines that exited or hung without being asked to stop").increment()
    }

    func engineEvicted(_ model: String) {
        registry.counter("caravan_worker_engine_evictions_total", labels: [("model", model)],
                         help: "Engines stopped to make room for another model").increment()
    }

    /// `reason`: ttl (idle) or admin.
    func engineUnloaded(_ model: String, reason: String) {
        registry.counter("caravan_worker_engine_unloads_total", labels: [("model", model), ("reason", reason)],
                         help: "Engines unloaded (idle ttl, or an admin)").increment()
    }

    /// A prompt cache event (``PromptCacheStore``): `saved`, `restored` (with their tokens),
    /// `save_failed`, `restore_failed`, `folder_failed`.
    func promptCache(_ model: String, _ event: String, tokens: Int = 0) {
        registry.counter("caravan_worker_prompt_cache_events_total", labels: [("model", model), ("event", event)],
                         help: "Prompt caches saved before planned stops and restored on starts, and their failures").increment()
        guard tokens > 0 else { return }
        registry.counter("caravan_worker_prompt_cache_tokens_total", labels: [("model", model), ("event", event)],
                         help: "Prompt tokens saved and restored").increment(by: Int64(tokens))
    }

    func admissionFull(_ model: String) {
        registry.counter("caravan_worker_admission_full_total", labels: [("model", model)],
                         help: "Requests refused as full: the engine held slots x (1 + ahead_per_slot) already").increment()
    }

    func loaded(_ model: String, after duration: Duration) {
        registry.histogram("caravan_worker_engine_load_seconds", labels: [("model", model)], buckets: Self.loadBuckets,
                           help: "Time from launch to a ready engine").record(duration)
    }

    func render(models: [ModelReport], engines: [(model: String, exposition: String)], draining: Bool, inFlight: Int,
                admissions: [String: (requests: Int, peak: Int)]) -> String {
        var live = MetricsExposition()
        live.add("caravan_worker_draining", draining ? 1 : 0, help: "1 while an admin has drained this worker")
        live.add("caravan_worker_requests_in_flight", Double(inFlight), help: "Requests being forwarded to engines")
        for model in models {
            live.add("caravan_worker_engine_state", 1, labels: [("model", model.name), ("state", model.state.rawValue)],
                     help: "1 for the model's current engine state")
            live.add("caravan_worker_engine_slots_total", Double(model.slotsTotal), labels: [("model", model.name)],
                     help: "Slots of the model's engine")
            live.add("caravan_worker_engine_slots_busy", Double(model.slotsBusy), labels: [("model", model.name)],
                     help: "Busy slots of the model's engine")
            if let admitted = admissions[model.name] {
                live.add("caravan_worker_model_requests", Double(admitted.requests), labels: [("model", model.name)],
                         help: "Requests the model's engine holds now (in a slot or in its queue)")
                live.add("caravan_worker_model_requests_peak", Double(admitted.peak), labels: [("model", model.name)],
                         help: "The most requests the model's engine held at once since the worker started")
            }
        }
        ProcessMetrics.add(to: &live)
        for engine in engines { live.merge(engine.exposition, adding: ("model", engine.model)) }
        return registry.emitToString() + live.render()
    }
}
