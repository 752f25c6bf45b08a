"""Readings on the exact path: the model that names every problem (docs/protocol.md#readings).

:class:`Reading` is built from the field table of :mod:`telemetry.protocol.schema`, as the
native fast path is. Readings are validated apart from their batch (:func:`validate_readings`)
so that one bad reading is rejected with reasons naming its fields while the rest of the batch
goes on. Pure: no sockets, no event loop.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

from telemetry.protocol.schema import (
    MAX_TAGS,
    METRIC,
    RFC3339,
    SENSOR,
    TAG_KEY,
    TAG_VALUE,
    UNIT,
    epoch_to_datetime,
)

DEFAULT_MAX_CLOCK_SKEW = 300.0


_RFC3339 = re.compile(RFC3339)


def _timestamp(value: Any, info: ValidationInfo) -> datetime:
    ts = _parse_timestamp(value)
    context = info.context
    if context is not None and "now" in context:
        skew = context.get("max_clock_skew", DEFAULT_MAX_CLOCK_SKEW)
        if (ts - context["now"]).total_seconds() > skew:
            raise PydanticCustomError(
                "future_timestamp", "is more than {skew} s in the future", {"skew": float(skew)}
            )
    return ts


def _parse_timestamp(value: Any) -> datetime:
    # Numbers are Unix epoch seconds (pydantic alone would read large ones as milliseconds);
    # strings must be RFC 3339 with an offset (pydantic alone would take "1700000000").
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise PydanticCustomError("finite_number", "epoch seconds must be finite")
        converted = epoch_to_datetime(value)  # rounds like the fast path, where it applies
        if converted is not None:
            return converted
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise PydanticCustomError("epoch_range", "epoch seconds out of range") from exc
    if isinstance(value, str):
        match = _RFC3339.fullmatch(value)
        if match is None:
            raise PydanticCustomError(
                "rfc3339", "must be RFC 3339 with an offset, e.g. 2026-11-27T07:15:02.123Z"
            )
        fraction, offset = match.groups()
        if (fraction and len(fraction) > 7) or offset == "z":
            # Python reads at most 6 fraction digits (RFC 3339 allows nanoseconds), and no "z".
            start = match.start(1) if fraction else match.start(2)
            value = f"{value[:start]}{(fraction or '')[:7]}{offset.upper()}"
        try:
            return datetime.fromisoformat(value)
        except ValueError as exc:
            raise PydanticCustomError("rfc3339", "is not a valid date and time") from exc
    raise PydanticCustomError(
        "timestamp_type", "must be an RFC 3339 string with an offset or Unix epoch seconds"
    )


# Strict: "41.2" and true are not numbers; NaN and infinities are not finite. Native checks.
Value = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Timestamp = Annotated[datetime, PlainValidator(_timestamp)]


class Reading(BaseModel):
    """One sensor reading as it travels on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    sensor: Annotated[str, SENSOR.limits(), SENSOR.checks()]
    value: Value
    ts: Timestamp | None = None
    metric: Annotated[str, METRIC.limits(), METRIC.checks()] | None = None
    unit: Annotated[str, UNIT.limits(), UNIT.checks()] | None = None
    tags: dict[
        Annotated[str, TAG_KEY.limits(), TAG_KEY.checks()],
        Annotated[str, TAG_VALUE.limits(), TAG_VALUE.checks()],
    ] = Field(default_factory=dict, max_length=MAX_TAGS)

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict an agent sends (``ts`` as RFC 3339, unset fields left out)."""
        out: dict[str, Any] = {"sensor": self.sensor, "value": self.value}
        if self.ts is not None:
            out["ts"] = format_timestamp(self.ts)
        if self.metric is not None:
            out["metric"] = self.metric
        if self.unit is not None:
            out["unit"] = self.unit
        if self.tags:
            out["tags"] = dict(self.tags)
        return out


def format_timestamp(ts: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, to the microsecond: ``2026-11-27T07:15:02.123000Z``.

    ``isoformat`` pads the year to 4 digits (``strftime("%Y")`` writes year 999 as ``999``,
    which is not RFC 3339) and costs less; its ``+00:00`` becomes ``Z``.
    """
    return ts.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


# --- validating readings -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejection:
    """A reading that failed validation: its index in the batch and reasons naming fields."""

    index: int
    errors: tuple[str, ...]
    #: The error types (``missing``, ``extra_forbidden``...): bounded, for metrics labels.
    kinds: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {"index": self.index, "errors": list(self.errors)}


def describe_errors(exc: ValidationError, *, skip: int = 0) -> tuple[str, ...]:
    """Turn pydantic errors into short reasons that name the field: ``value: ...``.

    Runs only for rejected readings, so it can afford friendlier words than pydantic's.
    """
    reasons: list[str] = []
    for error in exc.errors(include_url=False):
        loc = error["loc"][skip:]
        field = ".".join(str(part) for part in loc) or "reading"
        kind = error["type"]
        if kind == "extra_forbidden":
            reasons.append(f"{field}: unknown key")
        elif kind in {"model_type", "dict_type"} and not loc:
            reasons.append("reading: must be a JSON object")
        elif (
            kind == "float_type"
            and isinstance(error.get("input"), int)
            and not isinstance(error.get("input"), bool)
        ):
            reasons.append(f"{field}: must be a finite number")  # an integer beyond float
        elif kind == "float_type":
            reasons.append(f"{field}: must be a number, not {_json_kind(error.get('input'))}")
        elif kind == "finite_number":
            reasons.append(f"{field}: must be a finite number")
        else:
            reasons.append(f"{field}: {error['msg']}")
    return tuple(reasons)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


#: pydantic's error types -> the stable reason codes the metrics carry (a pydantic upgrade that
#: renames a type changes no label; an unknown type is ``invalid``).
REASON_CODES = {
    "missing": "missing_field",
    "extra_forbidden": "unknown_key",
    "finite_number": "not_finite",
    "string_too_long": "too_long",
    "too_long": "too_long",
    "string_too_short": "too_short",
    "too_short": "too_short",
    "control_characters": "control_characters",
    "rfc3339": "bad_timestamp",
    "timestamp_type": "bad_timestamp",
    "epoch_range": "bad_timestamp",
    "future_timestamp": "future_timestamp",
    "model_type": "not_an_object",
    "dict_type": "wrong_type",
    "string_type": "wrong_type",
    "float_type": "wrong_type",
    "int_type": "wrong_type",
    "bool_type": "wrong_type",
    "list_type": "wrong_type",
}


def error_kinds(exc: ValidationError) -> tuple[str, ...]:
    """The distinct stable reason codes of a validation error, in order (:data:`REASON_CODES`)."""
    return tuple(
        dict.fromkeys(
            REASON_CODES.get(error["type"], "invalid") for error in exc.errors(include_url=False)
        )
    )


_READINGS = TypeAdapter(list[Reading])


def validation_context(
    now: datetime | None = None, max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW
) -> dict[str, Any]:
    """The context that makes validation reject readings from the future."""
    return {"now": now or datetime.now(UTC), "max_clock_skew": max_clock_skew}


def validate_reading(raw: Any, context: dict[str, Any] | None = None) -> Reading:
    """Validate one decoded reading object; raise :class:`pydantic.ValidationError`."""
    if not isinstance(raw, dict):
        raise ValidationError.from_exception_data(
            "Reading",
            [{"type": "model_type", "loc": (), "input": raw, "ctx": {"class_name": "Reading"}}],
        )
    return Reading.model_validate(raw, context=context)


def validate_readings(
    raws: Sequence[Any], context: dict[str, Any] | None = None
) -> tuple[list[tuple[int, Reading]], list[Rejection]]:
    """Validate a batch's readings: ``([(index, reading)...], [rejection...])``.

    The whole list is validated in one call; only when that fails is each reading
    validated alone, so a clean batch costs one pass.
    """
    try:
        readings = _READINGS.validate_python(raws, context=context)
    except ValidationError:
        pass
    else:
        return list(enumerate(readings)), []
    accepted: list[tuple[int, Reading]] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(raws):
        try:
            accepted.append((index, validate_reading(raw, context)))
        except ValidationError as exc:
            rejected.append(Rejection(index, describe_errors(exc), error_kinds(exc)))
    return accepted, rejected
