"""The agent's delivery session, sans-I/O: window, acks, nacks, drain and timeouts, on a fake
clock and without an event loop."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from telemetry.agent.memory_spool import MemorySpool
from telemetry.agent.session import (
    MIN_MAX_FRAME_BYTES,
    AckBatch,
    AgentSession,
    DropBatch,
    EndSession,
    Outcome,
    SenderStats,
    SendFrame,
    SplitBatch,
    check_welcome,
)
from telemetry.agent.spool import BATCH_TOO_LARGE
from telemetry.protocol import HEARTBEAT, Ack, Error, Goaway, Nack, RejectedReading, Welcome

ACK_TIMEOUT = 30.0
HEARTBEAT_INTERVAL = 20.0


def spool_of(batches: int, readings: int = 2) -> MemorySpool:
    """A memory spool holding ``batches`` batches of ``readings`` readings, seq 0 up."""
    spool = MemorySpool(1_000_000, first_seq=0)
    for _ in range(batches):
        spool.add([{"sensor": "s", "value": float(i)} for i in range(readings)])
    return spool


def session_on(
    spool: MemorySpool,
    *,
    window: int = 8,
    welcome_window: int = 8,
    max_frame_bytes: int = 1 << 20,
    stats: SenderStats | None = None,
    now: float = 0.0,
) -> AgentSession:
    """A session just welcomed at ``now``."""
    welcome = Welcome(collector="c", max_frame_bytes=max_frame_bytes, window=welcome_window)
    return AgentSession(
        welcome,
        spool,
        stats or SenderStats(),
        now,
        window=window,
        ack_timeout=ACK_TIMEOUT,
        heartbeat_interval=HEARTBEAT_INTERVAL,
    )


def run(session: AgentSession, now: float) -> list[SendFrame | DropBatch | EndSession]:
    """Everything the session does at ``now``, as the sender would: each frame written at once."""
    actions: list[SendFrame | DropBatch | EndSession] = []
    while (action := session.next_action(now)) is not None:
        actions.append(action)
        if isinstance(action, SendFrame):
            session.written(action, now)
        if isinstance(action, EndSession):
            break
    return actions


def sent_seqs(actions: list[SendFrame | DropBatch | EndSession]) -> list[int]:
    """The seqs of the batches sent among ``actions``."""
    return [a.batch.seq for a in actions if isinstance(a, SendFrame) and a.batch is not None]


def ack(seq: int, accepted: int = 2) -> Ack:
    return Ack(seq=seq, accepted=accepted)


def test_window_fills_with_the_smaller_window_in_seq_order() -> None:
    """The session sends the spool's batches in seq order until the smaller of the agent's
    and the welcome's window is in flight, then nothing until something changes."""
    session = session_on(spool_of(10), window=8, welcome_window=3)
    assert session.window == 3
    assert sent_seqs(run(session, 0.0)) == [0, 1, 2]
    assert session.unacked == 3
    assert run(session, 1.0) == []


def test_a_batch_spooled_later_is_sent_when_the_window_has_room() -> None:
    """A batch added after the session went idle is sent on the next ask."""
    spool = spool_of(1)
    session = session_on(spool)
    assert sent_seqs(run(session, 0.0)) == [0]
    spool.add([{"sensor": "s", "value": 1.0}])
    assert sent_seqs(run(session, 0.5)) == [1]


def test_an_ack_frees_a_slot_and_tells_the_spool() -> None:
    """An ack answers AckBatch with its rejected count, listed and unlisted, and its slot
    takes the next batch; the rejections are one summary event, reasons cut short."""
    spool = spool_of(4, readings=4)
    session = session_on(spool, window=2)
    assert sent_seqs(run(session, 0.0)) == [0, 1]
    rejected = [RejectedReading(index=1, errors=["x" * 10_000])]
    with capture_logs() as logs:
        assert session.receive(Ack(seq=0, accepted=3, rejected=rejected), 1.0) == AckBatch(0, 1)
    (event,) = [e for e in logs if e["event"] == "readings_rejected"]
    assert len(event["samples"][0]["errors"][0]) < 300
    assert session.unacked == 1
    assert sent_seqs(run(session, 1.0)) == [2]
    unlisted = Ack(seq=1, accepted=1, rejected=rejected, rejected_unlisted=2)
    assert session.receive(unlisted, 1.0) == AckBatch(1, 3)
    assert session.acked_batches == 2


@pytest.mark.parametrize(
    ("accepted", "indexes", "unlisted"),
    [
        (0, [], None),  # accepted: 0, rejected: [] for a batch of 4
        (1, [1, 7], None),  # an index out of range
        (2, [1, 1], None),  # an index twice
        (5, [], None),  # more accepted than readings
        (-1, [], 5),  # a negative count making up the sum
        (0, list(range(200_000)), None),  # more rejected than readings: refused unread
    ],
)
def test_an_ack_whose_counts_do_not_match_the_batch_is_a_protocol_error(
    accepted: int, indexes: list[int], unlisted: int | None
) -> None:
    """The batch stays spooled and in the books as pending; the session ends, logged once
    with both numbers."""
    spool = spool_of(1, readings=4)
    session = session_on(spool)
    run(session, 0.0)
    rejected = [RejectedReading(index=i, errors=["bad"]) for i in indexes]
    ack_ = Ack(seq=0, accepted=accepted, rejected=rejected, rejected_unlisted=unlisted)
    with capture_logs() as logs:
        assert session.receive(ack_, 1.0) == EndSession(Outcome.PROTOCOL_ERROR)
    assert len(logs) == 1
    assert logs[0]["event"].startswith("ack_")
    assert spool.get(0) is not None
    assert session.receive(ack(0, 4), 1.0) == EndSession(Outcome.PROTOCOL_ERROR)


def test_an_ack_for_a_batch_not_in_flight_is_a_protocol_error() -> None:
    """Window 1: an ack for the spooled but never sent batch N+1 takes nothing off the
    books; the session ends (the batch was not stored, whatever the collector says)."""
    spool = spool_of(3)
    session = session_on(spool, window=1)
    assert sent_seqs(run(session, 0.0)) == [0]
    with capture_logs() as logs:
        assert session.receive(ack(1), 1.0) == EndSession(Outcome.PROTOCOL_ERROR)
    assert [e["event"] for e in logs] == ["ack_not_in_flight"]
    assert session.receive(ack(0), 1.0) == EndSession(Outcome.PROTOCOL_ERROR)
    assert spool.batches == 3


def test_an_ack_for_a_batch_gone_from_the_spool_is_ignored() -> None:  # in flight, though
    """An ack for a batch the spool no longer holds (dropped, or a duplicate) asks nothing."""
    spool = spool_of(1)
    session = session_on(spool)
    run(session, 0.0)
    spool.drop(0, "spool_full")
    assert session.receive(ack(0), 1.0) is None
    assert session.unacked == 0


def test_a_nack_holds_the_slot_and_resends_after_retry_after_ms() -> None:
    """A nacked batch keeps its window slot, is resent retry_after_ms later (before new
    batches), and the resend is counted as one."""
    stats = SenderStats()
    session = session_on(spool_of(3), window=2, stats=stats)
    assert sent_seqs(run(session, 0.0)) == [0, 1]
    assert session.receive(Nack(seq=0, reason="sink_down", retry_after_ms=500), 1.0) is None
    assert session.unacked == 1
    assert run(session, 1.2) == []  # the slot stays taken: no batch 2
    assert session.next_deadline == 1.5
    assert sent_seqs(run(session, 1.5)) == [0]
    assert (stats.batches_sent, stats.batches_resent, stats.sent_readings) == (3, 1, 4)
    assert session.receive(ack(0), 2.0) == AckBatch(0, 0)
    assert sent_seqs(run(session, 2.0)) == [2]


def test_a_nack_for_a_batch_not_in_flight_is_a_protocol_error() -> None:
    """A nack for a seq not in flight schedules nothing and ends the session."""
    session = session_on(spool_of(1))
    run(session, 0.0)
    end = session.receive(Nack(seq=99, reason="x", retry_after_ms=0), 1.0)
    assert end == EndSession(Outcome.PROTOCOL_ERROR)


@pytest.mark.parametrize(("retry_after_ms", "delay"), [(0, 0.05), (-5, 0.05), (10**12, 30.0)])
def test_nack_delays_are_clamped(retry_after_ms: int, delay: float) -> None:
    """retry_after_ms 0 or negative waits the floor (no hot loop); a huge one waits
    retry_max (no silent stall)."""
    session = session_on(spool_of(1))
    run(session, 0.0)
    session.receive(Nack(seq=0, reason="x" * 10_000, retry_after_ms=retry_after_ms), 1.0)
    assert sent_seqs(run(session, 1.0)) == []
    assert sent_seqs(run(session, 1.0 + delay - 0.001)) == []
    assert sent_seqs(run(session, 1.0 + delay)) == [0]


@pytest.mark.parametrize(
    ("window", "max_frame_bytes"), [(0, 1 << 20), (-1, 1 << 20), (8, 0), (8, -1), (8, 100)]
)
def test_a_bad_welcome_is_refused(window: int, max_frame_bytes: int) -> None:
    """check_welcome refuses window < 1 and a max_frame_bytes one reading may not fit."""
    welcome = Welcome(collector="c", max_frame_bytes=max_frame_bytes, window=window)
    assert check_welcome(welcome) is not None
    good = Welcome(collector="c", max_frame_bytes=MIN_MAX_FRAME_BYTES, window=1)
    assert check_welcome(good) is None


def test_peer_strings_are_clipped_in_logs() -> None:
    """A 50 MB goaway reason or a 1 MB error detail is logged cut to a few hundred chars."""
    session = session_on(spool_of(0))
    with capture_logs() as logs:
        session.receive(Goaway(reason="g" * 50_000_000), 0.0)
        session.receive(Error(code="c", detail="d" * 1_000_000), 0.0)
    assert all(len(str(e)) < 1000 for e in logs)


def test_goaway_drains_in_flight_batches_then_ends() -> None:
    """After goaway nothing new is sent; the session ends once the in-flight batches are acked."""
    spool = spool_of(4)
    session = session_on(spool, window=2)
    run(session, 0.0)
    assert session.receive(Goaway(reason="shutdown"), 1.0) is None
    assert session.draining
    spool.add([{"sensor": "s", "value": 1.0}])
    session.receive(ack(0), 2.0)
    assert run(session, 2.0) == []  # batch 1 still in flight, no new send
    session.receive(ack(1), 3.0)
    assert run(session, 3.0) == [EndSession(Outcome.GOAWAY)]
    assert session.outcome is Outcome.GOAWAY


def test_goaway_drain_ends_at_its_deadline() -> None:
    """A drain whose batches are not acked ends ack_timeout after the first goaway (a later
    goaway does not move it; heartbeats go on meanwhile), checked before the ack timeout."""
    session = session_on(spool_of(1), now=10.0)
    run(session, 10.0)
    session.receive(Goaway(reason="shutdown"), 10.0)
    session.receive(Goaway(reason="again"), 20.0)
    assert run(session, 10.0 + HEARTBEAT_INTERVAL) == [SendFrame(HEARTBEAT)]  # still alive
    assert session.next_deadline == 10.0 + ACK_TIMEOUT
    assert run(session, 10.0 + ACK_TIMEOUT - 0.01) == []
    with capture_logs() as logs:
        assert run(session, 10.0 + ACK_TIMEOUT) == [EndSession(Outcome.GOAWAY)]
    assert [e["event"] for e in logs] == ["goaway_drain_timeout"]


def test_ack_timeout_ends_the_session() -> None:
    """The oldest in-flight batch unacked for ack_timeout ends the session."""
    session = session_on(spool_of(2), window=1)
    run(session, 0.0)
    assert session.next_deadline == HEARTBEAT_INTERVAL  # the heartbeat comes first
    session.written(SendFrame(HEARTBEAT), HEARTBEAT_INTERVAL)
    assert session.next_deadline == ACK_TIMEOUT
    assert run(session, ACK_TIMEOUT - 0.01) == []
    assert run(session, ACK_TIMEOUT) == [EndSession(Outcome.ACK_TIMEOUT)]
    assert session.next_action(ACK_TIMEOUT + 1) == EndSession(Outcome.ACK_TIMEOUT)


def test_heartbeat_after_heartbeat_interval_of_silence() -> None:
    """An idle session asks for a heartbeat heartbeat_interval after its last write."""
    session = session_on(spool_of(0), now=5.0)
    assert run(session, 5.0) == []
    assert session.next_deadline == 5.0 + HEARTBEAT_INTERVAL
    assert run(session, 5.0 + HEARTBEAT_INTERVAL) == [SendFrame(HEARTBEAT)]
    assert session.next_deadline == 5.0 + 2 * HEARTBEAT_INTERVAL


def test_a_batch_send_restarts_the_heartbeat_clock() -> None:
    """A batch written is a write: no heartbeat is due heartbeat_interval after the start."""
    spool = spool_of(0)
    session = session_on(spool)
    spool.add([{"sensor": "s", "value": 1.0}])
    assert sent_seqs(run(session, 10.0)) == [spool.next_seq - 1]
    session.receive(ack(spool.next_seq - 1, 1), 11.0)
    assert run(session, HEARTBEAT_INTERVAL) == []
    assert run(session, 10.0 + HEARTBEAT_INTERVAL) == [SendFrame(HEARTBEAT)]


def test_a_batch_larger_than_max_frame_bytes_is_split_not_dropped() -> None:
    """A batch over the collector's max_frame_bytes is split (new seqs, readings in order),
    never dropped; the parts and the next batch are sent."""
    spool = MemorySpool(100_000, first_seq=0)
    spool.add([{"sensor": "s" * 200, "value": float(i)} for i in range(800)])
    spool.add([{"sensor": "s", "value": 1.0}])
    session = session_on(spool, max_frame_bytes=MIN_MAX_FRAME_BYTES)
    actions = run(session, 0.0)
    assert actions[0] == SplitBatch(0, MIN_MAX_FRAME_BYTES)
    seqs = spool.split(0, MIN_MAX_FRAME_BYTES)
    assert len(seqs) >= 2
    assert seqs[0] == 2
    assert spool.dropped == 0
    assert spool.readings == 801
    values = [r["value"] for s in seqs for r in spool.get(s).readings]  # type: ignore[union-attr]
    assert values == [float(i) for i in range(800)]
    assert all(len(spool.get(s).frame) - 10 <= MIN_MAX_FRAME_BYTES for s in seqs)  # type: ignore[union-attr]
    assert sent_seqs(actions + run(session, 0.0))[:3] == [1, *seqs[:2]]


def test_a_reading_too_large_alone_is_dropped_counted() -> None:
    """Only a single reading that cannot fit even alone is dropped, as batch_too_large."""
    spool = MemorySpool(1000, first_seq=0)
    spool.add([{"sensor": "s", "value": 1.0}, {"sensor": "s" * 300, "value": 2.0}])
    assert len(spool.split(0, 120)) == 1
    assert spool.dropped_by_reason == {BATCH_TOO_LARGE: 1}
    assert spool.readings == 1
    one = MemorySpool(1000, first_seq=0)
    one.add([{"sensor": "s" * 300, "value": 2.0}])
    assert run(session_on(one, max_frame_bytes=100), 0.0)[0] == DropBatch(0, BATCH_TOO_LARGE)


def test_resends_on_a_new_session_are_counted_as_resends() -> None:
    """Stats outlive a session: batches sent again on the next connection are resends, and
    their readings are not counted as sent twice."""
    spool = spool_of(2, readings=3)
    stats = SenderStats()
    first = session_on(spool, stats=stats)
    run(first, 0.0)
    assert first.lost("reset") == EndSession(Outcome.LOST)
    second = session_on(spool, stats=stats, now=5.0)
    spool.add([{"sensor": "s", "value": 1.0}])
    assert sent_seqs(run(second, 5.0)) == [0, 1, 2]
    assert (stats.batches_sent, stats.batches_resent, stats.sent_readings) == (5, 2, 7)


def test_error_and_a_second_welcome_end_the_session_first_reason_wins() -> None:
    """An error ends the session with ERROR, a second welcome with LOST; the first reason
    stays the outcome."""
    session = session_on(spool_of(1))
    end = session.receive(Error(code="idle_timeout", detail=""), 0.0)
    assert end == EndSession(Outcome.ERROR)
    assert session.lost("eof") == EndSession(Outcome.ERROR)
    assert session.next_action(1.0) == EndSession(Outcome.ERROR)
    other = session_on(spool_of(1))
    welcome = Welcome(collector="c", max_frame_bytes=1 << 20, window=8)
    assert other.receive(welcome, 0.0) == EndSession(Outcome.LOST)
