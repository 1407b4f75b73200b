import Wire
import Foundation
import Hummingbird
import Auth
import Server

/// Lets only the hub use the data plane: a `role: hub` JWT signed with this worker's own
/// credential and naming this worker as its audience (a token the hub made for another
/// worker is refused).
///
/// The hub reuses one token for minutes; `TokenVerifier` checks its signature once and
/// its expiry on every request.
struct HubAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let verifier: TokenVerifier

    init(verifier: TokenVerifier) { self.verifier = verifier }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        try await Self.check(request.headers[.authorization], with: verifier)
        return try await next(request, context)
    }

    /// Whether `authorization` is the hub's token, when that needs no signature check (a
    /// token already verified); nil when ``check(_:with:)`` must verify it. Synchronous, for
    /// the data plane.
    static func checkCached(_ authorization: String?, with verifier: TokenVerifier) throws(OpenAIError) -> Bool {
        do {
            return try verifier.cachedClaims(try bearerToken(authorization), roles: [.hub]) != nil
        } catch {
            throw OpenAIError.unauthorized("hub credential rejected: \(error.reason)")
        }
    }

    /// Lets a request through when its `Authorization` is the hub's; 401 otherwise.
    static func check(_ authorization: String?, with verifier: TokenVerifier) async throws(OpenAIError) {
        do {
            let token = try bearerToken(authorization)
            _ = try await verifier.verify(token, roles: [.hub])
        } catch {
            throw OpenAIError.unauthorized("hub credential rejected: \(error.reason)")
        }
    }
}
