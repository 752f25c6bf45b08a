"""The clean-input fast path: a frame's JSON bytes validated in one native call.

How this works: :func:`decode_reading` hands the payload bytes to a pydantic-core validator
built from core schemas that need no Python callback: the JSON is parsed and checked in Rust
and comes out as a plain dict. The collector runs the same fields through
:func:`record_schema` and :func:`batch_schema` (``telemetry.collector.records``), which give
its record objects instead. They accept a *subset* of what the
exact models in :mod:`telemetry.protocol.messages` accept, with the same values, and return
``None`` for anything else: a ``hello``, a bad reading, a timestamp they do not read natively,
malformed JSON. The caller then takes the exact path, which finds the precise reasons. So a
clean batch costs one call, and a batch with a problem costs what it always did.

What stays out of this path, by design:
- the future-timestamp check (``max_clock_skew``) depends on the receive time: the caller
  compares the readings' latest ``ts`` with its limit and takes the exact path if it is beyond;
- epoch seconds beyond +/-2e10 (pydantic would read them as milliseconds).

``tests/unit/test_fastpath.py`` checks the subset rule with hypothesis: whatever the fast path
accepts, the exact path accepts with equal values.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic_core import PydanticSerializationError, SchemaValidator, ValidationError, to_json
from pydantic_core import core_schema as cs

#: Epoch seconds the fast path converts natively; pydantic reads larger numbers as ms.
EPOCH_LIMIT = 2e10
#: RFC 3339 ``date-time`` with an offset (``Z``, ``z`` or ``+hh:mm``): pydantic alone would also
#: take ``"1700000000"``, ``hh:mm`` without seconds and ``+hhmm``.
RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
#: No control characters (Unicode category Cc).
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"


def _field(schema: cs.CoreSchema, *, required: bool = False) -> cs.TypedDictField:
    return cs.typed_dict_field(schema, required=required)


def epoch_seconds_schema() -> cs.CoreSchema:
    """A finite number of epoch seconds within +/-``EPOCH_LIMIT``."""
    return cs.float_schema(strict=True, allow_inf_nan=False, gt=-EPOCH_LIMIT, lt=EPOCH_LIMIT)


def epoch_schema() -> cs.CoreSchema:
    """Epoch seconds within +/-``EPOCH_LIMIT`` to an aware UTC datetime, natively."""
    return cs.chain_schema([epoch_seconds_schema(), cs.datetime_schema()])


def ts_schema(*, numbers_first: bool = False) -> cs.CoreSchema:
    """``ts``: null, an RFC 3339 string, or epoch seconds, to an aware datetime.

    The two branches take disjoint JSON types (a string, a number), so their order never
    changes a result, only the cost: the branch tried first that fails costs ~0.07 µs on a
    string, ~0.15-0.35 µs on a number. The collector picks the order per batch
    (``telemetry.collector.records``), as a batch's first ``ts`` suggests.
    """
    text = cs.chain_schema(
        [cs.str_schema(pattern=RFC3339_PATTERN), cs.datetime_schema(tz_constraint="aware")]
    )
    epoch = epoch_schema()
    return cs.nullable_schema(
        cs.union_schema([epoch, text] if numbers_first else [text, epoch], mode="left_to_right")
    )


def reading_fields(*, numbers_first: bool = False) -> dict[str, tuple[cs.CoreSchema, bool]]:
    """A reading's fields: name -> (schema, required). Optional ones may also be ``null``.
    ``numbers_first``: see :func:`ts_schema`."""
    return {
        "sensor": (cs.str_schema(min_length=1, max_length=256, pattern=NO_CONTROL_PATTERN), True),
        "value": (cs.float_schema(strict=True, allow_inf_nan=False), True),
        "ts": (ts_schema(numbers_first=numbers_first), False),
        "metric": (cs.nullable_schema(cs.str_schema(max_length=128)), False),
        "unit": (cs.nullable_schema(cs.str_schema(max_length=32)), False),
        "tags": (
            cs.dict_schema(
                cs.str_schema(min_length=1, max_length=64),
                cs.str_schema(max_length=256),
                max_length=32,
            ),
            False,
        ),
    }


READING_FIELDS = reading_fields()

READING_SCHEMA = cs.typed_dict_schema(
    {name: _field(schema, required=req) for name, (schema, req) in READING_FIELDS.items()},
    extra_behavior="forbid",
    strict=True,
)


def batch_schema(reading: cs.CoreSchema) -> cs.CoreSchema:
    """A ``batch`` message whose readings are validated by ``reading``."""
    return cs.typed_dict_schema(
        {
            "type": _field(cs.literal_schema(["batch"]), required=True),
            "seq": _field(cs.int_schema(ge=0, strict=True), required=True),
            "readings": _field(cs.list_schema(reading), required=True),
        },
        extra_behavior="forbid",
        strict=True,
    )


def record_schema(cls: type[Any], *, numbers_first: bool = False) -> cs.CoreSchema:
    """A reading validated straight into an instance of ``cls``, a ``slots`` dataclass that has
    a field for each reading field, with no per-reading dict in between.

    pydantic-core creates the instance without calling ``__init__`` and sets only the reading
    fields (a missing one to ``None``, ``tags`` too): the caller sets the others.
    ``numbers_first``: see :func:`ts_schema`.
    """
    reading = reading_fields(numbers_first=numbers_first)
    fields = [  # a missing field is None; only where the wire allows it may null be sent
        cs.dataclass_field(
            name, schema if required else cs.with_default_schema(schema, default=None)
        )
        for name, (schema, required) in reading.items()
    ]
    return cs.dataclass_schema(
        cls,
        cs.dataclass_args_schema(cls.__name__, fields, extra_behavior="forbid"),
        list(reading),
        slots=True,
        strict=True,
    )


#: The validator behind :func:`decode_reading`, for loops that call it per frame.
READING_VALIDATOR = SchemaValidator(READING_SCHEMA)
_EPOCH = SchemaValidator(epoch_schema())


def decode_reading(payload: bytes) -> dict[str, Any] | None:
    """A fire-and-forget reading's payload as a validated dict, or ``None``: take the exact path.

    The dict holds the keys the reading had: ``sensor``, ``value`` and any of ``ts`` (an aware
    datetime or ``None``), ``metric``, ``unit``, ``tags``.
    """
    try:
        reading: dict[str, Any] = READING_VALIDATOR.validate_json(payload)
    except ValidationError:
        return None
    return reading


def epoch_to_datetime(value: float) -> datetime | None:
    """Epoch seconds to an aware UTC datetime exactly as the fast path does, or ``None`` when
    the value is outside its range (the exact path then uses :meth:`datetime.fromtimestamp`)."""
    try:
        result: datetime = _EPOCH.validate_python(value)
    except ValidationError:
        return None
    return result


# For a reading whose ts is a float (``time.time()``, what Python producers pass): the epoch
# range check alone, with no failed string branch first and no datetime built: ~40% cheaper.
_EPOCH_TS_READING = SchemaValidator(
    cs.typed_dict_schema(
        {
            name: _field(epoch_seconds_schema() if name == "ts" else schema, required=required)
            for name, (schema, required) in READING_FIELDS.items()
        },
        extra_behavior="forbid",
        strict=True,
    )
)


def encode_reading(reading: dict[str, Any]) -> bytes | None:
    """A reading dict as compact JSON when the fast path finds it clean as it is, else ``None``
    (the caller then validates it with the exact model, for the reasons)."""
    if type(reading) is not dict:
        return None
    validator = _EPOCH_TS_READING if type(reading.get("ts")) is float else READING_VALIDATOR
    try:
        validator.validate_python(reading)
        return to_json(reading)
    except (ValidationError, PydanticSerializationError):
        return None
