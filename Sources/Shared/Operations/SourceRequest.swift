import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
#if canImport(Glibc)
import Glibc
#endif

/// A GET of a model file's bytes from its source (the hub reading a header, a worker
/// downloading): redirects followed by hand (Hugging Face answers `resolve` with a 302 to
/// its CDN, whose headers differ), every hop's host checked against loopback and link-local
/// addresses unless allowed, the token sent to the first host only.
public struct SourceRequest: Sendable {
    public var url: String
    /// `bytes=FROM-` or `bytes=FROM-TO`; nil for the whole file.
    public var range: ClosedRange<Int>?
    public var from: Int?
    /// A bearer token for the first host (a private Hugging Face repository).
    public var token: String?
    public var allowLocal: Bool
    public var timeout: Duration

    public init(url: String, range: ClosedRange<Int>? = nil, from: Int? = nil, token: String? = nil, allowLocal: Bool,
                timeout: Duration) {
        self.url = url
        self.range = range
        self.from = from
        self.token = token
        self.allowLocal = allowLocal
        self.timeout = timeout
    }

    /// Why a source cannot be read; each names the URL's host, never a token.
    public struct Failure: Error, CustomStringConvertible, Equatable {
        public var description: String
        /// The source answered 404 / 401 / 403 (not worth retrying soon).
        public var status: Int?
        public init(_ description: String, status: Int? = nil) {
            self.description = description
            self.status = status
        }
    }

    /// The answer of the last hop, with what the redirects said on the way (Hugging Face puts
    /// the LFS sha256 and size on the 302: `X-Linked-Etag`, `X-Linked-Size`).
    public struct Answer {
        public var response: HTTPClientResponse
        public var linkedETag: String?
        public var linkedSize: Int?

        /// The file's sha256 as the source states it: the LFS one, else an ETag of 64 hex digits.
        public var sha256: String? {
            for candidate in [linkedETag, response.headers.first(name: "etag")].compactMap({ $0 }) {
                let bare = candidate.replacingOccurrences(of: "W/", with: "").trimmingCharacters(in: CharacterSet(charactersIn: "\" "))
                    .lowercased()
                if bare.count == 64, bare.allSatisfy(\.isHexDigit) { return bare }
            }
            return nil
        }

        /// The whole file's size: a 206's `Content-Range` total, a 200's length, or the LFS size.
        public var totalSize: Int? {
            if response.status == .partialContent, let range = response.headers.first(name: "content-range"),
               let total = range.split(separator: "/").last.flatMap({ Int($0) }) {
                return total
            }
            if response.status == .ok, let length = response.headers.first(name: "content-length").flatMap(Int.init) { return length }
            return linkedSize
        }
    }

    public func send(with client: HTTPClient) async throws -> Answer {
        var current = url
        var linkedETag: String?
        var linkedSize: Int?
        let firstHost = URLComponents(string: url)?.host
        for _ in 0..<6 {
            guard let components = URLComponents(string: current), let host = components.host,
                  components.scheme == "https" || components.scheme == "http"
            else { throw Failure("not an http(s) URL: \(current.prefix(200))") }
            if !allowLocal, let address = try Self.localAddress(of: host) {
                throw Failure("\(host) resolves to \(address), a loopback or link-local address; "
                              + "an operator allows such sources with hub.model_sources.allow_local")
            }
            var request = HTTPClientRequest(url: current)
            request.method = .GET
            if let range { request.headers.add(name: "Range", value: "bytes=\(range.lowerBound)-\(range.upperBound)") }
            if let from, from > 0 { request.headers.add(name: "Range", value: "bytes=\(from)-") }
            if let token, host == firstHost { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
            let response: HTTPClientResponse
            do {
                response = try await client.execute(request, timeout: .init(timeout))
            } catch {
                throw Failure("\(host) did not answer: \(error)")
            }
            let status = Int(response.status.code)
            if (300...399).contains(status), let location = response.headers.first(name: "location") {
                linkedETag = linkedETag ?? response.headers.first(name: "x-linked-etag")
                linkedSize = linkedSize ?? response.headers.first(name: "x-linked-size").flatMap(Int.init)
                _ = try? await response.body.collect(upTo: 64 * 1024)
                guard let next = URL(string: location, relativeTo: URL(string: current))?.absoluteString else {
                    throw Failure("\(host) redirected to an invalid location")
                }
                current = next
                continue
            }
            guard status == 200 || status == 206 else {
                _ = try? await response.body.collect(upTo: 64 * 1024)
                let why = switch status {
                case 401, 403: "refused access (\(status)): a private repository needs a token (HF_TOKEN or hf_token_file)"
                case 404: "has no such file (404)"
                case 416: "cannot serve that range (416)"
                default: "answered \(status)"
                }
                throw Failure("\(host) \(why)", status: status)
            }
            return Answer(response: response, linkedETag: linkedETag, linkedSize: linkedSize)
        }
        throw Failure("too many redirects from \(firstHost ?? url)")
    }

    /// The first loopback, link-local or unspecified address `host` resolves to, if any.
    public static func localAddress(of host: String) throws -> String? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        guard getaddrinfo(bare, nil, &hints, &list) == 0, let first = list else {
            throw Failure("cannot resolve \(host)")
        }
        defer { freeaddrinfo(first) }
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            if let address = current.pointee.ai_addr {
                if current.pointee.ai_family == AF_INET {
                    let value = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt32(bigEndian: $0.pointee.sin_addr.s_addr) }
                    let (a, b) = (value >> 24, (value >> 16) & 0xff)
                    if a == 127 || a == 0 || (a == 169 && b == 254) { return Self.text(of: current) }
                } else if current.pointee.ai_family == AF_INET6 {
                    let bytes = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                        withUnsafeBytes(of: pointer.pointee.sin6_addr) { Array($0) }
                    }
                    let loopback = bytes.dropLast().allSatisfy { $0 == 0 } && (bytes.last == 1 || bytes.last == 0)
                    let linkLocal = bytes[0] == 0xfe && (bytes[1] & 0xc0) == 0x80
                    let mapped = bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff
                        && (bytes[12] == 127 || (bytes[12] == 169 && bytes[13] == 254) || bytes[12] == 0)
                    if loopback || linkLocal || mapped { return Self.text(of: current) }
                }
            }
            entry = current.pointee.ai_next
        }
        return nil
    }

    private static func text(of entry: UnsafeMutablePointer<addrinfo>) -> String {
        var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        getnameinfo(entry.pointee.ai_addr, entry.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
