import Hummingbird
import Server
import Proxy

/// Request context of the hub: Hummingbird's core plus the authenticated caller.
struct HubRequestContext: AccessRecordingContext {
    var coreContext: CoreRequestContextStorage
    /// Set by ``ClientAuthMiddleware``; nil under `--no-auth`.
    var identity: Identity?
    /// Completes when the client closes its side of the connection.
    let clientDeparture: ClientDeparture?
    /// This request's id and access log record (``AccessLogMiddleware``).
    var access: AccessRecord?

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.clientDeparture = ClientDepartureHandler.departure(of: source.channel)
    }
}
