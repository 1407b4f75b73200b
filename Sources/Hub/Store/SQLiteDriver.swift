import Foundation
import Logging
import NIOCore
import SQLiteNIO

/// The embedded store's database: one SQLite file in WAL mode (several processes may read
/// and write it: the hub and `caravan-hub keys`). Calls run on NIO's thread pool.
struct SQLiteDriver: SQLDriver {
    let connection: SQLiteConnection

    /// Opens (creating if needed) the file at `path`. Refuses a file or folder another user
    /// owns or could write: it holds every key's digest and everyone's usage.
    static func open(path: String, logger: Logger) async throws -> SQLiteDriver {
        let folder = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try checkOwnership(folder, what: "folder")
        let existed = FileManager.default.fileExists(atPath: path)
        if existed { try checkOwnership(path, what: "file") }
        let connection = try await SQLiteConnection.open(storage: .file(path: path), logger: logger)
        if !existed { _ = chmod(path, 0o600) }
        let driver = SQLiteDriver(connection: connection)
        do {
            for pragma in ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL", "PRAGMA busy_timeout = 5000"] {
                _ = try await connection.query(pragma)
            }
        } catch {
            try? await connection.close()
            throw error
        }
        return driver
    }

    private static func checkOwnership(_ path: String, what: String) throws {
        var info = stat()
        guard stat(path, &info) == 0 else { throw StoreError("cannot read the store \(what) \(path): \(String(cString: strerror(errno)))") }
        if info.st_uid != geteuid() {
            throw StoreError("the store \(what) \(path) belongs to user \(info.st_uid), not to this hub's user (\(geteuid())): refused")
        }
        if info.st_mode & 0o022 != 0 {
            throw StoreError("the store \(what) \(path) is writable by other users (mode \(String(info.st_mode & 0o777, radix: 8))): "
                             + "refused; chmod go-w \(path)")
        }
    }

    /// `BEGIN IMMEDIATE` takes the write lock first, so another process waits for it under
    /// `busy_timeout` instead of failing at commit.
    var begin: String { "BEGIN IMMEDIATE" }

    func execute(_ sql: String, _ values: [StoreValue]) async throws -> [StoreRow] {
        let binds: [SQLiteData] = values.map { value in
            switch value {
            case .text(let text): .text(text)
            case .integer(let number): .integer(number)
            case .double(let number): .float(number)
            case .null: .null
            }
        }
        return try await connection.query(sql, binds).map { row in
            var columns: [String: StoreValue] = [:]
            for column in row.columns {
                columns[column.name] = switch column.data {
                case .text(let text): .text(text)
                case .integer(let number): .integer(Int(number))
                case .float(let number): .double(number)
                case .blob, .null: .null
                }
            }
            return StoreRow(columns: columns)
        }
    }

    func schemaVersion() async throws -> Int { try await execute("PRAGMA user_version", []).first?.int("user_version") ?? 0 }
    func setSchemaVersion(_ version: Int) async throws { _ = try await execute("PRAGMA user_version = \(version)", []) }
    func lockForMigration() async throws {}  // BEGIN IMMEDIATE holds the file's write lock already
    func close() async throws { try await connection.close() }
}
