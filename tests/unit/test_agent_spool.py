"""MemorySpool: seq assignment, order, acks, and dropping the oldest when full."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from telemetry.agent import MemorySpool, Spool
from telemetry.agent import spool as spool_module
from telemetry.agent.disk_spool import DiskSpool
from telemetry.agent.spool import SPOOL_FULL_LOG_INTERVAL
from telemetry.collector.validation import clean_batch
from telemetry.protocol import Batch, FrameDecoder, decode_json, parse_client_message


def readings(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"sensor": "s", "value": float(n)} for n in range(start, start + count)]


def test_memory_spool_satisfies_the_protocol() -> None:
    """MemorySpool is usable wherever a Spool is expected."""
    spool: Spool = MemorySpool(10, first_seq=0)
    assert spool.next_seq == 0


def test_seq_starts_at_zero_and_grows() -> None:
    """Each added batch gets the next seq, starting at 0."""
    spool = MemorySpool(100, first_seq=0)
    assert [spool.add(readings(2)).seq for _ in range(3)] == [0, 1, 2]
    assert spool.next_seq == 3
    assert (spool.batches, spool.readings) == (3, 6)


def test_seq_never_reused_after_acks() -> None:
    """Acking everything does not rewind seq."""
    spool = MemorySpool(100, first_seq=0)
    for _ in range(2):
        spool.ack(spool.add(readings(1)).seq)
    assert spool.oldest_seq is None
    assert spool.add(readings(1)).seq == 2


def test_first_seq_continues_a_previous_run() -> None:
    """A spool can start at a seq persisted by an earlier run."""
    spool = MemorySpool(100, first_seq=41)
    assert spool.add(readings(1)).seq == 41


def test_pending_in_seq_order_and_ack_removes() -> None:
    """pending() lists held batches by seq; ack removes one and returns it once."""
    spool = MemorySpool(100, first_seq=0)
    for _ in range(4):
        spool.add(readings(2))
    acked = spool.ack(1)
    assert acked is not None
    assert acked.seq == 1
    assert spool.ack(1) is None
    assert [b.seq for b in spool.pending()] == [0, 2, 3]
    assert spool.oldest_seq == 0
    assert spool.get(1) is None
    assert spool.readings == 6


def test_full_spool_drops_oldest_batches_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    """Overflow drops whole batches from the oldest, counting their readings."""
    spool = MemorySpool(10, first_seq=0)
    for n in range(4):
        spool.add(readings(3, start=n * 3))
    assert spool.dropped == 3
    assert [b.seq for b in spool.pending()] == [1, 2, 3]
    assert spool.readings == 9
    spool.add(readings(5))
    assert spool.dropped == 9
    assert [b.seq for b in spool.pending()] == [3, 4]


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: MemorySpool(3, first_seq=0),
        lambda tmp: DiskSpool(tmp / "spool.db", max_readings=3),
    ],
    ids=["memory", "disk"],
)
def test_a_full_spool_logs_at_most_one_drop_event_a_second(
    make: Callable[[Path], Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full under load, a spool drops on every add: the first drop is logged at once, the
    ones within SPOOL_FULL_LOG_INTERVAL go into the next event, and close() logs the rest;
    the events add up to every reading dropped."""
    clock = [100.0]
    monkeypatch.setattr(spool_module.time, "monotonic", lambda: clock[0])
    spool = make(tmp_path)
    with capture_logs() as logs:
        for n in range(6):  # each add of 3 evicts the batch before it
            spool.add(readings(3, start=n * 3))
        clock[0] += SPOOL_FULL_LOG_INTERVAL
        spool.add(readings(3))
        spool.add(readings(3))
        spool.close()
    events = [
        (e["reason"], e["readings"], e["batches"], e["dropped_total"])
        for e in logs
        if e["event"] == "readings_dropped"
    ]
    assert events == [("spool_full", 3, 1, 3), ("spool_full", 15, 5, 18), ("spool_full", 3, 1, 21)]
    assert spool.dropped == 21


def test_batch_larger_than_spool_keeps_its_newest_readings() -> None:
    """A batch bigger than the whole spool keeps only its newest max_readings readings."""
    spool = MemorySpool(3, first_seq=0)
    spool.add(readings(2))
    batch = spool.add(readings(5, start=10))
    assert [r["value"] for r in batch.readings] == [12.0, 13.0, 14.0]
    assert spool.dropped == 4
    assert spool.readings == 3


def test_drop_counts_an_undeliverable_batch() -> None:
    """drop() removes a batch without an ack and counts its readings."""
    spool = MemorySpool(100, first_seq=0)
    spool.add(readings(4))
    assert spool.drop(0, "batch_too_large") == 4
    assert spool.drop(0, "batch_too_large") == 0
    assert (spool.dropped, spool.readings, spool.batches) == (4, 0, 0)


def test_frame_is_a_valid_batch_frame() -> None:
    """A spooled batch's frame decodes to a batch message with its seq and readings."""
    spool = MemorySpool(100, first_seq=0)
    spool.add(readings(1))
    batch = spool.add(readings(2))
    (payload,) = FrameDecoder().feed(batch.frame)
    message = parse_client_message(decode_json(payload))
    assert isinstance(message, Batch)
    assert message.seq == 1
    assert message.readings == readings(2)
    now = datetime.now(UTC)
    clean = clean_batch(payload, "a", now, now)  # the collector's fast path takes it
    assert clean is not None
    assert (clean[0], [{"sensor": r.sensor, "value": r.value} for r in clean[1]]) == (
        1,
        readings(2),
    )


def test_readings_may_be_given_encoded() -> None:
    """The agent hands the spool each reading's JSON; dicts and bytes make the same frame."""
    spool = MemorySpool(100, first_seq=0)
    encoded = [b'{"sensor":"s","value":0.0}', b'{"sensor":"s","value":1.0}']
    from_bytes = spool.add(encoded)
    from_dicts = MemorySpool(100, first_seq=0).add(readings(2))
    assert from_bytes.frame == from_dicts.frame
    assert from_bytes.readings == tuple(readings(2))


def test_invalid_sizes_refused() -> None:
    """A spool of no readings or a negative first seq is a programming error."""
    with pytest.raises(ValueError, match="max_readings"):
        MemorySpool(0)
    with pytest.raises(ValueError, match="first_seq"):
        MemorySpool(1, first_seq=-1)


def test_a_new_spool_starts_above_every_seq_of_an_earlier_run():
    """By default seqs start from the clock, so a restarted agent never reuses a reading id."""
    earlier = MemorySpool(100)
    for _ in range(1000):
        last = earlier.add([{"sensor": "s", "value": 1}]).seq
    later = MemorySpool(100)
    assert later.next_seq > last
