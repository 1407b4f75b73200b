import Foundation
import Hummingbird
import Server

/// Who may call a hub started with `--no-auth`: programs on this machine, not web pages.
///
/// Listening on 127.0.0.1 is not enough on its own. A web page the operator visits can
/// make the browser send requests to 127.0.0.1 (a `text/plain` POST needs no CORS preflight),
/// and a DNS-rebinding page can do so under its own host name. So requests must name a
/// loopback host, a browser request (one with `Origin`) must come from a loopback page or an
/// allowed `cors_origins` entry, and the admin routes stay closed unless `--no-auth-admin`.
struct LocalOnlyAccess: Sendable {
    let corsOrigins: Set<String>
    /// Whether the admin routes are open (`--no-auth-admin`).
    let admin: Bool

    func check(authority: String?, origin: String?, admin isAdminRoute: Bool) throws(OpenAIError) {
        guard let authority, Self.isLoopback(authority: authority) else {
            throw OpenAIError(.hostNotAllowed, message: "Without authentication (--no-auth) the hub answers only requests for localhost, 127.0.0.1 or [::1]")
        }
        if let origin, !corsOrigins.contains(origin), !Self.isLoopback(origin: origin) {
            throw OpenAIError(.originNotAllowed, message: "Without authentication (--no-auth) browser requests from other sites are refused")
        }
        if isAdminRoute && !admin {
            throw OpenAIError(.adminClosed, message: "Admin routes are closed under --no-auth; start the hub with --no-auth-admin to open them")
        }
    }

    /// `localhost`, `127.0.0.1` (any of 127/8) or `[::1]`, with or without a port.
    static func isLoopback(authority: String) -> Bool {
        let host: Substring
        if authority.hasPrefix("[") {
            guard let end = authority.firstIndex(of: "]") else { return false }
            host = authority[authority.index(after: authority.startIndex)..<end]
        } else {
            host = authority.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        }
        let lowered = host.lowercased()
        if lowered == "localhost" || lowered == "::1" { return true }
        let parts = lowered.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    /// An `Origin` such as `http://localhost:8080`.
    static func isLoopback(origin: String) -> Bool {
        guard let range = origin.range(of: "://") else { return false }
        return isLoopback(authority: String(origin[range.upperBound...]))
    }
}
