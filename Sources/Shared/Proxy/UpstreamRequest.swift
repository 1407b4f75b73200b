import NIOCore
import NIOHTTP1

/// One request for ``UpstreamClient``: the body is sent whole, with its length.
public struct UpstreamRequest: Sendable {
    public var url: String
    public var method: HTTPMethod
    public var headers: [(String, String)]
    public var body: ByteBuffer

    public init(url: String, method: HTTPMethod, headers: [(String, String)], body: ByteBuffer) {
        self.url = url
        self.method = method
        self.headers = headers
        self.body = body
    }

    func head(for target: UpstreamTarget) -> HTTPRequestHead {
        var fields = HTTPHeaders()
        fields.reserveCapacity(headers.count + 2)
        fields.add(name: "Host", value: target.hostHeader)
        for (name, value) in headers { fields.add(name: name, value: value) }
        if body.readableBytes > 0 || method == .POST || method == .PUT {
            fields.add(name: "Content-Length", value: String(body.readableBytes))
        }
        return HTTPRequestHead(version: .http1_1, method: method, uri: target.pathAndQuery, headers: fields)
    }
}
