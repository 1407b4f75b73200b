/// Why a credential was not accepted. `reason` is safe to show the client (it never echoes
/// the token); `kind` is what callers decide by, never the text.
public struct TokenError: Error, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Missing, malformed, unsigned, expired or not verifiable: 401.
        case invalid
        /// A valid token whose role may not use this endpoint (403 rather than 401).
        case roleRejected
        /// A worker token for a name the cluster file does not list (403: no such worker may join).
        case unknownWorker
    }

    public let kind: Kind
    public let reason: String
    public init(_ reason: String, kind: Kind = .invalid) {
        self.reason = reason
        self.kind = kind
    }
    public static let roleRejected = TokenError("token role not accepted here", kind: .roleRejected)
    public static let unknownWorker = TokenError("no worker of that name in the cluster file", kind: .unknownWorker)
    public var description: String { reason }
    public static func == (lhs: TokenError, rhs: TokenError) -> Bool { lhs.kind == rhs.kind && lhs.reason == rhs.reason }
}
