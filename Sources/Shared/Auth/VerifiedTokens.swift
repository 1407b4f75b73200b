import Foundation
import Synchronization

/// Tokens whose signature verified, with their claims (see ``TokenVerifier``).
final class VerifiedTokens: Sendable {
    static let cacheLimit = 4096
    private let entries = Mutex<[String: CaravanClaims]>([:])

    func claims(for token: String) -> CaravanClaims? { entries.withLock { $0[token] } }

    func remember(_ token: String, _ claims: CaravanClaims) {
        entries.withLock { entries in
            if entries.count >= Self.cacheLimit { entries.removeAll(keepingCapacity: true) }  // bounded; refills on demand
            entries[token] = claims
        }
    }
}
