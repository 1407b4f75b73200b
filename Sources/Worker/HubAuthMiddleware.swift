import Foundation
import Hummingbird
import Shared
import Synchronization

/// Lets only the hub use the data plane: a `role: hub` JWT signed with the worker secret.
///
/// The hub reuses one token for minutes, so the last verified token is remembered until
/// it expires and verification runs once per token, not once per request.
struct HubAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let verifier: TokenVerifier
    private let lastAccepted = LastAcceptedToken()

    init(verifier: TokenVerifier) { self.verifier = verifier }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        do {
            let token = try bearerToken(request.headers[.authorization])
            let now = Date()
            let cached = lastAccepted.matches(token, now: now)
            if !cached {
                let claims = try await verifier.verify(token, roles: [.hub], now: now)
                lastAccepted.remember(token, expires: claims.expires)
            }
        } catch {
            throw OpenAIError.unauthorized("hub credential rejected: \(error.reason)")
        }
        return try await next(request, context)
    }
}

/// The last hub token that passed verification, until its expiry.
final class LastAcceptedToken: Sendable {
    private let state = Mutex<(token: String, expires: Date)?>(nil)

    func matches(_ token: String, now: Date) -> Bool {
        state.withLock { $0.map { $0.token == token && $0.expires > now } ?? false }
    }

    func remember(_ token: String, expires: Date) {
        state.withLock { $0 = (token, expires) }
    }
}
