import Foundation
import Config

/// One model as this worker runs it: its config entry (declared or discovered) and the
/// VRAM it is expected to need.
struct ModelSpec: Sendable, Equatable {
    var config: ModelConfig
    /// Declared, or estimated from the GGUF size; nil when the file cannot be read.
    var vramMiB: Int?
    var name: String { config.name }

    /// What must be unchanged for a running engine to survive a config reload.
    struct CommandLine: Equatable, Sendable {
        var executable: String
        var path: String
        var arguments: [String]
        var environment: [String: String]
    }

    func commandLine(executable: String) -> CommandLine {
        if let cmd = config.cmd {
            return CommandLine(executable: cmd[0], path: config.path, arguments: Array(cmd.dropFirst()), environment: config.env)
        }
        return CommandLine(executable: executable, path: config.path, arguments: config.engineArguments,
                           environment: config.env)
    }

    /// The executable and arguments that start this model's engine on `port` with `apiKey`:
    /// llama-server with the worker's own flags, or the model's `cmd` with its placeholders filled.
    func launchCommand(llamaServer: String, port: Int, apiKey: String) -> (executable: String, arguments: [String]) {
        guard let cmd = config.cmd else {
            return (llamaServer, ["-m", config.path, "--host", "127.0.0.1", "--port", String(port), "--alias", name, "--metrics"]
                + config.engineArguments)
        }
        let filled = cmd.map {
            $0.replacingOccurrences(of: "${PORT}", with: String(port)).replacingOccurrences(of: "${MODEL_PATH}", with: config.path)
                .replacingOccurrences(of: "${API_KEY}", with: apiKey).replacingOccurrences(of: "${MODEL}", with: name)
        }
        return (filled[0], Array(filled.dropFirst()))
    }

    /// The VRAM estimate for a model without `vram_mb`: the GGUF size (all parts, and its
    /// multimodal projector) plus 20 %
    /// for the KV cache and compute buffers at a modest context. Documented in docs/worker.md;
    /// set `vram_mb` for long contexts.
    static func estimateMiB(bytes: Int) -> Int {
        max(1, Int((Double(bytes) * 1.2 / 1_048_576).rounded(.up)))
    }
}
