import Foundation

/// Paths of the hub's control plane, used by workers.
public enum ControlPath {
    public static let register = "/internal/v1/workers/register"
    public static let heartbeat = "/internal/v1/workers/heartbeat"
    public static let deregister = "/internal/v1/workers/deregister"
    /// A worker the cluster file does not list exchanges a join token for its credential.
    public static let join = "/internal/v1/workers/join"
    /// The admin's actions on one model of a worker (`POST /admin/models/{model}/{action}`),
    /// relayed by the hub as `POST /admin/workers/{name}/models/{model}/{action}`.
    public static let modelActions = ["reset", "unload", "load", "wipe-caches"]
    /// A worker behind NAT reports over its tunnel instead of posting heartbeats: the hub
    /// reads this SSE stream from it (`GET`, the hub's credential for the worker), one report
    /// per `data:` event, and `event: leaving` when it shuts down.
    public static let reports = "/internal/v1/reports"
    /// The hub sends a worker its hub-managed models (`PUT`, a ``PlacementSet``, the hub's credential).
    public static let placements = "/internal/v1/placements"
}
