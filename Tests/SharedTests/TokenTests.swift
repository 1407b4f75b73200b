import Foundation
import Testing

@testable import Shared

@Suite("Tokens")
struct TokenTests {
    let secret = Secret(String(repeating: "k", count: 32))

    @Test("a signed token verifies; role, expiry, issuer and audience are enforced")
    func claims() async throws {
        let verifier = await TokenVerifier(secret: secret, issuer: "iss", audience: "aud", leeway: .seconds(30))
        let now = Date()
        let good = try await verifier.sign(CaravanClaims(sub: "app", expires: now.addingTimeInterval(60),
                                                         issuer: "iss", audience: "aud"))
        #expect(try await verifier.verify(good, roles: [.client]).subject == "app")
        await #expect(throws: TokenError("token role not accepted here")) {
            try await verifier.verify(good, roles: [.worker])
        }
        await #expect(throws: TokenError("token expired")) {
            try await verifier.verify(good, roles: [.client], now: now.addingTimeInterval(120))
        }
        // Within the leeway an expired token still passes.
        _ = try await verifier.verify(good, roles: [.client], now: now.addingTimeInterval(80))
        let wrongIssuer = try await verifier.sign(CaravanClaims(sub: "app", expires: now.addingTimeInterval(60),
                                                                issuer: "other", audience: "aud"))
        await #expect(throws: TokenError("token issuer not accepted")) {
            try await verifier.verify(wrongIssuer, roles: [.client])
        }
        let other = await TokenVerifier(secret: Secret(String(repeating: "z", count: 32)))
        let foreign = try await other.sign(CaravanClaims(sub: "app", expires: now.addingTimeInterval(60)))
        await #expect(throws: TokenError.self) { try await verifier.verify(foreign, roles: [.client]) }
    }

    @Test("unsigned (alg none) and malformed tokens are rejected", arguments: [
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.",
        "abc.def", "a.b.c", "",
    ])
    func rejected(token: String) async {
        let verifier = await TokenVerifier(secret: secret)
        await #expect(throws: TokenError.self) { try await verifier.verify(token, roles: [.client]) }
    }

    @Test("bearer header parsing", arguments: [
        (nil as String?, false), ("", false), ("Basic abc", false), ("Bearer ", false), ("Bearer abc", true),
        ("bearer abc", true),
    ])
    func bearer(header: String?, ok: Bool) {
        let token = try? bearerToken(header)
        #expect((token != nil) == ok)
    }
}
