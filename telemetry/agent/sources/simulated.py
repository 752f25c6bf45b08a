"""The ``simulated`` source: N sensors whose values follow a random walk, for demos and load.

One reading per sensor every ``interval`` seconds; it ends after ``count`` readings when
``count`` is set.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from telemetry.agent.sources.base import ReadingSink
from telemetry.config import SimulatedSourceConfig
from telemetry.log import get_logger

log = get_logger("telemetry.agent.sources")


class SimulatedSource:
    """Random-walk readings for ``config.sensors`` sensors, for demos and load."""

    def __init__(
        self,
        config: SimulatedSourceConfig,
        agent_id: str,
        *,
        name: str = "simulated",
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self.finite = config.count > 0
        self.sensors = [
            config.sensor.format(agent=agent_id, n=n) for n in range(1, config.sensors + 1)
        ]
        self._rng = rng if rng is not None else random.Random()
        self._values = [round(self._rng.uniform(15.0, 25.0), 2) for _ in self.sensors]
        #: Readings produced so far.
        self.produced = 0

    def next_readings(self) -> list[dict[str, Any]]:
        """One step of the walk: a reading for every sensor, stamped now (no I/O).

        Wire dicts, not :class:`Reading` models: the agent's ``send()`` validates a clean dict
        natively and sends it as it is, where a model costs ~3x as much CPU per reading.
        """
        common: dict[str, Any] = {"ts": time.time()}  # epoch seconds, as the wire allows
        if self.config.metric:
            common["metric"] = self.config.metric
        if self.config.unit:
            common["unit"] = self.config.unit
        if self.config.tags:
            common["tags"] = dict(self.config.tags)
        values = self._values
        gauss = self._rng.gauss
        readings = []
        for i, sensor in enumerate(self.sensors):
            values[i] = round(values[i] + gauss(0.0, 0.25), 3)
            readings.append({"sensor": sensor, "value": values[i], **common})
        return readings

    async def run(self, sink: ReadingSink) -> None:
        loop = asyncio.get_running_loop()
        count = self.config.count
        next_at = loop.time()
        while True:
            for reading in self.next_readings():
                if count and self.produced >= count:
                    break
                await sink.send(reading)
                self.produced += 1
            if count and self.produced >= count:
                log.info("source_finished", source=self.name, readings=self.produced)
                return
            next_at += self.config.interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
