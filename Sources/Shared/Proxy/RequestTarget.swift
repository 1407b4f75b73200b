/// The request target (path and query) as RFC 3986 allows it on the wire.
///
/// HTTP parsers differ in what they let through: NIO's accepts a raw `<`, `"` or `{` in a
/// query that the next parser (or llama-server's) may reject, and a proxy that forwards it
/// as it came turns the client's typo into the next hop's broken answer, which looked like
/// the worker failing. The hub answers such a target with 400 naming the byte
/// (``invalidByte(in:)``); the worker percent-encodes what it sends its engine
/// (``normalised(_:)``), so nothing it forwards can be refused for this.
public enum RequestTarget {
    /// `target` with every byte outside RFC 3986's `pchar / "/" / "?"` percent-encoded.
    public static func normalised<S: StringProtocol>(_ target: S) -> String {
        guard firstInvalid(target) != nil else { return String(target) }
        let utf8 = Array(target.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count + 16)
        for (index, byte) in utf8.enumerated() {
            if isAllowed(byte) || byte == UInt8(ascii: "%") && isEscape(utf8, at: index) {
                out.append(byte)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(contentsOf: hex[Int(byte >> 4)].utf8)
                out.append(contentsOf: hex[Int(byte & 0x0F)].utf8)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Whether `target` is sent as it is (every byte allowed, every `%` an escape).
    public static func isValid<S: StringProtocol>(_ target: S) -> Bool { firstInvalid(target) == nil }

    /// The first byte of `target` that must be percent-encoded, for an error message.
    public static func invalidByte<S: StringProtocol>(in target: S) -> (offset: Int, description: String, encoded: String)? {
        guard let offset = firstInvalid(target) else { return nil }
        let byte = Array(target.utf8)[offset]
        let encoded = "%" + String(hex[Int(byte >> 4)]) + String(hex[Int(byte & 0x0F)])
        let description = byte == UInt8(ascii: "%") ? "a '%' that starts no escape"
            : (0x21..<0x7F).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "the byte 0x\(encoded.dropFirst())"
        return (offset, description, encoded)
    }

    private static let hex = Array("0123456789ABCDEF")

    /// Checked in place (no copy: it runs on every routed request).
    private static func firstInvalid<S: StringProtocol>(_ target: S) -> Int? {
        target.utf8.withContiguousStorageIfAvailable { firstInvalid($0) } ?? firstInvalid(Array(target.utf8))
    }

    private static func firstInvalid<C: RandomAccessCollection<UInt8>>(_ bytes: C) -> Int? where C.Index == Int {
        bytes.indices.first { index in
            let byte = bytes[index]
            return byte == UInt8(ascii: "%") ? !isEscape(bytes, at: index) : !isAllowed(byte)
        }
    }

    /// unreserved / sub-delims / ":" / "@" / "/" / "?" (RFC 3986 §3.3, §3.4).
    private static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "-._~!$&'()*+,;=:@/?".utf8.contains(byte)
        }
    }

    private static func isEscape<C: RandomAccessCollection<UInt8>>(_ bytes: C, at index: Int) -> Bool where C.Index == Int {
        index + 2 < bytes.endIndex && isHex(bytes[index + 1]) && isHex(bytes[index + 2])
    }

    private static func isHex(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"), UInt8(ascii: "A")...UInt8(ascii: "F"): true
        default: false
        }
    }
}
