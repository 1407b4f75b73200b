import Foundation
import Auth
import Config
import Proxy
import Server

/// Options given on the command line rather than in the cluster file.
struct HubOptions: Sendable {
    /// Accept requests without a client token (then listen on loopback only, answer only
    /// loopback `Host` names and no cross-origin browser requests).
    var noAuth = false
    /// With `noAuth`: the admin routes are open too (closed otherwise).
    var noAuthAdmin = false
    /// The cluster file, re-read on SIGHUP and `POST /admin/reload` (nil: no reload).
    var configPath: String?
}
