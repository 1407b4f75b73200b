import Foundation
import Shared
import Synchronization

/// The hub's credential towards workers: a short-lived `role: hub` JWT signed with the
/// worker secret, re-minted before it expires. Workers accept nothing else on their data
/// plane, and the client's own `Authorization` is never forwarded.
final class WorkerCredential: Sendable {
    private let signer: TokenVerifier
    private let cached = Mutex<(header: String, renewAt: Date)?>(nil)
    private let lifetime: TimeInterval = 600

    init(signer: TokenVerifier) { self.signer = signer }

    /// The `Authorization` header value to send to workers.
    func header(now: Date = Date()) async throws -> String {
        if let current = cached.withLock({ $0 }), current.renewAt > now { return current.header }
        let claims = CaravanClaims(sub: "hub", expires: now.addingTimeInterval(lifetime), issuedAt: now, role: .hub)
        let header = "Bearer " + (try await signer.sign(claims))
        cached.withLock { $0 = (header, now.addingTimeInterval(lifetime / 2)) }
        return header
    }
}
