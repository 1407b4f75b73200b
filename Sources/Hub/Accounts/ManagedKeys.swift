import Crypto
import Foundation
import Synchronization
import Store

/// The managed keys in force, in memory: looked up by the SHA-256 of the presented secret on
/// the request path (no store access there), and replaced as a whole when the store's keys
/// change (``KeySync``: within a second of a change by any process).
final class ManagedKeys: Sendable {
    private let table = Mutex<[String: ManagedKey]>([:])

    init(_ keys: [ManagedKey] = []) { replace(keys) }

    func replace(_ keys: [ManagedKey]) {
        let byDigest = Dictionary(keys.map { ($0.digest, $0) }, uniquingKeysWith: { first, _ in first })
        table.withLock { $0 = byDigest }
    }

    func key(digest: String) -> ManagedKey? { table.withLock { $0[digest] } }

    var all: [ManagedKey] { table.withLock { Array($0.values) } }

    var isEmpty: Bool { table.withLock { $0.isEmpty } }

    /// A new secret (`sk-caravan-` and 43 characters of base64url: 256 random bits) and its digest.
    static func newSecret() -> (secret: String, digest: String) {
        let bytes = SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }
        let text = bytes.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        let secret = "sk-caravan-" + text
        return (secret, digest(secret))
    }

    /// A new public id: `key_` and 12 hex digits.
    static func newID() -> String {
        "key_" + hex(SymmetricKey(size: .bits128).withUnsafeBytes { Data($0) }.prefix(6))
    }

    static func digest(_ secret: String) -> String { hex(SHA256.hash(data: Data(secret.utf8))) }

    /// Lower-case hex, without Foundation's formatter (it runs per request).
    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
