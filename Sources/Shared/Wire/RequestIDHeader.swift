import HTTPTypes

/// The id that ties one request's log lines together on hub, worker and engine.
public enum RequestIDHeader {
    public static let header = "X-Request-Id"
    public static let field = HTTPField.Name(header)!

    /// The caller's id when it is well-formed (1 to 128 of `A-Z a-z 0-9 . _ : -`), else a new one:
    /// a client cannot inject log syntax or unbounded text through it.
    public static func accept(_ value: String?) -> String {
        if let value, (1...128).contains(value.utf8.count),
            value.utf8.allSatisfy({ byte in
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: ".")
                    || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ":") || byte == UInt8(ascii: "-")
            })
        {
            return value
        }
        return generate()
    }

    /// 16 random hex digits.
    public static func generate() -> String {
        let value = UInt64.random(in: .min ... .max)
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}
