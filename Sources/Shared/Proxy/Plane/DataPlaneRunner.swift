import ServiceLifecycle

/// Runs each claimed request's ``DataPlane/answer(_:)`` as a child task of one long-lived
/// task group: structured (no detached tasks), and at shutdown it waits for answers in
/// progress. Only the decision runs here (authentication, routing, queueing, retries);
/// the answer's bytes are relayed on the event loop and never cross into a task.
///
/// Listed before the server among the application's services, so it stops after the
/// server has drained.
public final class DataPlaneRunner: Service, Sendable {
    public typealias Job = @Sendable () async -> Void
    private let jobs: AsyncStream<Job>
    private let submitter: AsyncStream<Job>.Continuation

    public init() { (jobs, submitter) = AsyncStream.makeStream(of: Job.self) }

    /// False once the runner has stopped (the caller answers 503 instead).
    func submit(_ job: @escaping Job) -> Bool {
        if case .terminated = submitter.yield(job) { return false }
        return true
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
