import AsyncHTTPClient
import Config
import Foundation
import Logging
import Store
import Operations
import Server
import TestSupport
import Testing
import Wire
@testable import Hub

/// The pure parts of hub-managed models: sources, the GGUF header, the VRAM estimate and placement.
@Suite("Managed models")
struct ManagedModelsTests {
    static func tinyBytes() throws -> [UInt8] {
        guard let path = ProcessInfo.processInfo.environment["CARAVAN_TEST_MODEL"], let data = FileManager.default.contents(atPath: path) else {
            throw TestFailure("CARAVAN_TEST_MODEL is needed: run scripts/test.sh")
        }
        return [UInt8](data)
    }

    @Test("hf:// sources resolve to Hugging Face's resolve layout; split models expand to every part")
    func sources() throws {
        let source = try ModelSource(parsing: "hf://org/repo/sub/model-Q4_K_M.gguf@v1.0")
        #expect(source == .huggingFace(repo: "org/repo", file: "sub/model-Q4_K_M.gguf", revision: "v1.0"))
        #expect(source.location(endpoint: "https://hf-mirror.example") == "https://hf-mirror.example/org/repo/resolve/v1.0/sub/model-Q4_K_M.gguf")
        #expect(try ModelSource(parsing: "hf://org/repo/m.gguf").location(endpoint: "https://huggingface.co")
            == "https://huggingface.co/org/repo/resolve/main/m.gguf")
        let split = try ModelSource(parsing: "hf://org/repo/big-00001-of-00003.gguf").parts
        #expect(split.map(\.fileName) == ["big-00001-of-00003.gguf", "big-00002-of-00003.gguf", "big-00003-of-00003.gguf"])
        let url = try ModelSource(parsing: "https://cdn.example/models/x-00001-of-00002.gguf").parts
        #expect(url.map { $0.location(endpoint: "") } == ["https://cdn.example/models/x-00001-of-00002.gguf", "https://cdn.example/models/x-00002-of-00002.gguf"])
        #expect(try ModelSource(parsing: "/srv/models/a.gguf") == .path("/srv/models/a.gguf"))
        for bad in ["hf://org/model.gguf", "hf://org/../x.gguf", "ftp://x/y.gguf", "models/a.gguf", "https://user:pw@host/a.gguf"] {
            #expect(throws: ModelSource.Invalid.self, "\(bad)") { try ModelSource(parsing: bad) }
        }
    }

    @Test("the GGUF header of the generated model: architecture and shape; a short read asks for more")
    func header() throws {
        let bytes = try Self.tinyBytes()
        let header = try GGUFHeader(parsing: bytes)
        #expect(header.architecture == "llama")
        #expect(header.number("block_count") == 2)
        #expect(header.number("embedding_length") == 64)
        #expect(header.number("attention.head_count_kv") == 4)
        #expect(header.number("context_length") == 2048)
        #expect(throws: GGUFHeader.Problem.truncated) { try GGUFHeader(parsing: Array(bytes.prefix(200))) }
        #expect(throws: GGUFHeader.Problem.notGGUF) { try GGUFHeader(parsing: Array("not a model".utf8)) }
    }

    @Test("the estimate: weights + KV for ctx x parallel at the cache type + compute")
    func estimate() throws {
        let header = try GGUFHeader(parsing: try Self.tinyBytes())
        // 2 layers x 4 KV heads x (16 + 16) dims x 2 bytes = 512 bytes a token.
        let f16 = VRAMEstimate(header: header, bytes: 100 << 20, ctx: 8192, parallel: 4, args: [])
        #expect(f16.kvTokens == 32_768 && f16.kvCacheMiB == 16 && f16.weightsMiB == 100 && f16.computeMiB == 64)
        #expect(f16.totalMiB == 180)
        let q8 = VRAMEstimate(header: header, bytes: 100 << 20, ctx: 8192, parallel: 4, args: ["-ctk", "q8_0", "--cache-type-v=q8_0"])
        #expect(q8.kvCacheMiB == 9)  // 34/32 bytes an element
        let defaults = VRAMEstimate(header: header, bytes: 1 << 30, ctx: nil, parallel: nil, args: [])
        #expect(defaults.kvTokens == 2048 && defaults.computeMiB == 102)  // the model's own context (under 4096); a tenth of 1 GiB
    }

    static func model(_ name: String = "m", replicas: Int = 1, workers: [String]? = nil, needMiB: Int = 1000, sha: String = "aa",
                      placement: [ManagedModel.Assignment] = []) -> ManagedModel {
        ManagedModel(name: name, source: "hf://o/r/m.gguf", projector: nil, sha256: nil, replicas: replicas, workers: workers, ctx: nil,
                     parallel: nil, args: [], aliases: [], createdAt: .distantPast, updatedAt: .distantPast,
                     files: [PlacedFile(url: "https://x/m.gguf", fileName: "m.gguf", sha256: sha, size: 500 << 20)], projectorFile: nil,
                     estimate: VRAMEstimate(weightsMiB: needMiB - 64, kvCacheMiB: 0, computeMiB: 64, kvTokens: 0),
                     placement: placement, problem: nil)
    }

    @Test("placement spreads replicas, prefers workers with the files, then VRAM left, then disk; refuses with both numbers")
    func placement() {
        let now = Date(timeIntervalSince1970: 1_000_000)
        let workers = [
            Placement.Candidate(name: "small", budgetMiB: 800, diskFreeMiB: 100_000),
            Placement.Candidate(name: "big", budgetMiB: 24_000, committedMiB: 2000, diskFreeMiB: 100_000),
            Placement.Candidate(name: "bigger", budgetMiB: 48_000, diskFreeMiB: 100_000),
            Placement.Candidate(name: "cached", budgetMiB: 8000, diskFreeMiB: 10, hasFiles: true),
            Placement.Candidate(name: "nodisk", budgetMiB: 80_000, diskFreeMiB: 100),
            Placement.Candidate(name: "draining", budgetMiB: 80_000, diskFreeMiB: 100_000, draining: true),
        ]
        let two = Placement.decide(Self.model(replicas: 2), live: workers, now: now, grace: 300)
        #expect(two.placement.map(\.worker) == ["cached", "bigger"] && two.problem == nil)
        #expect(two.placement[0].reason.contains("has the files"))
        let four = Placement.decide(Self.model(replicas: 4), live: workers, now: now, grace: 300)
        #expect(four.placement.map(\.worker) == ["cached", "bigger", "big"])
        #expect(four.problem?.contains("3 of 4 replicas") == true && four.problem?.contains("small has 800 MiB") == true)
        #expect(four.problem?.contains("nodisk has 100 MiB of disk free") == true && four.problem?.contains("draining") == true)
        let none = Placement.decide(Self.model(needMiB: 100_000), live: workers, now: now, grace: 300)
        #expect(none.placement.isEmpty && none.problem?.contains("needs 100000 MiB") == true && none.problem?.contains("48000") == true)
        let named = Placement.decide(Self.model(workers: ["big", "gone"]), live: workers, now: now, grace: 300)
        #expect(named.placement.map(\.worker) == ["big"] && named.problem?.contains("gone is not connected") == true)
    }

    @Test("a replica stays through a worker's absence shorter than the grace, then moves")
    func replacement() {
        let start = Date(timeIntervalSince1970: 1_000_000)
        let live = [Placement.Candidate(name: "b", budgetMiB: 24_000), Placement.Candidate(name: "c", budgetMiB: 24_000)]
        var model = Self.model(placement: [.init(worker: "a", reason: "r", since: start)])
        let early = Placement.decide(model, live: live, now: start, grace: 300)
        #expect(early.placement.map(\.worker) == ["a"] && early.placement[0].goneSince == start)
        model.placement = early.placement
        let still = Placement.decide(model, live: live, now: start.addingTimeInterval(299), grace: 300)
        #expect(still.placement.map(\.worker) == ["a"])
        let moved = Placement.decide(model, live: live, now: start.addingTimeInterval(300), grace: 300)
        #expect(moved.placement.map(\.worker) == ["b"])
        // Back in time: it stays where it is, its absence forgotten.
        let back = Placement.decide(model, live: live + [Placement.Candidate(name: "a", budgetMiB: 24_000)], now: start.addingTimeInterval(10), grace: 300)
        #expect(back.placement.map(\.worker) == ["a"] && back.placement[0].goneSince == nil)
    }

    @Test("sources on loopback or link-local addresses are found (refused unless allowed)")
    func localSources() throws {
        #expect(try SourceRequest.localAddress(of: "127.0.0.1") == "127.0.0.1")
        #expect(try SourceRequest.localAddress(of: "localhost") != nil)
        #expect(try SourceRequest.localAddress(of: "169.254.169.254") == "169.254.169.254")
        #expect(try SourceRequest.localAddress(of: "[::1]") == "::1")
        #expect(try SourceRequest.localAddress(of: "10.1.2.3") == nil)
        #expect(try SourceRequest.localAddress(of: "93.184.215.14") == nil)
    }

    @Test("an admin's source on a loopback or link-local address is refused unless the operator allows it; nothing is stored")
    func localSourceRefused() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-src-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = try await SQLStore.open(.sqlite(path: folder.appendingPathComponent("hub.db").path), logger: Logger(label: "test"))
        let desk = ModelDesk(book: ModelBook(store: store), reader: SourceReader(hub: HubConfig(), base: folder.path, environment: [:]),
                             placer: nil)
        for source in ["http://127.0.0.1:9/m.gguf", "http://169.254.169.254/latest/m.gguf", "http://localhost:8080/m.gguf"] {
            let refusal = await #expect(throws: ModelDesk.Refusal.self) {
                _ = try await desk.add(ModelRequest(name: "m", source: source))
            }
            #expect(refusal?.code == .invalidSource && refusal?.description.contains("allow_local") == true, "\(String(describing: refusal))")
        }
        #expect(try await store.models().isEmpty)
        try await store.close()
    }
}
