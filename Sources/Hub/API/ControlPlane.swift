import Routing
import Foundation
import Hummingbird
import Logging
import Auth
import Config
import Server
import Wire

/// Routes workers use to register, heartbeat and leave. Authenticated with each worker's
/// own credential (``WorkerKeys``; `role: worker`, `sub` = worker name): a client token
/// cannot register a worker, one worker cannot report for another, a name the cluster
/// file does not list cannot join, and a worker's data-plane URL must be on the host its
/// entry names.
struct ControlPlane {
    let state: HubState
    let keys: WorkerKeys
    /// Worker entries of the cluster file, by name (for the URL check).
    let settings: HubSettings
    /// Worker entries of the cluster file in force, by name.
    var entries: [String: WorkerConfig] { settings.current.entries }
    let heartbeatInterval: Duration
    let logger: Logger

    func addRoutes<Context: RequestContext>(to router: Router<Context>) {
        router.post(RouterPath(ControlPath.register)) { request, context in
            let report = try await authenticatedReport(request, context: context)
            state.register(report)
            logger.info("worker registered", metadata: ["worker": "\(report.name)", "url": "\(report.url)",
                                                        "models": "\(report.models.map(\.name))"])
            let answer = RegisterResponse(heartbeatIntervalMs: Int(heartbeatInterval.milliseconds))
            return try jsonResponse(answer)
        }
        router.post(RouterPath(ControlPath.heartbeat)) { request, context in
            let report = try await authenticatedReport(request, context: context)
            switch state.heartbeat(report) {
            case .accepted, .outOfOrder:
                return Response(status: .noContent)
            case .unknownWorker:
                throw OpenAIError(.unknownWorker, message: "This hub does not know worker '\(report.name)'; register first")
            }
        }
        router.post(RouterPath(ControlPath.join)) { request, context in
            do throws(TokenError) {
                _ = try await keys.verifyJoin(try bearerToken(request.headers[.authorization]))
            } catch {
                throw OpenAIError.unauthorized("join token rejected: \(error.reason)")
            }
            let body = try await request.body.collect(upTo: 64 * 1024)
            let name = try decode(JoinRequest.self, body).name
            guard (1...128).contains(name.utf8.count), name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
                throw OpenAIError(.invalidWorkerName, message: "A worker name is 1-128 letters, digits, '-', '_' or '.'")
            }
            // A name of the cluster file gets its credential from the operator, never from a
            // token; a name in use belongs to the worker using it.
            guard entries[name] == nil, !state.liveWorkers().contains(where: { $0.name == name }) else {
                throw OpenAIError(.workerNameTaken, message: "The name '\(name)' is listed in the cluster file or in use")
            }
            logger.notice("worker joined with a join token", metadata: ["worker": "\(name)"])
            return try jsonResponse(JoinResponse(credential: keys.credential(for: name).value))
        }
        router.post(RouterPath(ControlPath.deregister)) { request, context in
            let claims = try await authenticate(request)
            let body = try await request.body.collect(upTo: 64 * 1024)
            let leaving = try decode(DeregisterRequest.self, body)
            guard leaving.name == claims.subject else { throw impersonation(leaving.name) }
            if state.deregister(leaving.name) {
                logger.info("worker deregistered", metadata: ["worker": "\(leaving.name)"])
            }
            return Response(status: .noContent)
        }
    }

    private func authenticate(_ request: Request) async throws -> CaravanClaims {
        do {
            return try await keys.verify(bearerToken(request.headers[.authorization]))
        } catch where error.kind == .unknownWorker {
            throw OpenAIError(.unknownWorkerName, message: "Only workers listed in the cluster file may register")
        } catch {
            throw OpenAIError.unauthorized("worker credential rejected: \(error.reason)")
        }
    }

    private func authenticatedReport(_ request: Request, context: some RequestContext) async throws -> WorkerReport {
        let claims = try await authenticate(request)
        let body = try await request.body.collect(upTo: 1024 * 1024)
        return try admit(try decode(WorkerReport.self, body), from: claims.subject)
    }

    /// A report of worker `subject` (its credential's, or its tunnel's), checked and with the
    /// hub's own settings applied.
    func admit(_ report: WorkerReport, from subject: String) throws -> WorkerReport {
        var report = report
        guard report.name == subject else { throw impersonation(report.name) }
        let entry = entries[report.name]
        // A number in the hub's file decides the routing weight (a reload changes it at the
        // worker's next report); `auto` leaves the worker's own VRAM-based weight.
        if let weight = entry?.weight { report.weight = weight }
        if let host = entry?.requiredURLHost, URLComponents(string: report.url)?.host?.lowercased() != host {
            throw OpenAIError(.workerUrlMismatch, message: "Worker '\(report.name)' must report a data-plane URL on \(host) (its advertise or listen address)")
        }
        if let problem = report.problem {
            logger.warning("worker report refused", metadata: ["worker": "\(report.name)", "problem": "\(problem)"])
            throw OpenAIError(.invalidReport, message: "Worker report out of bounds: \(problem)")
        }
        return report
    }

    private func impersonation(_ name: String) -> OpenAIError {
        OpenAIError(.workerNameMismatch, message: "The worker credential does not belong to worker '\(name)'")
    }

    func decode<T: Decodable>(_ type: T.Type, _ body: ByteBuffer) throws -> T {
        do {
            return try WireCoding.decoder().decode(type, from: Data(body.readableBytesView))
        } catch {
            throw OpenAIError(.invalidReport, message: "Malformed worker report")
        }
    }
}
