import Hummingbird

/// Request context of the hub: Hummingbird's core plus the authenticated caller.
struct HubRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// Set by ``ClientAuthMiddleware``; nil under `--no-auth`.
    var identity: Identity?

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
    }
}
