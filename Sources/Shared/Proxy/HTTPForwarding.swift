import HTTPTypes
import Wire

/// Header rules for proxying, shared by the hub and the worker.
public enum HTTPForwarding {
    /// Hop-by-hop headers (RFC 9110 §7.6.1) plus those the proxy sets itself.
    static let dropped: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
        "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length",
    ]

    /// Request headers to pass upstream: hop-by-hop ones and the client's credentials removed.
    public static func requestHeaders(_ fields: HTTPFields) -> [(String, String)] {
        var out: [(String, String)] = []
        out.reserveCapacity(fields.count)
        for field in fields {
            let name = field.name.canonicalName
            if dropped.contains(name) || name == "authorization" || name == "cookie" { continue }
            if name == modelHeaderName.lowercased() || name == streamHeaderName.lowercased() { continue }  // ours to set
            if name == "x-request-id" { continue }  // the accepted id is set by the caller
            out.append((field.name.rawName, field.value))
        }
        return out
    }

    /// Response headers to pass back to the client: hop-by-hop ones removed, and CORS
    /// headers too. llama-server echoes any request's `Origin` in
    /// `Access-Control-Allow-Origin`; passed on, that would let every web page read the
    /// hub's answers and void `cors_origins`, which only the hub decides.
    public static func responseHeaders<S: Sequence<(name: String, value: String)>>(_ headers: S) -> HTTPFields {
        var out = HTTPFields()
        for (name, value) in headers {
            let lower = name.lowercased()
            if dropped.contains(lower) && lower != "content-length" { continue }
            if lower.hasPrefix("access-control-") { continue }
            if let field = HTTPField.Name(name) { out.append(HTTPField(name: field, value: value)) }
        }
        return out
    }
}
