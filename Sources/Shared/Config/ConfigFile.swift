/// Where the config's file references point.
public enum ConfigFile {
    /// `file` as written in the config, resolved against the config file's folder `base`:
    /// an absolute path is kept, a relative one is read from beside the config, never from
    /// the process's working directory (systemd and compose start it elsewhere).
    public static func path(_ file: String, relativeTo base: String) -> String {
        guard !file.hasPrefix("/") else { return file }
        return base.hasSuffix("/") ? base + file : base + "/" + file
    }
}
