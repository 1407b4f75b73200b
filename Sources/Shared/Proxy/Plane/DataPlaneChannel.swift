import HummingbirdCore
import Logging
import NIOCore
import Server

/// Hummingbird's HTTP/1 child channel with a ``DataPlaneDispatcher`` added after its
/// connection-state handler: the one listener serves both planes (see ``DataPlane``).
///
/// Added there rather than among `additionalChannelHandlers` (which come before the state
/// handler) so that handler counts the data plane's requests too: idle timeouts never cut
/// a stream, and a graceful shutdown closes the connection after the answer in progress.
public struct DataPlaneChannel: ServerChildChannel {
    public typealias Value = HTTP1Channel.Value

    let base: HTTP1Channel
    let plane: any DataPlane
    let runner: DataPlaneRunner
    let accessLog: AccessLog

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        base.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let sync = channel.pipeline.syncOperations
            let state = try sync.handler(type: HTTPConnectionStateHandler.self)
            try sync.addHandler(DataPlaneDispatcher(plane: plane, runner: runner, accessLog: accessLog), position: .after(state))
            return value
        }
    }

    public func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1 whose requests `plane` claims are answered on the raw data plane.
    public static func http1(_ configuration: HTTP1Channel.Configuration, plane: any DataPlane, runner: DataPlaneRunner,
                             accessLog: AccessLog) -> HTTPServerBuilder {
        .init { responder in
            DataPlaneChannel(base: HTTP1Channel(responder: responder, configuration: configuration), plane: plane,
                             runner: runner, accessLog: accessLog)
        }
    }
}
