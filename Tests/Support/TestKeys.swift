import Foundation
import JWTKit
import Wire
import Auth

/// Keys and tokens for authentication tests: key pairs made by openssl, a JWKS document,
/// hand-assembled (forged) tokens, and tokens signed with any jwt-kit key.
package enum TestKeys {
    /// Runs openssl (test setup only).
    package static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TestFailure("openssl \(arguments) failed") }
    }

    /// An ES256 (P-256) or EdDSA (Ed25519) key pair made by openssl.
    package static func keyPair(_ directory: URL, _ name: String, algorithm: String) throws -> (privatePEM: String, publicPath: String) {
        let privatePath = directory.appendingPathComponent("\(name).key").path
        let publicPath = directory.appendingPathComponent("\(name).pub").path
        if algorithm == "ES256" {
            try openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", privatePath])
        } else {
            try openssl(["genpkey", "-algorithm", "ed25519", "-out", privatePath])
        }
        try openssl(["pkey", "-in", privatePath, "-pubout", "-out", publicPath])
        return (try String(contentsOfFile: privatePath, encoding: .utf8), publicPath)
    }

    package static func rsaKeyPair(_ directory: URL, _ name: String) throws -> (privatePEM: String, publicPath: String) {
        let privatePath = directory.appendingPathComponent("\(name).key").path
        let publicPath = directory.appendingPathComponent("\(name).pub").path
        try openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", privatePath])
        try openssl(["pkey", "-in", privatePath, "-pubout", "-out", publicPath])
        return (try String(contentsOfFile: privatePath, encoding: .utf8), publicPath)
    }

    /// A JWKS document holding the RSA public key in `publicPath` under `kid` (e = 65537).
    package static func jwks(kid: String, publicPath: String) throws -> String {
        let process = Process()
        let pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl", "rsa", "-pubin", "-in", publicPath, "-modulus", "-noout"]
        process.standardOutput = pipe
        try process.run()
        process.waitUntilExit()
        let line = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let hex = line.replacingOccurrences(of: "Modulus=", with: "").trimmingCharacters(in: .whitespacesAndNewlines)
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return #"{"keys":[{"kty":"RSA","kid":"\#(kid)","alg":"RS256","use":"sig","n":"\#(base64URL(bytes))","e":"AQAB"}]}"#
    }

    package static func base64URL(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// A token assembled by hand (for forged headers and signatures).
    package static func rawToken(header: String, payload: String, signature: (Data) -> Data) -> String {
        let input = base64URL(Data(header.utf8)) + "." + base64URL(Data(payload.utf8))
        return input + "." + base64URL(signature(Data(input.utf8)))
    }

    package static func sign(_ claims: CaravanClaims, with add: (JWTKeyCollection) async throws -> Void, kid: String?) async throws -> String {
        let keys = JWTKeyCollection()
        try await add(keys)
        return try await keys.sign(claims, kid: kid.map { JWKIdentifier(string: $0) })
    }
}
