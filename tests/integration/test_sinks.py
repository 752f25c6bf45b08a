"""The built-in file sinks (sqlite, jsonl, stdout, null) and the registry."""

from __future__ import annotations

import io
import json
import sqlite3
from datetime import UTC, datetime

import pytest

from telemetry.config import (
    JsonlSinkConfig,
    NullSinkConfig,
    SqliteSinkConfig,
    StdoutSinkConfig,
)
from telemetry.sinks.base import Record, Sink
from telemetry.sinks.jsonl import JsonlSink
from telemetry.sinks.null import NullSink
from telemetry.sinks.registry import UnknownSink, build_sink, sink_class
from telemetry.sinks.sqlite import SqliteSink
from telemetry.sinks.stdout import StdoutSink

NOW = datetime(2026, 11, 27, 7, 15, 2, 123000, tzinfo=UTC)


def record(i: int, rid: str | None = "default") -> Record:
    return Record(
        id=f"a:0:{i}" if rid == "default" else rid,
        agent="a",
        sensor=f"greenhouse/{i}",
        value=i + 0.5,
        ts=NOW,
        received_at=NOW,
        metric="temp",
        unit="°C",
        tags={"site": "nörth"},
    )


async def test_sqlite_writes_the_documented_columns_and_ignores_duplicate_ids(tmp_path):
    """Table readings has the issue's columns; a resent id is stored once; NULL ids all kept."""
    sink = SqliteSink(SqliteSinkConfig(type="sqlite", path=tmp_path / "sub" / "t.db"))
    await sink.start()
    await sink.write([record(0), record(1)])
    await sink.write([record(1), record(2)])
    await sink.write([record(3, rid=None), record(4, rid=None)])
    await sink.close()
    await sink.close()  # idempotent
    db = sqlite3.connect(tmp_path / "sub" / "t.db")
    columns = [row[1] for row in db.execute("PRAGMA table_info(readings)")]
    assert columns == [
        "id",
        "agent",
        "sensor",
        "metric",
        "value",
        "unit",
        "ts",
        "tags",
        "received_at",
    ]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    got = db.execute("SELECT id, sensor, value, unit, ts, tags FROM readings").fetchall()
    assert [row[0] for row in got] == ["a:0:0", "a:0:1", "a:0:2", None, None]
    assert got[0][1:] == (
        "greenhouse/0",
        0.5,
        "°C",
        "2026-11-27T07:15:02.123000Z",
        '{"site":"nörth"}',
    )


async def test_sqlite_close_without_start_is_safe(tmp_path):
    """close() before start() does nothing and raises nothing."""
    await SqliteSink(SqliteSinkConfig(type="sqlite", path=tmp_path / "t.db")).close()


async def test_jsonl_appends_one_line_per_reading(tmp_path):
    """Each reading is one JSON line with RFC 3339 timestamps; restarts append."""
    path = tmp_path / "out" / "r.jsonl"
    for batch in ([record(0), record(1)], [record(2)]):
        sink = JsonlSink(JsonlSinkConfig(type="jsonl", path=path))
        await sink.start()
        await sink.write(batch)
        await sink.close()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [line["id"] for line in lines] == ["a:0:0", "a:0:1", "a:0:2"]
    assert lines[0]["unit"] == "°C"
    assert lines[0]["ts"] == "2026-11-27T07:15:02.123000Z"


async def test_stdout_writes_json_lines():
    """The stdout sink prints one JSON object per line."""
    stream = io.StringIO()
    sink = StdoutSink(StdoutSinkConfig(type="stdout"), stream=stream)
    await sink.start()
    await sink.write([record(0), record(1)])
    await sink.close()
    assert [json.loads(line)["sensor"] for line in stream.getvalue().splitlines()] == [
        "greenhouse/0",
        "greenhouse/1",
    ]


async def test_null_sink_counts_and_discards():
    """The null sink accepts everything."""
    sink = NullSink(NullSinkConfig(type="null"))
    await sink.start()
    await sink.write([record(0)] * 5)
    await sink.close()
    assert sink.written == 5


@pytest.mark.parametrize("name", ["null", "stdout", "jsonl", "sqlite"])
def test_registry_resolves_built_in_sinks_lazily(name):
    """Built-in names resolve to classes that satisfy the Sink protocol."""
    cls = sink_class(name)
    assert cls.__module__ == f"telemetry.sinks.{name}"


def test_registry_builds_from_config_and_names_unknown_sinks(tmp_path):
    """build_sink makes a Sink from its config; an unknown name lists the known ones."""
    sink = build_sink(SqliteSinkConfig(type="sqlite", path=tmp_path / "t.db", name="main"))
    assert isinstance(sink, Sink)
    assert sink.name == "main"
    with pytest.raises(UnknownSink, match=r"known sinks: .*sqlite"):
        sink_class("kafka")


def test_each_builtin_sink_declares_the_config_model_config_validation_uses():
    """A built-in sink class names its model as config_model, as a plugin does, and the
    registry and the config package know the same types."""
    from telemetry.config import BUILTIN_SINK_MODELS
    from telemetry.sinks.registry import BUILTIN

    assert set(BUILTIN) == set(BUILTIN_SINK_MODELS)
    for name, model in BUILTIN_SINK_MODELS.items():
        assert sink_class(name).config_model is model  # type: ignore[attr-defined]
    takers = {name for name, model in BUILTIN_SINK_MODELS.items() if model.accepts_dead_letters}
    assert takers == {"jsonl", "stdout", "null"}


async def test_the_json_sinks_write_dead_letters_as_json_lines(tmp_path):
    """A jsonl dead-letter sink writes each DeadLetter's to_json() as one line."""
    from telemetry.sinks.base import DeadLetter

    letter = DeadLetter.of(
        {"sensor": "x"}, agent="a", reason="value: missing", received_at=NOW, max_bytes=100
    )
    sink = JsonlSink(JsonlSinkConfig(type="jsonl", path=tmp_path / "dl.jsonl", dead_letter=True))
    await sink.start()
    await sink.write([letter, letter])
    await sink.close()
    lines = (tmp_path / "dl.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines == [letter.to_json(), letter.to_json()]
