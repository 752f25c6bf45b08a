"""Unit tests of the native fast path (telemetry/protocol/fastpath.py): it may only say yes where
the exact models say yes, with the same values; everything else goes to the exact path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from telemetry.collector.validation import (
    BATCH_VALIDATOR,
    BATCH_VALIDATOR_EPOCH,
    RECORD_VALIDATOR,
    clean_batch,
    clean_fire_and_forget,
    epoch_first,
)
from telemetry.protocol import validate_reading
from telemetry.protocol.fastpath import READING_VALIDATOR, encode_reading
from telemetry.sinks.base import Record
from tests.support import examples


def decode_reading(payload: bytes) -> dict[str, Any] | None:
    """The fast path's verdict on a reading's JSON, as a dict (``None``: take the exact path)."""
    try:
        reading: dict[str, Any] = READING_VALIDATOR.validate_json(payload)
    except ValidationError:
        return None
    return reading


def _exact(raw: Any) -> dict[str, Any] | None:
    """The exact path's verdict on a decoded reading, as a dict (``None``: rejected)."""
    try:
        reading = validate_reading(raw)
    except ValidationError:
        return None
    return reading.model_dump()


def _record(payload: bytes) -> dict[str, Any] | None:
    """What the collector's record validator makes of a payload, as a dict of wire fields."""
    try:
        record = RECORD_VALIDATOR.validate_json(payload)
    except ValidationError:
        return None
    fields = ("sensor", "value", "ts", "metric", "unit", "tags")
    return {name: getattr(record, name) for name in fields if getattr(record, name) is not None}


def _same(fast: dict[str, Any], exact: dict[str, Any]) -> None:
    for key in ("sensor", "value", "metric", "unit"):
        assert fast.get(key) == exact[key], key
    assert (fast.get("tags") or {}) == exact["tags"]
    fast_ts, exact_ts = fast.get("ts"), exact["ts"]
    assert fast_ts == exact_ts
    if fast_ts is not None:
        assert fast_ts.utcoffset() == exact_ts.utcoffset()


# Timestamps near every edge the two parsers could disagree on.
_rfc3339 = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, off: (
        f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{off}"
    ),
    st.integers(0, 10000),
    st.integers(0, 13),
    st.integers(0, 32),
    st.sampled_from(["T", "t", " ", "_"]),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
    st.one_of(st.just(""), st.from_regex(r"\.[0-9]{0,11}", fullmatch=True)),
    st.one_of(
        st.sampled_from(["Z", "z", "", "+0100", "+01"]),
        st.builds(
            lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
            st.sampled_from("+-"),
            st.integers(0, 25),
            st.integers(0, 61),
        ),
    ),
)
_timestamps = st.one_of(
    _rfc3339,
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-3e10, max_value=3e10),
    st.integers(-(10**20), 10**20),
    st.text(max_size=30),
    st.none(),
    st.booleans(),
)
_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**400), 10**400),
    st.booleans(),
    st.text(max_size=5),
    st.none(),
)
_short_text = st.text(max_size=70)
_readings = st.fixed_dictionaries(
    {"sensor": st.one_of(st.text(max_size=300), st.integers())},
    optional={
        "value": _values,
        "ts": _timestamps,
        "metric": st.one_of(st.none(), st.text(max_size=140)),
        "unit": st.one_of(st.none(), st.text(max_size=40), st.integers()),
        "tags": st.one_of(
            st.dictionaries(_short_text, _short_text, max_size=34),
            st.none(),
            st.lists(st.integers(), max_size=2),
        ),
        "type": st.sampled_from(["batch", "reading"]),
        "extra": st.integers(),
    },
)


@settings(max_examples=examples(3000), suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_readings)
def test_fast_reading_accepts_only_what_the_exact_path_accepts(raw: dict[str, Any]) -> None:
    """Whatever decode_reading accepts, validate_reading accepts with equal values."""
    try:
        payload = json.dumps(raw).encode()
    except ValueError:
        return  # not JSON-encodable (an integer too long for str())
    fast = decode_reading(payload)
    record = _record(payload)
    assert (fast is None) == (record is None), payload  # the two fast schemas agree
    if fast is None:
        return
    exact = _exact(json.loads(payload))
    assert exact is not None, payload
    _same(fast, exact)
    assert record is not None
    _same(record, exact)


# Mostly valid readings, so that the timestamp and the optional fields decide.
_agent_readings = st.one_of(
    _readings,
    st.fixed_dictionaries(
        {"sensor": st.just("greenhouse/soil-1"), "value": st.floats(-1e9, 1e9)},
        optional={
            "ts": _timestamps,
            "unit": st.one_of(st.none(), st.text(max_size=40)),
            "tags": st.dictionaries(_short_text, _short_text, max_size=34),
        },
    ),
)


@settings(max_examples=examples(3000), suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_agent_readings)
def test_agents_encode_only_what_the_exact_path_accepts(raw: dict[str, Any]) -> None:
    """Whatever encode_reading passes as it is, the exact model accepts; and the collector
    reads its JSON back to the same values."""
    try:
        encoded = encode_reading(raw)
    except ValueError:
        return  # an integer too long for JSON
    if encoded is None:
        return
    exact = _exact(raw)
    assert exact is not None, raw
    _same(_exact(json.loads(encoded)) or {}, exact)


@settings(max_examples=examples(2000), deadline=None)
@given(_rfc3339)
def test_fast_timestamps_agree_with_the_exact_parser(ts: str) -> None:
    """An RFC 3339-shaped ts the fast path reads is read the same by the exact path."""
    fast = decode_reading(json.dumps({"sensor": "s", "value": 1, "ts": ts}).encode())
    exact = _exact({"sensor": "s", "value": 1, "ts": ts})
    if fast is not None:
        assert exact is not None, ts
        _same(fast, exact)


def test_clean_readings_take_the_fast_path() -> None:
    """The readings agents and nc users send are read natively, with every field."""
    fast = decode_reading(
        b'{"sensor":"greenhouse-2/soil-3","metric":"moisture","value":41.25,"unit":"%",'
        b'"ts":"2026-11-27T07:15:02.123Z","tags":{"site":"north"}}'
    )
    assert fast == {
        "sensor": "greenhouse-2/soil-3",
        "metric": "moisture",
        "value": 41.25,
        "unit": "%",
        "ts": datetime(2026, 11, 27, 7, 15, 2, 123000, tzinfo=UTC),
        "tags": {"site": "north"},
    }
    assert decode_reading(b'{"sensor":"s","value":3}') == {"sensor": "s", "value": 3.0}
    epoch = decode_reading(b'{"sensor":"s","value":1,"ts":1764227702.5}')
    assert epoch is not None
    assert epoch["ts"] == datetime(2025, 11, 27, 7, 15, 2, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type":"hello","agent":"a","protocol":1}',
        b'{"sensor":"s","value":1,"ts":"1700000000"}',
        b'{"sensor":"s","value":1,"ts":"2026-11-27T07:15Z"}',
        b'{"sensor":"s","value":1,"ts":"2026-11-27T07:15:02+0100"}',
        b'{"sensor":"s","value":1,"ts":"2026-11-27T07:15:02"}',
        b'{"sensor":"s","value":1,"ts":1e12}',
        b'{"sensor":"s","value":NaN}',
        b'{"sensor":"s","value":"41"}',
        b'{"sensor":"s","value":true}',
        b'{"sensor":"a\\u0007b","value":1}',
        b'{"sensor":"","value":1}',
        b'{"sensor":"s","value":1,"colour":"red"}',
        b'{"sensor":"s","value":1',
        b'\xff{"sensor":"s","value":1}',
        b'[{"sensor":"s","value":1}]',
        b'{"sensor":"s","value":1,"tags":null}',
    ],
)
def test_anything_unusual_goes_to_the_exact_path(payload: bytes) -> None:
    """Control messages, bad readings and timestamps pydantic alone would misread: None."""
    assert decode_reading(payload) is None
    assert _record(payload) is None


def test_a_clean_batch_is_one_call() -> None:
    """A batch of clean readings comes back as its seq and one record per reading."""
    payload = (
        b'{"type":"batch","seq":7,"readings":[{"sensor":"a","value":1},{"sensor":"b","value":2}]}'
    )
    now = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    batch = clean_batch(payload, "x", now, now)
    assert batch is not None
    seq, records = batch
    assert (seq, [(r.sensor, r.value) for r in records]) == (7, [("a", 1.0), ("b", 2.0)])


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type":"batch","seq":7,"readings":[{"sensor":"a","value":1},{"sensor":"b"}]}',
        b'{"type":"batch","seq":-1,"readings":[]}',
        b'{"type":"batch","seq":1.0,"readings":[]}',
        b'{"type":"batch","seq":1,"readings":[],"more":1}',
        b'{"type":"hello","agent":"a"}',
    ],
)
def test_a_batch_with_any_problem_goes_to_the_exact_path(payload: bytes) -> None:
    """One bad reading, or a bad envelope, sends the whole batch to the exact path."""
    now = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    assert clean_batch(payload, "x", now, now) is None


def _outcome(validator: Any, payload: bytes) -> Any:
    try:
        batch = validator.validate_json(payload)
    except ValidationError:
        return None
    return batch["seq"], [
        (r.sensor, r.value, r.ts, None if r.ts is None else r.ts.utcoffset(), r.tags)
        for r in batch["readings"]
    ]


@settings(max_examples=examples(1500), suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(_agent_readings, max_size=4))
def test_both_batch_validators_read_every_batch_the_same(readings: list[Any]) -> None:
    """Trying ts as a number first or as a string first is only a matter of speed: the two
    batch validators accept and reject the same batches, with equal values."""
    try:
        payload = json.dumps({"type": "batch", "seq": 3, "readings": readings}).encode()
    except ValueError:
        return
    assert _outcome(BATCH_VALIDATOR, payload) == _outcome(BATCH_VALIDATOR_EPOCH, payload)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"type":"batch","seq":1,"readings":[{"sensor":"s","value":1,"ts":17e8}]}', True),
        (b'{"type":"batch","seq":1,"readings":[{"sensor":"s","value":1,"ts":"2026-"}]}', False),
        (b'{"type":"batch","seq":1,"readings":[{"sensor":"s","value":1}]}', False),
        (b'{"type": "batch", "readings": [{"sensor": "s", "ts": "2026-"}]}', False),  # dumps
        (b'{"type": "batch", "readings": [{"sensor": "s", "ts":\n  17e8}]}', True),
        (b'{"type":"batch","seq":1,"readings":[{"sensor":"s","ts":', True),
        (b'{"readings":[{"sensor":"' + b"x" * 2000 + b'","ts":17e8}]}', False),  # too far
    ],
)
def test_epoch_first_looks_at_the_first_ts(payload: bytes, expected: bool) -> None:
    """The epoch-first validator is picked when a batch's first ts is not a string."""
    assert epoch_first(payload) is expected


def test_a_clean_batch_becomes_records_with_ids_and_defaults() -> None:
    """Records get "<agent>:<seq>:<index>" ids, the receive time as a missing ts, empty tags."""
    now = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    payload = (
        b'{"type":"batch","seq":9,"readings":[{"sensor":"a","value":1,'
        b'"ts":"2026-11-27T06:59:55Z"},{"sensor":"b","value":2.5,"unit":"%"}]}'
    )
    batch = clean_batch(payload, "agent-1", now, now + timedelta(seconds=300))
    assert batch is not None
    seq, records = batch
    assert seq == 9
    assert records == [
        Record("agent-1:9:0", "agent-1", "a", 1.0, now - timedelta(seconds=5), now, tags={}),
        Record("agent-1:9:1", "agent-1", "b", 2.5, now, now, unit="%", tags={}),
    ]


def test_a_future_timestamp_or_a_bad_reading_sends_the_batch_to_the_exact_path() -> None:
    """A ts beyond now + max_clock_skew, or any reading the fast path refuses: None."""
    now = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    limit = now + timedelta(seconds=300)

    def batch(*readings: bytes) -> bytes:
        return b'{"type":"batch","seq":1,"readings":[' + b",".join(readings) + b"]}"

    within = b'{"sensor":"a","value":1,"ts":"2026-11-27T07:05:00Z"}'
    ahead = b'{"sensor":"a","value":1,"ts":"2026-11-27T07:05:00.000001Z"}'
    assert clean_batch(batch(within), "a", now, limit) is not None
    assert clean_batch(batch(within, ahead), "a", now, limit) is None
    assert clean_batch(batch(within, b'{"sensor":"a"}'), "a", now, limit) is None
    assert clean_batch(b'{"type":"hello","agent":"a"}', "a", now, limit) is None


def test_clean_fire_and_forget_stop_at_the_first_frame_the_exact_path_must_see() -> None:
    """Clean readings become records (heartbeats skipped) up to a control message, a bad
    reading or a ts too far ahead; the index says where the caller goes on."""
    now = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    limit = now + timedelta(seconds=300)
    good = b'{"sensor":"s","value":1}'
    frames = [
        good,
        b"",
        good,
        b'{"type":"hello","agent":"a"}',
        good,
        b'{"sensor":"s"}',
        b'{"sensor":"s","value":1,"ts":"2026-11-27T07:05:00.000001Z"}',
        good,
    ]
    records, index = clean_fire_and_forget(frames, 0, "peer", now, limit)
    assert (len(records), index) == (2, 3)
    assert all(r.id is None and r.agent == "peer" and r.ts == now for r in records)
    assert clean_fire_and_forget(frames, 4, "peer", now, limit)[1] == 5
    assert clean_fire_and_forget(frames, 6, "peer", now, limit)[1] == 6
    records, index = clean_fire_and_forget(frames, 7, "peer", now, limit)
    assert (len(records), index) == (1, 8)
    assert clean_fire_and_forget(frames, 8, "peer", now, limit) == ([], 8)


def test_agents_encode_a_clean_reading_dict_as_it_is() -> None:
    """encode_reading gives a clean dict's compact JSON, which decodes to the same dict."""
    reading = {
        "sensor": "greenhouse-2/soil-3",
        "value": 41.25,
        "ts": 1764227702.123456,
        "unit": "%",
        "tags": {"site": "nörth"},
    }
    encoded = encode_reading(reading)
    assert encoded is not None
    assert b" " not in encoded
    assert json.loads(encoded) == reading


@pytest.mark.parametrize(
    "reading",
    [
        {"sensor": "s", "value": 1, "ts": datetime(2026, 11, 27, tzinfo=UTC)},  # exact path
        {"sensor": "s", "value": float("nan")},
        {"sensor": "s", "value": True},
        {"sensor": "s", "value": 1, "colour": "red"},
        {"sensor": "s", "value": 1, "ts": "2026-11-27T07:15:02"},
    ],
)
def test_agents_leave_anything_else_to_the_exact_model(reading: dict[str, Any]) -> None:
    """A dict the fast path cannot pass as it is gives None: the agent uses the exact model."""
    assert encode_reading(reading) is None
