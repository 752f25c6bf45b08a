"""Frames to the records the collector hands its sinks: the per-reading hot loops.

How this works: :func:`clean_loose_records` walks a read's frames and turns each clean
fire-and-forget reading into a :class:`Record` (one native validation call per frame, see
:mod:`telemetry.protocol.fastpath`) until it meets a frame that is not one: a control message
(a ``hello`` fails validation as a reading), or anything the exact path has to look at.
:func:`batch_records` does the same for a clean batch's readings. Both leave out readings
whose ``ts`` is beyond ``limit`` (the receive time plus ``max_clock_skew``): the exact path
rejects those with their reason.
"""

from __future__ import annotations

from datetime import datetime
from operator import attrgetter
from typing import Any

from pydantic_core import TzInfo, ValidationError

from telemetry.protocol.fastpath import READING_VALIDATOR
from telemetry.protocol.messages import Reading
from telemetry.sinks.base import Record

#: Payloads holding this may be control messages (``batch``, ``hello``).
CONTROL_KEY = b'"type"'
#: Frames up to this size are tried as readings first: looking for ``CONTROL_KEY`` costs a
#: small frame ~10% of its validation, while a failed validation of a large batch costs a
#: whole parse of it.
SMALL_FRAME = 4096
_ts = attrgetter("ts")
#: pydantic's UTC, the tzinfo of every UTC ``ts`` the fast path reads. Comparing two datetimes
#: that share a tzinfo object skips two ``utcoffset()`` calls: ~10x faster.
NATIVE_UTC = TzInfo(0)


def clean_loose_records(
    frames: list[bytes], start: int, agent: str, now: datetime, limit: datetime
) -> tuple[list[Record], int]:
    """Records for the clean fire-and-forget readings in ``frames[start:]`` (heartbeats
    skipped), up to the first frame that is not one; and that frame's index (``len(frames)``
    when there is none)."""
    limit = limit.astimezone(NATIVE_UTC)
    records: list[Record] = []
    append = records.append
    validate = READING_VALIDATOR.validate_json
    for index in range(start, len(frames)):
        payload = frames[index]
        if not payload:
            continue  # heartbeat
        if len(payload) > SMALL_FRAME and CONTROL_KEY in payload:
            return records, index  # likely a batch: don't parse it twice
        try:
            reading = validate(payload)
        except ValidationError:
            return records, index
        ts = reading.get("ts")
        if ts is None:
            ts = now
        elif ts > limit:
            return records, index
        append(
            Record(
                None,
                agent,
                reading["sensor"],
                reading["value"],
                ts,
                now,
                reading.get("metric"),
                reading.get("unit"),
                reading.get("tags") or {},
            )
        )
    return records, len(frames)


def batch_records(
    readings: list[dict[str, Any]], agent: str, seq: int, now: datetime, limit: datetime
) -> list[Record] | None:
    """Records for a clean batch's readings (:func:`decode_batch`), with their reading ids
    ``"<agent>:<seq>:<index>"``; ``None`` when a ``ts`` is beyond ``limit``."""
    limit = limit.astimezone(NATIVE_UTC)
    prefix = f"{agent}:{seq}:"
    records = [
        Record(
            f"{prefix}{index}",
            agent,
            reading["sensor"],
            reading["value"],
            reading.get("ts") or now,
            now,
            reading.get("metric"),
            reading.get("unit"),
            reading.get("tags") or {},
        )
        for index, reading in enumerate(readings)
    ]
    if records and max(map(_ts, records)) > limit:
        return None
    return records


def reading_record(reading: Reading, agent: str, reading_id: str | None, now: datetime) -> Record:
    """The record for a reading the exact path validated."""
    return Record(
        reading_id,
        agent,
        reading.sensor,
        reading.value,
        reading.ts or now,
        now,
        reading.metric,
        reading.unit,
        reading.tags,
    )
