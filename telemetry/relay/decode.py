"""A JetStream message back into a :class:`~telemetry.sinks.base.Record` (sans-I/O).

The collectors' ``nats`` sink publishes ``Record.to_json()``: the reading as the collector
validated it, with its reading id and receive time. Decoding checks the shape strictly: a
message that is not one of those (another publisher on the subject, a truncated payload) is a
:class:`Undecodable`, which the relay dead-letters rather than guess.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from telemetry.sinks.base import Record


class Undecodable(ValueError):
    """The message is not a reading as the nats sink publishes it; the text says why."""


def _optional(data: dict[str, Any], key: str) -> str | None:
    return None if data.get(key) is None else _text(data, key)


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise Undecodable(f"{key}: expected a non-empty string, got {type(value).__name__}")
    return value


def _instant(data: dict[str, Any], key: str) -> datetime:
    value = data.get(key)
    if not isinstance(value, str):
        raise Undecodable(f"{key}: expected an RFC 3339 timestamp, got {type(value).__name__}")
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise Undecodable(f"{key}: {value[:64]!r} is not an RFC 3339 timestamp") from None
    if instant.tzinfo is None:  # naive times are UTC everywhere in telemetry
        instant = instant.replace(tzinfo=UTC)
    return instant


def decode_record(payload: bytes) -> Record:
    """The record a ``Record.to_json()`` payload holds; :class:`Undecodable` when it holds none."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Undecodable(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Undecodable(f"expected a JSON object, got {type(data).__name__}")
    value = data.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Undecodable(f"value: expected a finite number, got {value!r:.40}")
    tags = data.get("tags", {})
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise Undecodable("tags: expected an object of strings")
    return Record(
        id=_optional(data, "id"),
        agent=_text(data, "agent"),
        sensor=_text(data, "sensor"),
        value=float(value),
        ts=_instant(data, "ts"),
        received_at=_instant(data, "received_at"),
        metric=_optional(data, "metric"),
        unit=_optional(data, "unit"),
        tags=tags,
    )
