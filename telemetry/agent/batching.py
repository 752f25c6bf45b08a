"""The current batch, sans-I/O: readings in, closed batches out.

How this works: a batch closes when it holds ``batch_size`` readings (:meth:`Batcher.add`
returns it) or when ``flush_interval`` seconds have passed since its first reading (the
caller sleeps until :attr:`Batcher.deadline` and then calls :meth:`Batcher.take`). Time is
passed in, so the logic is tested without an event loop.
"""

from __future__ import annotations


class Batcher:
    """Collects readings into batches by size and by age."""

    def __init__(self, batch_size: int, flush_interval: float) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if flush_interval <= 0:
            raise ValueError("flush_interval must be > 0")
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._readings: list[bytes] = []  # each reading's JSON
        #: When the open batch got its first reading; None while no batch is open.
        self.opened_at: float | None = None

    def __len__(self) -> int:
        return len(self._readings)

    @property
    def deadline(self) -> float | None:
        """When the current batch is due by age, or None while it is empty."""
        if self.opened_at is None:
            return None
        return self.opened_at + self.flush_interval

    def add(self, reading: bytes, now: float) -> list[bytes] | None:
        """Add one encoded reading; return the closed batch when it reached ``batch_size``.

        ``now`` counts only for a reading that opens a batch: while :attr:`opened_at` is set,
        a caller may skip reading its clock.
        """
        if self.opened_at is None:
            self.opened_at = now
        readings = self._readings
        readings.append(reading)
        if len(readings) >= self.batch_size:
            return self.take()
        return None

    def take(self) -> list[bytes]:
        """Close the current batch and return its readings (maybe none); start a new one."""
        readings, self._readings = self._readings, []
        self.opened_at = None
        return readings
