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
