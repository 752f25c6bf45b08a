"""Validation, in one home: frames in, records and rejections out (docs/protocol.md#readings).

How this works: a frame is first tried on the *fast path*. pydantic-core validates a clean
frame's JSON bytes straight into :class:`Record` objects, with the schemas of
:mod:`telemetry.protocol.fastpath` (no dict per reading in between); these loops then set what
the wire does not carry: the reading id, the agent, the receive time, and the receive time as
``ts`` where the reading had none. :func:`clean_fire_and_forget` walks a read's frames and does
this for each clean fire-and-forget reading until it meets a frame that is not one: a control
message (a ``hello`` fails validation as a reading), or anything the exact path has to look at.
:func:`clean_batch` does it for a whole ``batch``. Both leave to the exact path readings whose
``ts`` is beyond ``limit`` (the receive time plus ``max_clock_skew``).

Anything else takes the *exact path*: :func:`classify` decodes the payload and tells a
``hello``, a ``batch`` and a bare reading apart (control-message dispatch), and
:func:`check_readings` validates readings one by one with the exact model, which names every
problem. Pure functions: no I/O, no state.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any

from pydantic_core import SchemaValidator, TzInfo, ValidationError

from telemetry.protocol import (
    BadJson,
    Batch,
    Hello,
    Reading,
    Rejection,
    decode_json,
    parse_client_message,
    validate_readings,
    validation_context,
)
from telemetry.protocol.fastpath import batch_schema, record_schema
from telemetry.sinks.base import Record

#: Payloads holding this may be control messages (``batch``, ``hello``).
CONTROL_KEY = b'"type"'
#: Frames up to this size are tried as readings first: looking for ``CONTROL_KEY`` costs a
#: small frame a share of its validation, while a failed validation of a large batch costs a
#: whole parse of it (figures: docs/benchmarks.md#figures-behind-code-choices).
SMALL_FRAME = 4096
#: pydantic's UTC, the tzinfo of every UTC ``ts`` the fast path reads. Comparing two datetimes
#: that share a tzinfo object skips two ``utcoffset()`` calls (docs/benchmarks.md).
NATIVE_UTC = TzInfo(0)
#: One reading's JSON to a :class:`Record` with its wire fields set.
RECORD_VALIDATOR = SchemaValidator(record_schema(Record))
#: A ``batch`` message's JSON to ``{"type", "seq", "readings": [Record...]}``.
BATCH_VALIDATOR = SchemaValidator(batch_schema(record_schema(Record)))
#: The same, trying a ``ts`` as epoch seconds before as a string: a batch from a Python
#: producer (``ts=time.time()``) costs less (docs/benchmarks.md); the results are the same.
#: (Not worth it for one reading: looking at the frame costs as much as it saves.)
BATCH_VALIDATOR_EPOCH = SchemaValidator(batch_schema(record_schema(Record, numbers_first=True)))
#: How far into a batch to look for its first ``ts``: the first reading or two.
TS_PEEK = 1024
#: Whitespace looked past between that ``"ts":`` and its value.
_TS_GAP = 16
_ts = attrgetter("ts")


def epoch_first(payload: bytes) -> bool:
    """True when the batch's first ``"ts":`` (within ``TS_PEEK`` bytes) is followed, after any
    JSON whitespace (``json.dumps`` writes ``": "``), by anything but a string: its readings
    likely carry epoch seconds. Only a guess about speed; either validator gives the same
    result."""
    at = payload.find(b'"ts":', 0, TS_PEEK)
    return at >= 0 and payload[at + 5 : at + 5 + _TS_GAP].lstrip(b" \t\r\n")[:1] != b'"'


def clean_fire_and_forget(
    frames: list[bytes], start: int, agent: str, now: datetime, limit: datetime
) -> tuple[list[Record], int]:
    """Records for the clean fire-and-forget readings in ``frames[start:]`` (heartbeats
    skipped), up to the first frame that is not one; and that frame's index (``len(frames)``
    when there is none)."""
    limit = limit.astimezone(NATIVE_UTC)
    records: list[Record] = []
    append = records.append
    validate = RECORD_VALIDATOR.validate_json
    for index in range(start, len(frames)):
        payload = frames[index]
        if not payload:
            continue  # heartbeat
        if len(payload) > SMALL_FRAME and CONTROL_KEY in payload:
            return records, index  # likely a batch: don't parse it twice
        try:
            record: Record = validate(payload)
        except ValidationError:
            return records, index
        ts = record.ts
        if ts is None:
            record.ts = now
        elif ts > limit:
            return records, index
        elif ts.tzinfo is not NATIVE_UTC:
            record.ts = ts.astimezone(NATIVE_UTC)
        if record.tags is None:
            record.tags = {}
        record.id = None
        record.agent = agent
        record.received_at = now
        append(record)
    return records, len(frames)


def clean_batch(
    payload: bytes, agent: str, now: datetime, limit: datetime
) -> tuple[int, list[Record]] | None:
    """A ``batch`` payload as its ``seq`` and one record per reading, with reading ids
    ``"<agent>:<seq>:<index>"``; ``None`` when it is anything but a batch of clean readings,
    all with a ``ts`` up to ``limit``: take the exact path."""
    try:
        batch = (BATCH_VALIDATOR_EPOCH if epoch_first(payload) else BATCH_VALIDATOR).validate_json(
            payload
        )
    except ValidationError:
        return None
    seq: int = batch["seq"]
    records: list[Record] = batch["readings"]
    prefix = f"{agent}:{seq}:"
    for index, record in enumerate(records):
        record.id = f"{prefix}{index}"
        record.agent = agent
        record.received_at = now
        ts = record.ts
        if ts is None:
            record.ts = now
        elif ts.tzinfo is not NATIVE_UTC:
            record.ts = ts.astimezone(NATIVE_UTC)
        if record.tags is None:
            record.tags = {}
    if records and max(map(_ts, records)) > limit.astimezone(NATIVE_UTC):
        return None
    return seq, records


def reading_record(reading: Reading, agent: str, reading_id: str | None, now: datetime) -> Record:
    """The record for a reading the exact path validated."""
    return Record(
        reading_id,
        agent,
        reading.sensor,
        reading.value,
        now if reading.ts is None else reading.ts.astimezone(NATIVE_UTC),
        now,
        reading.metric,
        reading.unit,
        reading.tags,
    )


# --- the exact path -------------------------------------------------------------------------

#: A malformed payload that claims to be a control message (``hello``, ``batch``) is fatal
#: (``bad_json``); one that is just a broken reading only skips that frame.
_CONTROL = re.compile(rb'"type"\s*:\s*"(?:hello|batch)"')


@dataclass(frozen=True, slots=True)
class BrokenReading:
    """A fire-and-forget frame that is not JSON: rejected alone, the connection goes on."""

    payload: bytes
    errors: tuple[str, ...]
    kinds: tuple[str, ...] = ("bad_json",)


def classify(payload: bytes) -> Hello | Batch | dict[str, Any] | BrokenReading:
    """What a frame the fast path did not take is: a ``hello``, a ``batch``, a bare reading
    (unvalidated) or a broken one.

    Raises a :class:`~telemetry.protocol.ProtocolError` for what ends the connection: a payload
    that is not an object, an unknown ``type``, an invalid ``hello`` or ``batch``, and
    malformed JSON that claims to be a control message.
    """
    try:
        obj = decode_json(payload)
    except BadJson as exc:
        if _CONTROL.search(payload):
            raise
        return BrokenReading(payload, ("payload: " + exc.detail,))
    return parse_client_message(obj)


def check_readings(
    raws: Sequence[Any],
    agent: str,
    prefix: str | None,
    now: datetime,
    max_clock_skew: float,
    offset: int = 0,
) -> tuple[list[tuple[int, Record]], list[Rejection]]:
    """Validate readings on the exact path: ``([(index, record)...], [rejection...])``.

    ``prefix`` (``"<agent>:<seq>:"``) makes each record's reading id; ``None`` for
    fire-and-forget readings, which have none. ``offset``: the index of ``raws[0]`` in its
    batch, when a batch is checked a part at a time.
    """
    accepted, rejected = validate_readings(raws, validation_context(now, max_clock_skew))
    if offset:
        rejected = [Rejection(r.index + offset, r.errors, r.kinds) for r in rejected]
    return [
        (
            index + offset,
            reading_record(
                reading, agent, None if prefix is None else f"{prefix}{index + offset}", now
            ),
        )
        for index, reading in accepted
    ], rejected
