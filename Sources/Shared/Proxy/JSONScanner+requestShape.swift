/// The request-shape checks of ``JSONScanner``: members of valid JSON that llama-server
/// would answer with a 500 or silently misread, noted as a ``JSONScanner/Problem`` on the
/// same pass that validates the body and reads `model`.
extension JSONScanner {
    /// The integer members llama-server reads as a token count.
    static let tokenCounts: [StaticString] = ["max_tokens", "max_completion_tokens", "n_predict"]

    mutating func note(_ param: String, _ message: String) {
        if problem == nil { problem = Problem(param: param, message: message) }
    }

    /// `max_tokens` and its kin: null, or a number from -1 (no limit) to 2^31 - 1. Returns
    /// the number (truncated), nil for null or a value noted as a problem.
    mutating func tokenCount(_ key: StaticString) throws(Invalid) -> Int? {
        let start = index
        let name = key.description
        guard let byte = peek() else { throw Invalid() }
        switch byte {
        case UInt8(ascii: "n"):
            try literal("null")
            return nil
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try number()
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            // A fraction is accepted (llama-server truncates it), as long as it is in range.
            if let number = Double(text), number >= -1, number < Double(Int32.max) + 1 { return Int(number) }
        default:
            try value(depth: 1)
        }
        note(name, "'\(name)' must be a number from -1 (no limit) to \(Int32.max)")
        return nil
    }

    /// `messages`: an array of message objects (llama-server takes an empty one). Each needs
    /// a string `role`; `name`, `tool_call_id` and `reasoning_content` are strings when present;
    /// `content` is a string, null, or an array of part objects (a `text` part with a string
    /// `text`); `tool_calls` is null or an array of `function` calls. llama-server answers
    /// each of these mistakes with a 500.
    mutating func messages() throws(Invalid) {
        try array(depth: 1, notArray: ("messages", "'messages' must be an array of message objects")) { scanner, position throws(Invalid) in
            try scanner.message(position)
        }
    }

    mutating func message(_ position: Int) throws(Invalid) {
        let path = "messages[\(position)]"
        guard peek() == UInt8(ascii: "{") else {
            try value(depth: 2)
            return note(path, "\(path) must be an object with a 'role' and a 'content'")
        }
        var role = false
        try object { scanner, key throws(Invalid) in
            if scanner.matches(key, "role") {
                role = true
                try scanner.stringMember("\(path).role")
            } else if scanner.matches(key, "name") || scanner.matches(key, "tool_call_id")
                || scanner.matches(key, "reasoning_content") {
                try scanner.stringMember("\(path).\(try scanner.decodeString(key))")
            } else if scanner.matches(key, "content") {
                try scanner.content(path)
            } else if scanner.matches(key, "tool_calls") {
                try scanner.functions("\(path).tool_calls", depth: 3)
            } else {
                try scanner.value(depth: 3)
            }
        }
        if !role { note("\(path).role", "\(path) is missing 'role'") }
    }

    mutating func content(_ message: String) throws(Invalid) {
        let path = "\(message).content"
        switch peek() {
        case UInt8(ascii: "\""): _ = try string()
        case UInt8(ascii: "n"): try literal("null")
        case UInt8(ascii: "["):
            try array(depth: 3, notArray: nil) { scanner, position throws(Invalid) in
                let part = "\(path)[\(position)]"
                guard scanner.peek() == UInt8(ascii: "{") else {
                    try scanner.value(depth: 4)
                    return scanner.note(part, "\(part) must be a content part object")
                }
                var isText = false
                var text = false
                try scanner.object { scanner, key throws(Invalid) in
                    if scanner.matches(key, "type"), scanner.peek() == UInt8(ascii: "\"") {
                        isText = try scanner.decodeString(try scanner.string()) == "text"
                    } else if scanner.matches(key, "text") {
                        text = true
                        try scanner.stringMember("\(part).text")
                    } else {
                        try scanner.value(depth: 5)
                    }
                }
                if isText, !text { scanner.note("\(part).text", "\(part) is a text part without 'text'") }
            }
        default:
            try value(depth: 3)
            note(path, "\(path) must be a string, an array of content parts, or null")
        }
    }

    /// `tools` and `tool_calls`: null, or an array of objects with `"type": "function"` and a
    /// `function` object.
    mutating func functions(_ path: String, depth: Int) throws(Invalid) {
        if peek() == UInt8(ascii: "n") { return try literal("null") }
        try array(depth: depth, notArray: (path, "'\(path)' must be an array")) { scanner, position throws(Invalid) in
            let item = "\(path)[\(position)]"
            guard scanner.peek() == UInt8(ascii: "{") else {
                try scanner.value(depth: depth + 1)
                return scanner.note(item, "\(item) must be an object with \"type\": \"function\" and a 'function'")
            }
            var function = false
            var type = false
            try scanner.object { scanner, key throws(Invalid) in
                if scanner.matches(key, "type"), scanner.peek() == UInt8(ascii: "\"") {
                    type = try scanner.decodeString(try scanner.string()) == "function"
                } else if scanner.matches(key, "function") {
                    function = scanner.peek() == UInt8(ascii: "{")
                    try scanner.value(depth: depth + 2)
                } else {
                    try scanner.value(depth: depth + 2)
                }
            }
            if !type || !function { scanner.note(item, "\(item) must be an object with \"type\": \"function\" and a 'function' object") }
        }
    }

    /// A member that must be a string (not null).
    mutating func stringMember(_ path: String) throws(Invalid) {
        guard peek() == UInt8(ascii: "\"") else {
            try value(depth: 3)
            return note(path, "\(path) must be a string")
        }
        _ = try string()
    }
}
