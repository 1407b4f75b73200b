import HTTPTypes
import Wire

/// Header rules for proxying, shared by the hub and the worker.
public enum HTTPForwarding {
    /// Hop-by-hop headers (RFC 9110 §7.6.1) plus those the proxy sets itself.
    static let dropped: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
        "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length",
    ]

    /// Request headers the proxy never passes on: hop-by-hop ones, the client's credentials,
    /// the headers Caravan sets itself, and the request id (the accepted one is set by the caller).
    static let droppedFromRequests: Set<String> = dropped.union([
        "authorization", "cookie", modelHeaderName.lowercased(), streamHeaderName.lowercased(), "x-request-id",
    ])

    /// Request headers to pass upstream: hop-by-hop ones and the client's credentials removed.
    public static func requestHeaders(_ fields: HTTPFields) -> [(String, String)] {
        var out: [(String, String)] = []
        out.reserveCapacity(fields.count + 4)  // and the caller's own
        for field in fields where !droppedFromRequests.contains(field.name.canonicalName) {
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
            guard let field = HTTPField.Name(name) else { continue }
            let lower = field.canonicalName
            if dropped.contains(lower) && lower != "content-length" { continue }
            if lower.hasPrefix("access-control-") { continue }
            out.append(HTTPField(name: field, value: value))
        }
        return out
    }
}
