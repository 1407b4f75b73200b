import Hummingbird
import Server
import Proxy

/// Request context of the worker: Hummingbird's core plus the client's departure, so a
/// forwarded request stops when the hub hangs up (and llama-server stops generating).
struct WorkerRequestContext: AccessRecordingContext {
    var coreContext: CoreRequestContextStorage
    /// Completes when the client (the hub) closes its side of the connection.
    let clientDeparture: ClientDeparture?
    /// This request's id (the hub's) and access log record (``AccessLogMiddleware``).
    var access: AccessRecord?

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.clientDeparture = ClientDepartureHandler.departure(of: source.channel)
    }
}
