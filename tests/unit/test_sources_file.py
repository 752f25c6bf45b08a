"""The file source: sysfs numbers with scale and offset, 1-Wire w1_slave, globs, failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from telemetry.agent.sources.file import FileSource, detect_format, parse_number, parse_w1_slave
from telemetry.agent.sources.polled import SampleError
from telemetry.config import FileSourceConfig

W1_YES = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
W1_NO = "72 01 4b 46 7f ff 0e 10 57 : crc=00 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
W1_NEGATIVE = "5e ff 4b 46 7f ff 0c 10 1f : crc=1f YES\n5e ff 4b 46 7f ff 0c 10 1f t=-10125\n"


def test_parse_number_accepts_one_number_only() -> None:
    """A file with one number (and whitespace) is that number; anything else says why."""
    assert parse_number(" 48312\n") == 48312
    assert parse_number("-1.5e3") == -1500
    for text, reason in [("", "empty"), ("12 13", "not a number"), ("nan", "not a finite")]:
        with pytest.raises(SampleError, match=reason):
            parse_number(text)


def test_w1_slave_yes_is_degrees_no_is_a_failed_read() -> None:
    """A YES CRC gives t/1000 in °C; a NO CRC raises instead of giving a reading."""
    assert parse_w1_slave(W1_YES) == 23.125
    assert parse_w1_slave(W1_NEGATIVE) == -10.125
    with pytest.raises(SampleError, match="CRC check failed"):
        parse_w1_slave(W1_NO)
    with pytest.raises(SampleError, match="two lines"):
        parse_w1_slave("72 01 : crc=57 YES\n")


def test_format_detection() -> None:
    """auto takes w1_slave content for w1_slave and anything else for a number."""
    assert detect_format(W1_YES) == "w1_slave"
    assert detect_format("48312\n") == "number"


def source(path: Path | str, **options: object) -> FileSource:
    """A file source for agent ``pi``."""
    return FileSource(FileSourceConfig(type="file", path=str(path), **options), "pi")  # type: ignore[arg-type]


async def test_thermal_zone_millidegrees_with_scale_and_offset(tmp_path: Path) -> None:
    """A sysfs millidegree file becomes °C through scale, then offset, named by its folder."""
    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "temp").write_text("48312\n")
    src = source(zone / "temp", scale=0.001, offset=-0.5, unit="°C", tags={"room": "attic"})
    sample = await src.sample_once()
    assert sample.errors == []
    [reading] = sample.readings
    assert reading.sensor == "pi/thermal_zone0"
    assert reading.value == pytest.approx(47.812)
    assert (reading.unit, reading.tags) == ("°C", {"room": "attic"})


async def test_glob_of_w1_devices_one_bad_crc(tmp_path: Path) -> None:
    """A glob reads every 1-Wire device; a NO CRC fails that one, the others still read."""
    for device, content in [("28-0001", W1_YES), ("28-0002", W1_NO), ("28-0003", W1_NEGATIVE)]:
        (tmp_path / device).mkdir()
        (tmp_path / device / "w1_slave").write_text(content)
    src = source(tmp_path / "28-*" / "w1_slave")
    sample = await src.sample_once()
    assert {r.sensor: r.value for r in sample.readings} == {
        "pi/28-0001": 23.125,
        "pi/28-0003": -10.125,
    }
    assert len(sample.errors) == 1
    assert "28-0002/w1_slave: w1_slave: CRC check failed" in sample.errors[0]
    assert src.failures == 1


async def test_unreadable_file_fails_the_sample_and_the_next_one_reads(tmp_path: Path) -> None:
    """A missing file is a failed sample, counted; once it exists the next sample reads it."""
    path = tmp_path / "level"
    src = source(path, sensor="{agent}/{name}")
    first = await src.sample_once()
    assert first.readings == []
    assert "cannot read: No such file or directory" in first.errors[0]
    path.write_text("7")
    second = await src.sample_once()
    assert [(r.sensor, r.value) for r in second.readings] == [("pi/level", 7)]
    assert (src.samples, src.failures) == (2, 1)


async def test_glob_without_matches_is_a_failed_sample(tmp_path: Path) -> None:
    """A glob that matches nothing (sensor unplugged) fails the sample and says so."""
    src = source(tmp_path / "28-*" / "w1_slave")
    sample = await src.sample_once()
    assert sample.errors == [f"no file matches {tmp_path}/28-*/w1_slave"]
