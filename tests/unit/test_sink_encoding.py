"""The sinks' bulk encoding (telemetry/sinks/encoding.py) against the record as it is."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.protocol import format_timestamp
from telemetry.sinks.base import Record, canonical_content, content_of
from telemetry.sinks.encoding import json_documents, json_lines, table_rows
from tests.support import examples

NOW = datetime(2026, 12, 2, 12, 0, 0, 123456, tzinfo=UTC)
#: Text that would confuse a splitter that did not know JSON: record boundaries, newlines,
#: quotes, non-ASCII.
TRICKY = st.sampled_from(['},{"id":', "}\n{", '"', "\\", "é", "雨", "", "id"])
TEXT = st.lists(st.one_of(TRICKY, st.text(max_size=5)), max_size=4).map("".join)
TIMES = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9998, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=9))]),
)


@st.composite
def records(draw: st.DrawFn) -> Record:
    return Record(
        draw(st.none() | TEXT),
        draw(TEXT),
        draw(TEXT),
        draw(st.floats(allow_nan=False, allow_infinity=False)),
        draw(TIMES),
        NOW,
        draw(st.none() | TEXT),
        draw(st.none() | TEXT),
        draw(st.dictionaries(TEXT, TEXT, max_size=3)),
    )


def test_an_empty_batch_is_nothing() -> None:
    assert json_lines([]) == b""
    assert json_documents([]) == []
    assert table_rows([]) == []


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(records(), min_size=1, max_size=8))
def test_json_lines_hold_each_record_whole_and_in_order(batch: list[Record]) -> None:
    data = json_lines(batch)
    assert data.endswith(b"\n")
    lines = data[:-1].split(b"\n")
    assert lines == json_documents(batch)
    assert len(lines) == len(batch)
    for line, record in zip(lines, batch, strict=True):
        doc = json.loads(line)
        assert list(doc) == list(record.to_dict())
        assert {k: doc[k] for k in ("id", "agent", "sensor", "metric", "unit", "tags")} == {
            k: getattr(record, k) for k in ("id", "agent", "sensor", "metric", "unit", "tags")
        }
        assert doc["value"] == record.value
        stored = canonical_content(
            doc["sensor"],
            doc["value"],
            doc["ts"],
            doc["metric"],
            doc["unit"],
            doc["tags"],
            doc["received_at"],
        )
        assert stored == content_of(record)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(records(), min_size=1, max_size=8))
def test_table_rows_are_the_records_columns(batch: list[Record]) -> None:
    rows = table_rows(batch)
    for row, record in zip(rows, batch, strict=True):
        assert row == (
            record.id,
            record.agent,
            record.sensor,
            record.metric,
            record.value,
            record.unit,
            format_timestamp(record.ts),
            json.dumps(record.tags, ensure_ascii=False, separators=(",", ":")),
            format_timestamp(record.received_at),
        )
    assert [row[6] for row in table_rows(batch, text_times=False)] == [r.ts for r in batch]


def test_table_rows_reuse_text_only_for_equal_values() -> None:
    """Two readings at one instant share a ts text; a later one, or other tags, do not."""
    later = NOW + timedelta(microseconds=1)
    batch = [
        Record("a:1:0", "a", "s", 1.0, NOW, NOW, tags={"k": "v"}),
        Record("a:1:1", "a", "s", 2.0, NOW.astimezone(timezone(timedelta(hours=1))), NOW),
        Record("a:1:2", "a", "s", 3.0, later, NOW, tags={"k": "w"}),
    ]
    rows = table_rows(batch)
    assert [row[6] for row in rows] == [format_timestamp(NOW)] * 2 + [format_timestamp(later)]
    assert [row[7] for row in rows] == ['{"k":"v"}', "{}", '{"k":"w"}']
