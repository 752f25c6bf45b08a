"""The sampling loop shared by interval sources: timeouts, failures, recovery, hung reads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from telemetry.agent.sources.polled import PolledSource, Sample, SampleError, make_reading
from telemetry.config import FileSourceConfig
from telemetry.protocol import Reading


class Scripted(PolledSource):
    """A source whose samples follow a script of outcomes."""

    def __init__(self, *outcomes: object, timeout: float = 1.0, interval: float = 0.01) -> None:
        config = FileSourceConfig(type="file", path="x", interval=interval, timeout=timeout)
        super().__init__(config, "pi", name="scripted")
        self.outcomes = list(outcomes)

    async def sample(self) -> Sample:
        outcome = self.outcomes.pop(0) if self.outcomes else 1.0
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "hang":
            await asyncio.sleep(60)
        assert isinstance(outcome, float)
        return Sample(readings=[make_reading("pi/x", outcome, 0.0)])


class ListSink:
    def __init__(self, wanted: int) -> None:
        self.readings: list[Reading] = []
        self.wanted = wanted
        self.done = asyncio.Event()

    async def send(self, reading: Reading) -> None:
        self.readings.append(reading)
        if len(self.readings) >= self.wanted:
            self.done.set()


async def test_failures_never_end_the_loop() -> None:
    """An exception, a SampleError and a timeout are each counted; sampling goes on."""
    src = Scripted(RuntimeError("boom"), SampleError("unplugged"), "hang", 2.0, timeout=0.05)
    sink = ListSink(2)
    task = asyncio.create_task(src.run(sink))
    await asyncio.wait_for(sink.done.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [r.value for r in sink.readings[:2]] == [2.0, 1.0]
    assert src.failures == 3
    assert src.produced >= 2
    assert src.last_error == "timed out after 0.05 s"


async def test_repeated_failure_is_logged_once_then_recovery() -> None:
    """The same failure again is counted but not logged again; success logs a recovery."""
    src = Scripted(SampleError("gone"), SampleError("gone"), SampleError("gone"), 3.0)
    logged: list[str] = []
    original = src._failed

    def spy(errors: list[str]) -> None:
        before = src._logged_at
        original(errors)
        if src._logged_at != before:
            logged.append(errors[0])

    src._failed = spy  # type: ignore[method-assign]
    for _ in range(4):
        await src.sample_once()
    assert logged == ["gone"]
    assert (src.failures, src._consecutive) == (3, 0)


async def test_a_hung_thread_is_abandoned_and_not_stacked() -> None:
    """A read stuck in its thread times out; later samples fail at once without a new thread."""
    release = threading.Event()
    calls = 0

    class Stuck(Scripted):
        async def sample(self) -> Sample:
            def read() -> float:
                nonlocal calls
                calls += 1
                release.wait(5)
                return 1.0

            value = await self.in_thread(read)
            return Sample(readings=[make_reading("pi/x", value, 0.0)])

    src = Stuck(timeout=0.05)
    first = await src.sample_once()
    second = await src.sample_once()
    assert first.errors == ["timed out after 0.05 s"]
    assert second.errors == ["the previous read has not returned yet (hung?)"]
    assert calls == 1
    release.set()
    assert src._thread is not None
    await asyncio.wait_for(asyncio.shield(src._thread), 5)
    third = await src.sample_once()
    assert third.errors == []
    assert calls == 2


def test_invalid_reading_names_the_sensor() -> None:
    """A value the protocol refuses (a too-long name) is a SampleError naming the sensor."""
    with pytest.raises(SampleError, match=r"^x{300}: sensor:"):
        make_reading("x" * 300, 1.0, 0.0)
