import Wire
import Foundation
import Synchronization
import Auth
import Config

/// The hub's side of the per-worker credentials (``WorkerKey``): it verifies each worker's
/// reports with that worker's own key, and signs what it sends a worker with that key and
/// the worker's name as audience, so a worker accepts it and no other worker does.
///
/// Rotation: with a previous cluster key configured, a worker whose credential still derives
/// from it is accepted too, and the hub signs its requests with the generation that verified
/// that worker's latest report. Replace the workers' credentials one by one, then drop the
/// previous key.
final class WorkerKeys: Sendable {
    private struct Entry {
        /// Verifiers per key generation: current first, then previous.
        var verifiers: [TokenVerifier]
        /// The generation the worker's latest report verified with.
        var generation = 0
        var header: (value: String, generation: Int, renewAt: Date)?
    }

    private let keys: Mutex<[Secret]>
    private var clusterKeys: [Secret] { keys.withLock { $0 } }
    private let leeway: Duration
    private let allowed: Mutex<Set<String>>
    /// Worker names of the cluster file: only they may register, unless `joinVerifier` is set.
    var names: Set<String> { allowed.withLock { $0 } }
    /// With `hub.join`: verifies join tokens; a worker that joined may then report under any
    /// name its credential was derived for (only this hub's key derives one).
    let joinVerifier: TokenVerifier?
    private let entries = Mutex<[String: Entry]>([:])
    private let lifetime: TimeInterval = 600

    init(current: Secret, previous: Secret?, names: Set<String>, leeway: Duration, joinVerifier: TokenVerifier? = nil) {
        keys = Mutex([current] + (previous.map { [$0] } ?? []))
        allowed = Mutex(names)
        self.leeway = leeway
        self.joinVerifier = joinVerifier
    }

    /// Takes a reloaded cluster file's worker names and previous key (rotation). The current
    /// key stays: every worker's credential derives from it (changing it needs a restart).
    func update(names: Set<String>, previous: Secret?) {
        allowed.withLock { $0 = names }
        let changed = keys.withLock { keys in
            let next = [keys[0]] + (previous.map { [$0] } ?? [])
            defer { keys = next }
            return next.map(\.value) != keys.map(\.value)
        }
        if changed { entries.withLock { $0 = [:] } }
    }

    /// The credential a worker that joins under `name` gets.
    func credential(for name: String) -> Secret {
        WorkerKey.derive(clusterKey: clusterKeys[0], worker: name)
    }

    /// Verifies a join token (`role: join`, not expired); fails when joining is off.
    func verifyJoin(_ token: String) async throws(TokenError) -> CaravanClaims {
        guard let joinVerifier else { throw TokenError("this hub does not let workers join (hub.join)") }
        return try await joinVerifier.verify(token, roles: [.join])
    }

    private func entry(_ name: String) async -> Entry {
        if let entry = entries.withLock({ $0[name] }) { return entry }
        var verifiers: [TokenVerifier] = []
        for key in clusterKeys {
            verifiers.append(await TokenVerifier(secret: WorkerKey.derive(clusterKey: key, worker: name), leeway: leeway))
        }
        let made = Entry(verifiers: verifiers)
        return entries.withLock { entries in
            if let existing = entries[name] { return existing }
            entries[name] = made
            return made
        }
    }

    /// Verifies a worker's token: its `sub` must name a worker of the cluster file, and it must
    /// be signed with that worker's own key (current or previous generation).
    func verify(_ token: String) async throws(TokenError) -> CaravanClaims {
        guard let (name, role) = TokenVerifier.unverifiedClaims(of: token) else { throw TokenError("malformed token") }
        guard role == TokenRole.worker.rawValue else { throw TokenError("not a worker credential") }
        guard names.contains(name) || joinVerifier != nil else { throw TokenError.unknownWorker }
        let entry = await entry(name)
        var last = TokenError("invalid token")
        for (generation, verifier) in entry.verifiers.enumerated() {
            do {
                let claims = try await verifier.verify(token, roles: [.worker])
                if generation != entry.generation { entries.withLock { $0[name]?.generation = generation } }
                return claims
            } catch {
                last = error
            }
        }
        throw last
    }

    /// ``header(for:now:)`` when it needs no signing: the token made earlier, still fresh
    /// (synchronous, for the data plane; nil when a new one must be signed).
    func cachedHeader(for name: String, now: Date = Date()) -> String? {
        guard let entry = entries.withLock({ $0[name] }), let header = entry.header,
              header.generation == entry.generation, header.renewAt > now else { return nil }
        return header.value
    }

    /// The `Authorization` value for requests to worker `name`: a `role: hub` token for that
    /// worker only (`aud`), re-minted before it expires.
    func header(for name: String, now: Date = Date()) async throws -> String {
        let entry = await entry(name)
        if let header = entry.header, header.generation == entry.generation, header.renewAt > now { return header.value }
        let claims = CaravanClaims(sub: "hub", expires: now.addingTimeInterval(lifetime), issuedAt: now, role: .hub, audience: name)
        let value = "Bearer " + (try await entry.verifiers[entry.generation].sign(claims))
        let generation = entry.generation
        entries.withLock { $0[name]?.header = (value, generation, now.addingTimeInterval(lifetime / 2)) }
        return value
    }
}
