import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// `scripts/lib/hf-mirror.py` for one test: a folder of generated GGUFs served in Hugging
/// Face's layout (302 to a CDN path, LFS sha256 headers, Range), with a throttle, a "drop
/// after N bytes" switch, corruption, and the bytes it sent per file.
package struct HFMirror: Sendable {
    package let process: ManagedProcess
    package let root: URL
    package let url: String

    /// Starts a mirror over a new folder; `files` maps `ORG/REPO/FILE` to a file to copy there.
    package static func start(files: [String: String], arguments: [String] = []) async throws -> HFMirror {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-hf-\(UUID().uuidString.prefix(8))")
        for (path, source) in files {
            let target = root.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: source, toPath: target.path)
        }
        let process = try ManagedProcess(
            name: "hf-mirror", executable: URL(fileURLWithPath: "/usr/bin/env"),
            arguments: ["python3", repositoryRoot.appendingPathComponent("scripts/lib/hf-mirror.py").path, root.path] + arguments)
        let line = try await process.waitForLine(containing: "listening on 127.0.0.1:")
        return HFMirror(process: process, root: root, url: "http://" + String(line.split(separator: " ").last!))
    }

    /// `POST /_control?QUERY` (`rate=`, `drop_after=`, `corrupt=`, `rescan=1`, `reset=1`).
    package func control(_ query: String) async throws {
        var request = HTTPClientRequest(url: "\(url)/_control?\(query)")
        request.method = .POST
        _ = try await HTTPClient.shared.execute(request, timeout: .seconds(10)).body.collect(upTo: 1 << 16)
    }

    /// Body bytes sent per file path, and the Range requests served.
    package func stats() async throws -> (bytes: [String: Int], ranges: [[Any]]) {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: "\(url)/_stats"), timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        let json = try JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any] ?? [:]
        return (json["body_bytes"] as? [String: Int] ?? [:], json["ranges"] as? [[Any]] ?? [])
    }

    package func stop() async {
        await process.stop(grace: .milliseconds(200))
        try? FileManager.default.removeItem(at: root)
    }
}

