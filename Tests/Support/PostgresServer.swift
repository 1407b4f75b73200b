import Foundation

/// A real PostgreSQL server for a test: Debian's binaries, `initdb` into a temporary folder
/// (as the `postgres` user when the tests run as root: the server refuses root), trust
/// authentication on 127.0.0.1 and a free port, stopped and deleted by ``stop()``.
package final class PostgresServer: Sendable {
    package let port: Int
    package let directory: URL
    private let bin: String

    /// `postgres://caravan@127.0.0.1:PORT/caravan`: the database the hub's store uses.
    package var url: String { "postgres://caravan@127.0.0.1:\(port)/caravan" }

    private init(port: Int, directory: URL, bin: String) {
        self.port = port
        self.directory = directory
        self.bin = bin
    }

    /// The folder of Debian's PostgreSQL binaries (scripts/test.sh installs `postgresql`).
    static func binaries() throws -> String {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }
        guard let version = versions.first(where: { FileManager.default.isExecutableFile(atPath: "\(root)/\($0)/bin/initdb") }) else {
            throw TestFailure("PostgreSQL is not installed (apt-get install postgresql; scripts/test.sh does it)")
        }
        return "\(root)/\(version)/bin"
    }

    package static func start() throws -> PostgresServer {
        let bin = try binaries()
        let directory = URL(fileURLWithPath: "/tmp/caravan-pg-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        if geteuid() == 0 {
            try runProcess(["chown", "postgres:postgres", directory.path], input: "")
        }
        let server = PostgresServer(port: try freePort(), directory: directory, bin: bin)
        _ = try server.run("initdb", "-D", directory.appendingPathComponent("data").path, "-U", "caravan", "--auth=trust", "-E", "UTF8")
        try server.startServer()
        _ = try server.run("createdb", "-h", "127.0.0.1", "-p", String(server.port), "-U", "caravan", "caravan")
        return server
    }

    /// Starts the server again after ``stopServer()`` (the same data, the same port).
    package func startServer() throws {
        // The server outlives this call: it must hold none of this process's descriptors (a
        // pipe it inherited would never reach its end), so they are closed before pg_ctl runs
        // and its output goes to its log, not to a pipe.
        let closeInherited = "for fd in $(ls /proc/$$/fd); do [ \"$fd\" -gt 2 ] && eval \"exec $fd>&-\"; done 2>/dev/null; "
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let command = ["bash", "-c", closeInherited + "exec \"$0\" \"$@\" </dev/null >/dev/null 2>&1", "\(bin)/pg_ctl",
                       "-D", directory.appendingPathComponent("data").path, "-l", directory.appendingPathComponent("log").path,
                       "-o", "-p \(port) -k \(directory.path) -c listen_addresses=127.0.0.1", "-w", "start"]
        process.arguments = geteuid() == 0 ? ["runuser", "-u", "postgres", "--"] + command : command
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let log = (try? String(contentsOf: directory.appendingPathComponent("log"), encoding: .utf8)) ?? ""
            throw TestFailure("pg_ctl start exited \(process.terminationStatus): \(log.suffix(1000))")
        }
    }

    /// Stops the server (fast shutdown: open connections are cut), keeping its data.
    package func stopServer() throws {
        _ = try run("pg_ctl", "-D", directory.appendingPathComponent("data").path, "-m", "fast", "-w", "stop")
    }

    /// Runs SQL with psql; its output.
    package func psql(_ sql: String) throws -> String {
        try run("psql", "-h", "127.0.0.1", "-p", String(port), "-U", "caravan", "-d", "caravan", "-At", "-c", sql)
    }

    package func stop() {
        try? stopServer()
        try? FileManager.default.removeItem(at: directory)
    }

    private func run(_ tool: String, _ arguments: String...) throws -> String {
        let command = ["\(bin)/\(tool)"] + arguments
        return try runProcess(geteuid() == 0 ? ["runuser", "-u", "postgres", "--"] + command : command, input: "")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
