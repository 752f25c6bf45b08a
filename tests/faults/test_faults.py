"""Nothing lost: real collector and agent processes under injected faults.

Each test runs 3 agents feeding 50,000 readings in all, injects one kind of fault while they
stream, and then checks the SQLite sink by reading id (every reading exactly once, in order,
no seq gap) and each agent's ledger (all acked, nothing dropped or pending). Random choices
come from ``TELEMETRY_FAULT_SEED`` (printed on failure).
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from telemetry.agent.disk_spool import DiskSpool
from tests.faults.chaos_proxy import ChaosProxy
from tests.faults.harness import (
    AGENTS,
    READINGS,
    SEED,
    Agent,
    Collector,
    check_delivery,
    check_ledger,
    events,
    split,
    wait_until,
)

pytestmark = pytest.mark.slow

Process = Agent | Collector | ChaosProxy


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Everything a test starts, killed at the end whatever happened; prints the seed."""
    print(f"fault seed: {SEED} (replay with TELEMETRY_FAULT_SEED={SEED})")
    started: list[Process] = []
    yield started
    for process in started:
        if isinstance(process, ChaosProxy):
            process.stop()
        else:
            process.cleanup()


def start_agents(
    tmp_path: Path, endpoints: list[list[str]], processes: list[Process], **options: float
) -> list[Agent]:
    agents = [
        Agent(tmp_path, n, endpoints[n], count, **options)
        for n, count in enumerate(split(READINGS, AGENTS))
    ]
    processes.extend(agents)
    for agent in agents:
        agent.start()
    return agents


def finish(agents: list[Agent], collectors: list[Collector]) -> None:
    """Every agent exits 0 (all acked after stdin EOF); every collector drains with exit 0."""
    for agent in agents:
        assert agent.wait() == 0, f"{agent.id} (seed {SEED}):\n{agent.log.read_text()[-3000:]}"
    for collector in collectors:
        assert collector.terminate() == 0, collector.log.read_text()[-3000:]


def test_collector_sigkilled_three_times_loses_nothing(
    tmp_path: Path, processes: list[Process]
) -> None:
    """A collector SIGKILLed mid-stream three times and restarted: every reading stored once."""
    rng = random.Random(SEED)
    # The sink holds each write up to 0.3 s to fill it, so batches wait unacked for a while
    # and every kill has batches in flight to lose (a fast collector would rarely have any).
    collector = Collector(tmp_path, sink_extra="flush_interval = 0.3").start()
    processes.append(collector)
    agents = start_agents(tmp_path, [[collector.endpoint]] * AGENTS, processes)
    for kill in range(1, 4):
        threshold = kill * READINGS // 5
        wait_until(lambda t=threshold: collector.count() >= t, 60, f"{threshold} rows")
        collector.kill()
        assert collector.count() < READINGS, "the stream ended before the kill"
        time.sleep(rng.uniform(0.1, 1.0))
        collector.start()
    finish(agents, [collector])
    check_delivery([collector.db], agents)
    resent = 0
    for agent in agents:
        resent += check_ledger(agent)["batches_resent"]
        assert len(events(agent.log, "connected")) >= 2, f"{agent.id} never reconnected"
    assert resent > 0, "no kill ever caught a batch in flight"
    assert collector.starts == 4


def test_proxy_cutting_stalling_and_delaying_connections_loses_nothing(
    tmp_path: Path, processes: list[Process]
) -> None:
    """Connections cut inside headers and payloads, stalled and delayed: every reading once."""
    collector = Collector(tmp_path).start()
    processes.append(collector)
    proxy = ChaosProxy(collector.port, SEED).start()
    processes.append(proxy)
    endpoint = f"127.0.0.1:{proxy.port}"
    agents = start_agents(tmp_path, [[endpoint]] * AGENTS, processes, ack_timeout=2.0)
    wait_until(lambda: collector.count() >= READINGS * 0.8, 120, "80% of the readings")
    proxy.calm()  # let the end of the run through, so the test ends
    finish(agents, [collector])
    check_delivery([collector.db], agents)
    for agent in agents:
        check_ledger(agent)
    stats = dict(proxy.stats)
    for kind in ("cut_header", "cut_payload", "cut_reply", "stall", "delay"):
        assert stats.get(kind, 0) >= 1, f"no {kind} happened: {stats} (seed {SEED})"
    resent = sum(agent.final_ledger()["batches_resent"] for agent in agents)
    assert resent > 0, "no fault ever caused a resend"


def test_sink_locked_for_ten_seconds_nacks_then_recovers(
    tmp_path: Path, processes: list[Process]
) -> None:
    """The SQLite sink locked for 10 s: batches are nacked and resent, every reading once."""
    # retry_deadline below the outage, so the pipeline gives up and nacks within it.
    collector = Collector(tmp_path, sink_extra="retry_deadline = 3").start()
    processes.append(collector)
    agents = start_agents(tmp_path, [[collector.endpoint]] * AGENTS, processes, ack_timeout=30.0)
    wait_until(lambda: collector.count() >= READINGS // 5, 60, "a fifth of the readings")
    lock = sqlite3.connect(collector.db, timeout=30, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        stored = collector.count()
        time.sleep(10)
        assert collector.count() == stored, "the sink wrote through the lock"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert stored < READINGS, "the stream ended before the outage"
    finish(agents, [collector])
    check_delivery([collector.db], agents)
    for agent in agents:
        check_ledger(agent)
    nacks = sum(len(events(agent.log, "batch_nacked")) for agent in agents)
    assert nacks > 0, "no agent saw a nack during the outage"


def test_agent_sigkilled_and_restarted_loses_nothing_spooled(
    tmp_path: Path, processes: list[Process]
) -> None:
    """An agent SIGKILLed with batches unacked resends them from its disk spool on restart."""
    collector = Collector(tmp_path).start()
    processes.append(collector)
    proxy = ChaosProxy(collector.port, SEED).start()  # a clean pipe that can hold acks
    proxy.calm()
    processes.append(proxy)
    endpoints = [[f"127.0.0.1:{proxy.port}"]] + [[collector.endpoint]] * (AGENTS - 1)
    agents = start_agents(tmp_path, endpoints, processes)
    victim = agents[0]
    wait_until(lambda: collector.count(victim.id) >= 4000, 60, f"4000 rows of {victim.id}")
    proxy.hold_replies(True)  # the collector keeps storing, the agent hears no acks
    time.sleep(0.5)
    victim.kill()
    proxy.hold_replies(False)

    # What the killed agent made durable: acked (in the sink) or spooled (in the file).
    spool = DiskSpool(victim.spool)
    try:
        held = [int(r["value"]) for batch in spool.pending() for r in batch.readings]
        next_seq = spool.next_seq
    finally:
        spool.close()
    db = sqlite3.connect(collector.db)
    try:
        acked = [
            int(value)
            for (value,) in db.execute("SELECT value FROM readings WHERE agent = ?", (victim.id,))
        ]
    finally:
        db.close()
    assert held, "the kill found nothing unacked in the spool"
    assert set(held) & set(acked), "no batch was both stored and unacked at the kill"
    durable = set(held) | set(acked)
    prefix = len(durable)
    assert durable == set(victim.values[:prefix]), "the spool lost a reading it had taken"
    assert prefix < len(victim.values), "the stream ended before the kill"

    # The source resumes after what was durable (the open batch died with the process).
    victim.start(victim.values[prefix:])
    finish(agents, [collector])
    check_delivery([collector.db], agents)
    for agent in agents:
        check_ledger(agent)
    restarted = [e for e in events(victim.log, "spool_opened") if e["batches"] > 0]
    assert restarted, "the restarted agent did not find its spool"
    assert restarted[-1]["next_seq"] == next_seq


def test_collector_drain_moves_agents_to_the_second_endpoint(
    tmp_path: Path, processes: list[Process]
) -> None:
    """SIGTERM drains the first collector; agents move to the second; every reading once."""
    first = Collector(tmp_path, "collector-a").start()
    second = Collector(tmp_path, "collector-b").start()
    processes.extend([first, second])
    agents = start_agents(tmp_path, [[first.endpoint, second.endpoint]] * AGENTS, processes)
    wait_until(lambda: first.count() >= READINGS // 3, 60, "a third of the readings")
    assert first.terminate() == 0, first.log.read_text()[-3000:]
    assert first.count() < READINGS, "the stream ended before the drain"
    finish(agents, [second])
    per_db = check_delivery([first.db, second.db], agents)
    for agent in agents:
        check_ledger(agent)
        assert per_db[agent.id].get(first.db.name, 0) > 0, f"{agent.id} never used collector-a"
        assert per_db[agent.id].get(second.db.name, 0) > 0, f"{agent.id} did not move"
        assert events(agent.log, "goaway_received"), f"{agent.id} got no goaway"
    assert events(first.log, "drain_started")
