import Foundation

/// A plain TCP connection to the host and port of `url` on 127.0.0.1, for tests that must
/// misbehave below HTTP (half-sent requests, hanging up while queued). The caller closes it.
/// `receiveBuffer`: a `SO_RCVBUF` set before connecting (a client that reads slowly, or never).
package func rawConnection(to url: String, receiveBuffer: Int32? = nil) throws -> Int32 {
    guard let parsed = URL(string: url), let port = parsed.port else { throw TestFailure("bad URL \(url)") }
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    if var size = receiveBuffer {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        throw TestFailure("connect to \(url) failed")
    }
    return fd
}

/// A port nothing listens on right now.
package func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw TestFailure("no free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Sends `request` on a new connection and returns everything the server sends until it
/// closes (or 5 s pass).
package func rawExchange(hubURL: String, _ request: String) throws -> String {
    let fd = try rawConnection(to: hubURL)
    defer { close(fd) }
    var timeout = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let bytes = Array(request.utf8)
    var sent = 0
    while sent < bytes.count {
        let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n <= 0 { break }  // the server may stop reading once it has answered
        sent += n
    }
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 { break }
        received += buffer[0..<n]
    }
    return String(decoding: received, as: UTF8.self)
}

/// Opens a TCP connection, sends half a request head, and reports whether the server
/// closes the connection within `within`.
package func slowClientIsDropped(hubURL: String, within: Duration) throws -> Bool {
    let fd = try rawConnection(to: hubURL)
    defer { close(fd) }
    let partial = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: app"
    _ = partial.withCString { send(fd, $0, strlen($0), 0) }
    var timeout = timeval(tv_sec: Int(within.components.seconds), tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var buffer = [UInt8](repeating: 0, count: 1024)
    let received = recv(fd, &buffer, buffer.count, 0)
    return received >= 0  // 0 = closed by the server (or an error answer); -1 = still open at the timeout
}

/// Reads what was buffered (at most 8 MiB: a live stream would go on) and reports whether
/// the peer has closed the connection (end of stream or a reset) within 5 s.
package func isClosedByPeer(_ fd: Int32) -> Bool {
    var timeout = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var buffer = [UInt8](repeating: 0, count: 65536)
    var total = 0
    while total < 8 << 20 {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n > 0 {
            total += n
            continue
        }
        if n == 0 { return true }
        return errno == ECONNRESET || errno == EPIPE
    }
    return false
}

/// Sends one complete HTTP request on a new connection and returns the socket, unread.
package func rawRequest(hubURL: String, token: String, body: String, receiveBuffer: Int32? = nil) throws -> Int32 {
    let fd = try rawConnection(to: hubURL, receiveBuffer: receiveBuffer)
    let request = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\n"
        + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
    _ = request.withCString { send(fd, $0, strlen($0), 0) }
    return fd
}
