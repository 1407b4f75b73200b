import Config
import Foundation
import Store

extension HubConfig {
    /// Where the store is: `hub.store`'s PostgreSQL URL with its password from
    /// `CARAVAN_STORE_PASSWORD` or `hub.store_password_file`, else the SQLite file.
    func storeLocation(relativeTo base: String, environment: [String: String] = ProcessInfo.processInfo.environment)
        throws -> StoreLocation
    {
        let target = storePath(relativeTo: base)
        guard var database = try StoreLocation.postgres(url: target) else { return .sqlite(path: target) }
        if let password = environment["CARAVAN_STORE_PASSWORD"] {
            database.password = password
        } else if let file = storePasswordFile {
            let path = ConfigFile.path(file, relativeTo: base)
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ConfigError(key: "hub.store_password_file", "cannot read \(path)")
            }
            database.password = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return .postgres(database)
    }
}
