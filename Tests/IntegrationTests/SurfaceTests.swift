import Foundation
import Testing
import Auth
import Config
import Server
import TestSupport

/// The API surface beyond chat: llama.cpp's own endpoints and model retrieval, through the
/// hub to the real llama-server, routed by `model` like chat.
@Suite("API surface", .serialized)
struct SurfaceTests {
    @Test("llama.cpp's endpoints (/completion, /tokenize, /detokenize, /apply-template, /props) and /v1/models/{id} are routed by model")
    func llamaEndpoints() async throws {
        try await TestCluster.start(workers: ["a"]).using { cluster in
            let completion = try await cluster.request("POST", "/completion", body: #"{"model":"tiny","prompt":"Hello","n_predict":4}"#)
            #expect(completion.status == 200 && completion.json?["content"] is String, "\(completion.body)")
            let streamed = try await cluster.request("POST", "/completion",
                                                     body: #"{"model":"tiny-chat","prompt":"Hello","n_predict":4,"stream":true}"#)
            #expect(streamed.status == 200 && streamed.body.contains("data: "), "\(streamed.body.prefix(300))")
            let tokens = try await cluster.request("POST", "/tokenize", body: #"{"model":"tiny","content":"Hello world"}"#)
            let ids = try #require(tokens.json?["tokens"] as? [Int], "\(tokens.body)")
            #expect(!ids.isEmpty)
            let text = try await cluster.request("POST", "/detokenize",
                                                 body: #"{"model":"tiny","tokens":[\#(ids.map(String.init).joined(separator: ","))]}"#)
            #expect(text.json?["content"] is String, "\(text.body)")
            let template = try await cluster.request("POST", "/apply-template",
                                                     body: #"{"model":"tiny","messages":[{"role":"user","content":"Hi"}]}"#)
            #expect(template.status == 200 && template.json?["prompt"] is String, "\(template.body)")
            let props = try await cluster.request("GET", "/props?model=tiny")
            #expect(props.status == 200 && props.json != nil, "\(props.body.prefix(300))")
            let noModel = try await cluster.request("GET", "/props")
            #expect(noModel.status == 400 && noModel.errorCode == "missing_model", "\(noModel.body)")
            let retrieved = try await cluster.request("GET", "/v1/models/tiny")
            #expect(retrieved.status == 200 && retrieved.json?["id"] as? String == "tiny", "\(retrieved.body)")
            let missing = try await cluster.request("GET", "/v1/models/nope")
            #expect(missing.status == 404 && missing.errorCode == "model_not_found", "\(missing.body)")
            let unknownModel = try await cluster.request("POST", "/tokenize", body: #"{"model":"nope","content":"x"}"#)
            #expect(unknownModel.status == 404 && unknownModel.errorCode == "model_not_found", "\(unknownModel.body)")
            // Routed to the engine, which cannot do these with the tiny model: its own 501 comes
            // back, and it is not held against the worker (the breaker stays closed).
            for (path, body) in [("/infill", #"{"model":"tiny","input_prefix":"a","input_suffix":"b"}"#),
                                 ("/rerank", #"{"model":"tiny","query":"q","documents":["d"]}"#),
                                 ("/v1/rerank", #"{"model":"tiny","query":"q","documents":["d"]}"#)]
                + Array(repeating: ("/reranking", #"{"model":"tiny","query":"q","documents":["d"]}"#), count: 5)
            {
                let reply = try await cluster.request("POST", path, body: body)
                #expect(reply.status == 501 && reply.body.contains("support"), "\(path): \(reply.body)")
            }
            #expect(try await cluster.adminModel("a")?["breaker"] as? String == "closed")
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody()).status == 200)
            let notProxied = try await cluster.request("POST", "/v1/nope", body: chatBody())
            #expect(notProxied.status == 404 && notProxied.json?["error"] is [String: Any], "\(notProxied.body)")
        }
    }
}

extension SurfaceTests {
    /// Runs a Python script with the official `openai` SDK against the hub and returns the
    /// JSON object it prints last.
    static func sdk(_ cluster: TestCluster, token: String, _ script: String) async throws -> [String: Any] {
        let python = try ManagedProcess(name: "openai", executable: URL(fileURLWithPath: "/usr/bin/env"),
                                        arguments: ["python3", "-c", script, cluster.hubURL, token])
        let line = try await python.waitForLine(containing: "{\"result\"", timeout: .seconds(90))
        await python.stop()
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        return try #require(object?["result"] as? [String: Any], "\(line)")
    }

    @Test("the official openai SDK, sync and async: models list and retrieve, chat (plain, streamed, include_usage, tools), completions, embeddings, and the error class of every status")
    func openAISDKSurface() async throws {
        let fake = TestCluster.WorkerSpec(name: "busy", fake: true,
                                          models: "- {name: always-busy, path: /models/b.gguf, env: {FAKE_STATUS: \"503\"}}")
        // --jinja: llama-server applies the chat template with the request's tools.
        let jinja = TestCluster.WorkerSpec(name: "a", models: TestCluster.tinyModel(
            "tiny", "aliases: [tiny-chat]",
            args: #"["-c", "512", "--parallel", "2", "-t", "1", "--embeddings", "--pooling", "mean", "--jinja"]"#))
        try await TestCluster.start(specs: [jinja, fake],
                                    hubSettings: "max_body_mb: 0.05\nretries: 0\nbreaker: {min_samples: 1000, consecutive_failures: 0}")
            .using { cluster in
            let limited = try await TokenVerifier(secret: Secret(cluster.secrets.client))
                .sign(CaravanClaims(sub: "limited", expires: Date().addingTimeInterval(600), models: ["always-busy"]))
            let script = """
                import asyncio, json, sys
                import openai
                from openai import OpenAI, AsyncOpenAI
                base, token = sys.argv[1] + "/v1", sys.argv[2]
                client = OpenAI(base_url=base, api_key=token, max_retries=0)
                out = {}
                out["models"] = sorted(m.id for m in client.models.list())
                out["retrieved"] = client.models.retrieve("tiny").id
                chat = client.chat.completions.create(model="tiny", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
                out["chat"] = chat.choices[0].message.content is not None and chat.usage.completion_tokens > 0
                chunks = list(client.chat.completions.create(model="tiny-chat", max_tokens=4, stream=True,
                    stream_options={"include_usage": True}, messages=[{"role": "user", "content": "hi"}]))
                out["stream_chunks"] = len(chunks)
                out["stream_usage"] = chunks[-1].usage.total_tokens if chunks[-1].usage else None
                tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather of a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
                with_tools = client.chat.completions.create(model="tiny", max_tokens=4, tools=tools,
                    messages=[{"role": "user", "content": "weather in Paris?"}])
                out["tools"] = with_tools.choices[0].finish_reason is not None and with_tools.usage.prompt_tokens > 20
                out["completion"] = client.completions.create(model="tiny", prompt="Hello", max_tokens=3).choices[0].text is not None
                out["embedding"] = len(client.embeddings.create(model="tiny", input="hello").data[0].embedding)
                def error(call):
                    try:
                        call()
                        return "no error"
                    except openai.APIStatusError as e:
                        return type(e).__name__ + ":" + str(e.status_code)
                out["400"] = error(lambda: client.chat.completions.create(model=["tiny"], messages=[]))
                out["401"] = error(lambda: OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list())
                out["403"] = error(lambda: OpenAI(base_url=base, api_key=sys.argv[3], max_retries=0).chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "hi"}]))
                out["404"] = error(lambda: client.chat.completions.create(model="nope", messages=[]))
                out["413"] = error(lambda: client.chat.completions.create(model="tiny",
                    messages=[{"role": "user", "content": "x" * 100000}]))
                out["503"] = error(lambda: client.chat.completions.create(model="always-busy",
                    messages=[{"role": "user", "content": "hi"}]))
                async def use_async():
                    aclient = AsyncOpenAI(base_url=base, api_key=token, max_retries=0)
                    chat = await aclient.chat.completions.create(model="tiny", max_tokens=3, messages=[{"role": "user", "content": "hi"}])
                    stream = await aclient.chat.completions.create(model="tiny", max_tokens=3, stream=True,
                        messages=[{"role": "user", "content": "hi"}])
                    count = 0
                    async for _ in stream:
                        count += 1
                    models = [m.id async for m in aclient.models.list()]
                    return chat.choices[0].message.content is not None and count > 0 and "tiny" in models
                out["async"] = asyncio.run(use_async())
                print(json.dumps({"result": out}))
                """
            let result = try await Self.sdk(cluster, token: cluster.clientToken, script.replacingOccurrences(
                of: "sys.argv[3]", with: "\"\(limited)\""))
            #expect(result["models"] as? [String] == ["always-busy", "tiny"], "\(result)")
            #expect(result["retrieved"] as? String == "tiny")
            #expect(result["chat"] as? Bool == true)
            #expect((result["stream_chunks"] as? Int ?? 0) >= 3)
            #expect((result["stream_usage"] as? Int ?? 0) > 0, "include_usage: the last chunk carries usage")
            #expect(result["completion"] as? Bool == true)
            #expect(result["tools"] as? Bool == true, "a request with tools reaches the engine's template: \(result)")
            #expect((result["embedding"] as? Int ?? 0) > 0)
            #expect(result["400"] as? String == "BadRequestError:400", "\(result)")
            #expect(result["401"] as? String == "AuthenticationError:401", "\(result)")
            #expect(result["403"] as? String == "PermissionDeniedError:403", "\(result)")
            #expect(result["404"] as? String == "NotFoundError:404", "\(result)")
            #expect(result["413"] as? String == "APIStatusError:413", "\(result)")
            #expect(result["503"] as? String == "InternalServerError:503", "\(result)")
            #expect(result["async"] as? Bool == true)
        }
    }

    @Test("the openai SDK gets RateLimitError (429) over a credential's rate limit")
    func openAISDKRateLimit() async throws {
        try await TestCluster.start(specs: [TestCluster.WorkerSpec(name: "a", fake: true)],
                                    hubSettings: "limits: {requests_per_second: 1, burst: 1}").using { cluster in
            let script = """
                import json, sys
                import openai
                from openai import OpenAI
                client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
                names = []
                for _ in range(3):
                    try:
                        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
                        names.append("ok")
                    except openai.APIStatusError as e:
                        names.append(type(e).__name__ + ":" + str(e.status_code))
                print(json.dumps({"result": {"names": names}}))
                """
            let result = try await Self.sdk(cluster, token: cluster.clientToken, script)
            let names = result["names"] as? [String] ?? []
            #expect(names.first == "ok" && names.contains("RateLimitError:429"), "\(names)")
        }
    }
}

extension SurfaceTests {
    @Test("request rewriting: the engine receives the model's rewrite, and a body without those fields byte for byte")
    func rewriting() async throws {
        let spec = TestCluster.WorkerSpec(name: "w", fake: true, models: """
            - {name: tiny, path: /models/t.gguf, env: {FAKE_RECORD: "$DIR/received.json"}, strip_params: [logit_bias], set_params: {temperature: 0.2}, use_model_name: tiny-engine}
            - {name: plain, path: /models/p.gguf, env: {FAKE_RECORD: "$DIR/received-plain.json"}, strip_params: [logit_bias]}
            """)
        try await TestCluster.start(specs: [spec]).using { cluster in
            let sent = #"{"model":"tiny","logit_bias":{"1":5},"temperature":1.5,"messages":[{"role":"user","content":"hi, {there}"}]}"#
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: sent).status == 200)
            let received = try String(contentsOf: cluster.directory.appendingPathComponent("received.json"), encoding: .utf8)
            #expect(received == #"{"model":"tiny-engine","temperature":0.2,"messages":[{"role":"user","content":"hi, {there}"}]}"#, "\(received)")
            // No field to rewrite: the engine gets the client's exact bytes (spacing and order too).
            let untouched = "{ \"messages\" : [ {\"role\":\"user\", \"content\":\"x\"} ],\n \"model\": \"plain\" }"
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: untouched).status == 200)
            let plain = try String(contentsOf: cluster.directory.appendingPathComponent("received-plain.json"), encoding: .utf8)
            #expect(plain == untouched)
        }
    }
}

extension SurfaceTests {
    @Test("/upstream/{model}/...: the raw pass-through to a model's engine, for admins and the upstream claim")
    func upstream() async throws {
        try await TestCluster.start(workers: ["a"]).using { cluster in
            let health = try await cluster.request("GET", "/upstream/tiny/health", token: .some(cluster.adminToken))
            #expect(health.status == 200 && health.json?["status"] as? String == "ok", "\(health.body)")
            let models = try await cluster.request("GET", "/upstream/tiny-chat/v1/models", token: .some(cluster.adminToken))
            #expect(models.status == 200 && models.body.contains("tiny"), "\(models.body.prefix(300))")
            let completion = try await cluster.request("POST", "/upstream/tiny/completion", body: #"{"prompt":"Hi","n_predict":3}"#,
                                                       token: .some(cluster.adminToken))
            #expect(completion.status == 200 && completion.json?["content"] is String, "\(completion.body.prefix(300))")
            let denied = try await cluster.request("GET", "/upstream/tiny/health")
            #expect(denied.status == 403 && denied.errorCode == "upstream_not_allowed", "\(denied.body)")
            let claim = try await TokenVerifier(secret: Secret(cluster.secrets.client))
                .sign(CaravanClaims(sub: "ops-tool", expires: Date().addingTimeInterval(600)).with { $0.upstream = true })
            #expect(try await cluster.request("GET", "/upstream/tiny/health", token: .some(claim)).status == 200)
            let unknown = try await cluster.request("GET", "/upstream/nope/health", token: .some(cluster.adminToken))
            #expect(unknown.status == 404 && unknown.errorCode == "model_not_found", "\(unknown.body)")
        }
    }
}

extension CaravanClaims {
    func with(_ edit: (inout CaravanClaims) -> Void) -> CaravanClaims {
        var copy = self
        edit(&copy)
        return copy
    }
}
