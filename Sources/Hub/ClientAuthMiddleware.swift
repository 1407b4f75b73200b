import Hummingbird
import Shared

/// Requires a valid client JWT (`Authorization: Bearer ...`) on every request it guards.
///
/// `verifier == nil` means `--no-auth`: the hub then listens on loopback only.
struct ClientAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let verifier: TokenVerifier?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        if let verifier {
            do {
                let token = try bearerToken(request.headers[.authorization])
                _ = try await verifier.verify(token, roles: [.client, .admin])
            } catch {
                throw OpenAIError.unauthorized(error.reason)
            }
        }
        return try await next(request, context)
    }
}
