import Foundation

/// A dynamic worker asking to join (with a join token as its bearer credential).
public struct JoinRequest: Codable, Sendable {
    public var name: String
    public init(name: String) { self.name = name }
}

/// The hub's answer to a join: the worker's own credential (``WorkerKey``).
public struct JoinResponse: Codable, Sendable {
    public var credential: String
    public init(credential: String) { self.credential = credential }
}

/// The hub's answer to a register call.
public struct RegisterResponse: Codable, Sendable {
    /// How often the hub expects heartbeats.
    public var heartbeatIntervalMs: Int

    public init(heartbeatIntervalMs: Int) { self.heartbeatIntervalMs = heartbeatIntervalMs }
}

/// A worker leaving on purpose.
public struct DeregisterRequest: Codable, Sendable {
    public var name: String
    public init(name: String) { self.name = name }
}
