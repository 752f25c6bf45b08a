"""``telemetry agent --test``: one round of every source's readings, printed, nothing sent.

Like Telegraf's ``--test``: an operator sees what the configured sources produce before any
collector is involved. Each source gives one round: a ``system``, ``file`` or ``command``
source one sample (a ``system`` source with ``cpu`` or ``net`` one more, a second earlier,
which starts the rates and is not printed), a ``simulated`` source one reading per sensor
(at most its ``count``), a ``stdin`` source every line up to EOF. Each reading is printed as
one JSON line, exactly the form the agent would put in a batch (``docs/protocol.md``). No
connection is opened and no spool is touched. A failed sample is logged on stderr as in a
running agent and counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from pydantic_core import to_json

from telemetry.agent.sources import SimulatedSource, Source, StdinSource, build_source
from telemetry.agent.sources.polled import PolledSource
from telemetry.config import AgentConfig
from telemetry.log import get_logger
from telemetry.protocol import Reading, validate_reading
from telemetry.protocol.fastpath import encode_reading

log = get_logger("telemetry.agent")


def wire_json(reading: Reading | Mapping[str, Any]) -> bytes:
    """A reading as the agent puts it in a batch: compact JSON of its wire form.

    A dict is validated first (pydantic ``ValidationError``), as :meth:`Agent.send` does.
    """
    item = encode_reading(reading) if type(reading) is dict else None
    if item is not None:
        return item
    if not isinstance(reading, Reading):
        reading = validate_reading(dict(reading))
    return to_json(reading.to_wire())


class PrintSink:
    """A :class:`~telemetry.agent.sources.ReadingSink` that writes each reading as a JSON line."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        #: Readings printed so far.
        self.printed = 0

    async def send(self, reading: Reading | Mapping[str, Any]) -> None:
        self._out.write(wire_json(reading).decode() + "\n")
        self.printed += 1


async def one_round(source: Source, sink: PrintSink) -> bool:
    """Hand one round of ``source``'s readings to ``sink``; False when its sample failed."""
    if isinstance(source, PolledSource):
        if source.warmup > 0:  # the CPU and network rates: start them, then measure
            await source.sample_once()
            await asyncio.sleep(source.warmup)
        sample = await source.sample_once()  # logs a failure as a running agent would
        for reading in sample.readings:
            await sink.send(reading)
        return not sample.errors
    if isinstance(source, SimulatedSource):
        walk = source.next_readings()
        count = source.config.count
        for item in walk[:count] if count else walk:
            await sink.send(item)
        return True
    if isinstance(source, StdinSource):
        await source.run(sink)  # up to EOF; bad lines are logged and skipped
        return True
    raise TypeError(f"no test round for source {source.name!r} ({type(source).__name__})")


async def run_test_round(
    config: AgentConfig, out: TextIO, *, sources: Sequence[Source] | None = None
) -> int:
    """Print one round of the configured sources' readings to ``out``; return the exit code.

    0: every source gave its round; 1: some sample failed (logged). ``sources`` replaces the
    configured ones.
    """
    if sources is None:
        sources = [
            build_source(source, config.agent.id, index)
            for index, source in enumerate(config.sources)
        ]
    sink = PrintSink(out)
    failed = [source.name for source in sources if not await one_round(source, sink)]
    out.flush()
    log.info("test_round_done", sources=len(sources), readings=sink.printed, failed=failed)
    return 1 if failed else 0
