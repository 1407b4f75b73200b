import NIOCore
import Config
import Foundation
import Hummingbird
import Logging
import Server
import Store
import Wire

/// The admin API of managed keys and usage:
///
/// - `GET /admin/keys`, `GET /admin/keys/{ref}` (id or name), `POST /admin/keys` (a JSON
///   body like `caravan-hub keys create`'s options; the answer shows the key once),
///   `POST /admin/keys/{ref}/revoke`, `POST /admin/keys/{ref}/rotate`;
/// - `GET /admin/usage?group_by=key,model,hour&from=&to=&format=json|csv`: the ledger's
///   hourly sums.
struct AccountRoutes {
    let book: KeyBook
    let sync: KeySync
    let limiter: RateLimiter
    let ledger: LedgerWriter?
    let logger: Logger

    /// `POST /admin/keys`'s body.
    struct CreateRequest: Decodable {
        var name: String
        var models: [String]?
        var rpm: Int?
        var tpm: Int?
        var budget: String?
        var budgetMode: String?
        var parallel: Int?
        /// A duration like `90d` or `12h`.
        var expires: String?
    }

    func addRoutes(to group: RouterGroup<HubRequestContext>) {
        group.get("/admin/keys") { _, _ in
            let now = Date()
            return try jsonResponse(["keys": try await book.list().map { KeyView($0, now: now, spent: limiter.budgetSpent($0.subject)) }])
        }
        group.get("/admin/keys/{ref}") { _, context in
            let key = try await storeCall { try await book.find(context.parameters.get("ref") ?? "") }
            return try jsonResponse(KeyView(key, spent: limiter.budgetSpent(key.subject)))
        }
        group.post("/admin/keys") { request, _ in
            let body = try await request.body.collect(upTo: 64 << 10)
            let create: CreateRequest
            do {
                create = try WireCoding.decoder().decode(CreateRequest.self, from: Data(body.readableBytesView))
            } catch {
                throw OpenAIError(.invalidJSON, message: "expected {\"name\": ..., \"models\": [...], \"rpm\": ..., \"tpm\": ..., "
                                  + "\"budget\": \"5M/month\", \"budget_mode\": \"hard\", \"parallel\": ..., \"expires\": \"90d\"}")
            }
            let terms = try Self.terms(models: create.models, rpm: create.rpm, tpm: create.tpm, budget: create.budget,
                                       soft: create.budgetMode == "soft", parallel: create.parallel, expires: create.expires)
            let (key, secret) = try await storeCall { try await book.create(name: create.name, terms: terms) }
            try await sync.load()
            logger.notice("managed key created", metadata: ["key_id": "\(key.id)", "name": "\(key.name)"])
            return try jsonResponse(KeyView(key, secret: secret), status: .created)
        }
        group.post("/admin/keys/{ref}/revoke") { _, context in
            let key = try await storeCall { try await book.revoke(context.parameters.get("ref") ?? "") }
            try await sync.load()
            logger.notice("managed key revoked", metadata: ["key_id": "\(key.id)", "name": "\(key.name)"])
            return try jsonResponse(KeyView(key))
        }
        group.post("/admin/keys/{ref}/rotate") { _, context in
            let (key, secret) = try await storeCall { try await book.rotate(context.parameters.get("ref") ?? "") }
            try await sync.load()
            logger.notice("managed key rotated", metadata: ["key_id": "\(key.id)", "name": "\(key.name)"])
            return try jsonResponse(KeyView(key, secret: secret))
        }
        group.get("/admin/usage") { request, _ in
            let query = try Self.usageQuery(request.uri.queryParameters)
            await ledger?.flush()  // what this hub counted so far, included
            let lines = try await storeCall { try await book.store.usage(query) }
            if request.uri.queryParameters.get("format") == "csv" {
                return Response(status: .ok, headers: [.contentType: "text/csv; charset=utf-8"],
                                body: .init(byteBuffer: ByteBuffer(string: UsageReport.csv(lines, groupBy: query.groupBy))))
            }
            return try jsonResponse(UsageReport(lines: lines))
        }
    }

    /// An unknown key as a 404 envelope, a store's refusal (a taken name, a bad name) as a 400.
    private func storeCall<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as KeyBook.NotFound {
            throw OpenAIError(.notFound, message: error.description)
        } catch let error as StoreError {
            throw OpenAIError(.invalidRequestBody, message: error.description)
        }
    }

    /// The terms of a new key, checked; shared with `caravan-hub keys create`.
    static func terms(models: [String]?, rpm: Int?, tpm: Int?, budget: String?, soft: Bool, parallel: Int?, expires: String?)
        throws(OpenAIError) -> KeyBook.Terms
    {
        var terms = KeyBook.Terms(models: models, rpm: rpm, tpm: tpm, parallel: parallel)
        if let budget {
            guard let parsed = TokenBudget(parsing: budget, hard: !soft) else {
                throw OpenAIError(.invalidRequestBody, message: "budget: expected tokens per day or month, like 5M/month or 200k/day",
                                  param: "budget")
            }
            terms.budget = parsed
        }
        if let expires {
            guard let duration = ConfigDuration.parse(expires), duration > .zero else {
                throw OpenAIError(.invalidRequestBody, message: "expires: expected a duration like 90d or 12h", param: "expires")
            }
            terms.expiresIn = duration
        }
        return terms
    }

    static func usageQuery(_ parameters: Parameters) throws(OpenAIError) -> UsageQuery {
        var dimensions: [UsageQuery.Dimension] = []
        for name in (parameters.get("group_by") ?? "key,model").split(separator: ",") {
            guard let dimension = UsageQuery.Dimension(rawValue: String(name)) else {
                throw OpenAIError(.invalidRequestBody, message: "group_by: expected a list of key, model and hour", param: "group_by")
            }
            if !dimensions.contains(dimension) { dimensions.append(dimension) }
        }
        func date(_ name: String) throws(OpenAIError) -> Date? {
            guard let text = parameters.get(name) else { return nil }
            if let seconds = Double(text) { return Date(timeIntervalSince1970: seconds) }
            guard let date = try? Date(text, strategy: .iso8601) else {
                throw OpenAIError(.invalidRequestBody, message: "\(name): expected an ISO 8601 time or Unix seconds", param: name)
            }
            return date
        }
        if let format = parameters.get("format"), format != "json", format != "csv" {
            throw OpenAIError(.invalidRequestBody, message: "format: expected json or csv", param: "format")
        }
        return UsageQuery(groupBy: dimensions, from: try date("from"), to: try date("to"))
    }
}
