import NIOCore
import NIOHTTP1
import Testing
import Wire

@testable import Proxy

/// The upstream connection's decisions, without sockets: every event with its time, and the
/// one action the handler must perform.
@Suite("Upstream connection state machine")
struct UpstreamConnectionStateMachineTests {
    typealias Machine = UpstreamConnectionStateMachine
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    func limits(id: Int = 1, keepAlive: Bool = true, maxBody: Int = 1024, readUsage: Bool = false) -> Machine.Limits {
        Machine.Limits(id: id, headDeadline: t0 + .seconds(5), headTimeout: .seconds(5), idleTimeout: .seconds(2),
                       stallTimeout: .seconds(1), maxBufferedBody: maxBody, start: t0, keepAlive: keepAlive, readUsage: readUsage)
    }

    func head(_ status: HTTPResponseStatus = .ok, stream: Bool = false, close: Bool = false) -> HTTPResponseHead {
        var headers = HTTPHeaders([("content-type", stream ? "text/event-stream" : "application/json")])
        if close { headers.add(name: "connection", value: "close") }
        return HTTPResponseHead(version: .http1_1, status: status, headers: headers)
    }

    /// A machine with exchange 1 sent.
    func sent(keepAlive: Bool = true, maxBody: Int = 1024, readUsage: Bool = false) -> Machine {
        var machine = Machine()
        #expect(machine.begin(limits(keepAlive: keepAlive, maxBody: maxBody, readUsage: readUsage), channelActive: true)
            == .sendRequest(headDeadline: t0 + .seconds(5)))
        return machine
    }

    @Test("a JSON answer is collected whole, handed over, and the connection parked; an interim 1xx head is skipped")
    func collected() {
        var machine = sent()
        #expect(machine.head(head(.continue), now: t0) == .none)
        #expect(machine.head(head(), now: t0) == .none)
        #expect(machine.body(ByteBuffer(string: "{\"a\":"), now: t0) == .none)
        #expect(machine.body(ByteBuffer(string: "1}"), now: t0) == .none)
        #expect(machine.end() == .succeed(head(), ByteBuffer(string: "{\"a\":1}"), .park(read: false)))
        #expect(machine.begin(limits(id: 2), channelActive: true) == .sendRequest(headDeadline: t0 + .seconds(5)))
    }

    @Test("Connection: close from either side closes after the answer")
    func connectionClose() {
        var upstreamCloses = sent()
        _ = upstreamCloses.head(head(close: true), now: t0)
        #expect(upstreamCloses.end() == .succeed(head(close: true), ByteBuffer(), .close))
        #expect(upstreamCloses.isClosed)
        var requestCloses = sent(keepAlive: false)
        _ = requestCloses.head(head(), now: t0)
        #expect(requestCloses.end() == .succeed(head(), ByteBuffer(), .close))
    }

    @Test("a busy or closed connection refuses a new exchange and stays as it is")
    func refuses() {
        var machine = sent()
        #expect(machine.begin(limits(id: 2), channelActive: true) == .refuse(.resetBeforeHead))
        var inactive = Machine()
        #expect(inactive.begin(limits(), channelActive: false) == .refuse(.resetBeforeHead))
        #expect(inactive.begin(limits(), channelActive: true) == .sendRequest(headDeadline: t0 + .seconds(5)))
    }

    @Test("an event stream: handed over at its head, chunks yielded with first-byte and gap timing")
    func stream() {
        var machine = sent()
        #expect(machine.head(head(stream: true), now: t0 + .milliseconds(10))
            == .beginStream(head(stream: true), silenceCheck: t0 + .milliseconds(2010)))
        #expect(machine.body(ByteBuffer(string: "a"), now: t0 + .milliseconds(100)) == .yield(ByteBuffer(string: "a"), first: true))
        #expect(machine.body(ByteBuffer(string: "b"), now: t0 + .milliseconds(400)) == .yield(ByteBuffer(string: "b"), first: false))
        #expect(machine.body(ByteBuffer(string: "c"), now: t0 + .milliseconds(500)) == .yield(ByteBuffer(string: "c"), first: false))
        var timing = UpstreamForwarder.Timing()
        timing.firstByte = .milliseconds(100)
        timing.maxGap = .milliseconds(300)
        timing.chunks = 3
        timing.lastByte = .milliseconds(500)
        #expect(machine.end() == .finishStream(timing, .park(read: false)))
    }

    @Test("the stream's usage is read from its tail when asked for")
    func usage() {
        var machine = sent(readUsage: true)
        _ = machine.head(head(stream: true), now: t0)
        _ = machine.body(ByteBuffer(string: #"data: {"usage":{"prompt_tokens":3,"completion_tokens":5}}"# + "\n\n"), now: t0)
        guard case .finishStream(let timing, _) = machine.end() else { Issue.record("not finished"); return }
        #expect(timing.usage == TokenUsage(prompt: 3, completion: 5))
    }

    @Test("a full client pauses reads: a read asked for meanwhile is held, and given when the client can take more")
    func backPressure() {
        var machine = sent()
        _ = machine.head(head(stream: true), now: t0)
        #expect(machine.read() == .read)
        #expect(machine.readerFull(now: t0 + .seconds(1)) == .scheduleSilenceCheck(t0 + .seconds(2)), "the stall deadline")
        #expect(machine.readerFull(now: t0 + .milliseconds(1500)) == .none, "already paused")
        #expect(machine.read() == .none)
        #expect(machine.readerWantsMore(2, now: t0 + .seconds(1)) == .none, "another exchange's reader")
        #expect(machine.readerWantsMore(1, now: t0 + .seconds(1)) == .read)
        #expect(machine.readerWantsMore(1, now: t0 + .seconds(1)) == .none, "not paused any more")
        // A read held back when the stream ends is given after parking.
        _ = machine.readerFull(now: t0 + .seconds(2))
        _ = machine.read()
        guard case .finishStream(_, let after) = machine.end() else { Issue.record("not finished"); return }
        #expect(after == .park(read: true))
    }

    @Test("silence: the upstream's is a gap timeout (idle timeout), a paused client's a stalled reader (its write timeout), else look again later")
    func silence() {
        var quiet = sent()
        _ = quiet.head(head(stream: true), now: t0)
        _ = quiet.body(ByteBuffer(string: "a"), now: t0 + .seconds(1))
        #expect(quiet.silenceCheck(now: t0 + .seconds(2)) == .scheduleSilenceCheck(t0 + .seconds(3)))
        guard case .failStream(let error, _) = quiet.silenceCheck(now: t0 + .seconds(3)) else { Issue.record("not failed"); return }
        #expect(error == .gapTimeout(.seconds(2)) && quiet.isClosed)

        var stalled = sent()
        _ = stalled.head(head(stream: true), now: t0)
        _ = stalled.readerFull(now: t0 + .seconds(1))
        #expect(stalled.silenceCheck(now: t0 + .milliseconds(1500)) == .scheduleSilenceCheck(t0 + .seconds(2)))
        guard case .failStream(let reader, _) = stalled.silenceCheck(now: t0 + .seconds(2)) else { Issue.record("not failed"); return }
        #expect(reader == .readerStalled(.seconds(1)) && !reader.blamesUpstream)

        // Resumed in time: the silence clock restarts at the resume.
        var resumed = sent()
        _ = resumed.head(head(stream: true), now: t0)
        _ = resumed.readerFull(now: t0 + .seconds(1))
        _ = resumed.readerWantsMore(1, now: t0 + .milliseconds(1800))
        #expect(resumed.silenceCheck(now: t0 + .seconds(2)) == .scheduleSilenceCheck(t0 + .milliseconds(3800)))
    }

    @Test("an error answer is read whole even when it says event-stream: it can still be retried or passed on with its length")
    func errorStreamCollected() {
        var machine = sent()
        #expect(machine.head(head(.serviceUnavailable, stream: true), now: t0) == .none)
        _ = machine.body(ByteBuffer(string: "data: busy\n\n"), now: t0)
        guard case .succeed(let answer, let body, _) = machine.end() else { Issue.record("not collected"); return }
        #expect(answer.status == .serviceUnavailable && String(buffer: body) == "data: busy\n\n")
    }

    @Test("closed before the head is a reset before the answer (retryable); closed mid-stream fails the stream")
    func closes() {
        var early = sent()
        #expect(early.channelInactive() == .failAnswer(.upstream(.resetBeforeHead)))
        var reset = sent()
        #expect(reset.errorCaught(.transport("I/O error (errno 104)"), isReset: true) == .failAnswer(.upstream(.resetBeforeHead)))
        var midStream = sent()
        _ = midStream.head(head(stream: true), now: t0)
        guard case .failStream(let error, _) = midStream.channelInactive() else { Issue.record("not failed"); return }
        #expect(error == .closedMidStream)
        var idle = Machine()
        #expect(idle.channelInactive() == .close)
    }

    @Test("limits: a body over the buffer cap, the head deadline while awaiting or collecting")
    func limitsApply() {
        var large = sent(maxBody: 4)
        _ = large.head(head(), now: t0)
        #expect(large.body(ByteBuffer(string: "12345"), now: t0) == .failAnswer(.upstream(.tooLarge(4))))
        var slow = sent()
        #expect(slow.headDeadlinePassed() == .failAnswer(.upstream(.headTimeout(.seconds(5)))))
        var slowBody = sent()
        _ = slowBody.head(head(), now: t0)
        #expect(slowBody.headDeadlinePassed() == .failAnswer(.upstream(.headTimeout(.seconds(5)))))
        var streaming = sent()
        _ = streaming.head(head(stream: true), now: t0)
        #expect(streaming.headDeadlinePassed() == .none, "a stream is judged by its silence, not the head deadline")
    }

    @Test("the client leaves: an awaited answer is dropped; a stream's reader leaving stops the upstream; abort ends any stage")
    func departures() {
        var awaiting = sent()
        #expect(awaiting.clientDeparted(2) == .none, "another exchange")
        #expect(awaiting.clientDeparted(1) == .failAnswer(.clientDeparted))
        var streaming = sent()
        _ = streaming.head(head(stream: true), now: t0)
        #expect(streaming.clientDeparted(1) == .none, "a handed-over stream ends through its reader")
        #expect(streaming.readerLeft(1) == .abandonStream(UpstreamForwarder.Timing()))
        #expect(streaming.isClosed)
        var aborted = sent()
        _ = aborted.head(head(stream: true), now: t0)
        guard case .failStream(let error, _) = aborted.abort(1, .shuttingDown) else { Issue.record("not aborted"); return }
        #expect(error.kind == .shuttingDown)
    }
}
