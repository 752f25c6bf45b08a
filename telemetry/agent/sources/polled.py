"""What every interval source (``system``, ``file``, ``command``) shares: the sampling loop.

How this works: :meth:`PolledSource.run` takes a sample every ``interval`` seconds (the first
at once) and hands its readings to the sink. A sample is one call of :meth:`sample`, bounded
by ``timeout``. Whatever goes wrong in it (an exception, the timeout, an unreadable file, a
command's non-zero exit) is a *failed sample*: counted in :attr:`PolledSource.failures`,
logged (once per new reason, then at most every few minutes while it repeats), and the next
sample is taken on time. A sample can also half-fail (two disks of three read): its readings
are sent and its errors counted. Only a cancellation (the agent stopping) ends the loop.

Blocking reads (psutil, sysfs files) run in a worker thread through :meth:`in_thread`. A
thread cannot be killed, so a read that hangs (a dead NFS mount) is abandoned at the timeout
and the next samples fail at once, without starting another thread, until it returns.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from telemetry.agent.sources.base import ReadingSink
from telemetry.config import PolledSourceBase
from telemetry.log import get_logger
from telemetry.protocol import Reading, describe_errors

log = get_logger("telemetry.agent.sources")

T = TypeVar("T")

#: Seconds between two log lines about the same repeated failure of one source.
RELOG_INTERVAL = 300.0
#: Longest failure reason kept (command output can be long).
MAX_REASON = 300


class SampleError(Exception):
    """A sample (or one part of it) that produced no reading; the message says why."""


@dataclass
class Sample:
    """The readings of one sample, and what failed in it (empty when all went well)."""

    readings: list[Reading] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def make_reading(
    sensor: str,
    value: float,
    ts: float,
    *,
    metric: str | None = None,
    unit: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Reading:
    """A validated reading; :class:`SampleError` naming the sensor when it is not valid."""
    data: dict[str, Any] = {"sensor": sensor, "value": value, "ts": ts}
    if metric:
        data["metric"] = metric
    if unit:
        data["unit"] = unit
    if tags:
        data["tags"] = dict(tags)
    try:
        return Reading.model_validate(data)
    except ValidationError as exc:
        raise SampleError(f"{sensor}: " + "; ".join(describe_errors(exc))) from None


class PolledSource:
    """Base of the sources that take a sample every ``interval`` seconds."""

    finite = False
    #: Seconds after a first sample until one that has every value (rates need two);
    #: ``telemetry agent --test`` waits for it. 0: the first sample is complete.
    warmup = 0.0

    def __init__(self, config: PolledSourceBase, agent_id: str, *, name: str) -> None:
        self.name = name
        self.interval = config.interval
        self.timeout = config.timeout
        self.tags = dict(config.tags)
        #: Values every sensor template may use.
        self.template_values = {"agent": agent_id, "host": socket.gethostname()}
        #: Samples taken, failed samples (whole or partial), readings produced, so far.
        self.samples = 0
        self.failures = 0
        self.produced = 0
        #: Why the last failed sample failed.
        self.last_error: str | None = None
        self._consecutive = 0
        self._logged_reason: str | None = None
        self._logged_at = 0.0
        self._thread: asyncio.Future[Any] | None = None

    async def sample(self) -> Sample:
        """Read the source once (bounded by ``timeout`` by the caller)."""
        raise NotImplementedError

    async def sample_once(self) -> Sample:
        """One sample with its timeout; a failure is counted and logged, never raised."""
        self.samples += 1
        try:
            async with asyncio.timeout(self.timeout):
                result = await self.sample()
        except TimeoutError:
            result = Sample(errors=[f"timed out after {self.timeout:g} s"])
        except SampleError as exc:
            result = Sample(errors=[str(exc)])
        except Exception as exc:  # a sample is a task root: anything it raises is one failure
            result = Sample(errors=[f"{type(exc).__name__}: {exc}"])
        if result.errors:
            self._failed(result.errors)
        elif self._consecutive:
            log.info("source_recovered", source=self.name, failed_samples=self._consecutive)
            self._consecutive = 0
            self._logged_reason = None
        return result

    async def run(self, sink: ReadingSink) -> None:
        """Sample every ``interval`` seconds until cancelled; a slow sample skips ticks."""
        loop = asyncio.get_running_loop()
        log.info("source_started", source=self.name, interval=self.interval)
        next_at = loop.time()
        try:
            while True:
                for reading in (await self.sample_once()).readings:
                    await sink.send(reading)
                    self.produced += 1
                next_at += self.interval
                now = loop.time()
                if next_at < now:  # the sample took longer than the interval: keep the phase
                    next_at += math.ceil((now - next_at) / self.interval) * self.interval
                await asyncio.sleep(next_at - now)
        finally:
            log.info(
                "source_stopped",
                source=self.name,
                samples=self.samples,
                failures=self.failures,
                readings=self.produced,
            )

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread; at most one at a time for this source."""
        if self._thread is not None and not self._thread.done():
            raise SampleError("the previous read has not returned yet (hung?)")
        future: asyncio.Future[T] = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        # Retrieve the outcome even when nobody awaits it any more (abandoned at a timeout).
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._thread = future
        # Shielded: a timeout abandons the wait, not the thread, which stays tracked.
        return await asyncio.shield(future)

    def sensor_name(self, template: str, **values: str) -> str:
        """``template`` filled with the agent, the host and ``values``."""
        return template.format(**self.template_values, **values)

    def _failed(self, errors: list[str]) -> None:
        self.failures += 1
        self._consecutive += 1
        reason = "; ".join(errors[:3])
        if len(errors) > 3:
            reason += f"; and {len(errors) - 3} more"
        if len(reason) > MAX_REASON:
            reason = reason[: MAX_REASON - 3] + "..."
        self.last_error = reason
        now = time.monotonic()
        if reason != self._logged_reason or now - self._logged_at >= RELOG_INTERVAL:
            log.warning(
                "source_sample_failed",
                source=self.name,
                reason=reason,
                failures=self.failures,
                consecutive=self._consecutive,
            )
            self._logged_reason = reason
            self._logged_at = now
