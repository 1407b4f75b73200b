import Foundation

/// The whole cluster in one YAML file: the hub and every worker.
///
/// The hub reads all of it (it learns which models exist, so an unknown model is a 404
/// while a known model with no live worker is a 503); each worker picks its own entry
/// with ``ClusterConfig/worker(named:environment:)``. See `cluster.example.yaml`.
public struct ClusterConfig: Decodable, Sendable {
    public var hub: HubConfig
    public var workers: [WorkerConfig]

    enum CodingKeys: String, CodingKey { case hub, workers }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hub = try c.optional(HubConfig.self, .hub) ?? HubConfig()
        workers = try c.optional([WorkerConfig].self, .workers) ?? []
    }

    /// Every model name and alias the configuration declares, mapped to its canonical name.
    public var declaredModels: [String: String] {
        var names: [String: String] = [:]
        for worker in workers {
            for model in worker.models {
                names[model.name] = model.name
                for alias in model.aliases { names[alias] = model.name }
            }
        }
        return names
    }
}
