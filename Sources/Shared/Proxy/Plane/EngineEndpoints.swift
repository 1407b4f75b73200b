import HTTPTypes

/// The endpoints both data planes forward to engines, written once: the hub routes them by
/// `model`, the worker hands them to that model's engine.
package enum EngineEndpoints {
    /// OpenAI's endpoints that carry a `model`.
    package static let openAI: Set<Substring> = [
        "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/reranking",
    ]

    /// llama.cpp's own endpoints (llama-server serves them for its one model).
    package static let llamaCpp: Set<Substring> = [
        "/completion", "/completions", "/infill", "/embedding", "/embeddings", "/rerank", "/reranking",
        "/tokenize", "/detokenize", "/apply-template",
    ]

    /// The methods the `/upstream/{model}/{path}` pass-through relays.
    package static let passThroughMethods: Set<HTTPRequest.Method> = [.get, .post, .put, .delete]

    /// Whether a request is for the `/upstream/` pass-through.
    package static func isPassThrough(_ path: Substring, _ method: HTTPRequest.Method) -> Bool {
        path.hasPrefix("/upstream/") && passThroughMethods.contains(method)
    }
}
