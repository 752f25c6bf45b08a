"""The frames a collector session answers with, and the dead letters it hands on: pure
builders (docs/protocol.md#messages)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from telemetry.collector.actions import DeadLetters, Deliver
from telemetry.protocol import (
    Ack,
    Error,
    Goaway,
    Nack,
    RejectedReading,
    Rejection,
    encode_frame,
)
from telemetry.sinks.base import DeadLetter

if TYPE_CHECKING:
    from telemetry.collector.pipeline import Refusal


def ack_frame(seq: int, accepted: int, rejected: Sequence[Rejection], limit: int) -> bytes:
    """An ``ack`` listing at most ``limit`` rejections, counting the rest."""
    listed = rejected[:limit]
    ack = Ack(
        seq=seq,
        accepted=accepted,
        rejected=[RejectedReading(index=r.index, errors=list(r.errors)) for r in listed],
        rejected_unlisted=len(rejected) - len(listed) or None,
    )
    return encode_frame(ack.encode())


def nack_frame(seq: int, detail: str, retry_after_ms: int) -> bytes:
    return encode_frame(Nack(seq=seq, reason=detail, retry_after_ms=retry_after_ms).encode())


def goaway_frame(reason: str) -> bytes:
    return encode_frame(Goaway(reason=reason).encode())


def error_frame(code: str, detail: str) -> bytes:
    return encode_frame(Error(code=code, detail=detail).encode())


def dead_letters(
    rejected: Sequence[tuple[Any, Sequence[str], str | None]],
    who: str,
    now: datetime,
    max_bytes: int,
) -> DeadLetters:
    """Dead letters for rejected readings: (raw reading, reasons, reading id) each."""
    return DeadLetters(
        [
            DeadLetter.of(
                raw,
                agent=who,
                reason="; ".join(errors),
                received_at=now,
                max_bytes=max_bytes,
                reading_id=reading_id,
            )
            for raw, errors, reading_id in rejected
        ]
    )


def refusals_by_index(
    deliver: Deliver, refusals_by_sink: Sequence[Sequence[Refusal]]
) -> tuple[dict[int, Rejection], dict[int, str]]:
    """The readings sinks refused for good, as rejections by their index in the batch (one
    per reading, every sink's reason), and each one's sensor."""
    refused: dict[int, Rejection] = {}
    sensors: dict[int, str] = {}
    if not any(refusals_by_sink):
        return refused, sensors
    index_of = {
        id(record): index for record, index in zip(deliver.records, deliver.indexes, strict=True)
    }
    for refusals in refusals_by_sink:
        for record, reason in refusals:
            index = index_of[id(record)]
            sensors[index] = record.sensor
            previous = refused.get(index)
            errors = (*previous.errors, reason) if previous else (reason,)
            refused[index] = Rejection(index, errors, ("sink_refused",))
    return refused, sensors
