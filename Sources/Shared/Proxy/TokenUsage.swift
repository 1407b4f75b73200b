
/// Tokens a request used, as the engine counted them.
public struct TokenUsage: Sendable, Equatable {
    public var prompt: Int
    public var completion: Int
    /// Prompt tokens the engine reused from its cache instead of computing (llama-server's
    /// `timings.cache_n`, OpenAI's `usage.prompt_tokens_details.cached_tokens`); nil when not said.
    public var cached: Int?

    public init(prompt: Int, completion: Int, cached: Int? = nil) {
        self.prompt = prompt
        self.completion = completion
        self.cached = cached
    }
}
