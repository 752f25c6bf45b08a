"""Batcher and Backoff: the agent's timing logic, without an event loop."""

from __future__ import annotations

import random

from telemetry.agent import AgentLedger, Backoff, Batcher


def test_batch_closes_at_batch_size() -> None:
    """The reading that fills batch_size comes back as the closed batch."""
    batcher = Batcher(batch_size=3, flush_interval=1.0)
    assert batcher.add({"n": 1}, now=0.0) is None
    assert batcher.add({"n": 2}, now=0.1) is None
    assert batcher.add({"n": 3}, now=0.2) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert len(batcher) == 0
    assert batcher.deadline is None


def test_batch_due_flush_interval_after_its_first_reading() -> None:
    """A partial batch is due flush_interval after its first reading, not its last."""
    batcher = Batcher(batch_size=10, flush_interval=1.0)
    assert batcher.deadline is None
    batcher.add({"n": 1}, now=5.0)
    batcher.add({"n": 2}, now=5.9)
    assert batcher.deadline == 6.0
    assert batcher.take() == [{"n": 1}, {"n": 2}]
    assert batcher.deadline is None
    assert batcher.take() == []


def test_only_the_reading_that_opens_a_batch_sets_its_time() -> None:
    """``opened_at`` is the opening reading's time, whatever later readings pass (the agent
    reads its clock only for that reading); a closed batch clears it."""
    batcher = Batcher(batch_size=3, flush_interval=1.0)
    assert batcher.opened_at is None
    batcher.add({"n": 1}, now=5.0)
    assert batcher.opened_at == 5.0
    batcher.add({"n": 2}, now=0.0)
    assert (batcher.opened_at, batcher.deadline) == (5.0, 6.0)
    assert batcher.add({"n": 3}, now=99.0) is not None
    assert batcher.opened_at is None
    batcher.add({"n": 4}, now=7.0)
    assert batcher.deadline == 8.0


def test_backoff_delays_stay_within_the_growing_cap() -> None:
    """Every delay lies in [0, min(max, min * 2**attempt)]."""
    backoff = Backoff(0.1, 5.0, random.Random(1))
    caps = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    for cap in caps:
        assert 0 <= backoff.next_delay() <= cap
    assert [backoff.cap(n) for n in range(len(caps))] == caps


def test_backoff_is_full_jitter() -> None:
    """Delays at the cap spread over the whole range instead of clustering near it."""
    backoff = Backoff(1.0, 1.0, random.Random(2))
    delays = [backoff.next_delay() for _ in range(200)]
    assert min(delays) < 0.1
    assert max(delays) > 0.9


def test_backoff_reset_and_huge_attempts() -> None:
    """reset() restarts from the smallest cap; very many attempts stay at the maximum."""
    backoff = Backoff(0.1, 30.0, random.Random(3))
    backoff.attempt = 5000
    assert backoff.next_delay() <= 30.0
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay() <= 0.1


def test_ledger_balance() -> None:
    """The ledger is balanced only when every produced reading is in exactly one bucket."""
    good = AgentLedger(
        produced=10, acked=5, rejected=1, dropped=2, pending=2, batches_sent=4, batches_resent=1
    )
    assert good.balanced
    assert not AgentLedger(10, 5, 1, 2, 1, 4, 1).balanced
    assert good.as_dict()["acked"] == 5
