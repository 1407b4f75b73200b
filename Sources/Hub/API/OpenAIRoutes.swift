import Routing
import HTTPTypes
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import Config
import Proxy
import Server
import Wire

/// The OpenAI model listing (Hummingbird routes). The inference endpoints are on the raw
/// data plane: ``HubDataPlane``.
struct OpenAIRoutes {
    let state: HubState

    func addRoutes(to group: RouterGroup<HubRequestContext>) {
        group.get("/v1/models") { _, context in
            let created = Int(Date().timeIntervalSince1970)
            // Only what this credential may use: a token limited to some models learns nothing of the others.
            // `caravan`: where each model runs (the SDK ignores unknown fields).
            let placement = state.modelPlacement()
            let data = state.servedModels().filter { context.identity?.allows($0) ?? true }.map { id -> [String: Any] in
                let states = placement[id] ?? [:]
                return ["id": id, "object": "model", "created": created, "owned_by": "caravan",
                        "caravan": ["workers": states.values.reduce(0, +), "states": states]]
            }
            let json = try JSONSerialization.data(withJSONObject: ["object": "list", "data": data], options: [.sortedKeys])
            return Response(status: .ok, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(bytes: json)))
        }
        group.get("/v1/models/{id}") { _, context in
            let id = context.parameters.get("id") ?? ""
            guard state.servedModels().contains(id), context.identity?.allows(id) ?? true else {
                throw OpenAIError.modelNotFound(id)
            }
            let json = try JSONSerialization.data(withJSONObject: [
                "id": id, "object": "model", "created": Int(Date().timeIntervalSince1970), "owned_by": "caravan",
            ] as [String: Any], options: [.sortedKeys])
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: json)))
        }
    }
}
