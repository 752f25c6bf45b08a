"""The reading's field table, written once (docs/protocol.md#readings).

Every limit of a reading lives here: which fields it has, which are required, how long each
string may be, where control characters are refused, how many tags, what a timestamp looks
like. Both validators are built from this table:

- the exact model :class:`telemetry.protocol.readings.Reading` (names every problem), through
  :meth:`Text.limits` and :meth:`Text.checks`;
- the native fast path (:mod:`telemetry.protocol.fastpath`, one pydantic-core call per frame),
  through :func:`reading_fields`.

``tests/unit/test_fastpath.py`` holds the two to the same answers with hypothesis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from pydantic import AfterValidator, Field
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, SchemaValidator, ValidationError
from pydantic_core import core_schema as cs

#: Unicode category Cc is exactly these two ranges.
CONTROL_CHARS = "\x00-\x1f\x7f-\x9f"
_CONTROL_RE = re.compile(f"[{CONTROL_CHARS}]")
#: The fast path's form of the same rule.
NO_CONTROL_PATTERN = f"^[^{CONTROL_CHARS}]*$"
#: RFC 3339 ``date-time`` with an offset (``Z``, ``z`` or ``+hh:mm``): pydantic alone would also
#: take ``"1700000000"``, ``hh:mm`` without seconds and ``+hhmm``.
RFC3339 = r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
RFC3339_PATTERN = f"^{RFC3339}$"
#: Epoch seconds converted natively; pydantic reads larger numbers as milliseconds.
EPOCH_LIMIT = 2e10
#: Most tags a reading may carry.
MAX_TAGS = 32


def no_control_chars(value: str) -> str:
    """The exact path's check: raise a pydantic error naming the rule."""
    if _CONTROL_RE.search(value) is not None:
        raise PydanticCustomError("control_characters", "must not contain control characters")
    return value


@dataclass(frozen=True, slots=True)
class Text:
    """A string field's rules."""

    max_length: int
    min_length: int = 0
    #: Control characters refused (a terminal or a log would show them raw).
    no_control: bool = False

    def limits(self) -> FieldInfo:
        """The length limits, as metadata of an exact model's ``Annotated`` field."""
        limits: FieldInfo = Field(min_length=self.min_length or None, max_length=self.max_length)
        return limits

    def checks(self) -> AfterValidator | FieldInfo:
        """The character rule, as metadata of an exact model's ``Annotated`` field."""
        if self.no_control:
            return AfterValidator(no_control_chars)
        nothing: FieldInfo = Field()
        return nothing

    def core(self) -> cs.CoreSchema:
        """The same rules as a native core schema."""
        return cs.str_schema(
            min_length=self.min_length or None,
            max_length=self.max_length,
            pattern=NO_CONTROL_PATTERN if self.no_control else None,
        )


# --- the table ------------------------------------------------------------------------------

SENSOR = Text(256, min_length=1, no_control=True)
METRIC = Text(128, no_control=True)
UNIT = Text(32, no_control=True)
TAG_KEY = Text(64, min_length=1, no_control=True)
TAG_VALUE = Text(256, no_control=True)
#: An agent id (``hello``), which becomes part of every reading id.
AGENT_ID = Text(128, min_length=1, no_control=True)

#: Field name -> required. ``sensor`` and ``value`` are required; the rest may be missing or
#: ``null``, except ``tags``, which may be missing.
FIELDS: dict[str, bool] = {
    "sensor": True,
    "value": True,
    "ts": False,
    "metric": False,
    "unit": False,
    "tags": False,
}


# --- native schemas built from the table ----------------------------------------------------


def value_schema() -> cs.CoreSchema:
    """A finite JSON number: ``"41.2"``, ``true``, NaN and infinities are refused."""
    return cs.float_schema(strict=True, allow_inf_nan=False)


def epoch_seconds_schema() -> cs.CoreSchema:
    """A finite number of epoch seconds within +/-``EPOCH_LIMIT``."""
    return cs.float_schema(strict=True, allow_inf_nan=False, gt=-EPOCH_LIMIT, lt=EPOCH_LIMIT)


def epoch_schema() -> cs.CoreSchema:
    """Epoch seconds within +/-``EPOCH_LIMIT`` to an aware UTC datetime, natively."""
    return cs.chain_schema([epoch_seconds_schema(), cs.datetime_schema()])


def ts_schema(*, numbers_first: bool = False) -> cs.CoreSchema:
    """``ts``: null, an RFC 3339 string, or epoch seconds, to an aware datetime.

    The two branches take disjoint JSON types (a string, a number), so their order never
    changes a result, only the cost of the branch that fails first. The collector picks the
    order per batch, as a batch's first ``ts`` suggests (``telemetry.collector.validation``).
    """
    text = cs.chain_schema(
        [cs.str_schema(pattern=RFC3339_PATTERN), cs.datetime_schema(tz_constraint="aware")]
    )
    epoch = epoch_schema()
    return cs.nullable_schema(
        cs.union_schema([epoch, text] if numbers_first else [text, epoch], mode="left_to_right")
    )


def tags_schema() -> cs.CoreSchema:
    return cs.dict_schema(TAG_KEY.core(), TAG_VALUE.core(), max_length=MAX_TAGS)


def reading_fields(*, numbers_first: bool = False) -> dict[str, tuple[cs.CoreSchema, bool]]:
    """A reading's fields as native schemas: name -> (schema, required). Optional ones may also
    be ``null``. ``numbers_first``: see :func:`ts_schema`."""
    schemas = {
        "sensor": SENSOR.core(),
        "value": value_schema(),
        "ts": ts_schema(numbers_first=numbers_first),
        "metric": cs.nullable_schema(METRIC.core()),
        "unit": cs.nullable_schema(UNIT.core()),
        "tags": tags_schema(),
    }
    return {name: (schemas[name], required) for name, required in FIELDS.items()}


_EPOCH = SchemaValidator(epoch_schema())


def epoch_to_datetime(value: float) -> datetime | None:
    """Epoch seconds to an aware UTC datetime exactly as the fast path does, or ``None`` when
    the value is outside its range (the exact path then uses :meth:`datetime.fromtimestamp`)."""
    try:
        result: datetime = _EPOCH.validate_python(value)
    except ValidationError:
        return None
    return result
