"""Unit tests of the message models and their JSON codec (docs/protocol.md#messages)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from telemetry.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Batch,
    Error,
    Goaway,
    Hello,
    Nack,
    Reading,
    RejectedReading,
    Rejection,
    Welcome,
    decode_json,
    format_timestamp,
    parse_client_message,
    parse_server_message,
    validate_reading,
    validate_readings,
    validation_context,
)
from telemetry.protocol.errors import (
    ERROR_CODES,
    BadJson,
    NotAnObject,
    ProtocolError,
    ProtocolViolation,
    UnknownType,
)
from tests.support import examples

NOW = datetime(2026, 11, 27, 7, 15, 0, tzinfo=UTC)
CONTEXT = validation_context(now=NOW, max_clock_skew=300)

GOOD: dict[str, Any] = {
    "sensor": "greenhouse-2/soil-3",
    "metric": "temperature",
    "value": 21.5,
    "unit": "°C",
    "ts": "2026-11-27T09:15:02.123+02:00",
    "tags": {"site": "north", "rack": "r7"},
}


def reading(**changes: Any) -> dict[str, Any]:
    """GOOD with some keys changed; a value of ... removes the key."""
    out = {**GOOD, **changes}
    return {key: value for key, value in out.items() if value is not ...}


def reasons_for(raw: Any, context: dict[str, Any] | None = CONTEXT) -> tuple[str, ...]:
    """The rejection reasons validate_readings gives for a single raw reading."""
    accepted, rejected = validate_readings([raw], context)
    assert accepted == []
    assert [r.index for r in rejected] == [0]
    return rejected[0].errors


# --- readings: accepted --------------------------------------------------------------------


def test_good_reading_validates_with_every_field() -> None:
    """A full reading with a '°C' unit, tags and an RFC 3339 ts with offset is accepted."""
    r = validate_reading(GOOD, CONTEXT)
    assert r.sensor == "greenhouse-2/soil-3"
    assert r.metric == "temperature"
    assert r.value == 21.5
    assert r.unit == "°C"
    assert r.tags == {"site": "north", "rack": "r7"}
    assert r.ts == datetime(2026, 11, 27, 7, 15, 2, 123000, tzinfo=UTC)
    assert r.ts is not None
    assert r.ts.utcoffset() == timedelta(hours=2)


def test_minimal_reading_needs_only_sensor_and_value() -> None:
    """A reading with only sensor and value is accepted with no ts, no tags."""
    r = validate_reading({"sensor": "s", "value": 1}, CONTEXT)
    assert (r.sensor, r.value, r.ts, r.metric, r.unit, r.tags) == ("s", 1.0, None, None, None, {})


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-11-27T07:15:02Z", datetime(2026, 11, 27, 7, 15, 2, tzinfo=UTC)),
        ("2026-11-27T07:15:02.123Z", datetime(2026, 11, 27, 7, 15, 2, 123000, tzinfo=UTC)),
        ("2026-11-27T02:15:02-05:00", datetime(2026, 11, 27, 7, 15, 2, tzinfo=UTC)),
        ("2026-11-27T12:45:02+05:30", datetime(2026, 11, 27, 7, 15, 2, tzinfo=UTC)),
        (1_795_000_000, datetime.fromtimestamp(1_795_000_000, tz=UTC)),
        (1_795_000_000.25, datetime.fromtimestamp(1_795_000_000.25, tz=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        # Seconds, not milliseconds, however large the number.
        (40_000_000_000, datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=40_000_000_000)),
    ],
    ids=["Z", "Z-millis", "minus-5", "plus-5-30", "epoch-int", "epoch-float", "zero", "big"],
)
def test_timestamp_forms(ts: str | float, expected: datetime) -> None:
    """ts is RFC 3339 with an offset or Unix epoch seconds, int or float."""
    r = validate_reading(reading(ts=ts))  # no context: no clock-skew check
    assert r.ts == expected
    assert r.ts is not None
    assert r.ts.utcoffset() is not None


@pytest.mark.parametrize("value", [0, -3, 41.25, 1e300, -1e-300, 10**20])
def test_finite_numbers_are_values(value: float) -> None:
    """Any finite int or float is a value, stored as a float."""
    r = validate_reading(reading(value=value), CONTEXT)
    assert r.value == float(value)
    assert type(r.value) is float


@pytest.mark.parametrize(
    "sensor",
    ["a", "s" * 256, "°C-probe", "温度/センサー", "🌡️", "with space/and:colon"],
    ids=["1-char", "256-chars", "degree", "cjk", "emoji", "punctuation"],
)
def test_sensor_names_within_limits_are_accepted(sensor: str) -> None:
    """A sensor of 1..256 printable characters, any script, is accepted."""
    assert validate_reading(reading(sensor=sensor), CONTEXT).sensor == sensor


def test_limits_are_inclusive() -> None:
    """32 tags, 64-char tag keys, 256-char tag values, 128-char metric, 32-char unit pass."""
    tags = {f"k{i:02}" + "k" * 61: "v" * 256 for i in range(32)}
    assert all(len(key) == 64 for key in tags)
    r = validate_reading(reading(tags=tags, metric="m" * 128, unit="u" * 32), CONTEXT)
    assert len(r.tags) == 32


def test_timestamp_exactly_at_the_skew_limit_is_accepted() -> None:
    """A ts exactly max_clock_skew ahead of now is accepted, and one in the past always is."""
    at_limit = format_timestamp(NOW + timedelta(seconds=300))
    assert validate_reading(reading(ts=at_limit), CONTEXT).ts == NOW + timedelta(seconds=300)
    assert validate_reading(reading(ts="2001-01-01T00:00:00Z"), CONTEXT).ts is not None


# --- readings: rejected --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        pytest.param(reading(value="41.2"), "value", "string", id="value-string"),
        pytest.param(reading(value=True), "value", "boolean", id="value-true"),
        pytest.param(reading(value=False), "value", "boolean", id="value-false"),
        pytest.param(reading(value=None), "value", "null", id="value-null"),
        pytest.param(reading(value=[1]), "value", "array", id="value-array"),
        pytest.param(json.loads('{"sensor":"s","value":NaN}'), "value", "finite", id="nan"),
        pytest.param(json.loads('{"sensor":"s","value":Infinity}'), "value", "finite", id="inf"),
        pytest.param(json.loads('{"sensor":"s","value":-Infinity}'), "value", "finite", id="-inf"),
        pytest.param(reading(value=10**400), "value", "finite", id="int-overflows-float"),
        pytest.param(reading(value=...), "value", "required", id="missing-value"),
        pytest.param(reading(sensor=...), "sensor", "required", id="missing-sensor"),
        pytest.param(reading(sensor=""), "sensor", "at least 1", id="empty-sensor"),
        pytest.param(reading(sensor="s" * 257), "sensor", "at most 256", id="sensor-257"),
        pytest.param(reading(sensor="soil\x01"), "sensor", "control", id="sensor-soh"),
        pytest.param(reading(sensor="soil\n3"), "sensor", "control", id="sensor-newline"),
        pytest.param(reading(sensor="soil\x00"), "sensor", "control", id="sensor-nul"),
        pytest.param(reading(sensor="soil\x7f"), "sensor", "control", id="sensor-del"),
        pytest.param(reading(sensor=3), "sensor", "string", id="sensor-number"),
        pytest.param(reading(unit="%\x1b[2J"), "unit", "control", id="unit-escape"),
        pytest.param(reading(metric="m\r"), "metric", "control", id="metric-cr"),
        pytest.param(reading(tags={"k\x07": "v"}), "tags", "control", id="tag-key-bel"),
        pytest.param(reading(tags={"k": "v\x9b"}), "tags.k", "control", id="tag-value-csi"),
        pytest.param(reading(metric="m" * 129), "metric", "at most 128", id="metric-129"),
        pytest.param(reading(unit="u" * 33), "unit", "at most 32", id="unit-33"),
        pytest.param(
            reading(tags={f"k{i}": "v" for i in range(33)}), "tags", "at most 32", id="tags-33"
        ),
        pytest.param(reading(tags={"k" * 65: "v"}), "tags", "at most 64", id="tag-key-65"),
        pytest.param(reading(tags={"k": "v" * 257}), "tags.k", "at most 256", id="tag-value-257"),
        pytest.param(reading(tags={"k": 1}), "tags.k", "string", id="tag-value-number"),
        pytest.param(reading(tags=["a"]), "tags", "dictionary", id="tags-array"),
        pytest.param(reading(ts="2026-11-27T07:15:02"), "ts", "with an offset", id="ts-no-offset"),
        pytest.param(reading(ts="yesterday"), "ts", "RFC 3339", id="ts-garbage"),
        pytest.param(reading(ts=True), "ts", "RFC 3339", id="ts-bool"),
        pytest.param(reading(ts=1e300), "ts", "out of range", id="ts-epoch-huge"),
        pytest.param(reading(ts="1795000000"), "ts", "RFC 3339", id="ts-numeric-string"),
        pytest.param(reading(ts="1795000000000"), "ts", "RFC 3339", id="ts-numeric-string-millis"),
    ],
)
def test_invalid_readings_are_rejected_naming_the_field(raw: Any, field: str, words: str) -> None:
    """An invalid reading is rejected with one reason that starts with the field's name."""
    reasons = reasons_for(raw)
    assert len(reasons) == 1, reasons
    assert reasons[0].startswith(field), reasons
    assert words.lower() in reasons[0].lower(), reasons


def test_unknown_key_is_named() -> None:
    """A key outside the reading schema is rejected and the reason names that key."""
    assert reasons_for(reading(colour="red")) == ("colour: unknown key",)


def test_unknown_keys_are_each_named() -> None:
    """Two unknown keys give two reasons, one per key."""
    assert sorted(reasons_for(reading(colour="red", size=3))) == [
        "colour: unknown key",
        "size: unknown key",
    ]


def test_several_errors_give_several_reasons() -> None:
    """A reading wrong in several fields gets one reason per field."""
    reasons = reasons_for({"sensor": "", "value": "x", "ts": "2026-11-27T07:15:02"})
    assert sorted(reason.split(":")[0] for reason in reasons) == ["sensor", "ts", "value"]


@pytest.mark.parametrize(
    "ts",
    [
        format_timestamp(NOW + timedelta(seconds=301)),
        "2026-11-27T09:20:01+02:00",
        NOW.timestamp() + 301,
        int(NOW.timestamp()) + 3600,
    ],
    ids=["rfc3339-utc", "rfc3339-offset", "epoch-float", "epoch-int"],
)
def test_timestamp_beyond_clock_skew_is_rejected(ts: str | float) -> None:
    """A ts more than max_clock_skew ahead of now is rejected, naming ts."""
    (reason,) = reasons_for(reading(ts=ts))
    assert reason.startswith("ts:")
    assert "future" in reason


def test_clock_skew_is_configurable() -> None:
    """The same ts passes with a larger max_clock_skew and fails with a smaller one."""
    ts = format_timestamp(NOW + timedelta(seconds=60))
    assert validate_reading(reading(ts=ts), validation_context(now=NOW, max_clock_skew=120))
    with pytest.raises(ValidationError, match="future"):
        validate_reading(reading(ts=ts), validation_context(now=NOW, max_clock_skew=30))


def test_future_check_needs_a_context() -> None:
    """Without a validation context no clock-skew check is made."""
    assert validate_reading(reading(ts="2999-01-01T00:00:00Z")).ts is not None


def test_validation_context_defaults_to_now_and_300_s() -> None:
    """validation_context() uses the current UTC time and a 300 s skew."""
    before = datetime.now(UTC)
    context = validation_context()
    assert before <= context["now"] <= datetime.now(UTC)
    assert context["max_clock_skew"] == 300


@pytest.mark.parametrize("raw", [[1, 2], "reading", 42, None, True], ids=repr)
def test_non_object_reading_is_rejected(raw: Any) -> None:
    """A reading that is not a JSON object is rejected as such."""
    assert reasons_for(raw) == ("reading: must be a JSON object",)
    with pytest.raises(ValidationError):
        validate_reading(raw)


def test_reading_model_is_frozen() -> None:
    """A validated reading cannot be modified."""
    r = validate_reading(GOOD)
    with pytest.raises(ValidationError):
        r.value = 3.0  # type: ignore[misc]


# --- batches of readings -------------------------------------------------------------------


def test_clean_batch_keeps_every_reading_with_its_index() -> None:
    """A batch of valid readings comes back whole, in order, with indexes."""
    raws = [reading(value=float(i)) for i in range(5)]
    accepted, rejected = validate_readings(raws, CONTEXT)
    assert rejected == []
    assert [(i, r.value) for i, r in accepted] == [(i, float(i)) for i in range(5)]


def test_mixed_batch_rejects_exactly_the_bad_indexes() -> None:
    """Only the bad readings are rejected, by index; the good ones keep their own indexes."""
    raws = [
        reading(value=0.0),
        reading(value="1"),
        reading(value=2.0),
        [3],
        reading(value=4.0, tags={"ok": "yes"}),
        reading(colour="red"),
        reading(ts=format_timestamp(NOW + timedelta(days=1))),
        reading(value=7.0, ts=1_795_000_000),
    ]
    accepted, rejected = validate_readings(raws, CONTEXT)
    assert [index for index, _ in accepted] == [0, 2, 4, 7]
    assert [r.value for _, r in accepted] == [0.0, 2.0, 4.0, 7.0]
    assert all(isinstance(r, Reading) for _, r in accepted)
    assert [r.index for r in rejected] == [1, 3, 5, 6]
    assert [r.errors[0].split(":")[0] for r in rejected] == ["value", "reading", "colour", "ts"]


def test_empty_batch_validates_to_nothing() -> None:
    """An empty batch has no accepted and no rejected readings."""
    assert validate_readings([], CONTEXT) == ([], [])


def test_rejection_wire_form() -> None:
    """A rejection goes on the wire as {"index": i, "errors": [...]}."""
    rejection = Rejection(3, ("value: must be a finite number",))
    assert rejection.to_wire() == {"index": 3, "errors": ["value: must be a finite number"]}


def test_reading_to_wire_round_trips() -> None:
    """to_wire gives a dict that validates back to an equal reading, ts in UTC with Z."""
    r = validate_reading(GOOD, CONTEXT)
    wire = r.to_wire()
    assert wire["ts"] == "2026-11-27T07:15:02.123000Z"
    assert validate_reading(json.loads(json.dumps(wire)), CONTEXT) == r
    assert validate_reading({"sensor": "s", "value": 1}).to_wire() == {"sensor": "s", "value": 1.0}


# --- agent messages ------------------------------------------------------------------------


def test_parse_hello() -> None:
    """A hello object parses to Hello with agent, token and protocol."""
    msg = parse_client_message({"type": "hello", "agent": "a-1", "token": "s3cret", "protocol": 1})
    assert isinstance(msg, Hello)
    assert (msg.agent, msg.token, msg.protocol) == ("a-1", "s3cret", 1)


def test_parse_hello_without_token() -> None:
    """The token is optional and the protocol defaults to 1."""
    msg = parse_client_message({"type": "hello", "agent": "a-1"})
    assert isinstance(msg, Hello)
    assert (msg.token, msg.protocol) == (None, PROTOCOL_VERSION)


def test_parse_batch() -> None:
    """A batch object parses to Batch, readings left raw."""
    raws = [GOOD, {"sensor": "x", "value": "bad"}]
    msg = parse_client_message({"type": "batch", "seq": 7, "readings": raws})
    assert isinstance(msg, Batch)
    assert msg.seq == 7
    assert msg.readings == raws


def test_parse_raw_reading() -> None:
    """An object without a type key is a fire-and-forget reading, returned unvalidated."""
    raw = {"sensor": "s", "value": "not validated here"}
    assert parse_client_message(raw) == raw


@pytest.mark.parametrize("obj", [[GOOD], "hello", 1, 1.5, None, True], ids=repr)
def test_parse_client_non_object(obj: Any) -> None:
    """A JSON payload that is not an object raises NotAnObject."""
    with pytest.raises(NotAnObject) as info:
        parse_client_message(obj)
    assert info.value.code == "not_an_object"


@pytest.mark.parametrize("kind", ["welcome", "ack", "HELLO", "", 1, ["batch"], {"a": 1}])
def test_parse_client_unknown_type(kind: Any) -> None:
    """A type other than hello and batch raises UnknownType."""
    with pytest.raises(UnknownType) as info:
        parse_client_message({"type": kind, "agent": "a"})
    assert info.value.code == "unknown_type"


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"type": "batch", "seq": -1, "readings": []}, "seq"),
        ({"type": "batch", "seq": 1}, "readings"),
        ({"type": "batch", "readings": []}, "seq"),
        ({"type": "batch", "seq": "1", "readings": []}, "seq"),
        ({"type": "batch", "seq": 1.5, "readings": []}, "seq"),
        ({"type": "batch", "seq": True, "readings": []}, "seq"),
        ({"type": "batch", "seq": 1, "readings": {"a": 1}}, "readings"),
        ({"type": "batch", "seq": 1, "readings": [], "extra": 1}, "extra"),
        ({"type": "hello"}, "agent"),
        ({"type": "hello", "agent": ""}, "agent"),
        ({"type": "hello", "agent": "a\nb"}, "agent"),
        ({"type": "hello", "agent": "a", "token": 5}, "token"),
    ],
    ids=[
        "negative-seq",
        "missing-readings",
        "missing-seq",
        "string-seq",
        "float-seq",
        "bool-seq",
        "readings-object",
        "batch-extra-key",
        "hello-no-agent",
        "hello-empty-agent",
        "hello-agent-newline",
        "hello-token-number",
    ],
)
def test_parse_client_invalid_message(obj: dict[str, Any], field: str) -> None:
    """A hello or batch with bad fields raises ProtocolViolation naming the field."""
    with pytest.raises(ProtocolViolation) as info:
        parse_client_message(obj)
    assert info.value.code == "protocol_violation"
    assert field in str(info.value)


def test_protocol_violation_never_echoes_the_token() -> None:
    """A rejected hello's error detail does not contain the token it carried."""
    with pytest.raises(ProtocolViolation) as info:
        parse_client_message({"type": "hello", "agent": "", "token": "hunter2-secret"})
    assert "hunter2-secret" not in str(info.value)


def test_hello_repr_never_shows_the_token() -> None:
    """repr, str and f-strings of a Hello, alone or in a container, hide its token."""
    hello = Hello(agent="a-1", token="hunter2-secret")
    for text in (
        repr(hello),
        str(hello),
        f"{hello}",
        f"{hello!r}",
        repr([hello]),
        repr({1: hello}),
    ):
        assert "hunter2-secret" not in text
        assert "a-1" in text


def test_hello_encodes_and_parses_back() -> None:
    """A Hello encodes to JSON that parses back to an equal Hello; no token key when unset."""
    for hello in (Hello(agent="a-1", token="t"), Hello(agent="a-1")):
        assert parse_client_message(decode_json(hello.encode())) == hello
    assert json.loads(Hello(agent="a-1").encode()) == {
        "type": "hello",
        "agent": "a-1",
        "protocol": 1,
    }


def test_batch_encodes_and_parses_back() -> None:
    """A Batch encodes to JSON that parses back to an equal Batch."""
    batch = Batch(seq=12, readings=[GOOD])
    assert parse_client_message(decode_json(batch.encode())) == batch


# --- decode_json ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"a": 1}', {"a": 1}),
        ('{"unit": "°C", "sensor": "🌡"}'.encode(), {"unit": "°C", "sensor": "🌡"}),
        (b"[1, 2]", [1, 2]),
        (b'"text"', "text"),
        (b'{"s": "\\ud83c\\udf21"}', {"s": "🌡"}),
    ],
    ids=["object", "utf8", "array", "string", "escaped-pair"],
)
def test_decode_json_valid(payload: bytes, expected: Any) -> None:
    """Valid UTF-8 JSON decodes to its value, whatever its JSON type."""
    assert decode_json(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="unclosed"),
        pytest.param(b'{"a": 1', id="unclosed-object"),
        pytest.param(b"{'a': 1}", id="single-quotes"),
        pytest.param(b'{"a": 1}{"b": 2}', id="two-values"),
        pytest.param(b'{"a": 1} x', id="trailing-garbage"),
        pytest.param(b"\xff", id="invalid-utf8-byte"),
        pytest.param(b'{"a": "\xc3"}', id="truncated-utf8-sequence"),
        pytest.param(b'{"a": "\xc0\xaf"}', id="overlong-utf8"),
        pytest.param(b'{"a": "\xed\xa0\x80"}', id="utf8-encoded-surrogate"),
        pytest.param('{"a": 1}'.encode("utf-16"), id="utf16-with-bom"),
        pytest.param('{"a": 1}'.encode("utf-16-le"), id="utf16-le"),
        pytest.param('{"a": 1}'.encode("utf-32"), id="utf32"),
    ],
)
def test_decode_json_invalid_is_bad_json(payload: bytes) -> None:
    """A payload that is not UTF-8 JSON raises BadJson, nothing else."""
    with pytest.raises(BadJson) as info:
        decode_json(payload)
    assert info.value.code == "bad_json"


def test_decode_json_deep_nesting_is_bad_json() -> None:
    """A hostile, deeply nested payload raises BadJson, not RecursionError."""
    depth = 100_000
    with pytest.raises(BadJson):
        decode_json(b"[" * depth + b"]" * depth)


# --- collector messages --------------------------------------------------------------------

SERVER_MESSAGES = [
    Welcome(collector="c-1", max_frame_bytes=1_048_576, window=8),
    Ack(seq=3, accepted=10),
    Ack(
        seq=4,
        accepted=1,
        rejected=[
            RejectedReading(index=0, errors=["value: must be a finite number"]),
            RejectedReading(index=2, errors=["colour: unknown key", "ts: is in the future"]),
        ],
    ),
    Nack(seq=5, reason="sink postgres is down", retry_after_ms=250),
    Goaway(reason="draining"),
    Error(code="bad_header", detail="header b'abcdefghij' is not a length"),
    Error(code="idle_timeout"),
]


@pytest.mark.parametrize("msg", SERVER_MESSAGES, ids=lambda m: type(m).__name__)
def test_server_messages_round_trip(msg: Any) -> None:
    """Each collector message encodes to one JSON object and parses back equal."""
    payload = msg.encode()
    assert isinstance(payload, bytes)
    assert isinstance(json.loads(payload), dict)
    assert parse_server_message(payload) == msg


@pytest.mark.parametrize(
    ("msg", "wire"),
    [
        (
            Welcome(collector="c-1", max_frame_bytes=1_048_576, window=8),
            {
                "type": "welcome",
                "collector": "c-1",
                "protocol": 1,
                "max_frame_bytes": 1_048_576,
                "window": 8,
            },
        ),
        (
            Ack(seq=4, accepted=1, rejected=[RejectedReading(index=2, errors=["x: y"])]),
            {
                "type": "ack",
                "seq": 4,
                "accepted": 1,
                "rejected": [{"index": 2, "errors": ["x: y"]}],
            },
        ),
        (
            Nack(seq=5, reason="busy", retry_after_ms=250),
            {"type": "nack", "seq": 5, "reason": "busy", "retry_after_ms": 250},
        ),
        (Goaway(reason="draining"), {"type": "goaway", "reason": "draining"}),
        (
            Error(code="unauthorized", detail="bad token"),
            {"type": "error", "code": "unauthorized", "detail": "bad token"},
        ),
    ],
    ids=["welcome", "ack", "nack", "goaway", "error"],
)
def test_server_messages_match_the_wire_protocol(msg: Any, wire: dict[str, Any]) -> None:
    """Each collector message encodes to exactly the JSON object of docs/protocol.md#messages."""
    assert json.loads(msg.encode()) == wire


def test_parse_server_message_from_hand_written_json() -> None:
    """A collector payload written by hand, ack without rejected, parses to an Ack."""
    msg = parse_server_message(b'{"type":"ack","seq":9,"accepted":3}')
    assert msg == Ack(seq=9, accepted=3, rejected=[])


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"not json", BadJson),
        (b"\xff", BadJson),
        (b"[]", NotAnObject),
        (b'"welcome"', NotAnObject),
        (b'{"type": "hello", "agent": "a"}', UnknownType),
        (b'{"type": "nope"}', UnknownType),
        (b'{"seq": 1}', UnknownType),
        (b'{"type": null}', UnknownType),
        (b'{"type": 3}', UnknownType),
        (b'{"type": []}', UnknownType),
        (b'{"type": {}}', UnknownType),
        (b'{"type": "ack", "seq": 1}', ProtocolViolation),
        (b'{"type": "welcome", "collector": "c"}', ProtocolViolation),
        (b'{"type": "nack", "seq": 1, "reason": "x", "retry_after_ms": "soon"}', ProtocolViolation),
        (b'{"type": "goaway", "reason": "x", "extra": 1}', ProtocolViolation),
    ],
    ids=[
        "bad-json",
        "bad-utf8",
        "array",
        "string",
        "client-type",
        "unknown-type",
        "no-type",
        "null-type",
        "number-type",
        "array-type",
        "object-type",
        "ack-missing-accepted",
        "welcome-missing-fields",
        "nack-bad-retry",
        "goaway-extra-key",
    ],
)
def test_parse_server_message_errors(payload: bytes, error: type[ProtocolError]) -> None:
    """A wrong collector payload raises the matching ProtocolError subclass, nothing else."""
    with pytest.raises(error) as info:
        parse_server_message(payload)
    assert info.value.code in ERROR_CODES


DOCUMENTED_CODES = {
    "bad_header",
    "frame_too_large",
    "truncated_frame",
    "bad_json",
    "not_an_object",
    "unknown_type",
    "hello_required",
    "unauthorized",
    "too_many_connections",
    "idle_timeout",
    "protocol_violation",
}


def test_error_codes_are_the_documented_set() -> None:
    """ERROR_CODES is exactly the list of docs/protocol.md#errors."""
    assert ERROR_CODES == DOCUMENTED_CODES


def test_format_timestamp_is_utc_with_z() -> None:
    """format_timestamp writes RFC 3339 in UTC with microseconds and Z."""
    ts = datetime(2026, 11, 27, 9, 15, 2, 123000, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(ts) == "2026-11-27T07:15:02.123000Z"
    assert format_timestamp(datetime(2026, 1, 2, tzinfo=UTC)) == "2026-01-02T00:00:00.000000Z"


@settings(max_examples=examples(500), deadline=None)
@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.builds(
            timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
        ),
    )
)
def test_format_timestamp_reads_back_as_the_same_instant(ts: datetime) -> None:
    """Any aware datetime: RFC 3339 with a 4-digit year that the exact model reads back as
    the same instant (year 999 was written "999-..." once, which the collector refused)."""
    text = format_timestamp(ts)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z", text), text
    assert validate_reading({"sensor": "s", "value": 1, "ts": text}).ts == ts
    if ts.astimezone(UTC).year >= 1000:  # what strftime wrote before, where it was right
        assert text == ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
