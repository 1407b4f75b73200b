import Foundation
import HTTPTypes
import Hummingbird
import Synchronization
import Server
import Wire

/// A request context that carries the request's ``AccessRecord``.
public protocol AccessRecordingContext: RequestContext {
    var access: AccessRecord? { get set }
}

/// What one request did, filled in by whoever learns it (authentication: the subject; the
/// router: model, worker, retries; the relay: first byte, usage, how it ended) and written
/// once as the access log line (and the hub's metrics) when the last byte is out.
public final class AccessRecord: Sendable {
    public struct Fields: Sendable {
        public var subject: String?
        /// A configured model name (never the client's text).
        public var model: String?
        public var worker: String?
        public var retries = 0
        public var ttft: Duration?
        public var meanGap: Duration?
        public var usage: TokenUsage?
        public var queueWait: Duration?
        /// Why the routing policy chose the worker (`prefix`, `load`, `no_match`,
        /// `round_robin`), and the prompt blocks it expected that worker to have cached.
        public var route: String?
        public var predictedBlocks = 0
        /// How the relayed answer ended.
        public var finish: UpstreamForwarder.Finish?
        /// The error envelope's code, when the answer was one of ours.
        public var code: ErrorCode?
        /// A request to the API (not the control plane or an admin call): counted in the metrics.
        public var isAPI = false

        public init() {}
    }

    /// This request's id: the caller's `X-Request-Id` when well-formed, else a new one.
    public let id: String
    public let start = ContinuousClock.now
    private let fields = Mutex(Fields())
    private let completed = Atomic<Bool>(false)

    public init(id: String) { self.id = id }

    public func update(_ change: (inout Fields) -> Void) { fields.withLock { change(&$0) } }

    public var current: Fields { fields.withLock { $0 } }

    /// Records a relayed answer's end: its timing and usage.
    public func finished(_ finish: UpstreamForwarder.Finish) {
        update { fields in
            fields.finish = finish
            if let timing = finish.timing {
                fields.ttft = fields.ttft ?? timing.firstByte
                fields.meanGap = timing.meanGap
                fields.usage = timing.usage ?? fields.usage
            }
        }
    }

    /// True for the first caller only.
    func complete() -> Bool { !completed.exchange(true, ordering: .acquiringAndReleasing) }

    /// What became of a request, for the log and the `outcome` label.
    public static func outcome(status: Int, code: ErrorCode?, finish: UpstreamForwarder.Finish?) -> String {
        switch finish {
        case .clientGone?: return "client_gone"
        case .upstreamFailed(let error, _)?:
            return [.gapTimeout, .headTimeout, .connectTimeout].contains(error.kind) ? "timeout" : "upstream_error"
        default: break
        }
        switch status {
        case 499: return "client_gone"
        case 401, 403: return "rejected_auth"
        case _ where code?.rejection == .limit: return "rejected_limit"
        case _ where code?.rejection == .queue: return "rejected_queue"
        case 408, 504: return "timeout"
        case ..<400: return "ok"
        case 400..<500 where status != 429: return "client_error"
        default: return "upstream_error"
        }
    }
}

