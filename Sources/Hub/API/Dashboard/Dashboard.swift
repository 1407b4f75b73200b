import Hummingbird
import HTTPTypes
import NIOCore

/// `GET /ui`: the operator's live view of the cluster, one page with no build step.
///
/// The page, its script and its style are compiled into the binary. It holds no data of
/// its own: after login (an admin token or API key, kept in `sessionStorage`, sent as a
/// bearer header, never a cookie) it reads `GET /admin/events` and acts through the admin
/// API. A strict Content-Security-Policy allows only this origin's script and style.
enum Dashboard {
    static let headers: HTTPFields = [
        .contentSecurityPolicy: "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            + "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        .xContentTypeOptions: "nosniff", .referrerPolicy: "no-referrer", .cacheControl: "no-cache",
    ]

    static func addRoutes<Context: RequestContext>(to router: Router<Context>) {
        router.get("/ui") { _, _ in page(html, type: "text/html; charset=utf-8") }
        router.get("/ui/app.js") { _, _ in page(script, type: "text/javascript; charset=utf-8") }
        router.get("/ui/models.js") { _, _ in page(modelsScript, type: "text/javascript; charset=utf-8") }
        router.get("/ui/app.css") { _, _ in page(style, type: "text/css; charset=utf-8") }
    }

    private static func page(_ text: String, type: String) -> Response {
        var fields = headers
        fields[.contentType] = type
        return Response(status: .ok, headers: fields, body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

extension HTTPField.Name {
    static let xContentTypeOptions = Self("X-Content-Type-Options")!
    static let referrerPolicy = Self("Referrer-Policy")!
}
