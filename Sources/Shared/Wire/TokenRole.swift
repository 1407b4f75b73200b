import Foundation

/// Who a token speaks for. Client tokens and cluster tokens are signed with different
/// secrets *and* carry different roles, so neither can stand in for the other.
public enum TokenRole: String, Codable, Sendable {
    /// An application calling the OpenAI API (the default when a client token has no role).
    case client
    /// An operator: client rights plus admin endpoints.
    case admin
    /// A worker talking to the hub's control plane.
    case worker
    /// The hub forwarding a request to a worker's data plane.
    case hub
    /// A join token: lets a worker that the cluster file does not list get its own
    /// credential, when the hub allows dynamic workers (`hub.join`).
    case join
}
