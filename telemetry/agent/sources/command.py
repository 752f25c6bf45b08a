"""The ``command`` source: a command run every ``interval`` seconds, its output parsed.

The command runs without a shell (an argv list; a string is split with :mod:`shlex`) unless
``shell = true``, with standard input from ``/dev/null``, in its own session (process group),
so that a Ctrl-C meant for the agent does not reach it and a timeout can kill it together
with its children. It fails the sample when it exits non-zero, runs past ``timeout`` (killed
with SIGKILL), or prints more than ``max_output`` bytes. The first line of its standard error
is part of the logged reason.

``parse = "number"``: the output (or the first group of ``pattern``) is one number, then
``value = number * scale + offset``. ``parse = "json"``: one reading object, an array of them,
or JSON lines; a reading without ``sensor`` takes the template's name, without ``ts`` the
time of the run; ``metric``, ``unit`` and ``tags`` of the config fill in what it lacks. An
invalid reading is one error of the sample; the valid ones are still sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from typing import Any

from pydantic import ValidationError

from telemetry.agent.sources.file import parse_number
from telemetry.agent.sources.polled import PolledSource, Sample, SampleError, make_reading
from telemetry.config import CommandSourceConfig
from telemetry.protocol import Reading, describe_errors, validate_reading

#: Bytes of standard error kept for the failure reason.
STDERR_KEPT = 4096


def parse_json_output(text: str) -> list[Any]:
    """Objects from one JSON value (an object or an array) or from JSON lines."""
    stripped = text.strip()
    if not stripped:
        raise SampleError("no output")
    try:
        value = json.loads(stripped)
    except RecursionError:
        raise SampleError("output nested too deeply") from None
    except json.JSONDecodeError:
        items: list[Any] = []
        for number, line in enumerate(stripped.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SampleError(f"output line {number} is not JSON: {exc.msg}") from None
            except (ValueError, RecursionError) as exc:
                raise SampleError(
                    f"output line {number} is not usable JSON: {exc!r:.100}"
                ) from None
        return items
    return value if isinstance(value, list) else [value]


async def _read_limited(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Everything ``stream`` gives until EOF; :class:`SampleError` past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(65536):
        size += len(chunk)
        if size > limit:
            raise SampleError(f"output longer than max_output {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _drain_keep_head(stream: asyncio.StreamReader, keep: int) -> bytes:
    """Read ``stream`` to EOF (so the child never blocks on it), keeping its first bytes."""
    head = bytearray()
    while chunk := await stream.read(65536):
        if len(head) < keep:
            head += chunk[: keep - len(head)]
    return bytes(head)


def _first_line(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text.splitlines()[0][:200] if text else ""


class CommandSource(PolledSource):
    """Runs ``config.command`` every ``interval`` seconds and turns its output into readings."""

    def __init__(
        self, config: CommandSourceConfig, agent_id: str, *, name: str = "command"
    ) -> None:
        super().__init__(config, agent_id, name=name)
        self.config = config
        self.argv = config.argv
        program = os.path.basename(self.argv[0]) if self.argv else "command"
        if config.shell:
            program = "sh"
        self.sensor = self.sensor_name(config.sensor, name=program)
        self._pattern = re.compile(config.pattern) if config.pattern else None

    async def sample(self) -> Sample:
        ts = time.time()
        output = (await self.run_command()).decode("utf-8", "replace")
        if self.config.parse == "json":
            return self.json_readings(output, ts)
        return Sample(readings=[self.number_reading(output, ts)])

    async def run_command(self) -> bytes:
        """Run the command once; its standard output, or :class:`SampleError`.

        Whatever ends the run early (the timeout, too much output, the agent stopping)
        kills the command's whole process group.
        """
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise SampleError(f"cannot run {self.argv[0]}: {exc.strerror or exc}") from None
        assert proc.stdout is not None
        assert proc.stderr is not None
        stderr = asyncio.ensure_future(_drain_keep_head(proc.stderr, STDERR_KEPT))
        try:
            stdout = await _read_limited(proc.stdout, self.config.max_output)
            returncode = await proc.wait()
            errors = await stderr
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            stderr.cancel()
        if returncode != 0:
            how = f"killed by signal {-returncode}" if returncode < 0 else f"exited {returncode}"
            detail = _first_line(errors)
            raise SampleError(f"{self.argv[0]} {how}" + (f": {detail}" if detail else ""))
        return stdout

    def number_reading(self, output: str, ts: float) -> Reading:
        """The reading of ``parse = "number"``."""
        text = output
        if self._pattern is not None:
            match = self._pattern.search(output)
            if match is None:
                raise SampleError(f"pattern {self._pattern.pattern!r} does not match the output")
            text = match.group(1) if match.groups() else match.group(0)
        value = parse_number(text) * self.config.scale + self.config.offset
        return make_reading(
            self.sensor, value, ts, metric=self.config.metric, unit=self.config.unit, tags=self.tags
        )

    def json_readings(self, output: str, ts: float) -> Sample:
        """The readings of ``parse = "json"``; each invalid one is an error of the sample."""
        sample = Sample()
        for index, item in enumerate(parse_json_output(output)):
            if not isinstance(item, dict):
                sample.errors.append(f"reading {index}: not a JSON object")
                continue
            data: dict[str, Any] = {"sensor": self.sensor, "ts": ts, **item}
            for key in ("metric", "unit"):
                if getattr(self.config, key) and key not in item:
                    data[key] = getattr(self.config, key)
            own = item.get("tags", {})
            if self.tags and isinstance(own, dict):
                data["tags"] = {**self.tags, **own}
            try:
                sample.readings.append(validate_reading(data))
            except ValidationError as exc:
                sample.errors.append(f"reading {index}: " + "; ".join(describe_errors(exc)))
        return sample
