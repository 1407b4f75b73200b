import Foundation

/// Where a hub's store is: a SQLite file, or a PostgreSQL database several hubs share
/// (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|require]`).
public enum StoreLocation: Sendable, Equatable, CustomStringConvertible {
    case sqlite(path: String)
    case postgres(Postgres)

    public struct Postgres: Sendable, Equatable {
        public var host: String
        public var port: Int
        public var user: String
        public var password: String?
        public var database: String
        public var tls: Bool
    }

    /// Parses a `postgres://` (or `postgresql://`) URL; nil when it is not one.
    public static func postgres(url text: String) throws -> Postgres? {
        guard text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") else { return nil }
        guard let url = URLComponents(string: text), let host = url.host, !host.isEmpty, let user = url.user, !user.isEmpty else {
            throw StoreError("expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
        }
        let database = String(url.path.dropFirst())
        let mode = url.queryItems?.first { $0.name == "sslmode" }?.value ?? "disable"
        guard mode == "disable" || mode == "require" else { throw StoreError("sslmode: expected disable or require") }
        return Postgres(host: host, port: url.port ?? 5432, user: user, password: url.password,
                        database: database.isEmpty ? user : database, tls: mode == "require")
    }

    /// Where it is, without a password: what logs and errors may say.
    public var description: String {
        switch self {
        case .sqlite(let path): "sqlite \(path)"
        case .postgres(let pg): "postgres \(pg.user)@\(pg.host):\(pg.port)/\(pg.database)"
        }
    }
}
