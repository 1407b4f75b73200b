import Foundation

/// A hub-managed model as the store keeps it: the hub's own JSON document (its desired state
/// and placement) and a revision, so two hubs changing it at once cannot overwrite each other.
public struct StoredModel: Sendable, Equatable {
    public var name: String
    public var document: String
    public var revision: Int64

    public init(name: String, document: String, revision: Int64 = 0) {
        self.name = name
        self.document = document
        self.revision = revision
    }
}
