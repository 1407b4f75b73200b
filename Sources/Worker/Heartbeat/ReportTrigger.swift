/// Asks for a heartbeat now rather than at the next interval (a model crashed, loaded,
/// unloaded): the hub should not route to an engine that is gone.
final class ReportTrigger: Sendable {
    private let signal = ChangeSignal()
    func fire() { signal.fire() }
    var current: Int { signal.generation }

    /// Sleeps for `interval`, or less once `fire()` is called after `seen` (or the task is cancelled).
    func wait(_ interval: Duration, since seen: Int) async {
        await signal.wait(since: seen, until: .now + interval)
    }
}
