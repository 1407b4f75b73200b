import Foundation
import Config
import NIOCore

/// Applying a model's rewrite to a request body, byte for byte (the rule itself is config).
extension BodyRewrite {
    /// The rewritten body.
    public func apply(to body: ByteBuffer) -> ByteBuffer {
        guard !isEmpty else { return body }
        let bytes = Array(body.readableBytesView)
        guard let members = Self.members(of: bytes) else { return body }
        var replacements = set
        if let modelName { replacements["model"] = Self.jsonString(modelName) }
        let present = Set(members.map(\.key))
        let additions = (replacements.merging(defaults) { replace, _ in replace })
            .filter { !present.contains($0.key) && !strip.contains($0.key) }
            .sorted { $0.key < $1.key }
        guard members.contains(where: { strip.contains($0.key) || replacements[$0.key] != nil }) || !additions.isEmpty else {
            return body
        }
        var pieces: [[UInt8]] = []
        for member in members where !strip.contains(member.key) {
            if let value = replacements[member.key] {
                pieces.append(Array(bytes[member.start..<member.valueStart]) + Array(value.utf8))
            } else {
                pieces.append(Array(bytes[member.start..<member.valueEnd]))
            }
        }
        for (key, value) in additions {
            pieces.append(Array(Self.jsonString(key).utf8) + [UInt8(ascii: ":")] + Array(value.utf8))
        }
        // The original bytes before the first member and after the last value ("{", "}" and
        // their whitespace) frame the members, joined by commas.
        let closing = members.last?.valueEnd ?? bytes.lastIndex(of: UInt8(ascii: "}"))!
        let opening = members.first?.start ?? closing
        var out = Array(bytes[..<opening])
        for (index, piece) in pieces.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            out += piece
        }
        out += bytes[closing...]
        return ByteBuffer(bytes: out)
    }

    /// One top-level member: where it starts (its key's quote), where its value starts and
    /// ends, and where the next member (or the closing brace) starts.
    struct Member {
        var key: String
        var start: Int
        var valueStart: Int
        var valueEnd: Int
        var next: Int
    }

    /// The top-level members of a JSON object, or nil when the bytes are not one.
    static func members(of bytes: [UInt8]) -> [Member]? {
        var index = 0
        func skipSpace() { while index < bytes.count, isSpace(bytes[index]) { index += 1 } }
        skipSpace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "{") else { return nil }
        index += 1
        var members: [Member] = []
        skipSpace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") { return members }
        while index < bytes.count {
            skipSpace()
            let start = index
            guard let keyEnd = stringEnd(bytes, from: index),
                let key = (try? JSONSerialization.jsonObject(with: Data(bytes[start..<keyEnd]), options: .fragmentsAllowed)) as? String
            else { return nil }
            index = keyEnd
            skipSpace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
            index += 1
            skipSpace()
            let valueStart = index
            guard let valueEnd = valueEnd(bytes, from: index) else { return nil }
            index = valueEnd
            skipSpace()
            guard index < bytes.count else { return nil }
            if bytes[index] == UInt8(ascii: ",") {
                members.append(Member(key: key, start: start, valueStart: valueStart, valueEnd: valueEnd, next: index + 1))
                index += 1
            } else if bytes[index] == UInt8(ascii: "}") {
                members.append(Member(key: key, start: start, valueStart: valueStart, valueEnd: valueEnd, next: index))
                return members
            } else {
                return nil
            }
        }
        return nil
    }

    /// The index after the closing quote of the string that starts at `from`.
    static func stringEnd(_ bytes: [UInt8], from: Int) -> Int? {
        guard from < bytes.count, bytes[from] == UInt8(ascii: "\"") else { return nil }
        var index = from + 1
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: "\\"): index += 2
            case UInt8(ascii: "\""): return index + 1
            default: index += 1
            }
        }
        return nil
    }

    /// The index after the JSON value that starts at `from`.
    static func valueEnd(_ bytes: [UInt8], from: Int) -> Int? {
        guard from < bytes.count else { return nil }
        switch bytes[from] {
        case UInt8(ascii: "\""):
            return stringEnd(bytes, from: from)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            var index = from
            while index < bytes.count {
                switch bytes[index] {
                case UInt8(ascii: "\""):
                    guard let end = stringEnd(bytes, from: index) else { return nil }
                    index = end
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 { return index + 1 }
                default: break
                }
                index += 1
            }
            return nil
        default:
            var index = from
            while index < bytes.count, !isSpace(bytes[index]), bytes[index] != UInt8(ascii: ","), bytes[index] != UInt8(ascii: "}") {
                index += 1
            }
            return index > from ? index : nil
        }
    }

    static func isSpace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\r")
    }
}
