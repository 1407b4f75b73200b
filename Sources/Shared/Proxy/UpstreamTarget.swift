import NIOCore
import Wire

/// Scheme, host and port of an upstream URL, parsed without Foundation (this runs per request).
struct UpstreamTarget: Sendable {
    var tls: Bool
    /// `tunnel://worker/...`: the worker's tunnel to this process (``Tunnels``); `host` is its name.
    var tunnel = false
    var host: String
    var port: Int
    var pathAndQuery: String
    /// The pool key: connections are shared per scheme, host and port.
    var key: String
    var hostHeader: String
    /// The address when the host is an IP literal (then no name resolution per connection).
    var address: SocketAddress?

    /// The name for SNI and certificate checks; nil for IP literals, which SNI forbids.
    var serverName: String? {
        host.contains(":") || host.allSatisfy({ $0.isNumber || $0 == "." }) ? nil : host
    }

    init(_ url: String) throws(UpstreamError) {
        let rest: Substring
        if url.hasPrefix("http://") {
            (tls, rest) = (false, url.dropFirst(7))
        } else if url.hasPrefix("https://") {
            (tls, rest) = (true, url.dropFirst(8))
        } else if url.hasPrefix("tunnel://") {
            (tls, tunnel, rest) = (false, true, url.dropFirst(9))
        } else {
            throw .badURL(url)
        }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        pathAndQuery = slash == rest.endIndex ? "/" : String(rest[slash...])
        let hostPart: Substring
        let portPart: Substring?
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {  // [IPv6]:port
            hostPart = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            portPart = after.hasPrefix(":") ? after.dropFirst() : nil
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            portPart = authority[authority.index(after: colon)...]
        } else {
            (hostPart, portPart) = (authority, nil)
        }
        guard !hostPart.isEmpty else { throw .badURL(url) }
        host = String(hostPart)
        if let portPart {
            guard let number = Int(portPart), (1...65535).contains(number) else { throw .badURL(url) }
            port = number
        } else {
            port = tls ? 443 : 80
        }
        hostHeader = String(authority)
        key = (tunnel ? "tunnel://" : tls ? "https://" : "http://") + hostHeader
        address = try? SocketAddress(ipAddress: host, port: port)
    }
}
