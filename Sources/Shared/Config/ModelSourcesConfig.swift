import Foundation

/// `hub.model_sources`: where hub-managed models (`caravan-hub models add`) come from.
public struct ModelSourcesConfig: Decodable, Sendable, Equatable {
    /// Hugging Face's address for `hf://` sources (a mirror works the same way);
    /// `HF_ENDPOINT` overrides it, as in Hugging Face's own tools.
    public var hfEndpoint = "https://huggingface.co"
    /// A token for private repositories (`HF_TOKEN` overrides it). The hub reads headers with
    /// it; each worker needs its own (`worker.hf_token_file`) to download.
    public var hfTokenFile: String?
    /// Let sources point at loopback or link-local addresses (127.0.0.0/8, ::1,
    /// 169.254.0.0/16, fe80::/10): off, so an admin credential cannot make the hub or the
    /// workers fetch from services only they can reach (SSRF). A local mirror needs it on.
    public var allowLocal = false
    /// A worker gone this long loses its replicas to other workers.
    public var replaceAfter: Duration = .seconds(300)
    /// Longest wait for a source's answer while reading its header.
    public var timeout: Duration = .seconds(30)

    enum CodingKeys: String, CodingKey {
        case hfEndpoint = "hf_endpoint", hfTokenFile = "hf_token_file", allowLocal = "allow_local", replaceAfter = "replace_after"
        case timeout
    }

    public init() {}

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hfEndpoint = try c.optional(String.self, .hfEndpoint) ?? hfEndpoint
        guard isHTTPURL(hfEndpoint) else { throw c.error(.hfEndpoint, "expected an http:// or https:// URL, got \"\(hfEndpoint)\"") }
        hfTokenFile = try c.optional(String.self, .hfTokenFile)
        allowLocal = try c.optional(Bool.self, .allowLocal) ?? false
        replaceAfter = try c.positiveDuration(.replaceAfter) ?? replaceAfter
        timeout = try c.positiveDuration(.timeout) ?? timeout
    }

    /// The endpoint in force: `HF_ENDPOINT` from `environment`, else the configured one.
    public func endpoint(environment: [String: String]) -> String {
        let chosen = environment["HF_ENDPOINT"].flatMap { $0.isEmpty ? nil : $0 } ?? hfEndpoint
        return chosen.hasSuffix("/") ? String(chosen.dropLast()) : chosen
    }
}

/// A Hugging Face token: `HF_TOKEN` from `environment`, else the first line of `file`
/// (resolved against `base`); nil when neither gives one.
public func huggingFaceToken(file: String?, base: String, environment: [String: String]) -> Secret? {
    if let token = environment["HF_TOKEN"], !token.isEmpty { return Secret(token) }
    guard let file, let text = try? String(contentsOfFile: ConfigFile.path(file, relativeTo: base), encoding: .utf8) else { return nil }
    let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
    return token.isEmpty ? nil : Secret(token)
}
