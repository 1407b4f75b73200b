import Hummingbird
import Server

/// CORS for an explicit allow-list of origins (none by default).
///
/// A preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed origin is
/// answered here, before authentication (browsers send no credentials on preflights);
/// one from any other origin gets 403. Actual requests from allowed origins get
/// `Access-Control-Allow-Origin` echoing that origin; others get no CORS headers, so the
/// browser keeps the answer from the page.
struct CORSAllowList<Context: RequestContext>: RouterMiddleware {
    /// The allowed origins in force (`hub.cors_origins`; a reload replaces them).
    let allowed: @Sendable () -> Set<String>

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        guard let origin = request.headers[.origin] else { return try await next(request, context) }
        let allowed = self.allowed().contains(origin)
        if request.method == .options, request.headers[.accessControlRequestMethod] != nil {
            guard allowed else {
                throw OpenAIError(.originNotAllowed, message: "Cross-origin requests from this origin are not allowed")
            }
            return Response(status: .noContent, headers: [
                .accessControlAllowOrigin: origin, .vary: "Origin",
                .accessControlAllowMethods: "GET, POST, OPTIONS",
                .accessControlAllowHeaders: "Authorization, Content-Type, Accept",
                .accessControlMaxAge: "600",
            ])
        }
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            guard allowed else { throw error }
            response = try OpenAIError.from(error).response(from: request, context: context)
        }
        if allowed {
            response.headers[.accessControlAllowOrigin] = origin
            response.headers[.vary] = "Origin"
        }
        return response
    }
}
