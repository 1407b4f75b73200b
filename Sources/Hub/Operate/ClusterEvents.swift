import Foundation
import NIOCore
import Synchronization
import Wire

/// State changes of the cluster (workers joining and leaving, model states, engine crashes,
/// breaker transitions, drains, reloads), broadcast to every `GET /admin/events` stream.
///
/// Each subscriber has a bounded buffer that keeps the newest events: a slow reader loses
/// old events, it never blocks the hub or grows its memory.
final class ClusterEvents: Sendable {
    struct Event: Encodable, Sendable {
        var type: String
        var time = Date().formatted(.iso8601)
        var worker: String?
        var model: String?
        var from: String?
        var to: String?
        var reason: String?
    }

    private struct State {
        var nextID = 0
        var subscribers: [Int: AsyncStream<ByteBuffer>.Continuation] = [:]
        var recent: [Event] = []
    }

    private let state = Mutex(State())
    /// Events kept for a new subscriber (the dashboard's "recent" list).
    static let kept = 100
    /// Events buffered per subscriber before the oldest are dropped.
    static let buffered = 512

    func publish(_ event: Event) {
        guard let data = try? WireCoding.encoder().encode(event) else { return }
        let frame = Self.frame(type: event.type, data: data)
        let subscribers = state.withLock { state in
            state.recent.append(event)
            if state.recent.count > Self.kept { state.recent.removeFirst(state.recent.count - Self.kept) }
            return Array(state.subscribers.values)
        }
        for subscriber in subscribers { subscriber.yield(frame) }
    }

    /// Sends a frame that is not kept (periodic snapshots).
    func broadcast(type: String, data: Data) {
        let frame = Self.frame(type: type, data: data)
        for subscriber in state.withLock({ Array($0.subscribers.values) }) { subscriber.yield(frame) }
    }

    var subscriberCount: Int { state.withLock { $0.subscribers.count } }

    var recent: [Event] { state.withLock { $0.recent } }

    /// A new stream of frames, starting with the recent events.
    func subscribe() -> (id: Int, frames: AsyncStream<ByteBuffer>) {
        let (frames, continuation) = AsyncStream.makeStream(of: ByteBuffer.self,
                                                            bufferingPolicy: .bufferingNewest(Self.buffered))
        let id = state.withLock { state in
            state.nextID += 1
            state.subscribers[state.nextID] = continuation
            for event in state.recent {
                if let data = try? WireCoding.encoder().encode(event) { continuation.yield(Self.frame(type: event.type, data: data)) }
            }
            return state.nextID
        }
        continuation.onTermination = { [weak self] _ in self?.unsubscribe(id) }
        return (id, frames)
    }

    func unsubscribe(_ id: Int) {
        let continuation = state.withLock { $0.subscribers.removeValue(forKey: id) }
        continuation?.finish()
    }

    /// Ends every stream (shutdown).
    func finishAll() {
        let all = state.withLock { state in
            defer { state.subscribers = [:] }
            return Array(state.subscribers.values)
        }
        for continuation in all { continuation.finish() }
    }

    static func frame(type: String, data: Data) -> ByteBuffer {
        var buffer = ByteBuffer(string: "event: \(type)\ndata: ")
        buffer.writeBytes(data)
        buffer.writeString("\n\n")
        return buffer
    }
}
