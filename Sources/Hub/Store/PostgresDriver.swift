import Foundation
import Logging
import NIOCore
import NIOSSL
import PostgresNIO
import Synchronization

/// The shared store's database: PostgreSQL over one connection, opened again after it
/// breaks (a restarted server), so a hub outlives its store's outages.
final class PostgresDriver: SQLDriver {
    private let configuration: PostgresConnection.Configuration
    private let logger: Logger
    private let connection = Mutex<PostgresConnection?>(nil)

    private init(configuration: PostgresConnection.Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    static func open(_ database: StoreLocation.Postgres, logger: Logger) async throws -> PostgresDriver {
        let tls: PostgresConnection.Configuration.TLS = database.tls
            ? .require(try NIOSSLContext(configuration: .makeClientConfiguration())) : .disable
        var configuration = PostgresConnection.Configuration(host: database.host, port: database.port, username: database.user,
                                                             password: database.password, database: database.database, tls: tls)
        configuration.options.connectTimeout = .seconds(5)
        let driver = PostgresDriver(configuration: configuration, logger: logger)
        _ = try await driver.connected()
        return driver
    }

    private func connected() async throws -> PostgresConnection {
        if let open = connection.withLock({ $0 }), !open.isClosed { return open }
        let fresh = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
        connection.withLock { $0 = fresh }
        return fresh
    }

    /// Another hub may be migrating the same database: the lock makes it wait.
    var begin: String { "BEGIN" }

    func execute(_ sql: String, _ values: [StoreValue]) async throws -> [StoreRow] {
        var bindings = PostgresBindings(capacity: values.count)
        for value in values {
            switch value {
            case .text(let text): bindings.append(text)
            case .integer(let number): bindings.append(number)
            case .double(let number): bindings.append(number)
            case .null: bindings.appendNull()
            }
        }
        let query = PostgresQuery(unsafeSQL: Self.numbered(sql), binds: bindings)
        let rows: [PostgresRow]
        do {
            rows = try await connected().query(query, logger: logger).collect()
        } catch {
            // A broken connection is opened again by the next call.
            if let open = connection.withLock({ $0 }), open.isClosed { connection.withLock { $0 = nil } }
            throw StoreError("the PostgreSQL store failed a statement: \(Self.describe(error))")
        }
        return rows.map { row in
            var columns: [String: StoreValue] = [:]
            for cell in row {
                guard cell.bytes != nil else { columns[cell.columnName] = .null; continue }
                switch cell.dataType {
                case .int8, .int4, .int2: columns[cell.columnName] = (try? cell.decode(Int.self)).map { .integer($0) } ?? .null
                case .float8, .float4, .numeric: columns[cell.columnName] = (try? cell.decode(Double.self)).map { .double($0) } ?? .null
                default: columns[cell.columnName] = (try? cell.decode(String.self)).map { .text($0) } ?? .null
                }
            }
            return StoreRow(columns: columns)
        }
    }

    /// What went wrong, in words that carry neither the statement nor its values (a key's
    /// digest, a subject): the server's own message, or the kind of failure.
    static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(type(of: error))" }
        if let message = error.serverInfo?[.message] { return message }
        return "\(error.code)"
    }

    /// `?` placeholders as PostgreSQL's `$1`, `$2`, … (the statements here quote no `?`).
    static func numbered(_ sql: String) -> String {
        var out = ""
        var index = 0
        for character in sql {
            if character == "?" {
                index += 1
                out += "$\(index)"
            } else {
                out.append(character)
            }
        }
        return out
    }

    func schemaVersion() async throws -> Int {
        _ = try await execute("CREATE TABLE IF NOT EXISTS caravan_schema (version BIGINT NOT NULL)", [])
        return try await execute("SELECT MAX(version) AS version FROM caravan_schema", []).first?.int("version") ?? 0
    }

    func setSchemaVersion(_ version: Int) async throws {
        _ = try await execute("DELETE FROM caravan_schema", [])
        _ = try await execute("INSERT INTO caravan_schema (version) VALUES (?)", [.integer(version)])
    }

    func lockForMigration() async throws {
        _ = try await execute("SELECT pg_advisory_xact_lock(727372226)", [])
    }

    func close() async throws {
        let open = connection.withLock { current in
            defer { current = nil }
            return current
        }
        try await open?.close()
    }
}
