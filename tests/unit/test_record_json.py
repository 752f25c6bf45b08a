"""``Record.to_json()``: what the JSON sinks write and publish, byte for byte."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.protocol import format_timestamp
from telemetry.sinks.base import DeadLetter, Record
from tests.support import examples

_aware = st.datetimes(
    min_value=datetime(1000, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.builds(
        timezone, st.timedeltas(min_value=timedelta(hours=-13), max_value=timedelta(hours=13))
    ),
)


_records = st.builds(
    Record,
    st.one_of(st.none(), st.text(max_size=20)),
    st.text(max_size=20),
    st.text(min_size=1, max_size=40),
    st.floats(allow_nan=False, allow_infinity=False),
    _aware,
    _aware,
    st.one_of(st.none(), st.text(max_size=10)),
    st.one_of(st.none(), st.text(max_size=5)),
    st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=3),
)


def _reference(record: Record) -> str:
    return json.dumps(
        {
            "id": record.id,
            "agent": record.agent,
            "sensor": record.sensor,
            "metric": record.metric,
            "value": record.value,
            "unit": record.unit,
            "ts": format_timestamp(record.ts),
            "tags": record.tags,
            "received_at": format_timestamp(record.received_at),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(_records, min_size=1, max_size=6))
def test_to_json_is_the_compact_json_of_to_dict(records: list[Record]) -> None:
    """Any records, in any order, some sharing a receive time object: each one's own text."""
    shared = records[0].received_at
    for index, record in enumerate(records):
        if index % 2:
            record.received_at = shared  # one batch: one receive time object
    for record in records + records[::-1]:
        assert record.to_json() == _reference(record)


def test_a_new_receive_time_is_never_served_from_the_last_one() -> None:
    """Two records whose receive times are equal instants but different objects, then a
    different instant: every text is right (the memo is by identity, per batch)."""
    at = datetime(2026, 11, 27, 7, 15, 2, 123000, tzinfo=UTC)
    same_instant = at.astimezone(timezone(timedelta(hours=2)))
    later = at + timedelta(seconds=1)
    texts = [
        json.loads(Record(None, "a", "s", 1.0, at, received_at).to_json())["received_at"]
        for received_at in (at, same_instant, later, at)
    ]
    assert texts == [
        "2026-11-27T07:15:02.123000Z",
        "2026-11-27T07:15:02.123000Z",
        "2026-11-27T07:15:03.123000Z",
        "2026-11-27T07:15:02.123000Z",
    ]


def test_dead_letter_json_is_compact_and_keeps_unicode() -> None:
    at = datetime(2026, 11, 27, 7, 15, 2, tzinfo=UTC)
    letter = DeadLetter("pi-1", "value: not a number", '{"sensor":"°C"}', at)
    assert letter.to_json() == (
        '{"dead_letter":true,"id":null,"agent":"pi-1","reason":"value: not a number",'
        '"raw":"{\\"sensor\\":\\"°C\\"}","truncated":false,"received_at":"2026-11-27T07:15:02.000000Z"}'
    )
