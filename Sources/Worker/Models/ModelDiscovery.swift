import Foundation
import Config

/// Finds models in `models_dir` folders: every `*.gguf` file, searched recursively.
///
/// - A split model (`name-00001-of-00003.gguf`, ...) is one model named `name`, loaded
///   from its first part; llama-server finds the other parts itself.
/// - Multimodal projector files (`mmproj` in the file name) are not models; a folder's one
///   projector is attached to the models in that folder (`--mmproj`), the way such models
///   are published (LM Studio and Hugging Face layouts). With several projectors in one
///   folder, a model takes the one whose name contains the model's name; otherwise none,
///   reported (declare the model with `args: [--mmproj, FILE]`).
/// - The model name is the file name without `.gguf`; when two files give the same name
///   the first in path order wins and the other is reported, not silently dropped.
enum ModelDiscovery {
    struct Result: Equatable {
        var models: [ModelConfig]
        /// Files skipped and why (duplicates, unreadable folders), for the worker's log.
        var skipped: [String]
    }

    static func discover(in directories: [String]) -> Result {
        var models: [ModelConfig] = []
        var skipped: [String] = []
        var seen: [String: String] = [:]
        for directory in directories {
            guard let files = ggufFiles(under: directory) else {
                skipped.append("\(directory): not a readable folder")
                continue
            }
            let projectors = Dictionary(grouping: files.filter(isProjector)) { ($0 as NSString).deletingLastPathComponent }
            for path in files {
                guard let name = modelName(forFile: (path as NSString).lastPathComponent) else { continue }
                if let first = seen[name] {
                    skipped.append("\(path): model name \"\(name)\" already taken by \(first)")
                    continue
                }
                seen[name] = path
                var model = ModelConfig(name: name, path: path)
                switch projector(for: name, among: projectors[(path as NSString).deletingLastPathComponent] ?? []) {
                case .one(let file): model.args = ["--mmproj", file]
                case .ambiguous(let files): skipped.append("\(path): several projectors beside it (\(files.joined(separator: ", "))), none attached")
                case .none: break
                }
                models.append(model)
            }
        }
        return Result(models: models, skipped: skipped)
    }

    /// The model a file stands for, or nil when it is not a model (not GGUF, a projector,
    /// or a later part of a split model).
    static func modelName(forFile file: String) -> String? {
        guard file.lowercased().hasSuffix(".gguf") else { return nil }
        let stem = String(file.dropLast(5))
        if stem.lowercased().contains("mmproj") { return nil }
        if let split = splitPart(stem) { return split.part == 1 ? split.base : nil }
        return stem
    }

    static func isProjector(_ path: String) -> Bool {
        let file = (path as NSString).lastPathComponent.lowercased()
        return file.hasSuffix(".gguf") && file.contains("mmproj")
    }

    enum Projector: Equatable {
        case none
        case one(String)
        case ambiguous([String])
    }

    /// The projector for model `name` among those in its folder: the only one, or the only
    /// one whose file name contains the model's name.
    static func projector(for name: String, among files: [String]) -> Projector {
        guard files.count > 1 else { return files.first.map { .one($0) } ?? .none }
        let named = files.filter { ($0 as NSString).lastPathComponent.lowercased().contains(name.lowercased()) }
        return named.count == 1 ? .one(named[0]) : .ambiguous(files)
    }

    /// `("name", 2)` for `name-00002-of-00005`.
    static func splitPart(_ stem: String) -> (base: String, part: Int)? {
        let pieces = stem.split(separator: "-", omittingEmptySubsequences: false)
        guard pieces.count >= 4, pieces[pieces.count - 2] == "of",
            let part = Int(pieces[pieces.count - 3]), let total = Int(pieces[pieces.count - 1]),
            pieces[pieces.count - 3].count == 5, pieces[pieces.count - 1].count == 5, part >= 1, part <= total
        else { return nil }
        return (pieces.dropLast(3).joined(separator: "-"), part)
    }

    /// All `*.gguf` files under `directory`, sorted by path; nil when it cannot be read.
    private static func ggufFiles(under directory: String) -> [String]? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue,
            let enumerator = FileManager.default.enumerator(atPath: directory)
        else { return nil }
        var files: [String] = []
        while let relative = enumerator.nextObject() as? String {
            // Dot folders are not the operator's models: the download cache of hub-placed ones lives in one.
            if relative.split(separator: "/").contains(where: { $0.hasPrefix(".") }) { continue }
            if relative.lowercased().hasSuffix(".gguf") {
                files.append((directory as NSString).appendingPathComponent(relative))
            }
        }
        return files.sorted()
    }

    /// The size of the multimodal projector named in llama-server arguments (`--mmproj FILE`,
    /// `--mmproj=FILE`, `-mm FILE`); 0 without one or when it cannot be read. It is loaded
    /// onto the GPU beside the model.
    static func projectorBytes(arguments: [String]) -> Int {
        var file: String?
        for (index, argument) in arguments.enumerated() {
            if argument.hasPrefix("--mmproj=") {
                file = String(argument.dropFirst("--mmproj=".count))
            } else if argument == "--mmproj" || argument == "-mm", index + 1 < arguments.count {
                file = arguments[index + 1]
            }
        }
        return file.flatMap(fileSize) ?? 0
    }

    /// Total size of a model's file(s) in bytes: every part of a split model counts.
    static func modelBytes(path: String) -> Int? {
        let file = (path as NSString).lastPathComponent
        let stem = file.lowercased().hasSuffix(".gguf") ? String(file.dropLast(5)) : file
        guard let split = splitPart(stem) else { return fileSize(path) }
        let folder = (path as NSString).deletingLastPathComponent
        let total = stem.split(separator: "-").last.map(String.init) ?? "00001"
        var bytes = 0
        for part in 1...(Int(total) ?? 1) {
            let name = "\(split.base)-\(String(format: "%05d", part))-of-\(total).gguf"
            bytes += fileSize((folder as NSString).appendingPathComponent(name)) ?? 0
        }
        return bytes
    }

    private static func fileSize(_ path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
    }
}
