import Foundation

/// A value bound into or read out of a statement, whichever database runs it.
public enum StoreValue: Sendable, Equatable {
    case text(String)
    case integer(Int)
    case double(Double)
    case null

    init(_ value: String?) { self = value.map { .text($0) } ?? .null }
    init(_ value: Int?) { self = value.map { .integer($0) } ?? .null }
    init(_ value: Double?) { self = value.map { .double($0) } ?? .null }
}

/// One result row, by column name.
struct StoreRow: Sendable {
    var columns: [String: StoreValue]

    func string(_ name: String) -> String? {
        switch columns[name] {
        case .text(let text)?: text
        case .integer(let value)?: String(value)
        case .double(let value)?: String(value)
        default: nil
        }
    }

    func int(_ name: String) -> Int? {
        switch columns[name] {
        case .integer(let value)?: value
        case .double(let value)?: Int(value)
        case .text(let text)?: Int(text)
        default: nil
        }
    }

    func double(_ name: String) -> Double? {
        switch columns[name] {
        case .double(let value)?: value
        case .integer(let value)?: Double(value)
        case .text(let text)?: Double(text)
        default: nil
        }
    }

    func date(_ name: String) -> Date? { double(name).map { Date(timeIntervalSince1970: $0) } }
}

/// What ``SQLStore`` needs of a database: statements with `?` placeholders, a schema
/// version, and the words for a write transaction. SQLite and PostgreSQL each have one.
protocol SQLDriver: Sendable {
    /// Runs one statement; its rows.
    func execute(_ sql: String, _ values: [StoreValue]) async throws -> [StoreRow]
    /// Starts a transaction that holds the write lock from its start.
    var begin: String { get }
    /// The version of the last migration run (0: none).
    func schemaVersion() async throws -> Int
    /// Records `version`, inside the migration's transaction; with a lock other hubs wait on.
    func setSchemaVersion(_ version: Int) async throws
    /// Taken in the migration's transaction so two hubs starting together migrate once.
    func lockForMigration() async throws
    func close() async throws
}
