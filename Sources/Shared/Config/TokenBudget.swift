import Foundation

/// Tokens a credential may use per day or per calendar month (UTC), written `5M/month`,
/// `200k/day` or `150000/day`. A hard budget refuses requests once spent (429
/// `budget_exceeded`); a soft one only reports it (an event and a metric).
public struct TokenBudget: Sendable, Equatable, CustomStringConvertible {
    public enum Period: String, Sendable, CaseIterable { case day, month }

    public var tokens: Int
    public var period: Period
    public var hard: Bool

    public init(tokens: Int, period: Period, hard: Bool = true) {
        self.tokens = tokens
        self.period = period
        self.hard = hard
    }

    /// Parses `AMOUNT/PERIOD`; AMOUNT may end in k, M or G (thousands, millions, billions).
    public init?(parsing text: String, hard: Bool = true) {
        let parts = text.lowercased().split(separator: "/")
        guard parts.count == 2, let period = Period(rawValue: String(parts[1]).trimmingCharacters(in: .whitespaces)) else { return nil }
        var amount = String(parts[0]).trimmingCharacters(in: .whitespaces)
        var scale = 1.0
        switch amount.last {
        case "k": scale = 1e3
        case "m": scale = 1e6
        case "g", "b": scale = 1e9
        default: break
        }
        if scale != 1 { amount.removeLast() }
        guard let value = Double(amount), value > 0, value * scale < 1e15 else { return nil }
        self.init(tokens: Int((value * scale).rounded()), period: period, hard: hard)
    }

    public var description: String {
        let (value, suffix): (Int, String) = tokens % 1_000_000 == 0 ? (tokens / 1_000_000, "M")
            : tokens % 1000 == 0 ? (tokens / 1000, "k") : (tokens, "")
        return "\(value)\(suffix)/\(period.rawValue)"
    }

    private static let utc: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar
    }()

    /// The start of the period `date` falls in (UTC midnight, or the month's first day).
    public func periodStart(containing date: Date) -> Date {
        let unit: Calendar.Component = period == .day ? .day : .month
        return Self.utc.dateInterval(of: unit, for: date)?.start ?? date
    }

    /// When the period `date` falls in ends: the next one's start.
    public func periodEnd(containing date: Date) -> Date {
        let unit: Calendar.Component = period == .day ? .day : .month
        return Self.utc.dateInterval(of: unit, for: date)?.end ?? date
    }
}
