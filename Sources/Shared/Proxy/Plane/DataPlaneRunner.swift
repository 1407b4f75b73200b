import NIOCore
import ServiceLifecycle
import Server

/// Runs the data plane's waiting steps (a first token verification, signing a token, an
/// engine start) as child tasks of one long-lived task group: structured (no detached
/// tasks), and at shutdown it waits for those in progress. Everything else about a request
/// happens on its event loop, without a task.
///
/// Listed before the server among the application's services, so it stops after the
/// server has drained.
public final class DataPlaneRunner: Service, Sendable {
    public typealias Job = @Sendable () async -> Void
    private let jobs: AsyncStream<Job>
    private let submitter: AsyncStream<Job>.Continuation

    public init() { (jobs, submitter) = AsyncStream.makeStream(of: Job.self) }

    /// Runs `body` as a child task; its result comes back on `loop`. Fails with
    /// ``OpenAIError/shuttingDown`` once the runner has stopped.
    package func run<T: Sendable>(on loop: any EventLoop, _ body: @escaping @Sendable () async throws -> T) -> EventLoopFuture<T> {
        let promise = loop.makePromise(of: T.self)
        let job: Job = {
            do {
                promise.succeed(try await body())
            } catch {
                promise.fail(error)
            }
        }
        if case .terminated = submitter.yield(job) { promise.fail(OpenAIError.shuttingDown) }
        return promise.futureResult
    }

    public func run() async {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await job in jobs { group.addTask { await job() } }
            }
        } onGracefulShutdown: {
            self.submitter.finish()
        }
    }
}
