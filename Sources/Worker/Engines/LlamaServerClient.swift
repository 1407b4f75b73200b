import NIOHTTP1
import AsyncHTTPClient
import Foundation
import NIOCore
import Wire

/// The worker's probes of its own engines over loopback: readiness, port ownership, slots
/// and metrics. Each answers nil (or false) when the engine does not answer within 2 s, so
/// a wedged engine slows nothing down but itself.
struct LlamaServerClient: Sendable {
    let client: HTTPClient

    /// `GET /health` (or the model's `health_path`): 200 ready, 503 loading, nil when nothing answers.
    func health(_ engine: Engine) async -> Int? {
        var request = HTTPClientRequest(url: engine.baseURL + engine.healthPath)
        request.method = .GET
        guard let response = try? await client.execute(request, timeout: .seconds(2)) else { return nil }
        _ = try? await response.body.collect(upTo: 64 * 1024)
        return Int(response.status.code)
    }

    /// Whether the process answering on the engine's port knows the engine's API key (only it
    /// does: another process that grabbed the port first would answer 401). Only llama-server
    /// is known to check its key on `/slots`; another engine's port is taken on trust (the
    /// port range is the worker's own).
    func ownsPort(_ engine: Engine) async -> Bool {
        guard engine.isLlamaServer else { return !engine.process.hasExited }
        guard let response = try? await client.execute(authorized(engine, "/slots"), timeout: .seconds(2)) else { return false }
        _ = try? await response.body.collect(upTo: 4 * 1024 * 1024)
        return response.status == .ok && !engine.process.hasExited
    }

    /// llama-server's slots (total, busy) from `/slots`. Decoded into a one-field struct:
    /// its slot objects are large, and `JSONSerialization`'s dictionaries for thousands of
    /// them cost tens of MiB on every heartbeat.
    func slots(_ engine: Engine) async -> (total: Int, busy: Int)? {
        struct Slot: Decodable {
            var isProcessing: Bool?
            enum CodingKeys: String, CodingKey { case isProcessing = "is_processing" }
        }
        guard let response = try? await client.execute(authorized(engine, "/slots"), timeout: .seconds(2)), response.status == .ok,
            let body = try? await response.body.collect(upTo: 64 * 1024 * 1024),
            let slots = try? JSONDecoder().decode([Slot].self, from: Data(body.readableBytesView))
        else { return nil }
        return (slots.count, slots.filter { $0.isProcessing == true }.count)
    }

    /// What each slot holds (slot id -> content), from `/slots`.
    func slotContents(_ engine: Engine) async -> [Int: SlotContent]? {
        struct Slot: Decodable {
            var id: Int
            var promptTokens: Int?
            var task: Int?
            var isProcessing: Bool?
            enum CodingKeys: String, CodingKey {
                case id
                case promptTokens = "n_prompt_tokens"
                case task = "id_task"
                case isProcessing = "is_processing"
            }
        }
        guard let response = try? await client.execute(authorized(engine, "/slots"), timeout: .seconds(2)), response.status == .ok,
            let body = try? await response.body.collect(upTo: 64 * 1024 * 1024),
            let slots = try? JSONDecoder().decode([Slot].self, from: Data(body.readableBytesView))
        else { return nil }
        return Dictionary(slots.map { ($0.id, SlotContent(tokens: $0.promptTokens ?? 0, task: $0.task, busy: $0.isProcessing == true)) },
                          uniquingKeysWith: { first, _ in first })
    }

    /// The prompt tokens llama-server reuses from `slot` for `tokens` (`timings.cache_n` of a
    /// completion that generates nothing): how a restore is judged by the engine's own numbers.
    func cachedPrefix(_ engine: Engine, slot: Int, tokens: [Int32]) async -> Int? {
        struct Answer: Decodable {
            struct Timings: Decodable {
                var cached: Int?
                enum CodingKeys: String, CodingKey { case cached = "cache_n" }
            }
            var timings: Timings?
        }
        var request = authorized(engine, "/completion")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        let body = #"{"prompt":[\#(tokens.map(String.init).joined(separator: ","))],"n_predict":0,"id_slot":\#(slot),"cache_prompt":true}"#
        request.body = .bytes(ByteBuffer(string: body))
        guard let response = try? await client.execute(request, timeout: .seconds(30)), response.status == .ok,
            let answer = try? await response.body.collect(upTo: 16 * 1024 * 1024),
            let decoded = try? JSONDecoder().decode(Answer.self, from: Data(answer.readableBytesView))
        else { return nil }
        return decoded.timings?.cached
    }

    /// `POST /slots/{slot}?action=save|restore` with `filename` (in the engine's `--slot-save-path`):
    /// the tokens saved or restored (`n_saved`, `n_restored`), nil when it failed or took over `timeout`.
    func slotAction(_ engine: Engine, slot: Int, action: String, filename: String, timeout: Duration) async -> Int? {
        struct Answer: Decodable {
            var saved: Int?
            var restored: Int?
            enum CodingKeys: String, CodingKey {
                case saved = "n_saved"
                case restored = "n_restored"
            }
        }
        var request = authorized(engine, "/slots/\(slot)?action=\(action)")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        guard let body = try? JSONEncoder().encode(["filename": filename]) else { return nil }
        request.body = .bytes(ByteBuffer(bytes: body))
        guard let response = try? await client.execute(request, timeout: .nanoseconds(max(1_000_000, timeout.nanoseconds))),
            response.status == .ok,
            let answer = try? await response.body.collect(upTo: 1024 * 1024),
            let decoded = try? JSONDecoder().decode(Answer.self, from: Data(answer.readableBytesView))
        else { return nil }
        return decoded.saved ?? decoded.restored
    }

    /// llama-server's own Prometheus text (it runs with `--metrics`).
    func metrics(_ engine: Engine) async -> String? {
        guard let response = try? await client.execute(authorized(engine, "/metrics"), timeout: .seconds(2)), response.status == .ok,
            let body = try? await response.body.collect(upTo: 4 * 1024 * 1024)
        else { return nil }
        return String(buffer: body)
    }

    private func authorized(_ engine: Engine, _ path: String) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: engine.baseURL + path)
        request.headers.add(name: "Authorization", value: "Bearer \(engine.apiKey)")
        return request
    }
}
