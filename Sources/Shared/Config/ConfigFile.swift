import Foundation

/// Where the config's file references point.
public enum ConfigFile {
    /// `file` as written in the config, resolved against the config file's folder `base`:
    /// an absolute path is kept, a relative one is read from beside the config, never from
    /// the process's working directory (systemd and compose start it elsewhere).
    public static func path(_ file: String, relativeTo base: String) -> String {
        guard !file.hasPrefix("/") else { return file }
        return base.hasSuffix("/") ? base + file : base + "/" + file
    }

    /// The default folder for a process's own state (private to its user): systemd's
    /// `$STATE_DIRECTORY`, else `$XDG_STATE_HOME/caravan`, else `~/.local/state/caravan`.
    public static func defaultStateDirectory() -> String {
        let env = ProcessInfo.processInfo.environment
        if let systemd = env["STATE_DIRECTORY"]?.split(separator: ":").first { return String(systemd) }
        if let xdg = env["XDG_STATE_HOME"], xdg.hasPrefix("/") { return xdg + "/caravan" }
        return NSHomeDirectory() + "/.local/state/caravan"
    }
}
