import Logging
import ServiceLifecycle

/// Removes workers that stopped reporting and logs each one, once per heartbeat interval.
///
/// Routing already ignores stale workers on its own (liveness is checked on every lookup);
/// the sweep keeps the registry small and makes expiry visible in the log.
struct ExpirySweeper: Service {
    let state: HubState
    let interval: Duration
    let logger: Logger

    func run() async throws {
        // The sleep ends at once on shutdown (cancelled), not after up to one interval.
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                for name in state.expire() {
                    logger.warning("worker expired: no heartbeat within the expiry window", metadata: ["worker": "\(name)"])
                }
                try await Task.sleep(for: interval)
            }
        }
    }
}
