"""Control messages of wire protocol v1 and their JSON codec (docs/protocol.md#messages).

Agent to collector: a bare reading object (fire-and-forget, validated by
:mod:`telemetry.protocol.readings`), :class:`Hello`, :class:`Batch`. Collector to agent:
:class:`Welcome`, :class:`Ack`, :class:`Nack`, :class:`Goaway`, :class:`Error`. Everything here
is pure: no sockets, no event loop.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from telemetry.protocol.errors import (
    BadJson,
    NotAnObject,
    ProtocolViolation,
    UnknownType,
)
from telemetry.protocol.readings import describe_errors
from telemetry.protocol.schema import AGENT_ID

PROTOCOL_VERSION = 1
DEFAULT_MAX_BATCH = 10_000


# --- control messages ----------------------------------------------------------------------


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def encode(self) -> bytes:
        """The JSON payload of this message (without the frame header)."""
        return self.model_dump_json(exclude_none=True).encode("utf-8")


AgentId = Annotated[str, AGENT_ID.limits(), AGENT_ID.checks()]


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
    #: The rejected readings, at most the collector's ``max_ack_rejections`` of them.
    rejected: list[RejectedReading] = Field(default_factory=list)
    #: How many more were rejected than ``rejected`` lists (absent: none).
    rejected_unlisted: int | None = None

    @property
    def rejected_count(self) -> int:
        """Every rejected reading of the batch, listed or not."""
        return len(self.rejected) + (self.rejected_unlisted or 0)


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


#: Any message a collector sends.
ServerMessage = Welcome | Ack | Nack | Goaway | Error
_SERVER_MESSAGE: TypeAdapter[ServerMessage] = TypeAdapter(
    Annotated[ServerMessage, Field(discriminator="type")]
)


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


def parse_server_message(payload: bytes) -> ServerMessage:
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
