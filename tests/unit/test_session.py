"""Unit tests of the collector's sans-I/O session core (docs/protocol.md#messages): frames in,
actions out, with no event loop and no socket."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog.testing

from telemetry.collector.session import (
    DeadLetters,
    Deliver,
    Queue,
    Send,
    Session,
)
from telemetry.config import IngestConfig
from telemetry.protocol import (
    Ack,
    BadJson,
    Error,
    FrameDecoder,
    Goaway,
    HelloRequired,
    Nack,
    ProtocolViolation,
    ServerMessage,
    Unauthorized,
    Welcome,
    parse_server_message,
)
from telemetry.ratelog import RateLimitedLog

NOW = datetime(2026, 11, 27, 7, 15, tzinfo=UTC)


def session(**config: Any) -> Session:
    options: dict[str, Any] = {"dead_letters": True}
    for key in ("would_wait",):
        if key in config:
            options[key] = config.pop(key)
    return Session(
        IngestConfig(**config),
        collector_id="c1",
        peer="10.0.0.9:4000",
        clock=lambda: NOW,
        **options,
    )


def frame(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def replies(data: bytes) -> list[ServerMessage]:
    return [parse_server_message(payload) for payload in FrameDecoder().feed(data)]


def hello(s: Session, agent: str = "a1", **extra: Any) -> Welcome:
    (action,) = s.receive([frame({"type": "hello", "agent": agent, "protocol": 1, **extra})])
    assert isinstance(action, Send)
    (welcome,) = replies(action.data)
    assert isinstance(welcome, Welcome)
    return welcome


def reading(value: float, **extra: Any) -> dict[str, Any]:
    return {"sensor": "r/x", "value": value, **extra}


def test_hello_is_welcomed_with_the_limits() -> None:
    """A hello gets a welcome announcing the collector, window and frame limit."""
    s = session(window=3, max_frame_bytes=5000)
    welcome = hello(s)
    assert (welcome.collector, welcome.window, welcome.max_frame_bytes) == ("c1", 3, 5000)
    assert s.agent == "a1"
    assert s.who == "a1"


def test_batch_before_hello_is_fatal() -> None:
    """A batch before hello raises hello_required."""
    with pytest.raises(HelloRequired):
        list(session().receive([frame({"type": "batch", "seq": 0, "readings": [reading(1)]})]))


@pytest.mark.parametrize("token", [None, "wrong"])
def test_hello_without_an_accepted_token_is_unauthorized(token: str | None) -> None:
    """With tokens configured, a hello with none or another one is refused."""
    s = session(tokens=["real"])
    with pytest.raises(Unauthorized):
        hello(s, **({"token": token} if token else {}))
    assert s.agent is None
    assert hello(s, token="real").collector == "c1"


def test_another_protocol_version_and_a_second_hello_are_violations() -> None:
    """Protocol 2 is refused; so is a second hello on one connection."""
    with pytest.raises(ProtocolViolation, match="protocol 2"):
        hello(session(), protocol=2)
    s = session()
    hello(s)
    with pytest.raises(ProtocolViolation, match="second hello"):
        hello(s)


def test_a_clean_batch_is_delivered_then_acked_and_the_ledger_balances() -> None:
    """A clean batch becomes one Deliver with reading ids; settling it gives the ack."""
    s = session()
    hello(s)
    (deliver,) = s.receive(
        [frame({"type": "batch", "seq": 7, "readings": [reading(1), reading(2)]})]
    )
    assert isinstance(deliver, Deliver)
    assert [r.id for r in deliver.records] == ["a1:7:0", "a1:7:1"]
    assert {r.agent for r in deliver.records} == {"a1"}
    assert s.ledger.pending == 2
    (ack,) = replies(s.settled(deliver, [[]]))
    assert ack == Ack(seq=7, accepted=2, rejected=[])
    assert (s.ledger.received, s.ledger.acked, s.ledger.pending) == (2, 2, 0)
    assert s.ledger.balanced


def test_a_bad_reading_is_rejected_while_the_rest_of_its_batch_goes_on() -> None:
    """One invalid reading is dead-lettered and listed in the ack; the others are delivered."""
    s = session()
    hello(s)
    batch = {"type": "batch", "seq": 1, "readings": [reading(1), reading("x"), reading(3)]}
    letters, deliver = s.receive([frame(batch)])
    assert isinstance(letters, DeadLetters)
    assert [letter.id for letter in letters.letters] == ["a1:1:1"]
    assert isinstance(deliver, Deliver)
    assert list(deliver.indexes) == [0, 2]
    (ack,) = replies(s.settled(deliver, [[]]))
    assert isinstance(ack, Ack)
    assert ack.accepted == 2
    assert [r.index for r in ack.rejected] == [1]
    assert "value" in ack.rejected[0].errors[0]
    assert s.ledger.balanced


def test_a_batch_of_only_bad_readings_is_acked_at_once() -> None:
    """With nothing to deliver, the ack comes straight back."""
    s = session()
    hello(s)
    actions = list(s.receive([frame({"type": "batch", "seq": 2, "readings": [{"value": 1}]})]))
    (ack,) = replies(next(a for a in actions if isinstance(a, Send)).data)
    assert ack == Ack(seq=2, accepted=0, rejected=ack.rejected)
    assert len(ack.rejected) == 1
    assert not any(isinstance(a, Deliver) for a in actions)
    assert s.ledger.balanced


def test_a_sink_refusal_maps_back_to_the_readings_index() -> None:
    """A reading a sink refuses is rejected in the ack under its index in the batch."""
    s = session()
    hello(s)
    batch = {"type": "batch", "seq": 3, "readings": [reading(1), {"value": 2}, reading(3)]}
    _, deliver = s.receive([frame(batch)])
    assert isinstance(deliver, Deliver)
    refused = deliver.records[1]  # the batch's index 2
    (ack,) = replies(s.settled(deliver, [[(refused, "sink db: too big")], []]))
    assert isinstance(ack, Ack)
    assert ack.accepted == 1
    assert [(r.index, r.errors) for r in ack.rejected][1] == (2, ["sink db: too big"])
    assert (s.ledger.acked, s.ledger.rejected) == (1, 2)
    assert s.ledger.balanced


def test_a_failed_delivery_is_nacked_and_stays_with_the_agent() -> None:
    """A sink that gave up makes a nack; its readings count as unacked, not lost."""
    s = session(retry_after_ms=250)
    hello(s)
    (deliver,) = s.receive([frame({"type": "batch", "seq": 4, "readings": [reading(1)]})])
    assert isinstance(deliver, Deliver)
    (nack,) = replies(s.failed(deliver, "db", "timeout"))
    assert nack == Nack(seq=4, reason="sink db unavailable", retry_after_ms=250)
    assert (s.ledger.unacked, s.ledger.pending) == (1, 0)
    assert s.ledger.balanced


def test_on_full_nack_refuses_a_batch_the_sinks_would_make_wait() -> None:
    """With on_full = nack and a full sink queue, the batch is nacked at once."""
    s = session(on_full="nack", retry_after_ms=50, would_wait=lambda count: True)
    hello(s)
    (send,) = s.receive([frame({"type": "batch", "seq": 5, "readings": [reading(1)]})])
    assert isinstance(send, Send)
    (nack,) = replies(send.data)
    assert isinstance(nack, Nack)
    assert (nack.seq, nack.retry_after_ms) == (5, 50)
    assert s.ledger.unacked == 1


def test_a_batch_over_max_batch_is_a_violation() -> None:
    """More readings than max_batch end the connection."""
    s = session(max_batch=2)
    hello(s)
    with pytest.raises(ProtocolViolation, match="exceeds max_batch 2"):
        list(s.receive([frame({"type": "batch", "seq": 0, "readings": [reading(1)] * 3})]))


def test_fire_and_forget_readings_are_queued_and_broken_ones_dead_lettered() -> None:
    """Clean readings queue with the peer as agent; broken JSON is one rejection, no error."""
    s = session()
    actions = list(s.receive([frame(reading(1)), frame(reading(2)), b"{nope", frame(reading(3))]))
    kinds = [type(a) for a in actions]
    assert kinds == [Queue, DeadLetters, Queue]
    first = actions[0]
    assert isinstance(first, Queue)
    assert [(r.agent, r.id) for r in first.records] == [("10.0.0.9", None)] * 2
    assert (s.ledger.fire_and_forget_received, s.ledger.fire_and_forget_rejected) == (4, 1)


def test_malformed_json_claiming_to_be_a_hello_is_fatal_before_hello() -> None:
    """A broken control message before hello is bad_json, not a skipped reading."""
    with pytest.raises(BadJson):
        list(session().receive([b'{"type": "hello", "agent": ']))


def test_goaway_and_error_frames() -> None:
    """goaway and error are the protocol's messages, framed."""
    s = session()
    assert replies(s.goaway("draining")) == [Goaway(reason="draining")]
    assert replies(s.fatal("bad_header", "no digits")) == [
        Error(code="bad_header", detail="no digits")
    ]


def test_an_ack_lists_at_most_max_ack_rejections_and_counts_the_rest() -> None:
    """A batch of 10,000 bad readings gets a small ack: 100 listed, the rest counted."""
    s = session()
    hello(s)
    bad = [{"value": i} for i in range(10_000)]
    actions = list(s.receive([frame({"type": "batch", "seq": 9, "readings": bad})]))
    sends = [a for a in actions if isinstance(a, Send)]
    (ack,) = replies(sends[0].data)
    assert isinstance(ack, Ack)
    assert len(ack.rejected) == 100
    assert ack.rejected_unlisted == 10_000 - 100
    assert ack.rejected_count == 10_000
    assert len(sends[0].data) < 20_000


def test_rejections_are_logged_once_then_summed_up() -> None:
    """Within the interval the first rejection is logged whole and the rest in one summary."""
    clock = [0.0]
    log = RateLimitedLog(structlog.get_logger("t"), 10, lambda: clock[0])
    with structlog.testing.capture_logs() as captured:
        for n in range(500):
            log.warning("reading_rejected", index=n)
        log.flush()
        clock[0] = 11.0
        log.warning("reading_rejected", index=500)
    assert [(e["event"], e.get("index"), e.get("count")) for e in captured] == [
        ("reading_rejected", 0, None),
        ("reading_rejected_suppressed", None, 499),
        ("reading_rejected", 500, None),
    ]


def test_with_auth_on_nothing_but_a_hello_is_taken_before_hello() -> None:
    """With tokens set, a fire-and-forget reading before hello ends the connection."""
    s = session(tokens=["real"])
    with pytest.raises(Unauthorized):
        list(s.receive([b"", frame(reading(1))]))
    assert s.ledger.fire_and_forget_received == 0


def test_with_auth_on_readings_after_the_hello_in_one_read_are_taken() -> None:
    """A hello and readings in one read: the hello passes first, then the readings count."""
    s = session(tokens=["real"])
    hello_frame = frame({"type": "hello", "agent": "a1", "token": "real"})
    actions = list(s.receive([hello_frame, frame(reading(1))]))
    assert [type(a) for a in actions] == [Send, Queue]
    queued = actions[1]
    assert isinstance(queued, Queue)
    assert queued.records[0].agent == "a1"


def test_anonymous_readings_carry_the_host_not_the_port() -> None:
    """Without a hello, readings are stored under the sender's host."""
    (queued,) = session().receive([frame(reading(1))])
    assert isinstance(queued, Queue)
    assert queued.records[0].agent == "10.0.0.9"
