import HTTPTypes
import Synchronization

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

    /// 16 hex digits, unique in this process and unlike another process's: a counter mixed
    /// with a seed drawn once (splitmix64, a bijection of the counter), so no request pays
    /// a `getrandom` system call for its id.
    public static func generate() -> String {
        var value = seed &+ issued.wrappingAdd(1, ordering: .relaxed).newValue &* 0x9E37_79B9_7F4A_7C15
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        value ^= value >> 31
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    private static let seed = UInt64.random(in: .min ... .max)
    private static let issued = Atomic<UInt64>(0)
}
