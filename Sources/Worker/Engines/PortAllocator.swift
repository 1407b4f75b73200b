#if canImport(Glibc)
import Glibc
#endif

/// Hands out engine ports from the configured range, skipping ports in use by anyone.
struct PortAllocator: Sendable {
    let range: ClosedRange<Int>
    private var next: Int

    init(range: ClosedRange<Int>) {
        self.range = range
        self.next = range.lowerBound
    }

    /// The next port in the range that is neither `taken` nor bound by another process.
    mutating func allocate(excluding taken: Set<Int>) -> Int? {
        for _ in 0..<range.count {
            let port = next
            next = next == range.upperBound ? range.lowerBound : next + 1
            if !taken.contains(port) && Self.isFree(port) { return port }
        }
        return nil
    }

    /// True when 127.0.0.1:`port` can be bound right now by a server. `SO_REUSEADDR`, as
    /// llama-server and every other server sets it: connections of a stopped engine lingering
    /// in TIME_WAIT must not make its port look taken for a minute; a listener still does.
    static func isFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var on: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}
