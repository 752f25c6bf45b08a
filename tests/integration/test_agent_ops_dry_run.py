"""``telemetry agent --test`` as an operator runs it: readings on stdout, nothing sent."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.integration.fake_collector import FakeCollector, scaled

pytestmark = pytest.mark.slow


async def dry_run(*args: str, stdin: bytes = b"") -> tuple[int, list[str], str]:
    """``telemetry agent --test ARGS``: (exit code, stdout lines, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telemetry.cli",
        "agent",
        "--test",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), scaled(20.0))
    assert proc.returncode is not None
    return proc.returncode, out.decode().splitlines(), err.decode()


async def test_one_round_of_every_source_and_no_collector_or_spool(tmp_path: Path) -> None:
    """Simulated, file and command sources each print one round as wire JSON; the collector
    sees no connection and the spool file is never created."""
    (tmp_path / "zone0").mkdir()
    (tmp_path / "zone0" / "temp").write_text("41250\n")
    spool = tmp_path / "spool.db"
    config = tmp_path / "agent.toml"
    async with FakeCollector() as fake:
        config.write_text(
            f'[agent]\nid = "dry"\nendpoints = ["{fake.endpoint}"]\n'
            f'[spool]\npath = "{spool}"\n[log]\nformat = "json"\n'
            '[[sources]]\ntype = "simulated"\nsensors = 2\nsensor = "sim-{n}"\n'
            f'[[sources]]\ntype = "file"\npath = "{tmp_path}/*/temp"\nscale = 0.001\nunit = "°C"\n'
            '[[sources]]\ntype = "command"\ncommand = ["echo", "t=7.5"]\n'
            'pattern = "t=([0-9.]+)"\nsensor = "cmd"\n'
        )
        code, lines, err = await dry_run("--config", str(config))
        assert code == 0, err
        assert fake.connections == 0
    assert not spool.exists()
    readings = [json.loads(line) for line in lines]
    assert [r["sensor"] for r in readings] == ["sim-1", "sim-2", "dry/zone0", "cmd"]
    assert readings[2]["value"] == pytest.approx(41.25)
    assert readings[2]["unit"] == "°C"
    assert readings[3]["value"] == 7.5
    assert all("ts" in r for r in readings)
    assert '"test_round_done"' in err


async def test_stdin_lines_up_to_eof_with_bad_lines_on_stderr() -> None:
    """--source stdin prints each valid line's reading; a bad one is logged on stderr only."""
    code, lines, err = await dry_run(
        "--source", "stdin", stdin=b'{"sensor": "a", "value": 1}\nnot json\n{"sensor": "b"}\n'
    )
    assert code == 0
    assert [json.loads(line) for line in lines] == [{"sensor": "a", "value": 1.0}]
    assert err.count("stdin_bad_line") == 2


async def test_source_flags_without_a_config() -> None:
    """--source simulated alone: one reading for each of its three default sensors."""
    code, lines, _ = await dry_run("--source", "simulated", "--id", "x")
    assert code == 0
    assert [json.loads(line)["sensor"] for line in lines] == ["x/sim-1", "x/sim-2", "x/sim-3"]


async def test_a_failing_source_exits_1(tmp_path: Path) -> None:
    """A file source reading nothing makes the round fail: exit 1, the reason on stderr."""
    config = tmp_path / "agent.toml"
    config.write_text('[[sources]]\ntype = "file"\npath = "/nonexistent/telemetry-x"\n')
    code, lines, err = await dry_run("--config", str(config))
    assert code == 1
    assert lines == []
    assert "source_sample_failed" in err


async def test_a_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    """An invalid config: exit 2, one line naming the key, no traceback, nothing on stdout."""
    config = tmp_path / "agent.toml"
    config.write_text('[[sources]]\ntype = "simulated"\nsensors = 0\n')
    code, lines, err = await dry_run("--config", str(config))
    assert code == 2
    assert lines == []
    assert "sources.0.simulated.sensors" in err
    assert "Traceback" not in err
