import Server
import Logging
import ServiceLifecycle
import UnixSignals

/// Reloads the configuration on SIGHUP (`systemctl reload`), hub and worker alike; a
/// failed reload keeps the running configuration and logs the one-line reason.
public struct ReloadOnHangup: Service {
    let reload: @Sendable () async throws -> Void
    let logger: Logger

    public init(logger: Logger, reload: @escaping @Sendable () async throws -> Void) {
        self.reload = reload
        self.logger = logger
    }

    public func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            logger.notice("SIGHUP: reloading the configuration")
            do { try await reload() } catch {
                logger.error("reload failed; the running configuration is unchanged", metadata: ["reason": "\(error)"])
            }
        }
    }
}
