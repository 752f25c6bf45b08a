"""The memory spool: every unacked batch in ``seq`` order, bounded, dropping the oldest when
full (the contract and the counters are in :mod:`telemetry.agent.spool`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from telemetry.agent.spool import (
    BATCH_TOO_LARGE,
    SPOOL_FULL,
    SpoolCounters,
    SpooledBatch,
    log_dropped,
    restart_safe_seq,
    split_items,
)


class MemorySpool(SpoolCounters):
    """A :class:`Spool` in memory, bounded to ``max_readings`` readings and ``max_bytes``."""

    durable = False

    def __init__(
        self, max_readings: int, *, max_bytes: int | None = None, first_seq: int | None = None
    ) -> None:
        if max_readings < 1:
            raise ValueError("max_readings must be >= 1")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if first_seq is None:
            first_seq = restart_safe_seq()
        if first_seq < 0:
            raise ValueError("first_seq must be >= 0")
        self.max_readings = max_readings
        self.max_bytes = max_bytes
        self._batches: dict[int, SpooledBatch] = {}  # insertion order is seq order
        self._next_seq = first_seq
        self._readings = 0
        self._bytes = 0
        self._spooled = 0
        self._acked = 0
        self._rejected = 0
        self._dropped: Counter[str] = Counter()

    @property
    def oldest_seq(self) -> int | None:
        return next(iter(self._batches), None)

    @property
    def batches(self) -> int:
        return len(self._batches)

    def _overflows(self, readings: int, size: int) -> bool:
        if self._readings + readings > self.max_readings:
            return True
        return self.max_bytes is not None and self._bytes + size > self.max_bytes

    def add(self, readings: Sequence[bytes | Mapping[str, Any]]) -> SpooledBatch:
        self._spooled += len(readings)
        dropped = 0
        dropped_batches = 0
        if len(readings) > self.max_readings:
            # One batch larger than the whole spool: keep its newest readings.
            dropped += len(readings) - self.max_readings
            readings = readings[-self.max_readings :]
        batch = SpooledBatch.of(self._next_seq, readings)
        size = len(batch.frame)  # encoded once here, reused by every send
        self._next_seq += 1
        while self._batches and self._overflows(len(batch), size):
            oldest = self._batches.pop(next(iter(self._batches)))
            self._readings -= len(oldest)
            self._bytes -= len(oldest.frame)
            dropped += len(oldest)
            dropped_batches += 1
        self._batches[batch.seq] = batch
        self._readings += len(batch)
        self._bytes += size
        if dropped:
            self._dropped[SPOOL_FULL] += dropped
            self._log_spool_full(dropped, dropped_batches)
        return batch

    def get(self, seq: int) -> SpooledBatch | None:
        return self._batches.get(seq)

    def pending(self) -> list[SpooledBatch]:
        return list(self._batches.values())

    def _remove(self, seq: int) -> SpooledBatch | None:
        batch = self._batches.pop(seq, None)
        if batch is not None:
            self._readings -= len(batch)
            self._bytes -= len(batch.frame)
        return batch

    def ack(self, seq: int, rejected: int = 0) -> SpooledBatch | None:
        batch = self._remove(seq)
        if batch is not None:
            rejected = min(max(rejected, 0), len(batch))
            self._acked += len(batch) - rejected
            self._rejected += rejected
        return batch

    def drop(self, seq: int, reason: str) -> int:
        batch = self._remove(seq)
        if batch is None:
            return 0
        self._dropped[reason] += len(batch)
        log_dropped(reason, len(batch), 1, seq=seq, dropped_total=self.dropped)
        return len(batch)

    def split(self, seq: int, max_frame_bytes: int) -> list[int]:
        batch = self._remove(seq)
        if batch is None:
            return []
        chunks, too_large = split_items(batch.items, max_frame_bytes)
        seqs = []
        for chunk in chunks:
            part = SpooledBatch.of(self._next_seq, chunk)
            self._next_seq += 1
            self._batches[part.seq] = part
            self._readings += len(part)
            self._bytes += len(part.frame)
            seqs.append(part.seq)
        if too_large:
            self._dropped[BATCH_TOO_LARGE] += len(too_large)
            log_dropped(BATCH_TOO_LARGE, len(too_large), 0, seq=seq, dropped_total=self.dropped)
        return seqs

    def lose(self, readings: int, reason: str) -> None:
        self._spooled += readings
        self._dropped[reason] += readings

    def discard(self, reason: str) -> int:
        """Drop every batch held, counted under ``reason``; the caller logs it once."""
        count = self._readings
        if count:
            self._dropped[reason] += count
        self._batches.clear()
        self._readings = self._bytes = 0
        return count

    def close(self) -> None:
        """Log the drops held for a ``readings_dropped`` event; nothing to release (the
        batches in memory are lost with the process)."""
        self._log_held_drops()
