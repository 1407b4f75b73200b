import Foundation

/// Where a hub-managed model's file comes from, as an admin writes it:
///
/// - `hf://ORG/REPO/PATH/FILE.gguf[@REVISION]`: Hugging Face's `/{repo}/resolve/{revision}/{file}`
///   layout at the configured endpoint (a mirror works too), revision `main` by default;
/// - `https://…` or `http://…`: any server (Range requests make downloads resumable);
/// - `/absolute/path.gguf`: a file already on every worker (a shared mount), used in place.
///
/// A split model (`NAME-00001-of-00003.gguf`) names its first part; the others follow by name.
enum ModelSource: Equatable, Sendable {
    case huggingFace(repo: String, file: String, revision: String)
    case url(String)
    case path(String)

    struct Invalid: Error, CustomStringConvertible {
        var description: String
    }

    init(parsing text: String) throws {
        let text = text.trimmingCharacters(in: .whitespaces)
        if text.hasPrefix("hf://") {
            var rest = String(text.dropFirst(5))
            var revision = "main"
            if let at = rest.lastIndex(of: "@") {
                revision = String(rest[rest.index(after: at)...])
                rest = String(rest[..<at])
            }
            let parts = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            guard parts.count >= 3, parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }), !revision.isEmpty,
                  !revision.contains("/") || revision.hasPrefix("refs/")
            else {
                throw Invalid(description: "expected hf://ORG/REPO/FILE.gguf[@REVISION], got \"\(text)\"")
            }
            self = .huggingFace(repo: parts[0...1].joined(separator: "/"), file: parts[2...].joined(separator: "/"), revision: revision)
        } else if text.hasPrefix("https://") || text.hasPrefix("http://") {
            guard let url = URLComponents(string: text), url.host?.isEmpty == false, url.user == nil, url.password == nil else {
                throw Invalid(description: "expected a URL like https://host/path/model.gguf without credentials, got \"\(text)\"")
            }
            self = .url(text)
        } else if text.hasPrefix("/") {
            self = .path(text)
        } else {
            throw Invalid(description: "expected hf://ORG/REPO/FILE.gguf, an https:// URL or an absolute path, got \"\(text)\"")
        }
    }

    /// The file's name (llama-server finds a split model's other parts by it).
    var fileName: String {
        switch self {
        case .huggingFace(_, let file, _): (file as NSString).lastPathComponent
        case .url(let url): (URLComponents(string: url)?.path).map { ($0 as NSString).lastPathComponent } ?? "model.gguf"
        case .path(let path): (path as NSString).lastPathComponent
        }
    }

    /// Where to fetch it (`endpoint`: Hugging Face's, for `hf://`), or the path on the workers.
    func location(endpoint: String) -> String {
        switch self {
        case .huggingFace(let repo, let file, let revision):
            let escaped = revision.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? revision
            return "\(endpoint)/\(repo)/resolve/\(escaped)/\(file)"
        case .url(let url): return url
        case .path(let path): return path
        }
    }

    /// Every part of a split model (this one when it is not split).
    var parts: [ModelSource] {
        let name = fileName
        guard name.lowercased().hasSuffix(".gguf") else { return [self] }
        let stem = String(name.dropLast(5))
        let pieces = stem.split(separator: "-", omittingEmptySubsequences: false)
        guard pieces.count >= 4, pieces[pieces.count - 2] == "of", pieces[pieces.count - 3] == "00001",
              let total = Int(pieces[pieces.count - 1]), pieces[pieces.count - 1].count == 5, (2...999).contains(total)
        else { return [self] }
        let base = pieces.dropLast(3).joined(separator: "-")
        return (1...total).map { part in
            let partName = "\(base)-\(String(format: "%05d", part))-of-\(pieces[pieces.count - 1]).gguf"
            return replacingFileName(with: partName)
        }
    }

    private func replacingFileName(with newName: String) -> ModelSource {
        func swap(_ path: String) -> String { ((path as NSString).deletingLastPathComponent as NSString).appendingPathComponent(newName) }
        switch self {
        case .huggingFace(let repo, let file, let revision):
            return .huggingFace(repo: repo, file: file.contains("/") ? swap(file) : newName, revision: revision)
        case .url(let url):
            guard var components = URLComponents(string: url) else { return self }
            components.path = swap(components.path)
            return .url(components.string ?? url)
        case .path(let path):
            return .path(swap(path))
        }
    }
}
