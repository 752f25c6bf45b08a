"""LiveView.restore: values read back from a sink seed the view without hiding newer ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from telemetry.collector import live as live_module
from telemetry.collector.live import SENSOR_TTL, LiveView
from telemetry.sinks.base import Record

NOW = datetime.now(UTC)


def record(sensor: str, value: float, age: float = 0.0) -> Record:
    at = NOW - timedelta(seconds=age)
    return Record(f"a:0:{sensor}", "a", sensor, value, at, at)


def test_restore_adds_only_sensors_not_heard_from() -> None:
    """A sensor that sent a reading since the start keeps it; the others are restored."""
    live = LiveView()
    live.accepted(1, [record("s1", 5.0)])
    assert live.restore([record("s1", 1.0, age=60), record("s2", 2.0, age=60)]) == 1
    sensors = {s["sensor"]: s for s in live.snapshot(now=NOW.timestamp())["sensors"]}
    assert (sensors["s1"]["value"], sensors["s1"]["restored"]) == (5.0, False)
    assert (sensors["s2"]["value"], sensors["s2"]["restored"]) == (2.0, True)


def test_a_new_reading_replaces_a_restored_value() -> None:
    """The next reading of a restored sensor is shown as live."""
    live = LiveView()
    live.restore([record("s1", 1.0, age=60)])
    live.accepted(1, [record("s1", 7.0)])
    [sensor] = live.snapshot(now=NOW.timestamp())["sensors"]
    assert (sensor["value"], sensor["restored"]) == (7.0, False)


def test_a_restored_sensor_is_kept_an_hour_from_the_restore() -> None:
    """A value stored days ago is shown after the restart, forgotten SENSOR_TTL later."""
    live = LiveView()
    restored_at = NOW.timestamp()
    live.restore([record("old", 1.0, age=3 * 86400)], now=restored_at)
    assert [s["sensor"] for s in live.snapshot(now=restored_at + 60)["sensors"]] == ["old"]
    assert live.snapshot(now=restored_at + SENSOR_TTL + 1)["sensors"] == []


def test_restore_is_bounded_by_max_sensors() -> None:
    """No more sensors than MAX_SENSORS are tracked, restored or not."""
    live = LiveView()
    limit = live_module.MAX_SENSORS
    records = [record(f"s{i:05}", float(i)) for i in range(limit + 10)]
    assert live.restore(records) == limit
    assert len(live.sensors) == limit
