import HTTPTypes
import NIOCore

/// What a process forwards on the raw data plane (the hub's inference API, the worker's
/// engine front). The ``DataPlaneDispatcher`` asks ``claims(_:)`` for each request head on
/// the connection's event loop; claimed requests are read whole (up to ``maxBodyBytes``
/// within ``bodyTimeout``) and answered by ``answer(_:)``; every other request goes on to
/// Hummingbird (control plane, admin, health, dashboard).
public protocol DataPlane: Sendable {
    /// Whether this plane answers the request. Called on the event loop for every head: cheap.
    func claims(_ head: HTTPRequest) -> Bool
    /// Largest body a claimed request may send (413 beyond).
    var maxBodyBytes: Int { get }
    /// Longest a claimed request's body may take to arrive (408 after).
    var bodyTimeout: Duration { get }
    /// Answers one claimed request: relays it with ``UpstreamForwarder`` or answers with
    /// ``ClientExchange/respond(_:)``. Called on the request's event loop, and meant to stay
    /// there: only a step that must wait (a first token verification, an engine
    /// start) runs as a task, through ``ClientExchange/run(_:)``.
    func answer(_ exchange: ClientExchange)
}
