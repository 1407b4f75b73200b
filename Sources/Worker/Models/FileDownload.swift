import AsyncHTTPClient
import Crypto
import Foundation
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
    let client: HTTPClient
    /// The worker's Hugging Face token, sent to the source's first host for `hf://` files.
    let token: String?

    struct Failure: Error, CustomStringConvertible {
        var description: String
        /// Worth trying again soon (a dropped connection) rather than after a long backoff.
        var transient: Bool
    }

    /// Fetches the file unless it is there; `progress` gets the bytes on disk as they grow.
    /// Stops (throwing `CancellationError`) when `wanted` turns false.
    func run(progress: @Sendable (Int) -> Void, wanted: @Sendable () -> Bool) async throws {
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
            FileManager.default.createFile(atPath: part, contents: nil, attributes: [.posixPermissions: 0o600])
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
        if file.size.map({ have < $0 }) ?? true {
            let answer = try await SourceRequest(url: file.url, from: have, token: file.huggingFace == true ? token : nil,
                                                 allowLocal: file.allowLocal == true, timeout: .seconds(60)).send(with: client)
            if have > 0 && answer.response.status != .partialContent {
                // The server ignored the Range: start over from its first byte.
                try handle.truncate(atOffset: 0)
                hasher = SHA256()
                have = 0
            }
            do {
                for try await chunk in answer.response.body {
                    guard wanted() else { throw CancellationError() }
                    let data = Data(chunk.readableBytesView)
                    try handle.write(contentsOf: data)
                    hasher.update(data: data)
                    have += data.count
                    progress(have)
                }
            } catch let error as NSError where error.domain == NSPOSIXErrorDomain && error.code == Int(ENOSPC) {
                try? FileManager.default.removeItem(atPath: part)
                throw Failure(description: "the disk is full (\(cache.root)); the partial file was removed", transient: false)
            } catch is CancellationError {
                throw CancellationError()
            } catch let error as NSError where error.domain == NSCocoaErrorDomain && error.code == NSFileWriteOutOfSpaceError {
                try? FileManager.default.removeItem(atPath: part)
                throw Failure(description: "the disk is full (\(cache.root)); the partial file was removed", transient: false)
            } catch {
                throw Failure(description: "the download stopped at \(have) bytes: \(error)", transient: true)
            }
        }
        if let size = file.size, have != size {
            throw Failure(description: "the download ended at \(have) of \(size) bytes", transient: true)
        }
        let digest = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        if let expected = file.sha256, digest != expected {
            try? FileManager.default.removeItem(atPath: part)
            throw Failure(description: "checksum mismatch: the file's sha256 is \(digest), not \(expected); discarded", transient: false)
        }
        try handle.synchronize()
        try FileManager.default.moveItem(atPath: part, toPath: blob)
    }
}
