import HTTPTypes
import Hummingbird
import Shared

/// Requires a valid client JWT (`Authorization: Bearer ...`) with one of `roles` on every
/// request it guards (`[.client, .admin]` for the API, `[.admin]` for admin endpoints).
///
/// `verifier == nil` means `--no-auth`: the hub then listens on loopback only.
struct ClientAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let verifier: TokenVerifier?
    var roles: Set<TokenRole> = [.client, .admin]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        if let verifier {
            do {
                let token = try bearerToken(request.headers[.authorization])
                _ = try await verifier.verify(token, roles: roles)
            } catch where error.reason == TokenError.roleRejected.reason {
                throw OpenAIError(.forbidden, type: "permission_error", code: "insufficient_role",
                                  message: "This endpoint needs a token with role \(roles.map(\.rawValue).sorted().joined(separator: " or "))")
            } catch {
                throw OpenAIError.unauthorized(error.reason)
            }
        }
        return try await next(request, context)
    }
}
