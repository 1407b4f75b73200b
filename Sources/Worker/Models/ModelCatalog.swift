import Foundation
import Config

/// Resolves a worker's models: declared entries, then `models_dir` discoveries that no
/// declared entry overrides (same name, same alias, or same file), then the hub-placed
/// models whose files are here (the configuration wins a name both use).
enum ModelCatalog {
    static func resolve(_ worker: WorkerConfig, placed: [ModelConfig] = []) -> (specs: [ModelSpec], skipped: [String]) {
        let discovery = ModelDiscovery.discover(in: worker.modelsDirs)
        let declaredLabels = Set(worker.models.flatMap { [$0.name] + $0.aliases })
        let declaredPaths = Set(worker.models.map { URL(fileURLWithPath: $0.path).standardizedFileURL.path })
        var skipped = discovery.skipped
        var configs = worker.models
        for model in discovery.models {
            if declaredLabels.contains(model.name) || declaredPaths.contains(URL(fileURLWithPath: model.path).standardizedFileURL.path) {
                continue  // a declared entry overrides it
            }
            configs.append(model)
        }
        var taken = Set(configs.flatMap { [$0.name] + $0.aliases })
        for model in placed {
            if let clash = ([model.name] + model.aliases).first(where: taken.contains) {
                skipped.append("hub-placed model \(model.name): \"\(clash)\" is taken by this worker's configuration")
                continue
            }
            taken.formUnion([model.name] + model.aliases)
            configs.append(model)
        }
        if configs.count > worker.ports.ports.count {
            skipped += configs[worker.ports.ports.count...].map { "\($0.path): no port left in the range for \($0.name)" }
            configs = Array(configs.prefix(worker.ports.ports.count))
        }
        let specs = configs.map { config in
            ModelSpec(config: config, vramMiB: config.vramMiB ?? ModelDiscovery.modelBytes(path: config.path).map {
                ModelSpec.estimateMiB(bytes: $0 + ModelDiscovery.projectorBytes(arguments: config.args))
            })
        }
        return (specs, skipped)
    }
}
