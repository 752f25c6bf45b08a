"""The agent against a fake collector: acks, resends, nacks, goaway, window, timeouts."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from telemetry.agent import Agent, MemorySpool
from telemetry.agent import agent as agent_module
from telemetry.config import AgentSection, SpoolConfig
from tests.integration.fake_collector import FakeCollector, reading, scaled, unused_endpoint
from tests.support import tried_in_order


def section(*endpoints: str, **overrides: Any) -> AgentSection:
    """An agent config with short timers, suited to tests."""
    settings: dict[str, Any] = {
        "id": "test-agent",
        "batch_size": 10,
        "flush_interval": 0.05,
        "reconnect_min": 0.01,
        "reconnect_max": 0.05,
        "connect_timeout": scaled(1.0),
        "ack_timeout": scaled(2.0),
        "shutdown_timeout": scaled(3.0),
    }
    settings.update(overrides)
    return AgentSection(endpoints=tried_in_order(settings["id"], *endpoints), **settings)


def spool(max_readings: int = 1_000_000) -> MemorySpool:
    """A spool whose seqs start at 0, so tests can name them."""
    return MemorySpool(max_readings, first_seq=0)


@pytest.fixture
async def fake() -> Any:
    async with FakeCollector() as collector:
        yield collector


async def test_all_readings_acked_exactly_once_in_seq_order(fake: FakeCollector) -> None:
    """Every reading is delivered in one batch per seq, seqs from 0 in order, each acked once."""
    async with Agent(section(fake.endpoint), spool()) as agent:
        for n in range(95):
            await agent.send(reading(n))
        assert await agent.wait_acked(scaled(3.0))
        ledger = agent.ledger
    assert fake.seqs_received() == list(range(10))
    assert fake.acked == list(range(10))
    assert [r["value"] for b in fake.batches for r in b.readings] == [float(n) for n in range(95)]
    assert ledger.acked == ledger.produced == 95
    assert ledger.pending == ledger.dropped == ledger.rejected == 0
    assert fake.hellos[0].agent == "test-agent"


async def test_partial_batch_sent_after_flush_interval(fake: FakeCollector) -> None:
    """A batch smaller than batch_size is sent once flush_interval has passed, without flush()."""
    async with Agent(section(fake.endpoint, batch_size=100, flush_interval=0.05), spool()) as agent:
        for n in range(3):
            await agent.send(reading(n))
        await fake.wait_for(lambda: fake.acked == [0])
        assert len(fake.batches[0].readings) == 3


async def test_batch_opened_after_a_full_one_is_still_flushed_by_time(
    fake: FakeCollector,
) -> None:
    """The flush timer is woken when a batch opens, not per reading: a partial batch that
    opens right after a full one closed, or after an acked one, still goes out by time."""
    async with Agent(section(fake.endpoint, batch_size=5, flush_interval=0.05), spool()) as agent:
        for n in range(7):  # one full batch, then 2 readings open the next
            await agent.send(reading(n))
        await fake.wait_for(lambda: fake.acked == [0, 1])
        assert [len(b.readings) for b in fake.batches] == [5, 2]
        assert await agent.wait_acked(scaled(1.0))  # the acks are in: drained
        await agent.send(reading(7))  # opens a batch again: not drained until it is acked
        assert not await agent.wait_acked(0)
        await fake.wait_for(lambda: fake.acked == [0, 1, 2])
        assert await agent.wait_acked(scaled(1.0))


async def test_batches_of_one_are_pending_until_acked(fake: FakeCollector) -> None:
    """With batch_size 1 every reading closes its batch at once: the agent is not drained
    until that batch is acked."""
    async with Agent(section(fake.endpoint, batch_size=1), spool()) as agent:
        assert await agent.wait_acked(0)
        await agent.send(reading(0))
        assert not await agent.wait_acked(0)
        assert await agent.wait_acked(scaled(2.0))
        assert fake.acked == [0]


async def test_resend_after_connection_drop_loses_nothing(fake: FakeCollector) -> None:
    """When the collector drops the connection mid-stream, unacked batches are sent again."""
    fake.drop_after_batches = 2
    async with Agent(section(fake.endpoint, batch_size=5), spool()) as agent:
        for n in range(30):
            await agent.send(reading(n))
        assert await agent.wait_acked(scaled(3.0))
        ledger = agent.ledger
    assert fake.connections == 2
    seen = Counter(fake.seqs_received())
    # seq 0 was acked before the drop; seq 1 made the fake drop the connection unacked.
    assert seen[0] == 1
    assert seen[1] == 2
    assert sorted(fake.acked) == list(range(6))
    assert ledger.acked == 30
    assert ledger.balanced
    assert ledger.batches_resent == 5


async def test_nacked_batch_resent_after_retry_after(fake: FakeCollector) -> None:
    """A nacked batch is sent again no sooner than retry_after_ms, then acked."""
    fake.nack = {0: 200}
    # reconnect_max caps a nack's delay: leave room for 200 ms.
    async with Agent(section(fake.endpoint, reconnect_max=1.0), spool()) as agent:
        for n in range(10):
            await agent.send(reading(n))
        assert await agent.wait_acked(scaled(3.0))
    receipts = [b.at for b in fake.batches if b.seq == 0]
    assert len(receipts) == 2
    assert receipts[1] - fake.nacked[0][1] >= 0.19
    assert fake.acked == [0]
    assert fake.connections == 1


async def test_goaway_reconnects_to_the_next_endpoint() -> None:
    """After goaway the agent lets in-flight batches be acked, then moves to the next endpoint."""
    async with FakeCollector(name="a") as first, FakeCollector(name="b") as second:
        first.goaway_after_acks = 1
        async with Agent(section(first.endpoint, second.endpoint, batch_size=5), spool()) as agent:
            for n in range(10):
                await agent.send(reading(n))
            await first.wait_for(lambda: first.goaways == 1)
            for n in range(10, 30):
                await agent.send(reading(n))
            assert await agent.wait_acked(scaled(3.0))
            ledger = agent.ledger
        assert len(second.hellos) == 1
        assert set(first.seqs_received()) <= {0, 1}, "sent to the first endpoint after goaway"
        assert second.batches, "nothing was sent to the second endpoint"
        assert not set(first.acked) & set(second.acked)
        assert sorted(first.acked + second.acked) == list(range(6))
        assert ledger.acked == 30
        assert ledger.batches_resent == 0


async def test_window_from_welcome_never_exceeded() -> None:
    """The agent keeps at most the welcome's window of batches unacked, and fills it."""
    async with FakeCollector(window=2) as fake:
        fake.hold_until_window = True
        async with Agent(section(fake.endpoint, batch_size=1, window=8), spool()) as agent:
            for n in range(20):
                await agent.send(reading(n))
            assert await agent.wait_acked(scaled(3.0))
        assert fake.window_violations == 0
        assert fake.max_unacked == 2
        assert sorted(fake.acked) == list(range(20))


async def test_own_window_caps_a_larger_welcome_window(fake: FakeCollector) -> None:
    """The agent's own window applies when it is smaller than the collector's."""
    fake.hold_until_window = True
    async with Agent(section(fake.endpoint, batch_size=1, window=3), spool()) as agent:
        for n in range(12):
            await agent.send(reading(n))
        assert await agent.wait_acked(scaled(3.0))
    assert fake.max_unacked == 3


async def test_missing_ack_drops_the_connection_and_resends(fake: FakeCollector) -> None:
    """With no ack after ack_timeout the agent reconnects and resends the batch."""
    fake.withhold_acks = True
    async with Agent(section(fake.endpoint, ack_timeout=0.2), spool()) as agent:
        await agent.send(reading(1))
        await agent.flush()
        await fake.wait_for(lambda: fake.seqs_received() == [0, 0])
        assert fake.connections == 2
        fake.withhold_acks = False
        fake.release()
        assert await agent.wait_acked(scaled(2.0))


async def test_heartbeat_sent_when_idle(fake: FakeCollector) -> None:
    """An idle connection carries empty frames every heartbeat_interval."""
    async with Agent(section(fake.endpoint, heartbeat_interval=0.05), spool()):
        await fake.wait_for(lambda: fake.heartbeats >= 2)


async def test_collector_error_then_reconnect(fake: FakeCollector) -> None:
    """An error message closes the connection; the agent reconnects and delivers."""
    fake.error_on_hello = "unauthorized"
    async with Agent(section(fake.endpoint, token="s3cret"), spool()) as agent:
        await agent.send(reading(1))
        assert await agent.wait_acked(scaled(3.0))
    assert len(fake.hellos) == 2
    assert fake.hellos[0].token == "s3cret"


async def test_rejected_readings_counted_in_the_ledger(fake: FakeCollector) -> None:
    """Readings the collector rejects are counted as rejected, not acked, and never resent."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    async with Agent(section(fake.endpoint), spool()) as agent:
        await agent.send(reading(1))
        await agent.send(reading(2, ts=future))
        await agent.send(reading(3))
        assert await agent.wait_acked(scaled(3.0))
        ledger = agent.ledger
    assert (ledger.acked, ledger.rejected, ledger.produced) == (2, 1, 3)
    assert ledger.balanced
    assert fake.seqs_received() == [0]


async def test_invalid_dict_raises_to_the_caller(fake: FakeCollector) -> None:
    """A reading dict that fails local validation raises ValidationError and is not counted."""
    async with Agent(section(fake.endpoint), spool()) as agent:
        with pytest.raises(ValidationError):
            await agent.send({"sensor": "x", "value": "41"})
        assert agent.ledger.produced == 0


async def test_spool_full_drops_oldest_and_ledger_balances() -> None:
    """Without a collector a full spool drops its oldest readings, counted in the ledger."""
    agent = Agent(
        section(unused_endpoint(), batch_size=5, shutdown_timeout=0.1), MemorySpool(10, first_seq=0)
    )
    async with agent:
        for n in range(32):
            await agent.send(reading(n))
        ledger = agent.ledger
        assert (ledger.dropped, ledger.pending, ledger.produced) == (20, 12, 32)
        assert ledger.balanced
        assert [b.seq for b in agent.spool.pending()] == [4, 5]
        assert not await agent.wait_acked(0.05)
    assert agent.ledger.balanced


async def test_ledger_balances_under_random_faults() -> None:
    """Through drops, nacks and rejections, produced = acked + rejected + dropped + pending."""
    rng = random.Random(7)
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    async with FakeCollector(window=3) as fake:
        fake.nack = {2: 20, 5: 10}
        fake.drop_after_batches = 4
        fake.hold_until_window = True
        async with Agent(
            section(fake.endpoint, batch_size=4), MemorySpool(1000, first_seq=0), rng=rng
        ) as agent:
            for n in range(57):
                extra = {"ts": future} if n % 10 == 0 else {}
                await agent.send(reading(n, **extra))
                assert agent.ledger.balanced
            assert await agent.wait_acked(scaled(3.0))
            ledger = agent.ledger
    assert ledger.balanced
    assert (ledger.acked, ledger.rejected, ledger.pending) == (51, 6, 0)
    assert fake.window_violations == 0


async def test_closing_an_agent_logs_the_drops_its_own_spool_still_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full spool holds drops for its next ``readings_dropped`` event; an agent that made
    its spool closes it, so the events add up to every reading dropped."""
    monkeypatch.setattr(agent_module, "SpoolConfig", lambda: SpoolConfig(max_readings=3))
    agent = Agent(AgentSection(id="a", endpoints=[unused_endpoint()], batch_size=3))
    with capture_logs() as logs:
        for n in range(9):  # three batches of 3 into a spool of 3: two are dropped
            await agent.send(reading(n))
        await agent.close(0)
    dropped = [e["readings"] for e in logs if e["event"] == "readings_dropped"]
    assert dropped == [3, 3]  # the first at once, the second, a moment later, at close
    assert agent.ledger.dropped == 6
