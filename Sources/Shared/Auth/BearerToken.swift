import Foundation

/// Extracts the token from an `Authorization: Bearer <token>` header value.
public func bearerToken(_ header: String?) throws(TokenError) -> String {
    guard let header, !header.isEmpty else { throw TokenError("missing Authorization header (expected: Bearer <token>)") }
    // Plain UTF-8 work, no Foundation: this runs on every request.
    let isBlank = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
    let bytes = header.utf8.drop(while: isBlank)
    let scheme = bytes.prefix(while: { !isBlank($0) })
    guard scheme.count == 6, zip(scheme, "bearer".utf8).allSatisfy({ $0 | 0x20 == $1 }) else {
        throw TokenError("Authorization header must use the Bearer scheme")
    }
    var token = bytes.dropFirst(6).drop(while: isBlank)
    while let last = token.last, isBlank(last) { token = token.dropLast() }
    guard !token.isEmpty else { throw TokenError("empty bearer token") }
    return String(decoding: token, as: UTF8.self)
}
