import AsyncHTTPClient
import Crypto
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOHTTP1
import Operations
import Wire

/// One model file fetched into the cache: streamed to `partial/<key>.part`, resumed from that
/// file's length with a Range request (after a dropped connection or a restart of the
/// worker), hashed as it comes, and moved into `blobs/` only when its sha256 is the expected
/// one. A mismatch deletes the partial file; a full disk deletes it too, and says so.
struct FileDownload: Sendable {
    let file: PlacedFile
    let cache: ModelCache
    /// The worker's Hugging Face token, sent to the source's first host for `hf://` files.
    let token: String?

    struct Failure: Error, CustomStringConvertible {
        var description: String
        /// Worth trying again soon (a dropped connection) rather than after a long backoff.
        var transient: Bool
    }

    /// Fetches the file unless it is there; `progress` gets the bytes on disk as they grow.
    /// Stops (throwing `CancellationError`) when `wanted` turns false. A client of its own
    /// (no redirects followed for it: ``SourceRequest`` follows them) lives as long as the transfer.
    func run(progress: @Sendable (Int) -> Void, wanted: @Sendable () -> Bool) async throws {
        let client = ControlClient.make(connectTimeout: .seconds(10), readTimeout: .seconds(60))
        do {
            try await run(with: client, progress: progress, wanted: wanted)
            try? await client.shutdown()
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    private func run(with client: HTTPClient, progress: @Sendable (Int) -> Void, wanted: @Sendable () -> Bool) async throws {
        guard !file.isLocal else {
            guard FileManager.default.fileExists(atPath: file.url) else {
                throw Failure(description: "\(file.url) does not exist on this worker", transient: false)
            }
            return
        }
        let blob = cache.blob(file)
        if FileManager.default.fileExists(atPath: blob) { return }
        let part = cache.partial(file)
        if !FileManager.default.fileExists(atPath: part) {
            _ = FileManager.default.createFile(atPath: part, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        guard let handle = FileHandle(forUpdatingAtPath: part) else {
            throw Failure(description: "cannot write \(part)", transient: false)
        }
        defer { try? handle.close() }
        // What is there already counts: hash it, then ask for the rest.
        var hasher = SHA256()
        var have = 0
        while let chunk = try handle.read(upToCount: 4 << 20), !chunk.isEmpty {
            hasher.update(data: chunk)
            have += chunk.count
        }
        if let size = file.size, have > size {
            try? FileManager.default.removeItem(atPath: part)
            throw Failure(description: "the partial file was longer than the source's \(size) bytes; starting over", transient: true)
        }
        progress(have)
        var digest: String?
        if file.size.map({ have < $0 }) ?? true {
            let answer = try await SourceRequest(url: file.url, from: have, token: file.huggingFace == true ? token : nil,
                                                 allowLocal: file.allowLocal == true, timeout: .seconds(60)).send(with: client)
            if have > 0 && answer.response.status != .partialContent {
                // The server ignored the Range: start over from its first byte.
                try handle.truncate(atOffset: 0)
                hasher = SHA256()
                have = 0
            }
            (digest, have) = try await receive(answer.response.body, into: handle, part: part, from: have, hashing: hasher,
                                               progress: progress, wanted: wanted)
        }
        if let size = file.size, have != size {
            throw Failure(description: "the download ended at \(have) of \(size) bytes", transient: true)
        }
        let found = digest ?? Self.hex(hasher.finalize())
        if let expected = file.sha256, found != expected {
            try? FileManager.default.removeItem(atPath: part)
            throw Failure(description: "checksum mismatch: the file's sha256 is \(found), not \(expected); discarded", transient: false)
        }
        // On disk before it is named by its content: a crash must not leave a blob that lies.
        try handle.synchronize()
        try FileManager.default.moveItem(atPath: part, toPath: blob)
    }

    /// Streams the body to the file in 1 MiB batches (a few hundred write calls for a large
    /// file, not one per network read) while a child task hashes the batches already written:
    /// the hash, the download's largest CPU cost, runs beside the transfer instead of in
    /// turn with it, at most ``hashAhead`` batches behind. Returns the digest and the bytes on disk.
    private func receive(_ body: HTTPClientResponse.Body, into handle: FileHandle, part: String, from start: Int, hashing prefix: SHA256,
                         progress: @Sendable (Int) -> Void, wanted: @Sendable () -> Bool) async throws -> (String, Int) {
        let (batches, feed) = AsyncStream<ByteBuffer>.makeStream()
        let credits = HashCredits(Self.hashAhead)
        let descriptor = handle.fileDescriptor
        var have = start
        do {
            return try await withThrowingTaskGroup(of: String.self) { group in
                group.addTask {
                    var hasher = prefix
                    for await batch in batches {
                        batch.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
                        credits.give()
                    }
                    return Self.hex(hasher.finalize())
                }
                defer { feed.finish() }
                var batch = ByteBuffer()
                batch.reserveCapacity(Self.batchBytes + 65_536)
                do {
                    for try await chunk in body {
                        guard wanted() else { throw CancellationError() }
                        var chunk = chunk
                        have += chunk.readableBytes
                        batch.writeBuffer(&chunk)
                        guard batch.readableBytes >= Self.batchBytes else { continue }
                        try Self.write(batch, to: descriptor)
                        progress(have)
                        await credits.take()
                        feed.yield(batch)
                        batch = ByteBuffer()
                        batch.reserveCapacity(Self.batchBytes + 65_536)
                    }
                } catch let error as WriteError {
                    throw error
                } catch is CancellationError {
                    throw CancellationError()
                } catch {
                    // What arrived before the break is kept: the next try resumes after it.
                    try? Self.write(batch, to: descriptor)
                    throw Failure(description: "the download stopped at \(have) bytes: \(error)", transient: true)
                }
                try Self.write(batch, to: descriptor)
                progress(have)
                feed.yield(batch)
                feed.finish()
                return (try await group.next() ?? "", have)
            }
        } catch let error as WriteError where error.code == ENOSPC {
            try? FileManager.default.removeItem(atPath: part)
            throw Failure(description: "the disk is full (\(cache.root)); the partial file was removed", transient: false)
        } catch let error as WriteError {
            throw Failure(description: "cannot write \(part): \(String(cString: strerror(error.code)))", transient: false)
        }
    }

    static let batchBytes = 1 << 20
    /// Batches written but not yet hashed, at most.
    static let hashAhead = 8

    static func hex(_ digest: SHA256.Digest) -> String { digest.map { String(format: "%02x", $0) }.joined() }

    struct WriteError: Error {
        var code: Int32
    }

    /// Writes all of `buffer` to `descriptor`.
    static func write(_ buffer: ByteBuffer, to descriptor: Int32) throws(WriteError) {
        let result: Int32? = buffer.withUnsafeReadableBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                offset += written
            }
            return nil
        }
        if let result { throw WriteError(code: result) }
    }
}

/// How many written batches may wait for the hash: the download waits for a credit before
/// handing over another batch (bounded memory when the disk or network outruns the hash).
final class HashCredits: Sendable {
    private let state: Mutex<(available: Int, waiter: CheckedContinuation<Void, Never>?)>

    init(_ count: Int) { state = Mutex((count, nil)) }

    func take() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                guard state.available == 0 else {
                    state.available -= 1
                    return true
                }
                state.waiter = continuation
                return false
            }
            if now { continuation.resume() }
        }
    }

    func give() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.available += 1
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }
}
