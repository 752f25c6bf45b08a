"""What a reading source is: :class:`Source`, and :class:`ReadingSink`, where it puts readings.

A sink is anything with ``async def send(reading)``, usually an :class:`~telemetry.agent.Agent`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from telemetry.protocol import Reading


class ReadingSink(Protocol):
    """Where a source puts its readings."""

    async def send(self, reading: Reading | Mapping[str, Any]) -> None: ...


class Source(Protocol):
    """A producer of readings."""

    #: Name in logs.
    name: str
    #: True when the source ends by itself (stdin EOF, a simulated ``count``).
    finite: bool

    async def run(self, sink: ReadingSink) -> None:
        """Produce readings into ``sink`` until the source ends (or is cancelled)."""
        ...
