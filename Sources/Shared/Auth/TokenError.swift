import Foundation

/// Why a token was refused; the message is safe to show a client (it never echoes the token).
public struct TokenError: Error, Equatable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    /// A valid token whose role may not use this endpoint (403 rather than 401).
    public static let roleRejected = TokenError("token role not accepted here")
    /// A worker token for a name the cluster file does not list (403: no such worker may join).
    public static let unknownWorker = TokenError("no worker of that name in the cluster file")
    public var description: String { reason }
}
