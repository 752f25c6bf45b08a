"""After a restart, the live view's latest values come back from a sink.

How this works: the first time ``/api/live`` is asked for once the collector is serving (its
sinks started), :meth:`LiveSeed.ensure` asks the first reading sink that implements
``latest(limit)`` (:class:`~telemetry.sinks.latest.LatestSource`: sqlite, postgres) for the
newest reading of up to :data:`SEED_SENSORS` sensors, and :meth:`LiveView.restore` adds those
the view has not heard from since. A sink that fails or takes longer than
:data:`SEED_TIMEOUT` is logged and the next one is asked; it is done once per process,
whatever the outcome. Concurrent requests wait for the same attempt, each at most
:data:`SEED_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from telemetry.collector.live import LiveView
from telemetry.collector.runner import SinkRunner
from telemetry.log import get_logger
from telemetry.sinks.latest import LatestSource

log = get_logger("telemetry.live")

#: Most sensors restored (the page lists 500; the view tracks up to 5000).
SEED_SENSORS = 1000
#: Seconds one sink may take to answer.
SEED_TIMEOUT = 5.0


def latest_sources(runners: Sequence[SinkRunner]) -> list[LatestSource]:
    """The sinks that can say each sensor's latest reading, in config order (not dead-letter
    sinks: they hold rejected readings)."""
    return [
        runner.sink
        for runner in runners
        if not runner.dead_letter and isinstance(runner.sink, LatestSource)
    ]


class LiveSeed:
    """Seeds one :class:`LiveView` from the sinks, once (see the module docstring)."""

    def __init__(
        self, live: LiveView, *, limit: int = SEED_SENSORS, timeout: float = SEED_TIMEOUT
    ) -> None:
        self.live = live
        self.limit = limit
        self.timeout = timeout
        #: Sensors restored; None until the attempt is over.
        self.restored: int | None = None
        self._task: asyncio.Task[int] | None = None

    async def ensure(self, runners: Sequence[SinkRunner], serving: bool) -> None:
        """Seed now unless done, under way, or the sinks are not started (``serving`` false);
        wait for it at most :attr:`timeout` seconds."""
        if self.restored is not None or (self._task is None and not serving):
            return
        if self._task is None:
            self._task = asyncio.create_task(self._seed(latest_sources(runners)))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(self._task)

    async def close(self) -> None:
        """Stop an attempt under way (the collector is stopping)."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _seed(self, sources: Sequence[LatestSource]) -> int:
        restored = 0
        try:
            for sink in sources:
                try:
                    async with asyncio.timeout(self.timeout):
                        records = await sink.latest(self.limit)
                except Exception as exc:  # a task root: any sink failure, next sink
                    log.warning("live_restore_failed", sink=sink.name, error=str(exc))
                    continue
                restored = self.live.restore(records)
                log.info("live_restored", sink=sink.name, sensors=restored)
                break
        finally:
            self.restored = restored
        return restored
