"""The disk spool in use: a library Agent restarted over it, and `telemetry spool status`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from telemetry.agent import Agent
from telemetry.agent.disk_spool import DiskSpool
from telemetry.config import AgentSection
from tests.integration.fake_collector import FakeCollector, reading
from tests.support import timeout

COMMAND = [sys.executable, "-m", "telemetry.cli"]


def section(endpoint: str) -> AgentSection:
    return AgentSection(
        id="restarted", endpoints=[endpoint], batch_size=5, flush_interval=0.05, ack_timeout=5
    )


async def test_restarted_library_agent_resends_its_spool_and_keeps_its_ledger(
    tmp_path: Path,
) -> None:
    """Batches unacked when an Agent stops are resent by the next one; the ledger carries on."""
    path = tmp_path / "spool.db"
    async with FakeCollector() as fake:
        fake.withhold_acks = True
        spool = DiskSpool(path)
        agent = Agent(section(fake.endpoint), spool)
        await agent.start()
        for n in range(20):
            await agent.send(reading(n))
        await fake.wait_for(lambda: len(fake.batches) >= 4)
        assert not await agent.close(0.1)
        first = agent.ledger
        spool.close()
        assert (first.produced, first.pending, first.acked) == (20, 20, 0)
        unacked = fake.seqs_received()

        fake.withhold_acks = False
        spool = DiskSpool(path)
        async with Agent(section(fake.endpoint), spool) as agent:
            assert agent.ledger.pending == 20  # found in the file
            for n in range(20, 25):
                await agent.send(reading(n))
            assert await agent.wait_acked(timeout(5))
            ledger = agent.ledger
        spool.close()
    assert ledger.balanced
    assert (ledger.produced, ledger.acked, ledger.pending) == (25, 25, 0)
    assert set(unacked) <= set(fake.acked)
    stored = {r["value"] for b in fake.batches if b.seq in fake.acked for r in b.readings}
    assert stored == {float(n) for n in range(25)}
    last_first_run = max(unacked)
    assert max(fake.acked) == last_first_run + 1, "seq did not continue from the file"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=timeout(30), check=False
    )


def test_spool_status_text_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`telemetry spool status` prints pending, bytes, dropped, next seq and the age of the
    oldest batch still held, as text or JSON."""
    path = tmp_path / "agent-spool.db"
    spool = DiskSpool(path, max_readings=6)
    real_time = time.time
    adding = real_time()
    # The batches were closed an hour, half an hour and a quarter of an hour ago; the first is
    # dropped (the spool holds 6 readings), so the oldest held is 1800 s old.
    for n, ago in enumerate((3600.0, 1800.0, 900.0)):
        monkeypatch.setattr(time, "time", lambda ago=ago: real_time() - ago)
        spool.add([reading(3 * n + i) for i in range(3)])
    monkeypatch.setattr(time, "time", real_time)
    added = real_time()
    next_seq = spool.next_seq
    config = tmp_path / "agent.toml"
    config.write_text(f'[spool]\npath = "{path}"\n')
    try:
        asking = real_time()
        text = run_cli("spool", "status", "--config", str(config))
        data = run_cli("spool", "status", "--path", str(path), "--json")
        answered = real_time()
    finally:
        spool.close()
    assert text.returncode == 0, text.stderr
    assert "pending readings:  6" in text.stdout
    assert "dropped:           3 (spool_full 3)" in text.stdout
    assert f"next seq:          {next_seq}" in text.stdout
    assert data.returncode == 0, data.stderr
    status = json.loads(data.stdout)
    assert (status["pending_batches"], status["pending_readings"]) == (2, 6)
    assert status["dropped_by_reason"] == {"spool_full": 3}
    assert status["next_seq"] == next_seq
    # Seen by the CLI at some instant of [asking, answered], of a batch added in [adding, added].
    age = status["oldest_age_seconds"]
    assert 1800 + (asking - added) - 0.001 <= age <= 1800 + (answered - adding) + 0.001


def test_spool_status_errors_are_one_line(tmp_path: Path) -> None:
    """A missing spool file or a memory-spool config is a one-line error, exit 1."""
    missing = run_cli("spool", "status", "--path", str(tmp_path / "nope.db"))
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr
    config = tmp_path / "agent.toml"
    config.write_text("[spool]\nmax_readings = 10\n")
    memory = run_cli("spool", "status", "--config", str(config))
    assert memory.returncode == 1
    assert "in memory" in memory.stderr


def test_agent_refuses_a_spool_held_by_another_agent(tmp_path: Path) -> None:
    """`telemetry agent` on a spool another process holds exits 2 with spool_unavailable."""
    path = tmp_path / "agent-spool.db"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nid = "a"\n[spool]\npath = "{path}"\n[log]\nformat = "json"\n'
        '[[sources]]\ntype = "stdin"\n'
    )
    spool = DiskSpool(path)
    try:
        result = subprocess.run(
            [*COMMAND, "agent", "--config", str(config)],
            input="",
            capture_output=True,
            text=True,
            timeout=timeout(30),
            check=False,
        )
    finally:
        spool.close()
    assert result.returncode == 2
    assert "spool_unavailable" in result.stderr
