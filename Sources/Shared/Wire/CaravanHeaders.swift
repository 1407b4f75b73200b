import Foundation
import HTTPTypes

/// Header the hub sets on forwarded requests: the canonical model name it routed by,
/// so the worker does not parse the body a second time.
public let modelHeaderName = "X-Caravan-Model"

/// ``modelHeaderName`` as a field name.
public let modelHeader = HTTPField.Name(modelHeaderName)!

/// Header the hub sets on forwarded requests: "true" when the request asks for a stream,
/// which the worker needs to know before it talks to llama-server (see `DataPlane`).
public let streamHeaderName = "X-Caravan-Stream"

/// ``streamHeaderName`` as a field name.
public let streamHeader = HTTPField.Name(streamHeaderName)!

/// Header a worker sets on its "full" answer (429, before any byte): it already holds
/// `slots x (1 + ahead_per_slot)` requests for the model. The hub then sends the request
/// elsewhere or queues it, and never counts the answer against the worker's breaker: N hubs
/// sharing a worker cannot overfill it, because the worker decides its own admission.
public let admissionHeaderName = "X-Caravan-Admission"

/// ``admissionHeaderName`` as a field name.
public let admissionHeader = HTTPField.Name(admissionHeaderName)!

/// The value of ``admissionHeader`` on a worker's "full" answer.
public let admissionFull = "full"

/// On an error answer the hub passes on after the request failed the same way on every
/// worker it tried: `request` (the request is at fault; no worker was blamed and it was not
/// retried further). A client that loops on such answers is held back (`limits.poison_per_minute`).
public let blameHeader = HTTPField.Name("X-Caravan-Blame")!
