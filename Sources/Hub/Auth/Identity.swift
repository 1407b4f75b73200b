import Foundation
import Auth
import Config
import Server
import Wire

/// Who is calling, as far as routing and limits care.
struct Identity: Sendable, Equatable {
    var subject: String
    var role: TokenRole
    /// Allowed model names or `prefix*` patterns; nil means every model.
    var models: [String]?
    /// Overrides of the configured limits (from token claims).
    var rps: Double?
    var burst: Double?
    var concurrency: Int?
    /// Tokens per minute and a token budget (managed keys, API keys and token claims).
    var tpm: Int?
    var budget: TokenBudget?
    /// May use the raw pass-through `/upstream/{model}/...`.
    var upstream = false

    /// A requests-per-minute limit as the rate buckets count it: the whole minute may come at once.
    mutating func limit(rpm: Int?) {
        guard let rpm else { return }
        rps = Double(rpm) / 60
        burst = Double(rpm)
    }

    /// Whether this caller may use `model` (403 otherwise).
    func allows(_ model: String) -> Bool {
        guard let models else { return true }
        return models.contains { pattern in
            pattern.hasSuffix("*") ? model.hasPrefix(pattern.dropLast()) : pattern == model
        }
    }
}
