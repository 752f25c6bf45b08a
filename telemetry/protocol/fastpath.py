"""The clean-input fast path: a frame's JSON bytes validated in one native call.

How this works: the validators here are built from the field table of
:mod:`telemetry.protocol.schema` as core schemas that need no Python callback: the JSON is
parsed and checked in Rust. The collector runs the same fields through :func:`record_schema`
and :func:`batch_schema` (:mod:`telemetry.collector.validation`), which give its record
objects; the agent checks a clean reading dict with :func:`encode_reading`. They accept a
*subset* of what the exact model (:class:`telemetry.protocol.readings.Reading`) accepts, with
the same values, and say no to anything else: a ``hello``, a bad reading, a timestamp they do
not read natively, malformed JSON. The caller then takes the exact path, which finds the
precise reasons. So a clean batch costs one call, and a batch with a problem costs what it
always did.

What stays out of this path, by design:
- the future-timestamp check (``max_clock_skew``) depends on the receive time: the caller
  compares the readings' latest ``ts`` with its limit and takes the exact path if it is beyond;
- epoch seconds beyond +/-``EPOCH_LIMIT`` (pydantic would read them as milliseconds).

``tests/unit/test_fastpath.py`` checks the subset rule with hypothesis: whatever the fast path
accepts, the exact path accepts with equal values.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import PydanticSerializationError, SchemaValidator, ValidationError, to_json
from pydantic_core import core_schema as cs

from telemetry.protocol.schema import epoch_seconds_schema, reading_fields


def _field(schema: cs.CoreSchema, *, required: bool = False) -> cs.TypedDictField:
    return cs.typed_dict_field(schema, required=required)


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


#: A fire-and-forget reading's JSON to a dict; for the agent's checks of clean dicts.
READING_VALIDATOR = SchemaValidator(READING_SCHEMA)


# For a reading whose ts is a float (``time.time()``, what Python producers pass): the epoch
# range check alone, with no failed string branch first and no datetime built
# (docs/benchmarks.md#figures-behind-code-choices).
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
