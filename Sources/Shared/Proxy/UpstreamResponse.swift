import NIOCore
import NIOHTTP1

/// An upstream's answer.
public struct UpstreamResponse: Sendable {
    public enum Body: Sendable {
        case complete(ByteBuffer)
        case stream(UpstreamEventStream)
    }

    public var head: HTTPResponseHead
    public var body: Body
}
