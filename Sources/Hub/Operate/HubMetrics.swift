import Prometheus
import Synchronization
import Config
import Operations
import Server
import Wire
import Proxy
import Routing

/// The hub's Prometheus series (`GET /metrics`; the table is in docs/operations.md).
///
/// Events (requests, retries, breaker transitions) are counted in a collector registry as
/// they happen; the view of workers, models and queues is read off ``HubState`` at scrape
/// time, so a worker that left has no series. Label values are configured names only: a
/// model no worker or config names is `unknown`, never the client's text.
final class HubMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()

    /// Series handles, looked up once per label set: the registry validates names and
    /// labels on every lookup, which cost more than the rest of a request's bookkeeping.
    private struct RequestKey: Hashable {
        var model: String
        var worker: String
        var outcome: String
        var code: Int
    }
    private struct ModelSeries {
        var duration: DurationHistogram
        var ttft: DurationHistogram
        var gap: DurationHistogram
        var prompt: Counter
        var completion: Counter
    }
    private let requestCounters = Mutex<[RequestKey: Counter]>([:])
    private let modelSeries = Mutex<[String: ModelSeries]>([:])
    /// Counters of the cache-aware series, by name and label values (looked up once each).
    private struct SeriesKey: Hashable {
        var name: String
        var values: [String]
    }
    private let labelledCounters = Mutex<[SeriesKey: Counter]>([:])

    static let durationBuckets: [Duration] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
        .map { Duration.milliseconds(Int64($0 * 1000)) }
    static let gapBuckets: [Duration] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]
        .map { Duration.microseconds(Int64($0 * 1_000_000)) }

    init() {
        registry.gauge("caravan_hub_build_info", labels: [("version", caravanVersion)],
                           help: "Always 1; the version label says which build runs").set(to: 1.0)
    }

    /// One finished request (see ``AccessRecord``).
    func requestFinished(_ fields: AccessRecord.Fields, outcome: String, status: Int, duration: Duration) {
        let key = RequestKey(model: fields.model ?? "unknown", worker: fields.worker ?? "none", outcome: outcome, code: status)
        let counter = requestCounters.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = registry.counter(
                "caravan_hub_requests_total",
                labels: [("model", key.model), ("worker", key.worker), ("outcome", outcome), ("code", String(status))],
                help: "Requests by model, worker, outcome and HTTP status")
            counters[key] = counter
            return counter
        }
        counter.increment()
        guard let model = fields.model else { return }
        let series = series(for: model)
        series.duration.record(duration)
        if let ttft = fields.ttft { series.ttft.record(ttft) }
        if let gap = fields.meanGap { series.gap.record(gap) }
        if let route = fields.route { routed(model: model, reason: route) }
        if let usage = fields.usage {
            series.prompt.increment(by: Int64(usage.prompt))
            series.completion.increment(by: Int64(usage.completion))
            if let cached = usage.cached, let worker = fields.worker { promptCached(model: model, worker: worker, cached) }
        }
    }

    private func series(for model: String) -> ModelSeries {
        modelSeries.withLock { all in
            if let series = all[model] { return series }
            let labels = [("model", model)]
            let series = ModelSeries(
                duration: registry.histogram("caravan_hub_request_duration_seconds", labels: labels,
                                             buckets: Self.durationBuckets, help: "Time from request to the last byte"),
                ttft: registry.histogram("caravan_hub_ttft_seconds", labels: labels, buckets: Self.durationBuckets,
                                         help: "Time to the first byte of streamed answers"),
                gap: registry.histogram("caravan_hub_stream_gap_seconds", labels: labels, buckets: Self.gapBuckets,
                                        help: "Mean silence between the chunks of one streamed answer"),
                prompt: registry.counter("caravan_hub_prompt_tokens_total", labels: labels,
                                         help: "Prompt tokens, from the answers' usage"),
                completion: registry.counter("caravan_hub_completion_tokens_total", labels: labels,
                                             help: "Generated tokens, from the answers' usage"))
            all[model] = series
            return series
        }
    }

    /// Prompt tokens an engine reused from its cache, as its answer says (`timings.cache_n`).
    private func promptCached(model: String, worker: String, _ tokens: Int) {
        counter("caravan_hub_prompt_tokens_cached_total", [("model", model), ("worker", worker)],
                help: "Prompt tokens the engines reused from their caches (their answers' cache_n)").increment(by: Int64(tokens))
    }

    /// One routing decision of the cache-aware policy, by reason.
    private func routed(model: String, reason: String) {
        counter("caravan_hub_routing_decisions_total", [("model", model), ("reason", reason)],
                help: "Requests by why the policy chose their worker: prefix, load, no_match, round_robin").increment()
    }

    /// The counter `name` with `labels`, from the registry the first time, from a table after.
    func counter(_ name: String, _ labels: [(String, String)], help: String) -> Counter {
        let key = SeriesKey(name: name, values: labels.map(\.1))
        return labelledCounters.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = registry.counter(name, labels: labels, help: help)
            counters[key] = counter
            return counter
        }
    }

    func queueWait(model: String, _ wait: Duration) {
        registry.histogram("caravan_hub_queue_wait_seconds", labels: [("model", model)],
                                       buckets: Self.durationBuckets, help: "Time requests waited in the model's queue")
            .record(wait)
    }

    func retry(model: String, worker: String) {
        registry.counter("caravan_hub_retries_total", labels: [("model", model), ("worker", worker)],
                             help: "Attempts that failed before the first byte and were retried elsewhere").increment()
    }

    func workerFull(model: String, worker: String) {
        registry.counter("caravan_hub_worker_full_total", labels: [("model", model), ("worker", worker)],
                         help: "Attempts a worker refused as full (its own admission bound); sent elsewhere or queued").increment()
    }

    /// A failure judged after its request's other attempts (``Blame``): the worker's, the
    /// request's (poison), or undecided (left to other clients' requests).
    func judged(model: String, verdict: Blame.Verdict) {
        let name = switch verdict {
        case .worker: "worker"
        case .request: "request"
        case .undecided: "undecided"
        case .none: "none"
        }
        registry.counter("caravan_hub_blame_total", labels: [("model", model), ("verdict", name)],
                         help: "Ambiguous failures (a 5xx, unparsable HTTP) by whom the request's attempts blamed").increment()
    }

    /// A request that failed alike on every worker tried: the request's fault, not theirs.
    func poison(model: String) {
        registry.counter("caravan_hub_poison_requests_total", labels: [("model", model)],
                         help: "Requests that failed the same way on every worker (no breaker sample)").increment()
    }

    /// A request refused with 429 because its client sent too many poison requests.
    func poisonRejected() {
        registry.counter("caravan_hub_poison_rejections_total",
                         help: "Requests refused (429) because their client sent over limits.poison_per_minute poison requests").increment()
    }

    func breakerTransition(worker: String, model: String, to state: String) {
        registry.counter("caravan_hub_breaker_transitions_total",
                             labels: [("worker", worker), ("model", model), ("to", state)],
                             help: "Circuit breaker transitions by the state entered").increment()
    }

    /// The whole exposition: event series, then the live view.
    func render(_ snapshot: AdminRoutes.Snapshot) -> String {
        var live = MetricsExposition()
        live.add("caravan_hub_live_workers", Double(snapshot.workers.count), help: "Workers that reported within the expiry")
        for worker in snapshot.workers {
            let name = worker.name
            live.add("caravan_worker_heartbeat_age_seconds", Double(worker.heartbeatAgeMs) / 1000, labels: [("worker", name)],
                     help: "Seconds since the worker's last report")
            live.add("caravan_worker_draining", worker.draining ? 1 : 0, labels: [("worker", name)],
                     help: "1 while the worker is drained (no new requests)")
            live.add("caravan_worker_in_flight", Double(worker.inFlight), labels: [("worker", name)],
                     help: "Requests the worker reported in flight (from every hub)")
            for gpu in worker.gpus {
                let labels = [("worker", name), ("gpu", String(gpu.index))]
                live.add("caravan_worker_gpu_vram_total_bytes", Double(gpu.memoryTotalMiB) * 1_048_576, labels: labels,
                         help: "GPU memory, as the worker reported it")
                live.add("caravan_worker_gpu_vram_free_bytes", Double(gpu.memoryFreeMiB) * 1_048_576, labels: labels,
                         help: "Free GPU memory, as the worker reported it")
            }
            for model in worker.models {
                let labels = [("worker", name), ("model", model.name)]
                live.add("caravan_worker_slots_total", Double(model.slotsTotal), labels: labels,
                         help: "Engine slots of the model on the worker")
                live.add("caravan_worker_slots_busy", Double(model.slotsBusy), labels: labels,
                         help: "Busy engine slots of the model on the worker")
                live.add("caravan_hub_in_flight", Double(model.hubInFlight), labels: labels,
                         help: "Requests this hub has in flight on the worker's model")
                live.add("caravan_model_state", 1, labels: labels + [("state", model.state.rawValue)],
                         help: "1 for the model's current state on the worker")
                let breaker: Double = switch model.breaker {
                case "closed": 0
                case "half-open": 1
                default: 2
                }
                live.add("caravan_hub_breaker_state", breaker, labels: labels,
                         help: "Circuit breaker: 0 closed, 1 half-open, 2 open")
            }
        }
        for (model, length) in snapshot.queued.sorted(by: { $0.key < $1.key }) {
            live.add("caravan_hub_queue_length", Double(length), labels: [("model", model)],
                     help: "Requests waiting for capacity")
        }
        live.add("caravan_hub_poison_throttled_clients", Double(snapshot.poisonThrottled),
                 help: "Clients held back (429) for sending requests that fail alike on every worker")
        ProcessMetrics.add(to: &live)
        return registry.emitToString() + live.render()
    }
}

