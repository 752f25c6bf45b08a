"""run_agent and send_once end to end: sources, exit codes, signals, stdin in a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from typing import Any

import pytest

from telemetry.agent import SendError, run_agent, send_once
from telemetry.config import AgentConfig, AgentSection
from tests.integration.fake_collector import FakeCollector, reading, scaled, unused_endpoint


def config(*endpoints: str, sources: list[dict[str, Any]], **agent: Any) -> AgentConfig:
    """An agent config with short timers and the given sources."""
    settings: dict[str, Any] = {
        "id": "run-agent",
        "endpoints": list(endpoints),
        "flush_interval": 0.05,
        "reconnect_min": 0.01,
        "reconnect_max": 0.05,
        "shutdown_timeout": scaled(3.0),
        **agent,
    }
    return AgentConfig(agent=settings, sources=sources)


async def test_simulated_count_reached_exits_0_after_acks() -> None:
    """A simulated source with a count ends the agent, which returns 0 once all is acked."""
    async with FakeCollector() as fake:
        source = {
            "type": "simulated",
            "sensors": 3,
            "interval": 0.01,
            "count": 7,
            "tags": {"k": "v"},
        }
        code = await run_agent(config(fake.endpoint, sources=[source]))
        assert code == 0
        assert fake.readings_received() == 7
        names = {r["sensor"] for b in fake.batches for r in b.readings}
        assert names == {"run-agent/sim-1", "run-agent/sim-2", "run-agent/sim-3"}
        assert all(r["tags"] == {"k": "v"} for b in fake.batches for r in b.readings)


async def test_unreachable_collector_returns_1_after_shutdown_timeout() -> None:
    """With no collector reachable at exit the agent gives up after shutdown_timeout: code 1."""
    source = {"type": "simulated", "interval": 0.01, "count": 5}
    started = time.monotonic()
    code = await run_agent(config(unused_endpoint(), sources=[source], shutdown_timeout=0.3))
    elapsed = time.monotonic() - started
    assert code == 1
    assert 0.3 <= elapsed < scaled(2.0)


async def test_no_sources_returns_2() -> None:
    """An agent config without sources is refused with exit code 2."""
    assert await run_agent(AgentConfig(agent=AgentSection(id="x"), sources=[])) == 2


async def test_sigterm_stops_cleanly_with_0() -> None:
    """SIGTERM stops an endless source, flushes, waits for the acks and returns 0."""
    async with FakeCollector() as fake:
        source = {"type": "simulated", "sensors": 2, "interval": 0.01}
        task = asyncio.create_task(run_agent(config(fake.endpoint, sources=[source])))
        await fake.wait_for(lambda: len(fake.acked) >= 2)
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(task, scaled(3.0)) == 0
        assert fake.readings_received() >= 4


_STDIN_AGENT = textwrap.dedent(
    """
    import asyncio, sys
    from telemetry.agent import run_agent
    from telemetry.config import AgentConfig
    from telemetry.log import configure_logging
    configure_logging("info", "json")
    config = AgentConfig(
        agent={"id": "stdin-agent", "endpoints": [sys.argv[1]], "flush_interval": 0.05},
        sources=[{"type": "stdin", "tags": {"via": "stdin"}}],
    )
    sys.exit(asyncio.run(run_agent(config)))
    """
)


@pytest.mark.slow
async def test_stdin_eof_exits_0_after_acks() -> None:
    """JSON lines piped to stdin are delivered; a bad line is skipped; EOF exits 0 after acks."""
    lines = [
        b'{"sensor": "a", "value": 1}',
        b"not json",
        b'{"sensor": "b", "value": 2, "tags": {"via": "own"}}',
        b"",
        b'{"sensor": "c", "value": "three"}',
        b'{"sensor": "d", "value": 4}',
    ]
    async with FakeCollector() as fake:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _STDIN_AGENT,
            fake.endpoint,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(
            proc.communicate(b"\n".join(lines) + b"\n"), scaled(10.0)
        )
        assert proc.returncode == 0, stderr.decode()
        readings = [r for b in fake.batches for r in b.readings]
        assert [r["sensor"] for r in readings] == ["a", "b", "d"]
        assert [r["tags"]["via"] for r in readings] == ["stdin", "own", "stdin"]
        log = stderr.decode()
        assert log.count("stdin_bad_line") == 2
        assert '"line": 2' in log
        assert '"line": 5' in log


async def test_send_once_returns_the_ack() -> None:
    """send_once delivers one batch and returns its ack, with rejected readings listed."""
    async with FakeCollector() as fake:
        section = AgentSection(id="cli", endpoints=[unused_endpoint(), fake.endpoint])
        ack = await send_once(section, [reading(1), {"sensor": "x"}], timeout=scaled(2.0))
        assert ack.accepted == 1
        assert [r.index for r in ack.rejected] == [1]
        assert fake.seqs_received() == [ack.seq]


async def test_send_once_unreachable_raises() -> None:
    """send_once raises SendError naming the endpoints when none is reachable."""
    endpoint = unused_endpoint()
    section = AgentSection(id="cli", endpoints=[endpoint])
    with pytest.raises(SendError, match="no collector reachable"):
        await send_once(section, [reading(1)], timeout=scaled(2.0))


async def test_send_once_collector_error_raises() -> None:
    """send_once raises SendError with the collector's error code."""
    async with FakeCollector() as fake:
        fake.error_on_hello = "unauthorized"
        section = AgentSection(id="cli", endpoints=[fake.endpoint])
        with pytest.raises(SendError, match="unauthorized"):
            await send_once(section, [reading(1)], timeout=scaled(2.0))


async def test_send_once_times_out_without_ack() -> None:
    """send_once raises SendError when no ack comes within the timeout."""
    async with FakeCollector() as fake:
        fake.withhold_acks = True
        section = AgentSection(id="cli", endpoints=[fake.endpoint])
        with pytest.raises(SendError, match="no ack within"):
            await send_once(section, [reading(1)], timeout=0.2)


async def test_second_signal_stops_waiting_for_acks() -> None:
    """A second SIGTERM ends the wait for acks at once: exit code 1, long before the timeout."""
    source = {"type": "simulated", "interval": 0.01}
    cfg = config(unused_endpoint(), sources=[source], shutdown_timeout=30.0)
    task = asyncio.create_task(run_agent(cfg))
    await asyncio.sleep(0.1)  # let the source produce a few readings
    started = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, scaled(3.0)) == 1
    assert time.monotonic() - started < scaled(2.0)
