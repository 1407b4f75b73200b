import Foundation
import NIOCore

/// Tokens a request used, as the engine counted them.
public struct TokenUsage: Sendable, Equatable {
    public var prompt: Int
    public var completion: Int

    public init(prompt: Int, completion: Int) {
        self.prompt = prompt
        self.completion = completion
    }
}

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
        if let object = lastObject(named: "usage", in: bytes), let prompt = object["prompt_tokens"] as? Int {
            return TokenUsage(prompt: prompt, completion: object["completion_tokens"] as? Int ?? 0)
        }
        if let object = lastObject(named: "timings", in: bytes), let prompt = object["prompt_n"] as? Int {
            return TokenUsage(prompt: prompt + (object["cache_n"] as? Int ?? 0), completion: object["predicted_n"] as? Int ?? 0)
        }
        return nil
    }

    /// The JSON object value of the last member called `name` in `bytes`, decoded.
    static func lastObject(named name: String, in bytes: [UInt8]) -> [String: Any]? {
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
            if let object = try? JSONSerialization.jsonObject(with: Data(bytes[index...end])) as? [String: Any] {
                return object
            }
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
