"""Protocol errors: each class is one wire error code of docs/protocol.md#errors.

A :class:`ProtocolError` is fatal for the connection: the collector answers it with an
``error`` message carrying :attr:`ProtocolError.code` and closes. Errors that only skip one
fire-and-forget frame (bad JSON in a reading, an invalid reading) are not exceptions of this
module: they are counted and reported where they happen.
"""

from __future__ import annotations

from typing import ClassVar


class ProtocolError(Exception):
    """A violation of wire protocol v1 that ends the connection."""

    code: ClassVar[str] = "protocol_violation"

    def __init__(self, detail: str, *, frames: list[bytes] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        #: Complete frames decoded from the same input before the error; deliver them first.
        self.frames: list[bytes] = frames if frames is not None else []


class BadHeader(ProtocolError):
    """The 10-byte header is not a space-padded ASCII decimal length."""

    code = "bad_header"


class FrameTooLarge(ProtocolError):
    """The header announces a payload longer than the receiver's ``max_frame_bytes``."""

    code = "frame_too_large"


class TruncatedFrame(ProtocolError):
    """The stream ended in the middle of a header or a payload."""

    code = "truncated_frame"


class BadJson(ProtocolError):
    """A payload that must be JSON (a hello, a batch) is not valid UTF-8 JSON."""

    code = "bad_json"


class NotAnObject(ProtocolError):
    """A payload is valid JSON but not a JSON object."""

    code = "not_an_object"


class UnknownType(ProtocolError):
    """A payload carries a ``type`` this side does not know."""

    code = "unknown_type"


class HelloRequired(ProtocolError):
    """A ``batch`` arrived before the connection's ``hello``."""

    code = "hello_required"


class Unauthorized(ProtocolError):
    """The ``hello`` token is missing or wrong."""

    code = "unauthorized"


class ProtocolViolation(ProtocolError):
    """A well-formed message that breaks the protocol's rules (bad fields, second hello...)."""

    code = "protocol_violation"


class TooManyConnections(ProtocolError):
    """The collector is at ``max_connections``, or draining: sent instead of serving."""

    code = "too_many_connections"


class IdleTimeout(ProtocolError):
    """No frame (not even a heartbeat) arrived for ``idle_timeout`` seconds."""

    code = "idle_timeout"


def _codes(cls: type[ProtocolError]) -> frozenset[str]:
    return frozenset({cls.code}).union(*(_codes(sub) for sub in cls.__subclasses__()))


#: Every error code an ``error`` message may carry: one per class above.
ERROR_CODES = _codes(ProtocolError)
