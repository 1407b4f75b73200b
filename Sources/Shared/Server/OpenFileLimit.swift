#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging

/// The process's open-file limit, raised to its hard maximum at start-up.
///
/// Every proxied stream holds two descriptors in the hub (client and worker) and two in the
/// worker (hub and engine), so the soft limit that shells and service managers often set
/// (1,024) would cap a hub at about 500 concurrent streams, far below what it can carry.
/// The hard limit is the operator's choice and stays untouched (Go's runtime and nginx's
/// `worker_rlimit_nofile` do the same).
public enum OpenFileLimit {
    /// Raises the soft limit to the hard one; returns (before, after).
    @discardableResult
    public static func raise(logger: Logger) -> (before: UInt64, after: UInt64) {
        #if os(Linux)
        let resource = Int32(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return (0, 0) }
        let before = UInt64(limit.rlim_cur)
        guard limit.rlim_cur < limit.rlim_max else { return (before, before) }
        limit.rlim_cur = limit.rlim_max
        guard setrlimit(resource, &limit) == 0 else {
            logger.warning("could not raise the open-file limit", metadata: ["soft": "\(before)"])
            return (before, before)
        }
        logger.info("open-file limit raised", metadata: ["from": "\(before)", "to": "\(limit.rlim_max)"])
        return (before, UInt64(limit.rlim_max))
    }
}
