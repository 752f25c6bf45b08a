"""Agents with the new sources against a real collector, and their clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from telemetry.agent import run_agent
from telemetry.config import AgentConfig
from tests.conftest import StartCollector
from tests.support import RecordingSink, timeout


async def _until(condition: object, seconds: float = 5.0) -> None:
    """Wait until ``condition()`` is true (the sink has no event to wait on)."""
    assert callable(condition)
    for _ in range(int(timeout(seconds) / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_file_and_command_sources_deliver_and_stop_cleanly_on_sigterm(
    start_collector: StartCollector, recording_sink: RecordingSink, tmp_path: Path
) -> None:
    """File and command readings reach the sink; SIGTERM kills a running command, exits 0."""
    collector = await start_collector(sinks=[recording_sink])
    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "temp").write_text("48312\n")
    pidfile = tmp_path / "pid"
    config = AgentConfig(
        agent={
            "id": "pi-7",
            "endpoints": [f"127.0.0.1:{collector.ingest_port}"],
            "flush_interval": 0.05,
            "shutdown_timeout": timeout(5),
        },
        sources=[
            {"type": "file", "path": str(zone / "temp"), "scale": 0.001, "unit": "°C",
             "interval": 0.05},
            {"type": "command", "command": ["echo", "12.5"], "sensor": "{agent}/echo",
             "interval": 0.05},
            {"type": "command", "command": f"echo $$ > {pidfile}; exec sleep 30", "shell": True,
             "timeout": 60, "sensor": "{agent}/slow"},
            {"type": "file", "path": str(tmp_path / "missing"), "interval": 0.05},
        ],
    )  # fmt: skip
    task = asyncio.create_task(run_agent(config))
    sensors = lambda: {r.sensor for r in recording_sink.records}  # noqa: E731
    await _until(lambda: {"pi-7/thermal_zone0", "pi-7/echo"} <= sensors() and pidfile.exists())
    child = int(pidfile.read_text())
    started = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, timeout(5)) == 0
    assert time.monotonic() - started < 2
    temps = [r.value for r in recording_sink.records if r.sensor == "pi-7/thermal_zone0"]
    assert temps[0] == 48.312
    assert "pi-7/slow" not in sensors()  # the killed command gave no reading
    await _until(lambda: not _running(child))


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_agent_command_with_system_source_and_no_config(
    start_collector: StartCollector, recording_sink: RecordingSink
) -> None:
    """`telemetry agent --source system --endpoint ... --id ...` needs no file; SIGTERM exits 0."""
    collector = await start_collector(sinks=[recording_sink])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telemetry.cli",
        "agent",
        "--source",
        "system",
        "--interval",
        "0.1",
        "--endpoint",
        f"127.0.0.1:{collector.ingest_port}",
        "--id",
        "host-9",
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "TELEMETRY_AGENT__FLUSH_INTERVAL": "0.05",
            "TELEMETRY_LOG__FORMAT": "json",
        },
    )
    try:
        await _until(lambda: "host-9/cpu" in {r.sensor for r in recording_sink.records}, 10)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout(10))
    assert proc.returncode == 0, stderr.decode()
    names = {r.sensor for r in recording_sink.records}
    assert {"host-9/load1", "host-9/memory:used", "host-9/disk:/:used"} <= names
    assert all(r.agent == "host-9" for r in recording_sink.records)
    assert b'"source_stopped"' in stderr


async def test_agent_command_without_sources_explains(tmp_path: Path) -> None:
    """`telemetry agent` with neither --source nor sources in a config exits 2 with a hint."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telemetry.cli",
        "agent",
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout(10))
    assert proc.returncode == 2
    assert b"--source system" in stderr
