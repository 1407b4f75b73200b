import AsyncHTTPClient
import Foundation
import NIOCore
import Config
import Operations
import Wire

/// Reads what the hub needs of a model's source without downloading it: each file's size and
/// sha256 (the LFS sha256 or ETag; the admin's when given), and the first file's GGUF header
/// with Range requests (1 MiB, then more while the header goes on: a large vocabulary is
/// several MiB), from which ``VRAMEstimate`` comes.
struct SourceReader: Sendable {
    let settings: ModelSourcesConfig
    let endpoint: String
    let token: Secret?

    /// The reader the hub's `model_sources` settings describe (`HF_ENDPOINT` and `HF_TOKEN` from the environment win).
    init(hub: HubConfig, base: String, environment: [String: String] = ProcessInfo.processInfo.environment) {
        settings = hub.modelSources
        endpoint = hub.modelSources.endpoint(environment: environment)
        token = huggingFaceToken(file: hub.modelSources.hfTokenFile, base: base, environment: environment)
    }

    /// Header reads, in bytes, until one holds the whole header.
    static let headerSteps = [1 << 20, 8 << 20, 64 << 20]

    /// Fills in `model`'s files, projector and estimate from its sources (with a client of its
    /// own: an admin's rare call, and nothing left to shut down when it returns).
    func resolve(_ model: inout ManagedModel) async throws {
        let client = ControlClient.make(connectTimeout: .seconds(10), readTimeout: settings.timeout)
        do {
            try await resolve(&model, with: client)
            try? await client.shutdown()
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    private func resolve(_ model: inout ManagedModel, with client: HTTPClient) async throws {
        let source = try ModelSource(parsing: model.source)
        var files: [PlacedFile] = []
        var header: GGUFHeader?
        for (index, part) in source.parts.enumerated() {
            let (file, parsed) = try await read(part, header: index == 0, client: client)
            files.append(file)
            if index == 0 { header = parsed }
        }
        if let expected = model.sha256?.lowercased() {
            if let stated = files[0].sha256, stated != expected {
                throw SourceRequest.Failure("the source states sha256 \(stated), not the \(expected) given")
            }
            files[0].sha256 = expected
        }
        model.files = files
        model.projectorFile = nil
        if let projector = model.projector {
            model.projectorFile = try await read(try ModelSource(parsing: projector), header: false, client: client).file
        }
        model.estimate = header.map {
            VRAMEstimate(header: $0, bytes: model.totalBytes, ctx: model.ctx, parallel: model.parallel, args: model.args)
        }
    }

    private func read(_ source: ModelSource, header wantHeader: Bool, client: HTTPClient) async throws -> (file: PlacedFile, header: GGUFHeader?) {
        let location = source.location(endpoint: endpoint)
        if case .path(let path) = source {
            // On the workers; read here only if this machine has it too (a shared mount).
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
            var header: GGUFHeader?
            if wantHeader, let handle = FileHandle(forReadingAtPath: path) {
                defer { try? handle.close() }
                for step in Self.headerSteps {
                    try handle.seek(toOffset: 0)
                    let bytes = [UInt8](try handle.read(upToCount: step) ?? Data())
                    do {
                        header = try GGUFHeader(parsing: bytes)
                        break
                    } catch GGUFHeader.Problem.truncated where bytes.count == step {
                        continue
                    }
                }
            }
            return (PlacedFile(url: path, fileName: source.fileName, sha256: nil, size: size), header)
        }
        let isHF: Bool = if case .huggingFace = source { true } else { false }
        for step in wantHeader ? Self.headerSteps : [1] {
            let request = SourceRequest(url: location, range: 0...(step - 1), token: isHF ? token?.value : nil,
                                        allowLocal: settings.allowLocal, timeout: settings.timeout)
            let answer = try await request.send(with: client)
            let bytes = try await Self.first(step, of: answer.response)
            var file = PlacedFile(url: location, fileName: source.fileName, sha256: answer.sha256, size: answer.totalSize,
                                  huggingFace: isHF ? true : nil)
            file.allowLocal = settings.allowLocal ? true : nil
            guard wantHeader else { return (file, nil) }
            do {
                return (file, try GGUFHeader(parsing: bytes))
            } catch GGUFHeader.Problem.truncated where bytes.count == step && step != Self.headerSteps.last {
                continue
            } catch let problem as GGUFHeader.Problem {
                throw SourceRequest.Failure("\(source.fileName): \(problem)")
            }
        }
        throw SourceRequest.Failure("\(source.fileName): the GGUF header is longer than \(Self.headerSteps.last! >> 20) MiB")
    }

    /// At most `count` bytes of the body; the rest is not read (a server that ignores Range).
    private static func first(_ count: Int, of response: HTTPClientResponse) async throws -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(min(count, 1 << 20))
        for try await chunk in response.body {
            bytes += chunk.readableBytesView.prefix(count - bytes.count)
            if bytes.count >= count { break }
        }
        return bytes
    }
}
