"""The spool: every batch closed by the agent and not yet acked, in ``seq`` order.

How this works: closing a batch calls :meth:`Spool.add`, which gives it the next ``seq``
(``seq`` only grows, across restarts too: see :func:`restart_safe_seq`). The sender reads
batches by ``seq`` and sends them; an ``ack`` removes one with :meth:`Spool.ack`. A batch
stays in the spool while it is in flight, so a lost connection loses nothing: after a
reconnect the sender starts again from :attr:`Spool.oldest_seq`. The spool is bounded in
readings; when an added batch makes it overflow, the oldest batches are dropped (sent or not)
and counted in :attr:`Spool.dropped`.

:class:`Spool` is the interface; :class:`MemorySpool` keeps everything in a dict. A SQLite spool
that survives restarts (and keeps ``next_seq`` across them) can implement the same protocol.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from telemetry.log import get_logger
from telemetry.protocol import Batch, encode_frame

log = get_logger("telemetry.agent.spool")


@dataclass(frozen=True)
class SpooledBatch:
    """A closed batch waiting for its ack: its ``seq`` and its readings as wire dicts."""

    seq: int
    readings: tuple[dict[str, Any], ...] = field(repr=False)

    def __len__(self) -> int:
        return len(self.readings)

    @cached_property
    def frame(self) -> bytes:
        """The complete ``batch`` frame (header and payload), encoded once, reused on resend."""
        return encode_frame(Batch(seq=self.seq, readings=list(self.readings)).encode())


class Spool(Protocol):
    """Storage for unacked batches; the sender's only source of what to (re)send."""

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next added batch will get."""
        ...

    @property
    def oldest_seq(self) -> int | None:
        """The smallest ``seq`` still held, or None when the spool is empty."""
        ...

    @property
    def readings(self) -> int:
        """Readings held."""
        ...

    @property
    def batches(self) -> int:
        """Batches held."""
        ...

    @property
    def dropped(self) -> int:
        """Readings dropped since start, because the spool was full or a batch undeliverable."""
        ...

    def add(self, readings: list[dict[str, Any]]) -> SpooledBatch:
        """Store ``readings`` as a new batch with the next ``seq``; may drop the oldest."""
        ...

    def get(self, seq: int) -> SpooledBatch | None:
        """The batch ``seq``, or None when it was acked, dropped, or never added."""
        ...

    def pending(self) -> list[SpooledBatch]:
        """Every batch held, in ``seq`` order."""
        ...

    def ack(self, seq: int) -> SpooledBatch | None:
        """Remove batch ``seq`` and return it; None when it is not held (already gone)."""
        ...

    def drop(self, seq: int, reason: str) -> int:
        """Remove batch ``seq`` without an ack, count its readings as dropped, return them."""
        ...


def restart_safe_seq() -> int:
    """A first ``seq`` above any that an earlier run of this agent used: the clock in µs.

    The reading id ``<agent>:<seq>:<index>`` is the sinks' idempotency key, so a restarted
    agent that counted from 0 again would have its new readings ignored as duplicates. Until
    the spool (and its counter) lives on disk, starting from the clock keeps ids unique: a run
    would have to close more than a million batches a second to catch up with it.
    """
    return time.time_ns() // 1000


class MemorySpool:
    """A :class:`Spool` in memory, bounded to ``max_readings`` readings."""

    def __init__(self, max_readings: int, *, first_seq: int | None = None) -> None:
        if max_readings < 1:
            raise ValueError("max_readings must be >= 1")
        if first_seq is None:
            first_seq = restart_safe_seq()
        if first_seq < 0:
            raise ValueError("first_seq must be >= 0")
        self.max_readings = max_readings
        self._batches: dict[int, SpooledBatch] = {}  # insertion order is seq order
        self._next_seq = first_seq
        self._readings = 0
        self._dropped = 0

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def oldest_seq(self) -> int | None:
        return next(iter(self._batches), None)

    @property
    def readings(self) -> int:
        return self._readings

    @property
    def batches(self) -> int:
        return len(self._batches)

    @property
    def dropped(self) -> int:
        return self._dropped

    def add(self, readings: list[dict[str, Any]]) -> SpooledBatch:
        dropped = 0
        dropped_batches = 0
        if len(readings) > self.max_readings:
            # One batch larger than the whole spool: keep its newest readings.
            dropped += len(readings) - self.max_readings
            readings = readings[-self.max_readings :]
        batch = SpooledBatch(self._next_seq, tuple(readings))
        self._next_seq += 1
        while self._batches and self._readings + len(batch) > self.max_readings:
            oldest = self._batches.pop(next(iter(self._batches)))
            self._readings -= len(oldest)
            dropped += len(oldest)
            dropped_batches += 1
        self._batches[batch.seq] = batch
        self._readings += len(batch)
        if dropped:
            self._dropped += dropped
            log.warning(
                "spool_dropped",
                readings=dropped,
                batches=dropped_batches,
                max_readings=self.max_readings,
                dropped_total=self._dropped,
            )
        return batch

    def get(self, seq: int) -> SpooledBatch | None:
        return self._batches.get(seq)

    def pending(self) -> list[SpooledBatch]:
        return list(self._batches.values())

    def ack(self, seq: int) -> SpooledBatch | None:
        batch = self._batches.pop(seq, None)
        if batch is not None:
            self._readings -= len(batch)
        return batch

    def drop(self, seq: int, reason: str) -> int:
        batch = self._batches.pop(seq, None)
        if batch is None:
            return 0
        self._readings -= len(batch)
        self._dropped += len(batch)
        log.warning(
            "spool_dropped",
            readings=len(batch),
            batches=1,
            seq=seq,
            reason=reason,
            dropped_total=self._dropped,
        )
        return len(batch)
