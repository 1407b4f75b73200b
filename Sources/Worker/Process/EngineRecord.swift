import Config
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
///
/// Killing what a file names is dangerous, so the file must be this user's own: it lives in
/// a private state folder (0700; `state_dir`, systemd's `$STATE_DIRECTORY`, else
/// `$XDG_STATE_HOME/caravan` or `~/.local/state/caravan`), its name carries the cluster's
/// identity (two clusters on one machine never share it), a file or folder that another user
/// owns or can write is ignored, and only processes of this user with a PID above 1 are killed.
struct EngineRecord: Sendable {
    struct Entry: Codable, Equatable, Sendable {
        var pid: Int32
        var startTime: UInt64
        var model: String
    }

    let path: String

    /// - Parameter cluster: what identifies the cluster (its hub URLs), hashed into the name.
    init(directory: String?, worker: String, cluster: String) {
        let folder = directory ?? Self.defaultDirectory()
        path = (folder as NSString).appendingPathComponent("caravan-\(Self.fingerprint(cluster))-\(worker).engines.json")
    }

    static func defaultDirectory() -> String { ConfigFile.defaultStateDirectory() }

    /// FNV-1a of `text`, 16 hex digits: stable across runs and builds (unlike `hashValue`).
    static func fingerprint(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return String(hash, radix: 16, uppercase: false).leftPadded(to: 16)
    }

    /// Whether `path` is owned by this user and writable by no one else.
    static func isPrivate(_ path: String) -> Bool {
        // attributesOfItem reads the entry itself (lstat): a link is judged, not followed.
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
            let owner = (attributes[.ownerAccountID] as? NSNumber)?.uint32Value,
            let mode = (attributes[.posixPermissions] as? NSNumber)?.uint16Value
        else { return false }
        return owner == geteuid() && mode & 0o022 == 0
    }

    func load() -> [Entry] {
        let folder = (path as NSString).deletingLastPathComponent
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        guard Self.isPrivate(folder), Self.isPrivate(path), let data = FileManager.default.contents(atPath: path) else {
            return []
        }
        return (try? JSONDecoder().decode([Entry].self, from: data)) ?? []
    }

    func save(_ entries: [Entry]) {
        let folder = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true,
                                                 attributes: [.posixPermissions: 0o700])
        guard Self.isPrivate(folder), let data = try? JSONEncoder().encode(entries) else { return }
        // Written to a new private file and renamed over: a file someone else planted (or a
        // link) is replaced, never written through.
        let temporary = path + ".\(getpid()).tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600])
        else { return }
        if rename(temporary, path) != 0 { unlink(temporary) }
    }

    /// Kills the process group of every recorded engine that is still the same process of
    /// this user; returns the entries it killed. A record that is not private is ignored.
    @discardableResult
    func killStale(logger: Logger) -> [Entry] {
        let folder = (path as NSString).deletingLastPathComponent
        if FileManager.default.fileExists(atPath: path), !(Self.isPrivate(folder) && Self.isPrivate(path)) {
            logger.error("ignoring an engine record that another user owns or can write", metadata: ["path": "\(path)"])
            return []
        }
        var killed: [Entry] = []
        for entry in load() where entry.pid > 1 && Self.isOwnProcess(entry.pid)
            && Self.startTime(of: entry.pid) == entry.startTime
        {
            logger.warning("killing an engine left behind by a previous run",
                           metadata: ["model": "\(entry.model)", "pid": "\(entry.pid)"])
            kill(-entry.pid, SIGKILL)
            kill(entry.pid, SIGKILL)
            killed.append(entry)
        }
        save([])
        return killed
    }

    /// Whether the process runs as this user.
    static func isOwnProcess(_ pid: Int32) -> Bool {
        let owner = (try? FileManager.default.attributesOfItem(atPath: "/proc/\(pid)"))?[.ownerAccountID] as? NSNumber
        return owner?.uint32Value == geteuid()
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

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
