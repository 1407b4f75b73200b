import Foundation

/// A cluster file with one worker `a` in a fresh folder, as the worker's tests need it.
enum WorkerFixture {
    /// Writes `client.secret`, `a.credential` (`credential`) and `cluster.yaml` with `models`
    /// (YAML list items) and `extra` worker settings into a new temporary folder; returns the
    /// folder and the file's path.
    static func clusterFile(credential: String, models: String, extra: String = "") throws -> (directory: URL, path: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-worker-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try String(repeating: "c", count: 40).write(to: directory.appendingPathComponent("client.secret"), atomically: true, encoding: .utf8)
        try credential.write(to: directory.appendingPathComponent("a.credential"), atomically: true, encoding: .utf8)
        let path = directory.appendingPathComponent("cluster.yaml").path
        try """
            hub:
              listen: "127.0.0.1:0"
              auth:
                client_secret_file: client.secret
            workers:
              - name: a
                hubs: ["http://127.0.0.1:1"]
                listen: "127.0.0.1:0"
                state_dir: \(directory.path)
                credential_file: a.credential
            \(extra.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
                models:
            \(models.split(separator: "\n").map { "      " + $0 }.joined(separator: "\n"))
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return (directory, path)
    }
}
