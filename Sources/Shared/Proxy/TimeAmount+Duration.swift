import Wire
import Foundation
import NIOCore

extension TimeAmount {
    /// Converts a Swift `Duration` to NIO's `TimeAmount`.
    public init(_ duration: Duration) {
        self = .nanoseconds(duration.nanoseconds)
    }
}
