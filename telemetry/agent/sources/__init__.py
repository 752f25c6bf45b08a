"""Reading sources: each one is a coroutine that produces readings and hands them to a sink.

- :class:`SimulatedSource` (:mod:`.simulated`): N sensors whose values follow a random walk,
  one reading per sensor every ``interval`` seconds; ends after ``count`` readings when
  ``count`` is set.
- :class:`StdinSource` (:mod:`.stdin`): one JSON reading per line on standard input, read
  without blocking the event loop. A bad line is logged with its number and reason and
  counted; EOF ends it.
- ``system``, ``file``, ``command``: a sample every ``interval`` seconds, in :mod:`.system`,
  :mod:`.file` and :mod:`.command`, on the loop of :mod:`.polled` (a failed sample is logged
  and counted, never fatal). They are imported only when configured.

:mod:`.base` says what a :class:`Source` and a :class:`ReadingSink` are; a sink is anything
with ``async def send(reading)``, usually an :class:`~telemetry.agent.Agent`.
:func:`build_source` builds the source one ``[[sources]]`` entry describes. The modules import
only :mod:`.base` and each other downwards (``command`` -> ``file`` -> ``polled`` -> ``base``),
never this package, so there is no import cycle.
"""

from __future__ import annotations

from telemetry.agent.sources.base import ReadingSink, Source
from telemetry.agent.sources.simulated import SimulatedSource
from telemetry.agent.sources.stdin import BadLine, StdinSource, parse_line
from telemetry.config import (
    FileSourceConfig,
    SimulatedSourceConfig,
    SourceConfig,
    StdinSourceConfig,
    SystemSourceConfig,
)

__all__ = [
    "BadLine",
    "ReadingSink",
    "SimulatedSource",
    "Source",
    "StdinSource",
    "build_source",
    "parse_line",
]


def build_source(config: SourceConfig, agent_id: str, index: int = 0) -> Source:
    """The source described by one ``[[sources]]`` entry.

    The interval sources live in their own modules, imported only when configured (the
    ``system`` source imports psutil).
    """
    name = f"{config.type}-{index}"
    if isinstance(config, SimulatedSourceConfig):
        return SimulatedSource(config, agent_id, name=name)
    if isinstance(config, StdinSourceConfig):
        return StdinSource(config, name=name)
    if isinstance(config, SystemSourceConfig):
        from telemetry.agent.sources.system import SystemSource

        return SystemSource(config, agent_id, name=name)
    if isinstance(config, FileSourceConfig):
        from telemetry.agent.sources.file import FileSource

        return FileSource(config, agent_id, name=name)
    from telemetry.agent.sources.command import CommandSource

    return CommandSource(config, agent_id, name=name)
