import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The PIDs of this worker's running engines, kept in a file so the next run of the worker
/// can kill what a previous run left behind.
///
/// Engines normally die with the worker (`setpriv --pdeathsig`), but not when `setpriv`
/// is missing or the kernel raced the signal. Each entry carries the process's start time
/// (`/proc/PID/stat` field 22), so a PID reused by an unrelated process is never touched.
struct EngineRecord: Sendable {
    struct Entry: Codable, Equatable, Sendable {
        var pid: Int32
        var startTime: UInt64
        var model: String
    }

    let path: String

    init(directory: String?, worker: String) {
        let folder = directory ?? FileManager.default.temporaryDirectory.path
        path = (folder as NSString).appendingPathComponent("caravan-worker-\(worker).engines.json")
    }

    func load() -> [Entry] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        return (try? JSONDecoder().decode([Entry].self, from: data)) ?? []
    }

    func save(_ entries: [Entry]) {
        let folder = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        guard let data = try? JSONEncoder().encode(entries) else { return }
        _ = FileManager.default.createFile(atPath: path, contents: data, attributes: [.posixPermissions: 0o600])
    }

    /// Kills the process group of every recorded engine that is still the same process;
    /// returns the entries it killed.
    @discardableResult
    func killStale(logger: Logger) -> [Entry] {
        var killed: [Entry] = []
        for entry in load() where Self.startTime(of: entry.pid) == entry.startTime {
            logger.warning("killing an engine left behind by a previous run",
                           metadata: ["model": "\(entry.model)", "pid": "\(entry.pid)"])
            kill(-entry.pid, SIGKILL)
            kill(entry.pid, SIGKILL)
            killed.append(entry)
        }
        save([])
        return killed
    }

    /// Start time of a live process in clock ticks since boot; nil when it is gone.
    static func startTime(of pid: Int32) -> UInt64? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let end = stat.lastIndex(of: ")")
        else { return nil }
        // Fields after "(comm)": state is field 3, starttime is field 22.
        let fields = stat[stat.index(after: end)...].split(separator: " ")
        guard fields.count > 19 else { return nil }
        return UInt64(fields[19])
    }
}
