"""The ``system`` source: host metrics through psutil.

Every sample reads the groups in ``metrics``; each group that fails (a mount point that is
gone, a sensor driver that raises) is one error of the sample while the other groups still
give readings. Sensor names come from the ``sensor`` template; ``{name}`` is one of:

============================  ==========================  ========
``{name}``                    metric                      unit
============================  ==========================  ========
``cpu``                       ``cpu_percent``             ``%``
``load1``, ``load5``,         ``load1``, ``load5``,
``load15``                    ``load15``
``memory:used``               ``memory_used_percent``     ``%``
``memory:available``          ``memory_available_bytes``  ``B``
``swap:used``                 ``swap_used_percent``       ``%``
``disk:<mount>:used``         ``disk_used_percent``       ``%``
``disk:<mount>:free``         ``disk_free_bytes``         ``B``
``net:<nic>:rx``, ``:tx``     ``net_rx_bytes_per_second``  ``B/s``
                              ``net_tx_bytes_per_second``
``temp:<chip>:<label>``       ``temperature``             ``°C``
``fan:<chip>:<label>``        ``fan_speed``               ``rpm``
============================  ==========================  ========

CPU percent and network counters are measured since the previous sample, so the first
sample has neither; a counter that went down (a reset, an interface re-created) gives no rate
for that sample. Temperatures and fans appear only where psutil finds them on the host.
"""

from __future__ import annotations

import importlib
import math
import re
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from telemetry.agent.sources.polled import PolledSource, Sample, SampleError, make_reading
from telemetry.config import SystemSourceConfig

_LOOPBACK = re.compile(r"lo\d*")


@dataclass(frozen=True)
class Value:
    """One measured value before it becomes a reading."""

    name: str
    metric: str
    value: float
    unit: str | None = None
    device: str = ""
    tags: dict[str, str] = field(default_factory=dict)


class NetRates:
    """Byte counters per interface in, bytes per second since the previous feed out."""

    def __init__(self) -> None:
        self._previous: tuple[float, dict[str, tuple[int, int]]] | None = None

    def feed(
        self, now: float, counters: dict[str, tuple[int, int]]
    ) -> dict[str, tuple[float, float]]:
        """``counters``: interface -> (bytes received, bytes sent) at monotonic time ``now``.

        Returns interface -> (rx bytes/s, tx bytes/s) for the interfaces seen last time too
        whose counters did not go down.
        """
        previous, self._previous = self._previous, (now, counters)
        if previous is None:
            return {}
        then, before = previous
        elapsed = now - then
        if elapsed <= 0:
            return {}
        rates: dict[str, tuple[float, float]] = {}
        for nic, (rx, tx) in counters.items():
            old = before.get(nic)
            if old is None or rx < old[0] or tx < old[1]:
                continue
            rates[nic] = ((rx - old[0]) / elapsed, (tx - old[1]) / elapsed)
        return rates


#: Seconds between the sample that starts the CPU and network rates and the first that has
#: them, in ``telemetry agent --test``.
RATE_WARMUP = 1.0


class SystemSource(PolledSource):
    """CPU, load, memory, swap, disks, network rates, temperatures and fans of this host."""

    def __init__(
        self,
        config: SystemSourceConfig,
        agent_id: str,
        *,
        name: str = "system",
        psutil: ModuleType | Any | None = None,
    ) -> None:
        super().__init__(config, agent_id, name=name)
        self.config = config
        # Imported here: psutil costs nothing to agents that do not read the host.
        self._ps: Any = psutil if psutil is not None else importlib.import_module("psutil")
        self._rates = NetRates()
        self._cpu_started = False
        if {"cpu", "net"} & set(config.metrics):
            # Rates are measured between two samples: a dry run takes one to start them.
            self.warmup = RATE_WARMUP

    async def sample(self) -> Sample:
        ts = time.time()
        values, errors = await self.in_thread(self.collect, time.monotonic())
        sample = Sample(errors=errors)
        for value in values:
            try:
                sample.readings.append(
                    make_reading(
                        self.sensor_name(
                            self.config.sensor,
                            name=value.name,
                            metric=value.metric,
                            device=value.device,
                        ),
                        value.value,
                        ts,
                        metric=value.metric,
                        unit=value.unit,
                        tags={**value.tags, **self.tags},
                    )
                )
            except SampleError as exc:
                sample.errors.append(str(exc))
        return sample

    def collect(self, now: float) -> tuple[list[Value], list[str]]:
        """Read every configured group (blocking); the values, and one error per failed group."""
        values: list[Value] = []
        errors: list[str] = []
        for group in self.config.metrics:
            try:
                values.extend(
                    v for v in getattr(self, f"_{group}")(now, errors) if math.isfinite(v.value)
                )
            except Exception as exc:  # one group failing must not cost the others
                errors.append(f"{group}: {type(exc).__name__}: {exc}")
        return values, errors

    # --- groups (each returns its values; may raise) --------------------------------------

    def _cpu(self, now: float, errors: list[str]) -> list[Value]:
        percent = float(self._ps.cpu_percent(interval=None))
        if not self._cpu_started:
            # The first call has nothing to compare with and returns a meaningless 0.0.
            self._cpu_started = True
            return []
        return [Value("cpu", "cpu_percent", percent, "%")]

    def _load(self, now: float, errors: list[str]) -> list[Value]:
        load = self._ps.getloadavg()
        return [
            Value(f"load{minutes}", f"load{minutes}", float(value))
            for minutes, value in zip((1, 5, 15), load, strict=True)
        ]

    def _memory(self, now: float, errors: list[str]) -> list[Value]:
        memory = self._ps.virtual_memory()
        return [
            Value("memory:used", "memory_used_percent", float(memory.percent), "%"),
            Value("memory:available", "memory_available_bytes", float(memory.available), "B"),
        ]

    def _swap(self, now: float, errors: list[str]) -> list[Value]:
        swap = self._ps.swap_memory()
        if not swap.total:
            return []  # no swap configured: nothing to report
        return [Value("swap:used", "swap_used_percent", float(swap.percent), "%")]

    def _disk(self, now: float, errors: list[str]) -> list[Value]:
        values: list[Value] = []
        for mount in self.config.disks:
            try:
                usage = self._ps.disk_usage(mount)
            except OSError as exc:  # this mount only; the others are still read
                errors.append(f"disk: {mount}: {exc.strerror or exc}")
                continue
            tags = {"mount": mount}
            values.append(
                Value(
                    f"disk:{mount}:used",
                    "disk_used_percent",
                    float(usage.percent),
                    "%",
                    mount,
                    tags,
                )
            )
            values.append(
                Value(f"disk:{mount}:free", "disk_free_bytes", float(usage.free), "B", mount, tags)
            )
        return values

    def _net(self, now: float, errors: list[str]) -> list[Value]:
        counters = self._ps.net_io_counters(pernic=True) or {}
        wanted = self.config.interfaces
        selected = {
            nic: (int(c.bytes_recv), int(c.bytes_sent))
            for nic, c in counters.items()
            if (nic in wanted if wanted else not _LOOPBACK.fullmatch(nic))
        }
        values: list[Value] = []
        for nic, (rx, tx) in sorted(self._rates.feed(now, selected).items()):
            tags = {"interface": nic}
            values.append(Value(f"net:{nic}:rx", "net_rx_bytes_per_second", rx, "B/s", nic, tags))
            values.append(Value(f"net:{nic}:tx", "net_tx_bytes_per_second", tx, "B/s", nic, tags))
        return values

    def _temperature(self, now: float, errors: list[str]) -> list[Value]:
        return self._hardware("sensors_temperatures", "temp", "temperature", "°C")

    def _fan(self, now: float, errors: list[str]) -> list[Value]:
        return self._hardware("sensors_fans", "fan", "fan_speed", "rpm")

    def _hardware(self, function: str, prefix: str, metric: str, unit: str) -> list[Value]:
        read = getattr(self._ps, function, None)
        if read is None:  # not on this platform
            return []
        values: list[Value] = []
        for chip, entries in sorted((read() or {}).items()):
            for index, entry in enumerate(entries):
                current = getattr(entry, "current", None)
                if current is None:
                    continue
                label = entry.label or str(index)
                device = f"{chip}:{label}"
                tags = {"chip": chip, "label": label}
                values.append(
                    Value(f"{prefix}:{device}", metric, float(current), unit, device, tags)
                )
        return values
