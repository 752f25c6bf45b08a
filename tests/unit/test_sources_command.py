"""The command source: numbers, patterns, JSON output, exit codes, timeouts that kill."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from telemetry.agent.sources.command import CommandSource, parse_json_output
from telemetry.agent.sources.polled import SampleError
from telemetry.config import CommandSourceConfig


def source(command: list[str] | str, **options: Any) -> CommandSource:
    """A command source for agent ``pi``."""
    return CommandSource(CommandSourceConfig(type="command", command=command, **options), "pi")


def test_parse_json_output_object_array_and_lines() -> None:
    """One object, an array, and JSON lines all give a list of objects."""
    assert parse_json_output('{"value": 1}') == [{"value": 1}]
    assert parse_json_output('[{"value": 1}, {"value": 2}]') == [{"value": 1}, {"value": 2}]
    assert parse_json_output('{"value": 1}\n\n{"value": 2}\n') == [{"value": 1}, {"value": 2}]
    with pytest.raises(SampleError, match="line 2 is not JSON"):
        parse_json_output('{"value": 1}\nnope\n')
    with pytest.raises(SampleError, match="no output"):
        parse_json_output("  \n")


async def test_number_with_scale_offset_and_name() -> None:
    """The output number is scaled and offset; the sensor is named after the program."""
    src = source(["echo", "2500"], scale=0.01, offset=1, unit="V", metric="voltage")
    [reading] = (await src.sample_once()).readings
    assert (reading.sensor, reading.value, reading.unit, reading.metric) == (
        "pi/echo",
        26,
        "V",
        "voltage",
    )


async def test_pattern_and_shell() -> None:
    """With shell = true a string runs through sh; pattern's group picks the number."""
    src = source(
        'echo "temp=48.3\'C" | cat', shell=True, pattern=r"temp=([\d.]+)", sensor="{agent}/soc"
    )
    [reading] = (await src.sample_once()).readings
    assert (reading.sensor, reading.value) == ("pi/soc", 48.3)


async def test_without_shell_a_string_is_split_not_interpreted() -> None:
    """Without shell, shell syntax in a string is passed as arguments, not run."""
    src = source("echo 5 ; echo 6")
    sample = await src.sample_once()
    assert sample.readings == []
    assert "not a number: '5 ; echo 6'" in sample.errors[0]


async def test_json_readings_fill_in_and_bad_ones_are_errors() -> None:
    """JSON readings take the template name, time, unit and tags they lack; bad ones are errors."""
    script = (
        'import json; print(json.dumps([{"sensor": "a", "value": 1, "tags": {"k": "own"}}, '
        '{"value": 2}, {"sensor": "c", "value": "x"}, 7]))'
    )
    src = source(
        [sys.executable, "-c", script], parse="json", unit="%", tags={"k": "src", "z": "1"}
    )
    before = time.time()
    sample = await src.sample_once()
    readings = {r.sensor: r for r in sample.readings}
    assert set(readings) == {"a", "pi/python" + sys.executable.rpartition("python")[2]}
    assert readings["a"].tags == {"k": "own", "z": "1"}
    assert readings["a"].unit == "%"
    assert readings["a"].ts is not None
    assert readings["a"].ts.timestamp() >= before - 1
    assert sample.errors == [
        "reading 2: value: must be a number, not a string",
        "reading 3: not a JSON object",
    ]


async def test_nonzero_exit_is_a_failure_with_stderr() -> None:
    """A non-zero exit fails the sample; the reason has the code and stderr's first line."""
    src = source(["sh", "-c", "echo 12; echo 'sensor offline' >&2; exit 3"])
    sample = await src.sample_once()
    assert sample.readings == []
    assert sample.errors == ["sh exited 3: sensor offline"]


async def test_missing_program_is_a_failure() -> None:
    """A program that does not exist fails the sample, naming it."""
    sample = await source(["/nonexistent/sensor-tool"]).sample_once()
    assert sample.errors == ["cannot run /nonexistent/sensor-tool: No such file or directory"]


async def test_timeout_kills_the_command_and_its_children(tmp_path: Path) -> None:
    """A command past its timeout is killed with its whole process group; the sample fails."""
    pids = tmp_path / "pids"
    src = source(f"sleep 30 & echo $! > {pids}; echo $$ >> {pids}; wait", shell=True, timeout=0.3)
    started = time.monotonic()
    sample = await src.sample_once()
    assert time.monotonic() - started < 2
    assert sample.errors == ["timed out after 0.3 s"]
    assert _all_gone([int(pid) for pid in pids.read_text().split()])


def _all_gone(pids: list[int]) -> bool:
    """True once no pid runs; SIGKILL is sent, but dying takes the kernel a moment."""
    deadline = time.monotonic() + 2
    while any(map(_running, pids)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_too_much_output_is_a_failure() -> None:
    """Output beyond max_output fails the run instead of filling memory."""
    src = source([sys.executable, "-c", "print('1' * 5000)"], max_output=100)
    sample = await src.sample_once()
    assert sample.errors == ["output longer than max_output 100 bytes"]
