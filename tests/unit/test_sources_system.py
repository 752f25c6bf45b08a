"""The system source: psutil values to readings, network rates, missing sensors, failures."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from telemetry.agent.sources.system import NetRates, SystemSource
from telemetry.config import SystemSourceConfig


class FakePsutil:
    """Just enough of psutil, with values the test controls."""

    def __init__(self) -> None:
        self.cpu = 12.5
        self.net: dict[str, Any] = {
            "lo": SimpleNamespace(bytes_recv=0, bytes_sent=0),
            "eth0": SimpleNamespace(bytes_recv=1000, bytes_sent=500),
        }
        self.temps: dict[str, list[Any]] = {
            "coretemp": [SimpleNamespace(label="Core 0", current=41.0)],
            "acpitz": [SimpleNamespace(label="", current=35.5)],
        }
        self.disk_error: OSError | None = None

    def cpu_percent(self, interval: float | None = None) -> float:
        return self.cpu

    def getloadavg(self) -> tuple[float, float, float]:
        return (0.5, 0.25, 0.125)

    def virtual_memory(self) -> Any:
        return SimpleNamespace(percent=40.0, available=2048)

    def swap_memory(self) -> Any:
        return SimpleNamespace(total=0, percent=0.0)

    def disk_usage(self, path: str) -> Any:
        if self.disk_error is not None:
            raise self.disk_error
        return SimpleNamespace(percent=70.0, free=123)

    def net_io_counters(self, pernic: bool = False) -> dict[str, Any]:
        return self.net

    def sensors_temperatures(self) -> dict[str, list[Any]]:
        return self.temps


def source(ps: Any, **options: Any) -> SystemSource:
    """A system source for agent ``pi`` over the fake psutil."""
    config = SystemSourceConfig(type="system", **options)
    return SystemSource(config, "pi", psutil=ps)


async def test_first_sample_has_no_rates_second_has_them() -> None:
    """CPU and network need a previous sample: the first has neither, the second both."""
    ps = FakePsutil()
    src = source(ps, metrics=["cpu", "net"])
    first = await src.sample_once()
    assert first.readings == []
    assert first.errors == []
    ps.net["eth0"] = SimpleNamespace(bytes_recv=1000 + 10_000_000, bytes_sent=500)
    second = await src.sample_once()
    by_name = {r.sensor: r for r in second.readings}
    assert set(by_name) == {"pi/cpu", "pi/net:eth0:rx", "pi/net:eth0:tx"}  # lo left out
    assert by_name["pi/cpu"].value == 12.5
    assert by_name["pi/net:eth0:rx"].value > 0
    assert by_name["pi/net:eth0:rx"].unit == "B/s"
    assert by_name["pi/net:eth0:tx"].value == 0
    assert by_name["pi/net:eth0:rx"].tags == {"interface": "eth0"}


def test_net_rates_are_bytes_per_second_and_skip_resets() -> None:
    """Rates divide by the elapsed time; a counter that went down gives no rate."""
    rates = NetRates()
    assert rates.feed(10.0, {"eth0": (1000, 0), "wlan0": (500, 500)}) == {}
    assert rates.feed(12.0, {"eth0": (3000, 100), "wlan0": (100, 600)}) == {"eth0": (1000.0, 50.0)}


async def test_names_units_tags_and_template() -> None:
    """Every group gives readings named by the template, with metric, unit and tags."""
    ps = FakePsutil()
    src = source(
        ps,
        metrics=["load", "memory", "swap", "disk", "temperature", "fan"],
        sensor="{host}-{agent}/{metric}/{device}",
        tags={"site": "north"},
    )
    src.template_values["host"] = "h"
    sample = await src.sample_once()
    assert sample.errors == []
    by_name = {r.sensor: r for r in sample.readings}
    assert by_name["h-pi/load1/"].value == 0.5
    assert by_name["h-pi/memory_used_percent/"].unit == "%"
    assert by_name["h-pi/disk_free_bytes//"].value == 123
    temp = by_name["h-pi/temperature/coretemp:Core 0"]
    assert (temp.value, temp.unit) == (41.0, "°C")
    assert temp.tags == {"chip": "coretemp", "label": "Core 0", "site": "north"}
    assert "h-pi/temperature/acpitz:0" in by_name  # an unlabelled sensor gets its index
    assert not any("swap" in name for name in by_name)  # no swap on this host
    assert not any("fan" in name for name in by_name)  # psutil has no sensors_fans here


async def test_a_failing_group_is_counted_the_others_still_read() -> None:
    """A disk that cannot be read fails the sample, but the other groups' readings are sent."""
    ps = FakePsutil()
    ps.disk_error = FileNotFoundError(2, "No such file or directory")
    src = source(ps, metrics=["load", "disk"], disks=["/gone"])
    sample = await src.sample_once()
    assert [r.sensor for r in sample.readings] == ["pi/load1", "pi/load5", "pi/load15"]
    assert sample.errors == ["disk: /gone: No such file or directory"]
    assert src.failures == 1
    assert src.last_error == "disk: /gone: No such file or directory"


async def test_broken_sensor_driver_is_an_error_not_a_crash() -> None:
    """An exception from psutil (a broken driver) is one error of the sample."""
    ps = FakePsutil()

    def broken() -> dict[str, list[Any]]:
        raise RuntimeError("driver went away")

    ps.sensors_temperatures = broken  # type: ignore[method-assign]
    src = source(ps, metrics=["temperature", "load"])
    sample = await src.sample_once()
    assert len(sample.readings) == 3
    assert sample.errors == ["temperature: RuntimeError: driver went away"]


async def test_real_psutil_on_this_host() -> None:
    """With the real psutil the default source reads at least CPU, load, memory and disk."""
    src = SystemSource(SystemSourceConfig(type="system"), "pi")
    await src.sample_once()
    sample = await src.sample_once()
    names = {r.sensor for r in sample.readings}
    assert {"pi/cpu", "pi/load1", "pi/memory:used", "pi/disk:/:used"} <= names
    assert all(r.ts is not None for r in sample.readings)
