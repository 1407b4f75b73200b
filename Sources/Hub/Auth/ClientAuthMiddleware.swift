import Proxy
import Hummingbird
import Auth
import Server
import Wire

/// Authenticates the caller (JWT or API key) with one of `roles`, records the identity in
/// the context, and applies the caller's rate and concurrency limits.
///
/// `authenticator == nil` means `--no-auth`: the hub then listens on loopback only, and
/// `local` decides who may still call it.
struct ClientAuthMiddleware: RouterMiddleware {
    typealias Context = HubRequestContext

    /// The authenticator in force (nil under `--no-auth`; a reload replaces it).
    let settings: HubSettings
    /// The rules of `--no-auth` (nil with authentication).
    var local: LocalOnlyAccess?
    var roles: Set<TokenRole> = [.client, .admin]
    /// Nil for endpoints without limits (admin).
    var limiter: RateLimiter?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        if limiter != nil { context.access?.update { $0.isAPI = true } }
        guard let authenticator = settings.authenticator else {
            try local?.check(authority: request.head.authority, origin: request.headers[.origin], admin: roles == [.admin])
            return try await next(request, context)
        }
        var context = context
        let identity = try await Self.identify(request.headers[.authorization], with: authenticator, roles: roles)
        context.identity = identity
        context.access?.update { $0.subject = identity.subject }
        guard let limiter else { return try await next(request, context) }
        let admission = try Self.admit(identity, limiter: limiter)
        let rateHeaders = RateLimitHeaders.fields(requests: admission.requests, tokens: nil)
        guard let permit = admission.permit else { return try await next(request, context) }
        // The slot comes back when the connection ends, too: a write blocked on a client
        // that stopped reading fails only once its connection is closed.
        let departure = context.clientDeparture
        let watch = departure?.onDeparture { permit.release() }
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            departure?.cancel(watch)
            permit.release()
            throw error
        }
        response.headers.append(contentsOf: rateHeaders)
        // The concurrency slot lasts until the last byte of a stream, not just its head.
        let body = response.body
        response.body = ResponseBody { writer in
            defer {
                departure?.cancel(watch)
                permit.release()
            }
            try await body.write(writer)
        }
        return response
    }

    /// The caller of an `Authorization` header, with one of `roles`; the error envelope if not.
    static func identify(_ authorization: String?, with authenticator: ClientAuthenticator, roles: Set<TokenRole>)
        async throws(OpenAIError) -> Identity
    {
        do {
            return try await authenticator.authenticate(authorization, roles: roles)
        } catch {
            throw rejection(error, roles: roles)
        }
    }

    /// The envelope for a credential refused with `error` on an endpoint for `roles`.
    static func rejection(_ error: TokenError, roles: Set<TokenRole>) -> OpenAIError {
        guard error.kind == .roleRejected else { return OpenAIError.unauthorized(error.reason) }
        return OpenAIError(.insufficientRole, message: "This endpoint needs a credential with role \(roles.map(\.rawValue).sorted().joined(separator: " or "))")
    }

    /// Admits a request of `identity` under its rate and concurrency limits: the permit to
    /// give back at its last byte (nil without limits) and what is left of its rate, or 429.
    static func admit(_ identity: Identity, limiter: RateLimiter) throws(OpenAIError) -> RateLimiter.Admission {
        switch limiter.acquire(identity) {
        case .failure(let retry):
            throw OpenAIError(.rateLimitExceeded, message: "Rate limit for this credential: \(retry.reason)",
                              headers: RateLimitHeaders.refusal(retryAfter: retry.seconds, requests: retry.window))
        case .success(let admission):
            return admission
        }
    }
}
