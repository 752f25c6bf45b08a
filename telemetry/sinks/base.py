"""The sink contract (docs/protocol.md), written once.

- ``start()`` returns fast (open a file, a pool); it may raise to refuse to start.
- ``write(batch)`` does only the backend's I/O for a batch of records. It returns once the
  backend holds them (a database: committed) and raises :class:`TransientSinkError`
  (worth retrying) or :class:`PermanentSinkError` (never worth retrying). Any other exception
  counts as transient. A sink that knows exactly which records it refuses for good writes the
  others and then raises :class:`RefusedRecords` naming them: the pipeline neither retries
  nor bisects the batch.
- A sink that deduplicates by reading id (``Record.id``) stores an id once and counts a
  resend with the same content (:func:`content_of`) as written. A record whose id is already
  stored with other content is never stored over the first one nor silently dropped: it is
  refused (:class:`RefusedRecords`, reason :func:`conflict_reason`). Records without an id
  (fire-and-forget) are never compared.
- ``close()`` flushes, is idempotent and is safe without ``start()``.

A sink class names its config model as ``config_model`` (built-in sinks and plugins alike). A
sink whose model sets ``accepts_dead_letters`` may be configured ``dead_letter = true``; its
``write()`` is then given :class:`DeadLetter` batches instead: it is a :class:`DeadLetterSink`.

Batching, retries with backoff and jitter, timeouts and queueing are the pipeline's job
(``telemetry.collector.pipeline``), the same for every sink.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeAlias, runtime_checkable

from telemetry.protocol import format_timestamp

#: ``json.dumps(obj, ensure_ascii=False, separators=(",", ":"))`` builds an encoder per call;
#: one shared encoder gives the same text for less.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
#: The last ``received_at`` formatted, and its text: every record of a batch shares one
#: ``received_at`` object. Swapped as one tuple, so a sink's thread never reads half of it.
_last_received: tuple[datetime | None, str] = (None, "")


def _received_text(received_at: datetime) -> str:
    global _last_received
    cached = _last_received
    if cached[0] is received_at:
        return cached[1]
    text = format_timestamp(received_at)
    _last_received = (received_at, text)
    return text


class SinkError(Exception):
    """A sink failed to write a batch."""


class TransientSinkError(SinkError):
    """The write may succeed later (connection lost, timeout, backend busy)."""


class PermanentSinkError(SinkError):
    """The write will never succeed for this batch (bad data for the backend, no permission)."""


class RefusedRecords(PermanentSinkError):
    """The sink wrote every record of the batch except these, which it refuses for good.

    ``refused`` maps an index in the batch given to ``write()`` to the reason. The pipeline
    reports exactly those records as refused (rejected in the ack, dead-lettered) and counts
    the others as written: no retry, no bisection.
    """

    def __init__(self, refused: dict[int, str]) -> None:
        self.refused = dict(refused)
        first = min(self.refused, default=None)
        detail = f"; first: index {first}: {self.refused[first]}" if first is not None else ""
        super().__init__(f"{len(self.refused)} record(s) of the batch refused{detail}")


#: What a reading's content is, for telling a resend (same content) from a conflict: its own
#: fields, canonical (see :func:`content_of`). Not ``received_at``, not ``agent`` (in the id).
Content: TypeAlias = tuple[str, float, datetime | None, str | None, str | None, dict[str, str]]


def content_of(record: Record) -> Content:
    """The record's content, canonical: ``value`` as a float, ``ts`` as an instant in UTC,
    ``tags`` as a dict (key order does not matter).

    A reading sent without ``ts`` has the receive time as its ``ts`` (``ts == received_at``):
    that time is the collector's, not the reading's, so its ``ts`` is ``None`` here and a
    resend of it (received later) still has the same content."""
    return canonical_content(
        record.sensor,
        record.value,
        record.ts,
        record.metric,
        record.unit,
        record.tags,
        record.received_at,
    )


def _instant(ts: datetime | str) -> datetime:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00").replace("z", "+00:00"))
    if ts.tzinfo is None:  # a naive time is UTC, as everywhere in telemetry
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def canonical_content(
    sensor: str,
    value: float | int | str,
    ts: datetime | str,
    metric: str | None,
    unit: str | None,
    tags: dict[str, str] | str | None,
    received_at: datetime | str | None,
) -> Content:
    """Content as :func:`content_of` makes it, of a reading read back from a backend:
    ``ts`` and ``received_at`` as datetimes or RFC 3339 text, ``tags`` as a dict or JSON."""
    instant: datetime | None = _instant(ts)
    if received_at is not None and instant == _instant(received_at):
        instant = None  # stamped with the receive time: the reading had no ts of its own
    tag_dict: dict[str, str] = json.loads(tags) if isinstance(tags, str) else dict(tags or {})
    return (sensor, float(value), instant, metric, unit, tag_dict)


def conflict_reason(reading_id: str) -> str:
    """The reason a record is refused when its id is already stored with other content."""
    return f"reading id {reading_id} is already stored with other content"


@dataclass(slots=True)
class Record:
    """A validated reading as the collector hands it to sinks.

    Sinks share one record and must not change it. It is not frozen because building it is on
    the hot path: a frozen dataclass's ``__init__`` costs about twice as much.
    """

    id: str | None  # "<agent>:<seq>:<index>" for batch readings, None for fire-and-forget
    agent: str
    sensor: str
    value: float
    ts: datetime
    received_at: datetime
    metric: str | None = None
    unit: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with RFC 3339 timestamps."""
        return {
            "id": self.id,
            "agent": self.agent,
            "sensor": self.sensor,
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
            "ts": format_timestamp(self.ts),
            "tags": self.tags,
            "received_at": _received_text(self.received_at),
        }

    def to_json(self) -> str:
        """``to_dict()`` as compact JSON (what the JSON sinks write and publish)."""
        return _ENCODER.encode(self.to_dict())


@runtime_checkable
class Sink(Protocol):
    """What every sink implements; see the module docstring for the contract."""

    name: str

    async def start(self) -> None: ...

    async def write(self, batch: Sequence[Record]) -> None: ...

    async def close(self) -> None: ...


class DeadLetterSink(Sink, Protocol):
    """A sink that can also be a dead-letter sink: ``write()`` takes a batch of readings or,
    configured ``dead_letter = true``, a batch of :class:`DeadLetter` s (the JSON sinks
    write each one's ``to_json()``)."""

    async def write(self, batch: Batch) -> None: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A reading the collector could not deliver: rejected by validation or refused by a sink.

    Dead-letter sinks (``dead_letter = true``) receive these instead of :class:`Record`;
    ``raw`` is the reading's JSON as received, cut to ``dead_letter_max_bytes``.
    """

    agent: str
    reason: str
    raw: str
    received_at: datetime
    id: str | None = None
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "dead_letter": True,
            "id": self.id,
            "agent": self.agent,
            "reason": self.reason,
            "raw": self.raw,
            "truncated": self.truncated,
            "received_at": format_timestamp(self.received_at),
        }

    def to_json(self) -> str:
        return _ENCODER.encode(self.to_dict())

    @classmethod
    def of(
        cls,
        raw: Any,
        *,
        agent: str,
        reason: str,
        received_at: datetime,
        max_bytes: int,
        reading_id: str | None = None,
    ) -> DeadLetter:
        """A dead letter for ``raw`` (decoded JSON, bytes, or a Record), size-bounded."""
        if isinstance(raw, Record):
            text = raw.to_json()
        elif isinstance(raw, bytes | bytearray):
            text = bytes(raw).decode("utf-8", errors="replace")
        else:
            text = json.dumps(raw, ensure_ascii=False, separators=(",", ":"), default=str)
        data = text.encode("utf-8")
        truncated = len(data) > max_bytes
        if truncated:
            text = data[:max_bytes].decode("utf-8", errors="ignore")
        return cls(agent, reason, text, received_at, reading_id, truncated)


#: What one ``write()`` is given: readings, or dead letters (a dead-letter sink only).
Batch: TypeAlias = Sequence[Record] | Sequence[DeadLetter]
