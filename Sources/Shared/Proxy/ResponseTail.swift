import NIOCore
import Server

/// The last bytes of a response, kept as they stream by, so the final `usage` can be read
/// without buffering the body: an OpenAI answer (and llama-server's final SSE event) ends
/// with its `usage`, and llama-server's with `timings` (`prompt_n`, `predicted_n`).
public struct ResponseTail: Sendable {
    /// Kept bytes: enough for a final event with usage, timings and a long `system_fingerprint`.
    public static let capacity = 16 * 1024
    private var buffer = ByteBuffer()

    public init() {}

    public mutating func append(_ chunk: ByteBuffer) {
        if chunk.readableBytes >= Self.capacity {
            buffer.clear()
            buffer.writeImmutableBuffer(chunk.getSlice(at: chunk.readerIndex + chunk.readableBytes - Self.capacity,
                                                       length: Self.capacity)!)
            return
        }
        buffer.writeImmutableBuffer(chunk)
        if buffer.readableBytes > 2 * Self.capacity {
            buffer.moveReaderIndex(forwardBy: buffer.readableBytes - Self.capacity)
            buffer.discardReadBytes()
        }
    }

    public func usage() -> TokenUsage? { Self.usage(in: buffer) }

    /// The usage in the last `capacity` bytes of `body`: the last `"usage"` object with
    /// `prompt_tokens`, else the last `"timings"` with `prompt_n`/`predicted_n`.
    public static func usage(in body: ByteBuffer) -> TokenUsage? {
        let start = max(0, body.readableBytes - capacity)
        guard let bytes = body.getBytes(at: body.readerIndex + start, length: body.readableBytes - start) else { return nil }
        let timings = lastObject(named: "timings", in: bytes)
        let cacheN = timings.flatMap { integer("cache_n", in: $0) }
        if let object = lastObject(named: "usage", in: bytes), let prompt = integer("prompt_tokens", in: object) {
            return TokenUsage(prompt: prompt, completion: integer("completion_tokens", in: object) ?? 0,
                              cached: cacheN ?? integer("cached_tokens", in: object))
        }
        if let object = timings, let prompt = integer("prompt_n", in: object) {
            return TokenUsage(prompt: prompt + (cacheN ?? 0), completion: integer("predicted_n", in: object) ?? 0, cached: cacheN)
        }
        return nil
    }

    /// The non-negative integer value of the member `name` in an object's bytes (nil when
    /// absent or not an integer). Read directly: a JSON decoder costs more than the rest of
    /// a proxied request's bookkeeping.
    static func integer(_ name: String, in object: ArraySlice<UInt8>) -> Int? {
        let key = Array("\"\(name)\"".utf8)
        var index = object.startIndex
        while index + key.count <= object.endIndex {
            if object[index] == key[0], object[index..<index + key.count].elementsEqual(key) {
                var cursor = index + key.count
                while cursor < object.endIndex, object[cursor] == UInt8(ascii: " ") { cursor += 1 }
                guard cursor < object.endIndex, object[cursor] == UInt8(ascii: ":") else { index += 1; continue }
                cursor += 1
                while cursor < object.endIndex, object[cursor] == UInt8(ascii: " ") { cursor += 1 }
                var value = 0
                var digits = 0
                while cursor < object.endIndex, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(object[cursor]), digits < 18 {
                    value = value * 10 + Int(object[cursor] - UInt8(ascii: "0"))
                    digits += 1
                    cursor += 1
                }
                return digits > 0 ? value : nil
            }
            index += 1
        }
        return nil
    }

    /// The bytes of the JSON object value of the last member called `name` in `bytes`.
    static func lastObject(named name: String, in bytes: [UInt8]) -> ArraySlice<UInt8>? {
        let key = Array("\"\(name)\"".utf8)
        var searchEnd = bytes.count
        while let found = lastIndex(of: key, in: bytes, before: searchEnd) {
            searchEnd = found
            var index = found + key.count
            while index < bytes.count, bytes[index] == UInt8(ascii: " ") { index += 1 }
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { continue }
            index += 1
            while index < bytes.count, [UInt8(ascii: " "), UInt8(ascii: "\n")].contains(bytes[index]) { index += 1 }
            guard index < bytes.count, bytes[index] == UInt8(ascii: "{"), let end = matchingBrace(bytes, from: index) else { continue }
            return bytes[index...end]
        }
        return nil
    }

    private static func lastIndex(of needle: [UInt8], in bytes: [UInt8], before end: Int) -> Int? {
        var index = end - needle.count
        while index >= 0 {
            if bytes[index] == needle[0] && Array(bytes[index..<index + needle.count]) == needle { return index }
            index -= 1
        }
        return nil
    }

    /// The index of the `}` closing the object that opens at `start`, skipping strings.
    private static func matchingBrace(_ bytes: [UInt8], from start: Int) -> Int? {
        var depth = 0
        var inString = false
        var escaped = false
        for index in start..<bytes.count {
            let byte = bytes[index]
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"): depth += 1
            case UInt8(ascii: "}"):
                depth -= 1
                if depth == 0 { return index }
            default: break
            }
        }
        return nil
    }
}
