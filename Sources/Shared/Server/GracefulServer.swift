import ServiceLifecycle

/// Which of ``ShutdownGrace/run(_:)``'s tasks ended.
enum GraceChild: Sendable { case server, timer }

/// A service run under a ``ShutdownGrace``.
public struct GracefulServer<Server: Service>: Service {
    public let server: Server
    public let grace: ShutdownGrace

    public init(_ server: Server, grace: ShutdownGrace) {
        self.server = server
        self.grace = grace
    }

    public func run() async throws { try await grace.run(server) }
}
