"""Sources: stdin line parsing, the simulated source, and their config."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError

from telemetry.agent import BadLine, SimulatedSource, StdinSource, parse_line
from telemetry.agent.sources import build_source
from telemetry.agent.sources.stdin import LineSplitter
from telemetry.config import SimulatedSourceConfig, StdinSourceConfig
from telemetry.protocol import Reading, validate_reading
from telemetry.protocol.fastpath import encode_reading


def test_parse_line_reading_and_blank() -> None:
    """A JSON object line is a reading; a blank line is nothing."""
    reading = parse_line(b'{"sensor": "a", "value": 1.5}\n')
    assert reading is not None
    assert reading.sensor == "a"
    assert reading.value == 1.5
    assert parse_line(b"  \n") is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{nope", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"sensor": "a", "value": "1"}', "value:"),
        (b'{"sensor": "a", "value": 1, "colour": "red"}', "colour: unknown key"),
        (b'{"sensor": "a", "value": 1}\xff', "not"),
    ],
)
def test_parse_line_bad_lines_say_why(line: bytes, reason: str) -> None:
    """A bad line raises BadLine whose message names the problem."""
    with pytest.raises(BadLine, match=reason):
        parse_line(line)


def test_parse_line_adds_source_tags_reading_tags_win() -> None:
    """Source tags are added; a reading's own tag with the same key wins."""
    reading = parse_line(b'{"sensor": "a", "value": 1, "tags": {"x": "own"}}', {"x": "s", "y": "s"})
    assert reading is not None
    assert reading.tags == {"x": "own", "y": "s"}


class ListSink:
    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def send(self, reading: Reading) -> None:
        self.readings.append(reading)


async def _lines(*lines: bytes | BadLine) -> AsyncIterator[bytes | BadLine]:
    for line in lines:
        yield line


async def test_stdin_source_counts_bad_lines_and_goes_on() -> None:
    """Bad lines are counted and skipped; the good ones reach the sink; the end ends it."""
    lines = _lines(
        b'{"sensor": "a", "value": 1}', b"oops", BadLine("too long"), b'{"sensor": "b", "value": 2}'
    )
    source = StdinSource(StdinSourceConfig(type="stdin"), lines=lines)
    sink = ListSink()
    await source.run(sink)
    assert [r.sensor for r in sink.readings] == ["a", "b"]
    assert (source.lines, source.produced, source.bad_lines) == (4, 2, 2)


def test_simulated_names_from_template_and_random_walk() -> None:
    """Sensor names fill {agent} and {n}; each step moves every sensor a little."""
    config = SimulatedSourceConfig(
        type="simulated", sensors=2, sensor="{agent}:t{n}", unit="", tags={"a": "b"}
    )
    source = SimulatedSource(config, "host1", rng=random.Random(4))
    first = source.next_readings()
    second = source.next_readings()
    assert [r["sensor"] for r in first] == ["host1:t1", "host1:t2"]
    assert all("unit" not in r and r["tags"] == {"a": "b"} and r["ts"] > 0 for r in first)
    assert [r["value"] for r in first] != [r["value"] for r in second]
    # What send() gets is a valid reading, taken by the agent's native fast path as it is.
    assert all(encode_reading(r) is not None for r in first + second)
    assert [validate_reading(r).sensor for r in first] == ["host1:t1", "host1:t2"]
    assert all(abs(a["value"] - b["value"]) < 3 for a, b in zip(first, second, strict=True))


def test_simulated_finite_only_with_count() -> None:
    """A simulated source ends by itself only when count is set; stdin always ends."""
    assert not build_source(SimulatedSourceConfig(type="simulated"), "a").finite
    assert build_source(SimulatedSourceConfig(type="simulated", count=3), "a").finite
    assert build_source(StdinSourceConfig(type="stdin"), "a").finite


def test_sensor_template_with_unknown_field_is_a_config_error() -> None:
    """A template naming anything but {agent} and {n} fails at config load."""
    with pytest.raises(ValidationError, match="sensor template"):
        SimulatedSourceConfig(type="simulated", sensor="{host}/{n}")


def test_line_splitter_whole_and_byte_by_byte() -> None:
    """Lines come out the same whether the input arrives at once or one byte at a time."""
    data = b'{"a": 1}\n\n{"b": 2}\nlast'
    whole = LineSplitter(100)
    expected = [b'{"a": 1}\n', b"\n", b'{"b": 2}\n']
    assert whole.feed(data) == expected
    assert whole.feed_eof() == [b"last"]
    single = LineSplitter(100)
    lines = [line for i in range(len(data)) for line in single.feed(data[i : i + 1])]
    assert lines == expected
    assert single.feed_eof() == [b"last"]


def test_line_splitter_over_long_line_is_one_bad_line() -> None:
    """A line over the limit is reported once and skipped to its newline, in any chunking."""
    splitter = LineSplitter(10)
    out = splitter.feed(b"ok\n" + b"x" * 15)
    out += splitter.feed(b"x" * 15)
    out += splitter.feed(b"xx\nnext\n")
    assert out[0] == b"ok\n"
    assert isinstance(out[1], BadLine)
    assert out[2:] == [b"next\n"]
    assert LineSplitter(3).feed(b"abcdef\nab\n")[1:] == [b"ab\n"]
