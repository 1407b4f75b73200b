
/// A strict, allocation-free JSON validator that remembers the top-level `model` and
/// `stream` members on its way through.
struct JSONScanner {
    enum ModelValue: Equatable {
        case absent, null, notAString
        case string(String)
    }

    enum Fields: Equatable {
        case invalid
        case notAnObject
        /// `problem`: the first member an engine would mis-answer (see ``Problem``).
        /// `prompt`: where the raw JSON value of `messages` (else `prompt`) lies, for the
        /// cache-aware fingerprint.
        case object(model: ModelValue, stream: Bool, problem: Problem?, prompt: Range<Int>?, maxTokens: Int?)
    }

    /// A member of valid JSON that llama-server would mis-answer: a 500 for a message without
    /// a `role`, a stream silently turned off for `"stream":"yes"`. Found on the same pass.
    struct Problem: Equatable, Sendable {
        /// The member's path, as OpenAI's `param` names it (`messages[1].role`).
        var param: String
        var message: String
    }

    /// Check `messages` (the chat endpoints; elsewhere the engine ignores it).
    var checkMessages = false
    /// The first problem found (``Problem``), set by the request-shape checks.
    var problem: Problem?

    /// Deepest nesting accepted (as Foundation's decoder).
    static let maxDepth = 512

    let bytes: UnsafeBufferPointer<UInt8>
    private(set) var index = 0

    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    struct Invalid: Error {}

    mutating func topLevelFields() -> Fields {
        do {
            skipWhitespace()
            guard index < bytes.count else { return .invalid }
            guard bytes[index] == UInt8(ascii: "{") else {
                try value(depth: 0)
                skipWhitespace()
                return index == bytes.count ? .notAnObject : .invalid
            }
            var model = ModelValue.absent
            var stream = false
            var messages: Range<Int>?
            var prompt: Range<Int>?
            var maxTokens: Int?
            try object { scanner, key throws(Invalid) in
                let start = scanner.index
                if scanner.matches(key, "model") {
                    model = try scanner.modelValue()
                } else if scanner.matches(key, "stream") {
                    stream = try scanner.streamValue()
                } else if scanner.matches(key, "messages") {
                    if scanner.checkMessages { try scanner.messages() } else { try scanner.value(depth: 1) }
                    messages = start..<scanner.index
                } else if scanner.matches(key, "prompt") {
                    try scanner.value(depth: 1)
                    prompt = start..<scanner.index
                } else if scanner.checkMessages, scanner.matches(key, "tools") {
                    try scanner.functions("tools", depth: 1)
                } else if let name = Self.tokenCounts.first(where: { scanner.matches(key, $0) }) {
                    if let count = try scanner.tokenCount(name), count >= 0 { maxTokens = count }
                } else {
                    try scanner.value(depth: 1)
                }
            }
            skipWhitespace()
            return index == bytes.count ? .object(model: model, stream: stream, problem: problem, prompt: messages ?? prompt, maxTokens: maxTokens)
                : .invalid
        } catch {
            return .invalid
        }
    }

    // MARK: The two members

    private mutating func modelValue() throws(Invalid) -> ModelValue {
        switch peek() {
        case UInt8(ascii: "\""):
            let range = try string()
            return .string(try decodeString(range))
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        default:
            try value(depth: 1)
            return .notAString
        }
    }

    private mutating func streamValue() throws(Invalid) -> Bool {
        switch peek() {
        case UInt8(ascii: "t"): try literal("true"); return true
        case UInt8(ascii: "f"): try literal("false"); return false
        case UInt8(ascii: "n"): try literal("null"); return false
        default:
            try value(depth: 1)
            note("stream", "'stream' must be a boolean (true or false)")
            return false
        }
    }

    /// An array whose items `item` reads (given its position); anything else is noted as
    /// `notArray` (when given) and skipped.
    mutating func array(depth: Int, notArray: (param: String, message: String)?,
                                _ item: (inout JSONScanner, Int) throws(Invalid) -> Void) throws(Invalid) {
        guard peek() == UInt8(ascii: "[") else {
            try value(depth: depth)
            if let notArray { note(notArray.param, notArray.message) }
            return
        }
        guard depth < Self.maxDepth else { throw Invalid() }
        index += 1
        skipWhitespace()
        if peek() == UInt8(ascii: "]") { index += 1; return }
        var position = 0
        while true {
            skipWhitespace()
            try item(&self, position)
            position += 1
            skipWhitespace()
            if peek() == UInt8(ascii: ",") { index += 1; continue }
            try expect(UInt8(ascii: "]"))
            return
        }
    }

    // MARK: Grammar

    mutating func value(depth: Int) throws(Invalid) {
        guard depth < Self.maxDepth, let byte = peek() else { throw Invalid() }
        switch byte {
        case UInt8(ascii: "{"):
            try object { scanner, _ throws(Invalid) in try scanner.value(depth: depth + 1) }
        case UInt8(ascii: "["):
            try array(depth: depth, notArray: nil) { scanner, _ throws(Invalid) in try scanner.value(depth: depth + 1) }
        case UInt8(ascii: "\""): _ = try string()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default: try number()
        }
    }

    /// An object, `{` to `}`; `member` reads each value, given the raw range of its key.
    mutating func object(_ member: (inout JSONScanner, Range<Int>) throws(Invalid) -> Void) throws(Invalid) {
        try expect(UInt8(ascii: "{"))
        skipWhitespace()
        if peek() == UInt8(ascii: "}") { index += 1; return }
        while true {
            skipWhitespace()
            let key = try string()
            skipWhitespace()
            try expect(UInt8(ascii: ":"))
            skipWhitespace()
            try member(&self, key)
            skipWhitespace()
            if peek() == UInt8(ascii: ",") { index += 1; continue }
            try expect(UInt8(ascii: "}"))
            return
        }
    }

    /// Validates a string and returns the range of its raw contents (between the quotes).
    mutating func string() throws(Invalid) -> Range<Int> {
        try expect(UInt8(ascii: "\""))
        let start = index
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                return start..<(index - 1)
            case UInt8(ascii: "\\"):
                index += 1
                guard let escaped = peek() else { throw Invalid() }
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    index += 1
                case UInt8(ascii: "u"):
                    index += 1
                    let unit = try hex4()
                    if (0xDC00...0xDFFF).contains(unit) { throw Invalid() }  // a low surrogate alone
                    if (0xD800...0xDBFF).contains(unit) {
                        // A high surrogate must be followed by an escaped low one.
                        try expect(UInt8(ascii: "\\"))
                        try expect(UInt8(ascii: "u"))
                        guard (0xDC00...0xDFFF).contains(try hex4()) else { throw Invalid() }
                    }
                default:
                    throw Invalid()
                }
            case 0..<0x20:
                throw Invalid()
            case 0x80...:
                try utf8Sequence()
            default:
                index += 1
            }
        }
        throw Invalid()
    }

    /// One multi-byte UTF-8 sequence (no overlongs, no surrogates, at most U+10FFFF).
    private mutating func utf8Sequence() throws(Invalid) {
        let lead = bytes[index]
        let count: Int
        var low: UInt8 = 0x80, high: UInt8 = 0xBF  // bounds of the second byte
        switch lead {
        case 0xC2...0xDF: count = 1
        case 0xE0: count = 2; low = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: count = 2
        case 0xED: count = 2; high = 0x9F
        case 0xF0: count = 3; low = 0x90
        case 0xF1...0xF3: count = 3
        case 0xF4: count = 3; high = 0x8F
        default: throw Invalid()
        }
        guard index + count < bytes.count else { throw Invalid() }
        guard (low...high).contains(bytes[index + 1]) else { throw Invalid() }
        for offset in stride(from: 2, through: count, by: 1) where bytes[index + offset] & 0xC0 != 0x80 {
            throw Invalid()
        }
        index += count + 1
    }

    private mutating func hex4() throws(Invalid) -> UInt32 {
        guard index + 4 <= bytes.count else { throw Invalid() }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8 = switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
            default: throw Invalid()
            }
            value = value << 4 | UInt32(digit)
            index += 1
        }
        return value
    }

    mutating func number() throws(Invalid) {
        if peek() == UInt8(ascii: "-") { index += 1 }
        guard let first = peek(), isDigit(first) else { throw Invalid() }
        index += 1
        if first != UInt8(ascii: "0") { skipDigits() }
        if peek() == UInt8(ascii: ".") {
            index += 1
            guard let digit = peek(), isDigit(digit) else { throw Invalid() }
            skipDigits()
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            index += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { index += 1 }
            guard let digit = peek(), isDigit(digit) else { throw Invalid() }
            skipDigits()
        }
    }

    mutating func literal(_ word: StaticString) throws(Invalid) {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw Invalid() }
        for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] { throw Invalid() }
        index += count
    }

    // MARK: Bytes

    func peek() -> UInt8? { index < bytes.count ? bytes[index] : nil }

    private func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    private mutating func skipDigits() {
        while let byte = peek(), isDigit(byte) { index += 1 }
    }

    mutating func skipWhitespace() {
        while let byte = peek(), byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { index += 1 }
    }

    mutating func expect(_ byte: UInt8) throws(Invalid) {
        guard peek() == byte else { throw Invalid() }
        index += 1
    }

    /// Whether a key is `name`, also when spelled with escapes (`"mod\u0065l"`), as the
    /// engine's parser would read it.
    func matches(_ range: Range<Int>, _ name: StaticString) -> Bool {
        if UnsafeBufferPointer(rebasing: bytes[range]).contains(UInt8(ascii: "\\")) {
            return (try? decodeString(range)) == name.description
        }
        guard range.count == name.utf8CodeUnitCount else { return false }
        for offset in 0..<range.count where bytes[range.lowerBound + offset] != name.utf8Start[offset] { return false }
        return true
    }

    /// The value of an already validated string's contents, escapes resolved.
    func decodeString(_ range: Range<Int>) throws(Invalid) -> String {
        let raw = UnsafeBufferPointer(rebasing: bytes[range])
        guard raw.contains(UInt8(ascii: "\\")) else { return String(decoding: raw, as: UTF8.self) }
        var scalars = String.UnicodeScalarView()
        var copy = self
        copy.index = range.lowerBound
        var pendingHigh: UInt32?
        while copy.index < range.upperBound {
            let byte = bytes[copy.index]
            if byte != UInt8(ascii: "\\") {
                if pendingHigh != nil { throw Invalid() }
                // Copy one whole UTF-8 sequence.
                let length = byte < 0x80 ? 1 : byte < 0xE0 ? 2 : byte < 0xF0 ? 3 : 4
                let sequence = UnsafeBufferPointer(rebasing: bytes[copy.index..<(copy.index + length)])
                scalars.append(contentsOf: String(decoding: sequence, as: UTF8.self).unicodeScalars)
                copy.index += length
                continue
            }
            copy.index += 1
            let escaped = bytes[copy.index]
            copy.index += 1
            let scalar: UInt32
            switch escaped {
            case UInt8(ascii: "b"): scalar = 0x08
            case UInt8(ascii: "f"): scalar = 0x0C
            case UInt8(ascii: "n"): scalar = 0x0A
            case UInt8(ascii: "r"): scalar = 0x0D
            case UInt8(ascii: "t"): scalar = 0x09
            case UInt8(ascii: "u"): scalar = try copy.hex4()
            default: scalar = UInt32(escaped)
            }
            if let high = pendingHigh {
                // A high surrogate must be followed by an escaped low one.
                guard escaped == UInt8(ascii: "u"), (0xDC00...0xDFFF).contains(scalar) else { throw Invalid() }
                pendingHigh = nil
                scalars.append(Unicode.Scalar(0x10000 + ((high - 0xD800) << 10) + (scalar - 0xDC00))!)
            } else if escaped == UInt8(ascii: "u"), (0xD800...0xDBFF).contains(scalar) {
                pendingHigh = scalar
            } else if let value = Unicode.Scalar(scalar) {
                scalars.append(value)
            } else {
                throw Invalid()  // a lone low surrogate
            }
        }
        if pendingHigh != nil { throw Invalid() }
        return String(scalars)
    }
}
