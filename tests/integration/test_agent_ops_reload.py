"""SIGHUP on a real agent process: sources reloaded, connection and spool untouched."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from telemetry.agent.reload import SourceSet
from telemetry.agent.sources import build_source
from telemetry.config import SourceConfig
from tests.integration.fake_collector import FakeCollector, scaled

pytestmark = pytest.mark.slow


def agent_toml(endpoint: str, spool: Path, *sources: str, extra_agent: str = "") -> str:
    """An agent config with fast timers, a disk spool and the given [[sources]] tables."""
    return (
        f'[agent]\nid = "hup"\nendpoints = ["{endpoint}"]\nflush_interval = 0.05\n'
        f"reconnect_min = 0.01\nreconnect_max = 0.1\nledger_interval = 0\n{extra_agent}\n"
        f'[spool]\npath = "{spool}"\n\n[log]\nformat = "json"\n\n' + "\n".join(sources)
    )


def simulated(prefix: str, interval: float = 0.02) -> str:
    return (
        f'[[sources]]\ntype = "simulated"\nsensors = 2\nsensor = "{prefix}-{{n}}"\n'
        f"interval = {interval}\n"
    )


class AgentProcess:
    """``telemetry agent --config FILE`` in a subprocess, its JSON log events collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, config: Path) -> AgentProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "telemetry.cli",
            "agent",
            "--config",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            text = line.decode(errors="replace").strip()
            self.raw.append(text)
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(text))
            self._changed.set()

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    async def wait_event(self, event: str, count: int = 1, timeout: float = 10.0) -> dict[str, Any]:
        """The ``count``-th log event named ``event``; fail after ``timeout`` (scaled)."""
        try:
            async with asyncio.timeout(scaled(timeout)):
                while len(self.named(event)) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"no {event} in:\n" + "\n".join(self.raw[-30:])) from None
        return self.named(event)[count - 1]

    async def stop(self) -> int:
        """SIGTERM, then the exit code (the log read to its end)."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), scaled(15.0))
        await self._reader
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self._reader


def sensors(fake: FakeCollector, since: int = 0) -> set[str]:
    return {r["sensor"] for b in fake.batches[since:] for r in b.readings}


def assert_exactly_once(fake: FakeCollector, ledger: dict[str, Any]) -> None:
    """Every reading the agent produced arrived once: no batch (seq) twice, and as many
    readings as the agent produced and had acked."""
    seqs = Counter(fake.seqs_received())
    assert max(seqs.values()) == 1
    assert ledger["produced"] == ledger["acked"] == fake.readings_received()
    assert ledger["dropped"] == ledger["pending"] == 0


async def test_sighup_restarts_only_the_changed_source_on_the_same_connection(
    tmp_path: Path,
) -> None:
    """A changed source restarts, an unchanged one keeps running, the connection stays, and
    every reading arrives exactly once."""
    config = tmp_path / "agent.toml"
    spool = tmp_path / "spool.db"
    async with FakeCollector() as fake:
        config.write_text(agent_toml(fake.endpoint, spool, simulated("keep"), simulated("old")))
        agent = await AgentProcess.start(config)
        try:
            await fake.wait_for(lambda: {"keep-1", "old-1"} <= sensors(fake), 10.0)
            config.write_text(agent_toml(fake.endpoint, spool, simulated("keep"), simulated("new")))
            agent.proc.send_signal(signal.SIGHUP)
            reloaded = await agent.wait_event("config_reloaded")
            assert reloaded["kept"] == ["simulated-0"]
            assert reloaded["stopped"] == ["simulated-1"]
            assert reloaded["started"] == ["simulated-1"]
            mark = len(fake.batches)
            await fake.wait_for(lambda: {"keep-1", "new-1"} <= sensors(fake, mark), 10.0)
            await asyncio.sleep(0.2)
            assert "old-1" not in sensors(fake, len(fake.batches))
            assert await agent.stop() == 0
        finally:
            await agent.kill()
        assert fake.connections == 1
        assert len(fake.hellos) == 1
        assert not agent.named("needs_restart")
        assert_exactly_once(fake, agent.named("agent_stopped")[0])


async def test_an_invalid_config_is_refused_and_the_old_one_kept(tmp_path: Path) -> None:
    """Broken TOML, then a config without sources: each reload is refused in one log line and
    the running sources go on; a changed endpoint is reported as needing a restart."""
    config = tmp_path / "agent.toml"
    spool = tmp_path / "spool.db"
    async with FakeCollector() as fake:
        config.write_text(agent_toml(fake.endpoint, spool, simulated("run")))
        agent = await AgentProcess.start(config)
        try:
            await fake.wait_for(lambda: "run-1" in sensors(fake), 10.0)
            config.write_text("[agent\nid = ")
            agent.proc.send_signal(signal.SIGHUP)
            refused = await agent.wait_event("reload_refused")
            assert "not valid TOML" in refused["error"]
            config.write_text(agent_toml(fake.endpoint, spool))
            agent.proc.send_signal(signal.SIGHUP)
            refused = await agent.wait_event("reload_refused", 2)
            assert "no [[sources]]" in refused["error"]
            config.write_text(
                agent_toml("127.0.0.1:1", spool, simulated("run"), extra_agent='token = "t0p"')
            )
            agent.proc.send_signal(signal.SIGHUP)
            restart = await agent.wait_event("needs_restart")
            assert restart["keys"] == ["agent.endpoints", "agent.token"]
            mark = len(fake.batches)
            await fake.wait_for(lambda: "run-1" in sensors(fake, mark), 10.0)
            assert await agent.stop() == 0
        finally:
            await agent.kill()
        assert fake.connections == 1
        assert not agent.named("config_reloaded")[0]["started"]
        assert all("t0p" not in line for line in agent.raw)
        assert_exactly_once(fake, agent.named("agent_stopped")[0])


async def test_the_log_level_applies_at_once(tmp_path: Path) -> None:
    """[log] level changes without a restart: after a reload to "warning", info events stop."""
    config = tmp_path / "agent.toml"
    spool = tmp_path / "spool.db"
    async with FakeCollector() as fake:
        config.write_text(agent_toml(fake.endpoint, spool, simulated("lvl")))
        agent = await AgentProcess.start(config)
        try:
            await fake.wait_for(lambda: "lvl-1" in sensors(fake), 10.0)
            quiet = agent_toml(fake.endpoint, spool, simulated("lvl"))
            config.write_text(quiet.replace("[log]\n", '[log]\nlevel = "warning"\n'))
            agent.proc.send_signal(signal.SIGHUP)
            await agent.wait_event("config_reloaded")
            assert await agent.stop() == 0
        finally:
            await agent.kill()
        after = agent.events[agent.events.index(agent.named("config_reloaded")[0]) + 1 :]
        assert not agent.named("needs_restart")
        assert [e for e in after if e.get("level") == "info"] == []
        assert agent.named("stop_requested") == []


class Collect:
    """A reading sink that keeps what it is given (bounded by the test's short run)."""

    def __init__(self) -> None:
        self.readings: list[Any] = []

    async def send(self, reading: Any) -> None:
        self.readings.append(reading)


class Crashing:
    """A source that hands over one reading, then fails."""

    name = "crashing"
    finite = False

    async def run(self, sink: Any) -> None:
        await sink.send({"sensor": "crash", "value": 1})
        raise RuntimeError("boom")


def source_configs(*entries: dict[str, Any]) -> list[SourceConfig]:
    return TypeAdapter(list[SourceConfig]).validate_python(list(entries))


async def test_source_counters_only_grow_across_restarts() -> None:
    """A source restarted by a reload keeps its name and its counters add up; a stopped
    one's stay; a source that ends on an exception is counted as crashed and kept."""
    sink = Collect()
    sources = SourceSet(sink, "c")
    first = source_configs(
        {"type": "simulated", "sensors": 1, "interval": 0.01},
        {"type": "simulated", "sensors": 1, "interval": 0.01, "sensor": "gone"},
    )
    built = [build_source(c, "c", i) for i, c in enumerate(first)]
    sources.start([*built, Crashing()], [*first, None])
    await asyncio.sleep(0.1)
    before = sources.counters()
    assert before["simulated-0"].readings > 0
    assert before["crashing"].crashed == 1
    done = sources.reload(source_configs({"type": "simulated", "sensors": 1, "interval": 0.02}))
    assert done.kept == []
    assert done.stopped == ["simulated-0", "simulated-1"]
    assert done.started == ["simulated-0"]
    await asyncio.sleep(0.1)
    after = sources.counters()
    assert after["simulated-0"].readings > before["simulated-0"].readings
    assert after["simulated-1"].readings >= before["simulated-1"].readings > 0
    assert after["crashing"].crashed == 1
    assert sources.running_names == ["simulated-0"]
    simulated = sum(c.readings for name, c in after.items() if name != "crashing")
    assert simulated == len(sink.readings) - 1
    await sources.close()
