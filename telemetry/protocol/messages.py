"""Message models of wire protocol v1 (DESIGN.md section 2), and their JSON codec.

Agent to collector: a bare reading object (fire-and-forget), :class:`Hello`, :class:`Batch`.
Collector to agent: :class:`Welcome`, :class:`Ack`, :class:`Nack`, :class:`Goaway`,
:class:`Error`. Everything here is pure: no sockets, no event loop.

Readings are validated apart from their batch (:func:`validate_readings`) so that one bad
reading is rejected with reasons naming its fields while the rest of the batch goes on.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

from telemetry.protocol.errors import (
    BadJson,
    NotAnObject,
    ProtocolViolation,
    UnknownType,
)
from telemetry.protocol.fastpath import epoch_to_datetime

PROTOCOL_VERSION = 1
DEFAULT_MAX_CLOCK_SKEW = 300.0
DEFAULT_MAX_BATCH = 10_000
MAX_TAGS = 32


# Unicode category Cc is exactly these two ranges; one regex search beats a loop per character.
_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f]")


def _no_control_chars(value: str) -> str:
    if _CONTROL_CHARS.search(value) is not None:
        raise PydanticCustomError("control_characters", "must not contain control characters")
    return value


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


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


SensorName = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_no_control_chars)]
# Strict: "41.2" and true are not numbers; NaN and infinities are not finite. Native checks.
Value = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Timestamp = Annotated[datetime, PlainValidator(_timestamp)]
TagKey = Annotated[str, Field(min_length=1, max_length=64)]
TagValue = Annotated[str, Field(max_length=256)]


class Reading(BaseModel):
    """One sensor reading as it travels on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    sensor: SensorName
    value: Value
    ts: Timestamp | None = None
    metric: Annotated[str, Field(max_length=128)] | None = None
    unit: Annotated[str, Field(max_length=32)] | None = None
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=MAX_TAGS)

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


def error_kinds(exc: ValidationError) -> tuple[str, ...]:
    """The distinct error types of a validation error, in order."""
    return tuple(dict.fromkeys(error["type"] for error in exc.errors(include_url=False)))


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


# --- control messages ----------------------------------------------------------------------


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def encode(self) -> bytes:
        """The JSON payload of this message (without the frame header)."""
        return self.model_dump_json(exclude_none=True).encode("utf-8")


AgentId = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_no_control_chars)]


class Hello(_Message):
    type: Literal["hello"] = "hello"
    agent: AgentId
    token: str | None = Field(default=None, repr=False)
    protocol: int = PROTOCOL_VERSION

    def __repr__(self) -> str:  # never show the token
        return f"Hello(agent={self.agent!r}, protocol={self.protocol})"

    __str__ = __repr__


class Batch(_Message):
    """A batch as it travels; ``readings`` stay raw until :func:`validate_readings`."""

    type: Literal["batch"] = "batch"
    seq: Annotated[int, Field(ge=0, strict=True)]
    readings: list[Any]


class Welcome(_Message):
    type: Literal["welcome"] = "welcome"
    collector: str
    protocol: int = PROTOCOL_VERSION
    max_frame_bytes: int
    window: int


class RejectedReading(_Message):
    index: int
    errors: list[str]


class Ack(_Message):
    type: Literal["ack"] = "ack"
    seq: int
    accepted: int
    rejected: list[RejectedReading] = Field(default_factory=list)


class Nack(_Message):
    type: Literal["nack"] = "nack"
    seq: int
    reason: str
    retry_after_ms: int


class Goaway(_Message):
    type: Literal["goaway"] = "goaway"
    reason: str


class Error(_Message):
    type: Literal["error"] = "error"
    code: str
    detail: str = ""


ServerMessage = Annotated[Welcome | Ack | Nack | Goaway | Error, Field(discriminator="type")]
_SERVER_MESSAGE: TypeAdapter[Welcome | Ack | Nack | Goaway | Error] = TypeAdapter(ServerMessage)


# --- decoding payloads ---------------------------------------------------------------------


def decode_json(payload: bytes) -> Any:
    """Decode a UTF-8 JSON payload; raise :class:`BadJson` with the reason."""
    try:
        return json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadJson(f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except ValueError as exc:
        raise BadJson(f"payload is not JSON: {exc}") from None
    except RecursionError:
        raise BadJson("payload is nested too deeply") from None


def parse_client_message(obj: Any) -> Hello | Batch | dict[str, Any]:
    """Classify a decoded agent payload: a :class:`Hello`, a :class:`Batch`, or a raw reading.

    Raises :class:`NotAnObject`, :class:`UnknownType` or :class:`ProtocolViolation`.
    A raw reading (no ``type`` key) is returned unvalidated.
    """
    if not isinstance(obj, dict):
        raise NotAnObject(f"payload is a JSON {type(obj).__name__}, not an object")
    kind = obj.get("type")
    if kind is None:
        return obj
    try:
        if kind == "batch":
            return Batch.model_validate(obj)
        if kind == "hello":
            return Hello.model_validate(obj)
    except ValidationError as exc:
        raise ProtocolViolation(f"invalid {kind}: {'; '.join(describe_errors(exc))}") from None
    raise UnknownType(f"unknown message type {str(kind)[:64]!r}")


def parse_server_message(payload: bytes) -> Welcome | Ack | Nack | Goaway | Error:
    """Decode a collector payload; raise :class:`ProtocolError` subclasses when it is wrong."""
    obj = decode_json(payload)
    if not isinstance(obj, dict):
        raise NotAnObject(f"payload is a JSON {type(obj).__name__}, not an object")
    try:
        return _SERVER_MESSAGE.validate_python(obj)
    except ValidationError as exc:
        kind = obj.get("type")
        if not isinstance(kind, str) or kind not in {"welcome", "ack", "nack", "goaway", "error"}:
            raise UnknownType(f"unknown message type {str(kind)[:64]!r}") from None
        raise ProtocolViolation(
            f"invalid {obj['type']}: {'; '.join(describe_errors(exc))}"
        ) from None
