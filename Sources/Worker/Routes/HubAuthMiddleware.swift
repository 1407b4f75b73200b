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
        do {
            let token = try bearerToken(request.headers[.authorization])
            _ = try await verifier.verify(token, roles: [.hub])
        } catch {
            throw OpenAIError.unauthorized("hub credential rejected: \(error.reason)")
        }
        return try await next(request, context)
    }
}
