import Wire
import Foundation
import Testing
@testable import Auth
@testable import Config


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
        await #expect(throws: TokenError.roleRejected) {
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

    @Test("a verified token is remembered, but expiry and role are checked on every use; a tampered copy is not")
    func remembered() async throws {
        let verifier = await TokenVerifier(secret: secret, leeway: .zero)
        let now = Date()
        let token = try await verifier.sign(CaravanClaims(sub: "app", expires: now.addingTimeInterval(60)))
        #expect(verifier.verified.claims(for: token) == nil)
        _ = try await verifier.verify(token, roles: [.client], now: now)
        #expect(verifier.verified.claims(for: token)?.subject == "app")
        await #expect(throws: TokenError.roleRejected) { try await verifier.verify(token, roles: [.admin], now: now) }
        await #expect(throws: TokenError("token expired")) {
            try await verifier.verify(token, roles: [.client], now: now.addingTimeInterval(61))
        }
        // Change a character in the middle of the signature (the last one may carry padding bits).
        var characters = Array(token)
        let index = characters.count - 6
        characters[index] = characters[index] == "A" ? "B" : "A"
        let tampered = String(characters)
        await #expect(throws: TokenError.self) { try await verifier.verify(tampered, roles: [.client], now: now) }
        #expect(verifier.verified.claims(for: tampered) == nil)
        let rotated = await TokenVerifier(secret: Secret(String(repeating: "r", count: 32)))
        await #expect(throws: TokenError.self) { try await rotated.verify(token, roles: [.client], now: now) }
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
        (nil as String?, nil as String?), ("", nil), ("Basic abc", nil), ("Bearer ", nil), ("Bearer abc", "abc"),
        ("bearer abc", "abc"), ("BEARER\tabc", "abc"), ("  Bearer   a.b.c  ", "a.b.c"), ("Bearerabc", nil),
        ("Bearers abc", nil), ("Beare abc", nil),
    ])
    func bearer(header: String?, token: String?) {
        #expect((try? bearerToken(header)) == token)
    }
}
