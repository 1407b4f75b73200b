import Server
import Foundation

/// The standard `process_*` series every Prometheus client exports (CPU, memory, open
/// files, start time), read from `/proc/self` at scrape time. Linux only; elsewhere none.
public enum ProcessMetrics {
    public static func add(to exposition: inout MetricsExposition) {
        #if os(Linux)
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return }
        // Fields after the command name, numbered from 3 (state) as in proc(5).
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        func field(_ number: Int) -> Double? { fields.count > number - 3 ? Double(fields[number - 3]) : nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        if let user = field(14), let system = field(15) {
            exposition.add("process_cpu_seconds_total", (user + system) / ticks, type: "counter",
                           help: "Total user and system CPU time spent in seconds")
        }
        if let pages = field(24) {
            exposition.add("process_resident_memory_bytes", pages * Double(sysconf(Int32(_SC_PAGESIZE))),
                           help: "Resident memory size in bytes")
        }
        if let bytes = field(23) {
            exposition.add("process_virtual_memory_bytes", bytes, help: "Virtual memory size in bytes")
        }
        if let started = field(22), let boot = bootTime() {
            exposition.add("process_start_time_seconds", boot + started / ticks,
                           help: "Start time of the process since unix epoch in seconds")
        }
        if let open = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            exposition.add("process_open_fds", Double(open.count), help: "Number of open file descriptors")
        }
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            exposition.add("process_max_fds", Double(limit.rlim_cur), help: "Maximum number of open file descriptors")
        }
        #endif
    }

    private static func bootTime() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("btime ") })
        else { return nil }
        return Double(line.dropFirst(6))
    }
}
