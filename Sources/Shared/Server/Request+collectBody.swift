import Hummingbird
import NIOCore

extension Request {
    /// Reads the whole body, at most `limit` bytes (413 beyond), within `timeout`.
    ///
    /// The idle timeout only notices a silent client; one that trickles a byte per interval
    /// would hold its connection (and a task) forever. Past `timeout` this answers 408, and
    /// the connection stops reading, so it closes once that answer is written.
    public func collectBody(upTo limit: Int, within timeout: Duration, departure: ClientDeparture?) async throws
        -> ByteBuffer
    {
        let body = self.body
        return try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask { try await body.collect(upTo: limit) }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            if let collected = try await group.next()! { return collected }
            departure?.stopReading()
            throw OpenAIError(.requestBodyTimeout, message: "The request body did not arrive within \(timeout)")
        }
    }
}
