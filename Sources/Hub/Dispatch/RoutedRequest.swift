import Routing
import Foundation
import HTTPTypes
import Logging
import NIOCore
import Auth
import Config
import Proxy
import Server
import Wire

/// One claimed request on the hub, on its event loop from start to answer: authenticated,
/// admitted under its limits, routed to a worker, forwarded, and retried on another worker
/// before its first byte.
///
/// Only a token seen for the first time and signing a new token for a worker run as tasks
/// (``ClientExchange/run(_:)``); a wait in the model's queue is a callback with a timer on
/// this loop (``HubState/waitForCapacity(_:prompt:deadline:on:clientDeparture:shutdown:ticket:_:)``). The
/// usual request (a known token, a free or queued-for worker) never leaves the loop.
///
/// When every attempt fails the client gets the last worker's own error answer, or a 502
/// for transport errors. When every worker is at capacity the request waits in the model's
/// FIFO queue, holding no response headers, so the outcome can still be 429 or 503.
final class RoutedRequest {
    private let plane: HubDataPlane
    private let exchange: ClientExchange
    /// Its place in the model's queue, kept when a worker answers "full" and it waits again.
    private let ticket: UInt64
    private let config: HubConfig
    private var identity: Identity?
    /// Who is asking, for the poison count and blame: the credential's subject, else the address.
    private var client: String { identity?.subject ?? exchange.peer ?? "unknown" }
    /// The caller's concurrency slot: back at the answer's last byte, or when no answer is relayed.
    private var permit: RateLimiter.Permit?
    /// Tokens reserved under the caller's token limits: settled with the engine's usage.
    private var reservation: RateLimiter.TokenReservation?
    private var fields = RoutingFields(model: "", stream: false)
    /// The prompt's chained block hashes, when the cache-aware policy routes (nil otherwise).
    private var prompt: PrefixFingerprint?
    /// The worker's path and query.
    private var target = ""
    private var headers: [(String, String)] = []
    private var attempts: AttemptPolicy
    private let queueDeadline: ContinuousClock.Instant
    private var logger: Logger

    init(plane: HubDataPlane, exchange: ClientExchange) {
        ticket = plane.state.arrival()
        self.plane = plane
        self.exchange = exchange
        config = plane.config
        attempts = AttemptPolicy(retries: config.retries, breaker: config.breaker)
        queueDeadline = .now + config.queue.timeout
        logger = plane.logger
        logger[metadataKey: "request_id"] = "\(exchange.access.id)"
    }

    func start() {
        exchange.access.update { $0.isAPI = true }
        let request = exchange.request.headerFields
        if let origin = request[.origin], config.corsOrigins.contains(origin) {
            exchange.addResponseHeader(.accessControlAllowOrigin, origin)
            exchange.addResponseHeader(.vary, "Origin")
        }
        guard let authenticator = plane.settings.authenticator else {
            do {
                try plane.local?.check(authority: exchange.request.authority, origin: request[.origin], admin: false)
            } catch {
                return fail(error)
            }
            return admitted()
        }
        let authorization = request[.authorization]
        let roles: Set<TokenRole> = [.client, .admin]
        do {
            if let identity = try authenticator.cachedIdentity(authorization, roles: roles) { return authenticated(identity) }
        } catch {
            return fail(ClientAuthMiddleware.rejection(error, roles: roles))
        }
        exchange.run { try await ClientAuthMiddleware.identify(authorization, with: authenticator, roles: roles) }
            .assumeIsolated().whenComplete { result in
                switch result {
                case .success(let identity): self.authenticated(identity)
                case .failure(let error): self.fail(error)
                }
            }
    }

    private func authenticated(_ identity: Identity) {
        self.identity = identity
        exchange.access.update { $0.subject = identity.subject }
        do {
            let admission = try ClientAuthMiddleware.admit(identity, limiter: plane.limiter)
            permit = admission.permit
            for field in RateLimitHeaders.fields(requests: admission.requests, tokens: nil) {
                exchange.addResponseHeader(field.name, field.value)
            }
        } catch {
            return fail(error)
        }
        admitted()
    }

    /// Reads the routing fields and checks the caller may use the model.
    private func admitted() {
        if let wait = plane.limiter.poisonRetryAfter(client) {
            plane.state.metrics?.poisonRejected()
            return fail(OpenAIError(.poisonLimitExceeded, message: "Too many of this client's recent requests failed the same way on every worker "
                                        + "(limits.poison_per_minute); fix the request before retrying",
                                    headers: [.retryAfter: String(wait)]))
        }
        do {
            let path: String
            let promptRange: Range<Int>?
            (fields, path, promptRange) = try plane.routing(exchange, identity: identity)
            if config.routing.policy == .cacheAware, let promptRange {
                prompt = exchange.body.withUnsafeReadableBytes { PrefixFingerprint(UnsafeRawBufferPointer(rebasing: $0[promptRange])) }
            }
            target = path + (exchange.query.map { "?\($0)" } ?? "")
            // A byte the next hop's parser may refuse (a raw `<` in a query) is the client's
            // mistake: named here, never forwarded (it used to come back as a worker's failure).
            if let invalid = RequestTarget.invalidByte(in: target) {
                throw OpenAIError(.invalidRequestTarget, message: "The request target has \(invalid.description) at position \(invalid.offset + 1), "
                                                 + "which must be percent-encoded (\(invalid.encoded))")
            }
            // The `models` claim names canonical models: an alias is resolved first, so an alias
            // that matches a pattern cannot reach a model outside it. (The pick is checked again:
            // an alias may name different models on different workers.)
            if let identity, identity.models != nil {  // no claim: every model, nothing to resolve
                let canonical = plane.state.canonicalModels(for: fields.model)
                guard canonical.isEmpty ? identity.allows(fields.model) : canonical.allSatisfy(identity.allows) else {
                    throw HubDataPlane.notAllowed(fields.model)
                }
            }
            if let identity { try reserveTokens(identity, prompt: promptRange) }
        } catch {
            return fail(error)
        }
        headers = HTTPForwarding.requestHeaders(exchange.request.headerFields)
        headers.append((RequestIDHeader.header, exchange.access.id))
        attempt()
    }

    /// Reserves the request's estimated tokens under its caller's token limits (429 when over):
    /// a quarter of the prompt's bytes (about a token each for English) plus `max_tokens`.
    private func reserveTokens(_ identity: Identity, prompt: Range<Int>?) throws(OpenAIError) {
        if identity.budget != nil, config.storeUnavailable == .refuse, !plane.limiter.storeAvailable {
            throw OpenAIError(.storeUnavailable, message: "This credential's token budget cannot be checked: the hub's store is unavailable "
                                  + "(hub.store_unavailable: refuse); try again shortly", headers: [.retryAfter: "5"])
        }
        let estimate = (prompt?.count ?? exchange.body.readableBytes) / 4 + (fields.maxTokens ?? 0)
        switch plane.limiter.reserveTokens(identity, estimate: estimate) {
        case .success(nil): return
        case .success(let (window, reservation)?):
            self.reservation = reservation
            for field in RateLimitHeaders.fields(requests: nil, tokens: window) { exchange.addResponseHeader(field.name, field.value) }
        case .failure(let refusal):
            plane.state.metrics?.quotaRefused(refusal.kind == .budget ? "budget" : "tokens_per_minute")
            throw OpenAIError(refusal.kind == .budget ? .budgetExceeded : .tokensPerMinuteExceeded,
                              message: "Token limit for this credential: \(refusal.reason)",
                              headers: RateLimitHeaders.refusal(retryAfter: refusal.retryAfter, tokens: refusal.window,
                                                                retry: refusal.kind != .budget))
        }
    }

    /// Settles the token reservation with what the request used: the engine's usage; nothing
    /// without an answer; the estimate for an answer whose usage never came (a stream cut short).
    private func settleTokens(_ usage: TokenUsage?, answered: Bool) {
        guard let reservation, let identity else { return }
        let used = usage.map { $0.prompt + $0.completion } ?? (answered ? reservation.estimate : 0)
        guard reservation.settle(used: used), let budget = identity.budget else { return }
        plane.state.metrics?.softBudgetSpent()
        logger.warning("soft token budget spent", metadata: ["subject": "\(identity.subject)", "budget": "\(budget)"])
        plane.state.events.publish(.init(type: "budget_spent", reason: "\(identity.subject): the soft budget of \(budget) is spent"))
    }

    /// The metrics label of a request that ends before a pick: the name as asked, once the
    /// registry has shown it is a known model or alias (never a client's arbitrary text).
    private func labelKnownModel() {
        let model = fields.model
        exchange.access.update { $0.model = $0.model ?? model }
    }

    /// Picks a worker (waiting in the queue when all are busy) and forwards.
    private func attempt() {
        let state = plane.state
        switch state.pick(fields.model, excluding: attempts.tried, prompt: prompt) {
        case .picked(let pick):
            send(pick)
        case .saturated:
            labelKnownModel()
            // Waiting ends the moment the client leaves (its place goes to the next in line).
            let (model, deadline, departure, shutdown, prompt) = (fields.model, queueDeadline, exchange.departure, plane.shutdown, prompt)
            let access = exchange.access
            let waitStart = ContinuousClock.now
            let loop = exchange.eventLoop
            let request = NIOLoopBound(self, eventLoop: loop)
            state.waitForCapacity(model, prompt: prompt, deadline: deadline, on: loop, clientDeparture: departure,
                                  shutdown: shutdown, ticket: ticket) { result in
                let waited = ContinuousClock.now - waitStart
                access.update { $0.queueWait = ($0.queueWait ?? .zero) + waited }
                if let model = access.current.model { state.metrics?.queueWait(model: model, waited) }
                // Settled on whichever thread freed capacity; the request goes on on its own loop.
                loop.execute {
                    switch result {
                    case .success(let pick): request.value.send(pick)
                    case .failure(let error): request.value.fail(error)
                    }
                }
            }
        case .unknownModel:
            fail(OpenAIError.modelNotFound(fields.model))
        case .noLiveWorker:
            // Also answered for any name while a `models_dir` worker is away: only a name
            // the cluster knows becomes a label.
            if !state.canonicalModels(for: fields.model).isEmpty { labelKnownModel() }
            fail(OpenAIError.noWorker(fields.model, draining: state.drainingWorkers(serving: fields.model)))
        case .doesNotFit(let reason):
            labelKnownModel()
            fail(OpenAIError(.modelDoesNotFit, message: "No live worker can load the model '\(fields.model)': it \(reason)", param: "model"))
        case .exhausted:
            labelKnownModel()
            if attempts.madeAttempts { return passOn(attempts.exhausted(model: fields.model)) }
            fail(OpenAIError(.noHealthyWorker, message: "Every worker serving '\(fields.model)' is failing (circuit open); try again shortly",
                             headers: [.retryAfter: "5"]))
        }
    }

    /// Takes a lease on the pick and forwards with the worker's token (signed first when due).
    private func send(_ pick: Registry.Pick) {
        let lease = Lease(pick, state: plane.state)
        exchange.access.update { fields in
            fields.model = pick.model
            fields.worker = pick.worker
            if self.prompt != nil {
                fields.route = (pick.reason ?? .roundRobin).rawValue
                fields.predictedBlocks = pick.matchedBlocks
            }
        }
        if let prompt {
            logger.debug("routed", metadata: [
                "worker": "\(pick.worker)", "model": "\(pick.model)", "route": "\((pick.reason ?? .roundRobin).rawValue)",
                "predicted_blocks": "\(pick.matchedBlocks)", "prompt_blocks": "\(prompt.blocks.count)",
            ])
        }
        if let identity, identity.models != nil, !identity.allows(pick.model) {
            lease.release(.neutral)
            return fail(HubDataPlane.notAllowed(fields.model))
        }
        // A request sent ahead waits for a slot in the engine's queue: its first byte is late by design.
        if fields.stream && !pick.isAhead { lease.watchFirstByte(config.breaker.slowTTFB, on: exchange.eventLoop) }
        if let authorization = plane.keys.cachedHeader(for: pick.worker) { return forward(pick, lease: lease, authorization: authorization) }
        let (keys, worker) = (plane.keys, pick.worker)
        exchange.run { try await keys.header(for: worker) }.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let authorization): self.forward(pick, lease: lease, authorization: authorization)
            case .failure(let error):
                lease.release(.neutral)
                self.fail(error)
            }
        }
    }

    private func forward(_ pick: Registry.Pick, lease: Lease, authorization: String) {
        let options = UpstreamForwarder.Options(
            headTimeout: fields.stream ? config.firstByteTimeout : config.requestTimeout,
            // Every error answer is held back, also on the last attempt: it is judged (``Blame``)
            // before anything is said about the worker, then passed on unchanged.
            idleTimeout: config.idleTimeout, interceptRetryable: true,
            clientWriteTimeout: config.clientWriteTimeout, readUsage: true, shutdown: plane.shutdown)
        let (access, permit, breaker) = (exchange.access, permit, config.breaker)
        let settle = reservation == nil ? nil : NIOLoopBound(self, eventLoop: exchange.eventLoop)
        plane.forwarder.forward(
            url: pick.url + target, method: exchange.request.method,
            headers: headers + [("Authorization", authorization), (modelHeaderName, pick.model),
                                (streamHeaderName, fields.stream ? "true" : "false")],
            body: exchange.body, options: options, to: exchange, logger: logger,
            onFirstByte: { lease.firstByteArrived() },
            onFinish: { [state = plane.state, prompt] finish in
                access.finished(finish)
                if let usage = finish.timing?.usage { state.observeCache(pick, usage, prompt: prompt) }
                lease.release(AttemptPolicy.sample(finish, policy: breaker, waitedInEngineQueue: pick.isAhead,
                                                   firstByteJudged: lease.firstByteJudged),
                              ttft: finish.timing?.firstByte)
                permit?.release()
                if let settle {
                    let usage = finish.timing?.usage
                    settle.eventLoop.execute { settle.value.settleTokens(usage, answered: true) }
                }
            }
        ).assumeIsolated().whenSuccess { result in self.finished(result, pick: pick, lease: lease) }
    }

    /// What the attempt's result means: done, or the next attempt.
    private func finished(_ result: UpstreamForwarder.Result, pick: Registry.Pick, lease: Lease) {
        switch result {
        case .relayed:
            // The lease and the permit go back at the last byte (onFinish). A whole answer's
            // finish is known now; a stream began with a 2xx.
            let finish = exchange.access.current.finish
            attempts.answered(status: finish.map { $0 == .busy ? 501 : $0.timing?.status } ?? nil)
            judge()
            return
        case .clientGone:
            lease.release(.neutral)
            fail(CancellationError())
        case .shuttingDown:
            lease.release(.neutral)
            fail(OpenAIError.shuttingDown)
        case .failed(let reply, let error):
            let verdict = attempts.failed(pick, reply: reply, error: error,
                                          firstByteJudged: lease.firstByteJudged, jitterMilliseconds: Int.random(in: 50...250))
            if verdict.full {
                lease.releaseFull()
                logger.debug("worker full; picking again", metadata: ["worker": "\(pick.worker)", "model": "\(pick.model)"])
                return attempt()
            }
            lease.release(verdict.sample)
            logger.warning("attempt failed before the first byte", metadata: [
                "worker": "\(pick.worker)", "model": "\(pick.model)", "attempt": "\(attempts.attempts)",
                "reason": "\(error)", "kind": "\(error.kind.rawValue)",
            ])
            guard verdict.retry else { return passOn(attempts.exhausted(model: fields.model)) }
            exchange.access.update { $0.retries += 1 }
            plane.state.metrics?.retry(model: pick.model, worker: pick.worker)
            guard let pause = verdict.pause else { return attempt() }
            exchange.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(pause)) { self.attempt() }
        }
    }

    /// Applies the judgements of the request's ambiguous failures (``Blame``), once it ended:
    /// a worker that failed what another served is blamed, one failing alike with another is
    /// not (the request is poison and counts against its client), and one with nothing to
    /// compare with is left to other clients' requests.
    private func judge() {
        let judgements = attempts.settle()
        guard !judgements.isEmpty else { return }
        let client = self.client
        for judgement in judgements {
            plane.state.judged(judgement.pick, judgement.verdict, error: judgement.error, client: client)
        }
        guard attempts.poisoned, let first = judgements.first else { return }
        plane.limiter.poisoned(client)
        plane.state.metrics?.poison(model: first.pick.model)
        let workers = judgements.filter { $0.verdict == .request }.map(\.pick.worker)
        logger.warning("request failed alike on every worker tried; not counted against them", metadata: [
            "model": "\(first.pick.model)", "workers": "\(workers.joined(separator: ","))", "reason": "\(first.error)",
            "client": "\(client)",
        ])
        plane.state.events.publish(.init(type: "poison", model: first.pick.model,
                                         reason: "\(client): failed alike on \(workers.joined(separator: ", ")) (\(first.error))"))
    }

    /// Passes on the last worker's own error answer, or the hub's 502.
    private func passOn(_ exhausted: Result<UpstreamForwarder.ErrorReply, OpenAIError>) {
        judge()
        if attempts.poisoned { exchange.addResponseHeader(blameHeader, "request") }
        permit?.release()
        settleTokens(nil, answered: false)
        switch exhausted {
        case .success(let reply): exchange.respond(status: reply.status, headers: reply.headers, body: reply.body)
        case .failure(let error): exchange.respond(error)
        }
    }

    /// Ends the request without a relayed answer: its envelope (none if the client left).
    private func fail(_ error: any Error) {
        judge()
        permit?.release()
        settleTokens(nil, answered: false)
        exchange.fail(error)
    }
}
