import Foundation

/// The metadata of a GGUF file, read from its first bytes (the header the hub fetches with a
/// Range request): the numbers a VRAM estimate needs. Arrays (the vocabulary) are skipped,
/// never held.
struct GGUFHeader: Equatable, Sendable {
    var version: Int
    var tensorCount: Int
    /// Scalar metadata: integers and floats as numbers, strings as strings.
    var numbers: [String: Double]
    var strings: [String: String]
    /// Per-layer integer arrays (`head_count_kv` in some models): their largest element.
    var arrayMaxima: [String: Double]

    enum Problem: Error, Equatable, CustomStringConvertible {
        /// More bytes are needed (the header is longer than what was read).
        case truncated
        case notGGUF
        case unsupported(String)

        var description: String {
            switch self {
            case .truncated: "the GGUF header is longer than what was read"
            case .notGGUF: "not a GGUF file (its first bytes are not \"GGUF\")"
            case .unsupported(let why): "unsupported GGUF: \(why)"
            }
        }
    }

    var architecture: String? { strings["general.architecture"] }

    func number(_ key: String) -> Double? {
        guard let architecture else { return nil }
        return numbers["\(architecture).\(key)"] ?? arrayMaxima["\(architecture).\(key)"]
    }

    /// Parses the header in `bytes`; `.truncated` when it goes on past them.
    init(parsing bytes: [UInt8]) throws {
        var reader = Reader(bytes: bytes)
        guard bytes.count >= 4 else { throw Problem.truncated }
        guard bytes[0..<4].elementsEqual("GGUF".utf8) else { throw Problem.notGGUF }
        reader.offset = 4
        version = Int(try reader.integer(UInt32.self))
        guard (2...3).contains(version) else { throw Problem.unsupported("version \(version)") }
        tensorCount = Int(try reader.integer(UInt64.self))
        let count = try reader.integer(UInt64.self)
        guard count < 1_000_000 else { throw Problem.unsupported("\(count) metadata entries") }
        numbers = [:]
        strings = [:]
        arrayMaxima = [:]
        for _ in 0..<count {
            let key = try reader.string()
            let type = try reader.integer(UInt32.self)
            if type == 9 {
                let element = try reader.integer(UInt32.self)
                let length = try reader.integer(UInt64.self)
                var largest: Double?
                for _ in 0..<length {
                    if let value = try reader.value(type: element) { largest = max(largest ?? value, value) }
                }
                if let largest { arrayMaxima[key] = largest }
            } else if type == 8 {
                strings[key] = try reader.string()
            } else if let value = try reader.value(type: type) {
                numbers[key] = value
            }
        }
    }

    /// Little-endian reads over the fetched bytes.
    private struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func take(_ count: Int) throws -> ArraySlice<UInt8> {
            guard count >= 0, offset + count <= bytes.count else { throw Problem.truncated }
            defer { offset += count }
            return bytes[offset..<(offset + count)]
        }

        mutating func integer<T: FixedWidthInteger>(_: T.Type) throws -> T {
            try take(MemoryLayout<T>.size).reversed().reduce(T(0)) { $0 << 8 | T($1) }
        }

        mutating func string() throws -> String {
            let length = try integer(UInt64.self)
            guard length < 1 << 24 else { throw Problem.unsupported("a string of \(length) bytes") }
            return String(decoding: try take(Int(length)), as: UTF8.self)
        }

        /// A scalar as a number (nil for strings and bools, which are skipped).
        mutating func value(type: UInt32) throws -> Double? {
            switch type {
            case 0: return Double(try integer(UInt8.self))
            case 1: return Double(Int8(bitPattern: try integer(UInt8.self)))
            case 2: return Double(try integer(UInt16.self))
            case 3: return Double(Int16(bitPattern: try integer(UInt16.self)))
            case 4: return Double(try integer(UInt32.self))
            case 5: return Double(Int32(bitPattern: try integer(UInt32.self)))
            case 6: return Double(Float(bitPattern: try integer(UInt32.self)))
            case 7: _ = try take(1); return nil
            case 8: _ = try string(); return nil
            case 10: return Double(try integer(UInt64.self))
            case 11: return Double(Int64(bitPattern: try integer(UInt64.self)))
            case 12: return Double(bitPattern: try integer(UInt64.self))
            default: throw Problem.unsupported("metadata type \(type)")
            }
        }
    }
}
