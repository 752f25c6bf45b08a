"""The disk spool: unacked batches, the ``seq`` counter and the ledger in one SQLite file.

How this works: the file has two tables. ``batches`` holds each unacked batch as the frame
the sender writes (encoded once, so a resend after a restart costs no re-encoding) with its
reading count, size and creation time; ``counters`` holds ``next_seq`` and the ledger
(``spooled``, ``acked``, ``rejected``, ``dropped:<reason>``). Every :meth:`DiskSpool.add`,
:meth:`~DiskSpool.ack` and :meth:`~DiskSpool.drop` is one transaction that changes the batches
and the counters together, so ``spooled = acked + rejected + dropped + readings`` holds in the
file at every commit, whatever kills the process. In memory the spool keeps an index (seq ->
readings, bytes) and the frames of recent batches up to ``cache_bytes``; older ones are read
back when the sender asks. The file itself (durability, lock, moving a broken file aside,
quarantine): :mod:`telemetry.agent.spool_file`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from telemetry.agent.spool import (
    BATCH_TOO_LARGE,
    SPOOL_CORRUPT,
    SPOOL_FULL,
    SpoolCounters,
    SpooledBatch,
    log_dropped,
    restart_safe_seq,
    split_items,
)
from telemetry.agent.spool_file import (
    DROPPED_PREFIX,
    FORMAT_VERSION,
    INSERT_BATCH,
    SET_COUNTER,
    SpoolError,
    acquire_lock,
    append_dead_letter,
    check_frame,
    connect,
    init_file,
    move_aside,
    transaction,
    unreadable,
)
from telemetry.log import get_logger

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

log = get_logger("telemetry.agent.spool")


class DiskSpool(SpoolCounters):
    """A :class:`~telemetry.agent.spool.Spool` in a SQLite file that survives the process."""

    durable = True
    _dropped: dict[str, int]

    def __init__(
        self,
        path: Path | str,
        *,
        max_readings: int = 1_000_000,
        max_bytes: int = 256 * 1024 * 1024,
        cache_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        if max_readings < 1:
            raise ValueError("max_readings must be >= 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self.path = Path(path)
        self.max_readings = max_readings
        self.max_bytes: int = max_bytes
        self.cache_bytes = cache_bytes
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create spool directory {self.path.parent}: {exc}") from None
        #: Where quarantined batches go (JSON lines).
        self.dead_letter_path = self.path.with_name(self.path.name + ".dead-letter")
        #: Counters changed in memory but not yet in the file (a write failed).
        self._unsaved = False
        # The lock is named from the resolved path: through a symlink it is the same file.
        self._lock = acquire_lock(self.path.resolve())
        try:
            self._open()
        except sqlite3.Error as exc:
            self._lock.close()
            raise SpoolError(f"cannot open spool {self.path}: {exc}") from None
        except OSError as exc:
            self._lock.close()
            raise SpoolError(f"cannot open spool {self.path}: {exc}") from None
        except BaseException:
            self._lock.close()
            raise
        self._closed = False
        log.info(
            "spool_opened",
            path=str(self.path),
            batches=len(self._index),
            readings=self._readings,
            bytes=self._bytes,
            next_seq=self._next_seq,
            dropped=self.dropped,
        )

    def _open(self) -> None:
        """Open (or create) the file; an empty or unreadable one is moved aside first."""
        if self.path.is_file() and self.path.stat().st_size == 0:
            # SQLite would take it as a new database: pending data silently gone.
            move_aside(self.path, "the spool file is empty (0 bytes): truncated?")
        try:
            self._connect_and_load()
        except sqlite3.DatabaseError as exc:
            if not unreadable(exc):
                raise
            with contextlib.suppress(sqlite3.Error, AttributeError):
                self._db.close()
            move_aside(self.path, f"not a readable spool: {exc}")
            self._connect_and_load()

    def _connect_and_load(self) -> None:
        self._db = connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._load()

    def _load(self) -> None:
        db = self._db
        counters = init_file(db, restart_safe_seq)
        if counters.get("format", FORMAT_VERSION) > FORMAT_VERSION:
            raise SpoolError(
                f"spool {self.path} has format {counters['format']}, newer than this agent's "
                f"{FORMAT_VERSION}"
            )
        #: seq -> (readings, bytes) of every batch in the file; insertion order is seq order.
        self._index: dict[int, tuple[int, int]] = {
            seq: (readings, size)
            for seq, readings, size in db.execute(
                "SELECT seq, readings, bytes FROM batches ORDER BY seq"
            )
        }
        self._readings = sum(readings for readings, _ in self._index.values())
        self._bytes = sum(size for _, size in self._index.values())
        last = next(reversed(self._index), -1)
        self._next_seq = max(counters["next_seq"], last + 1)
        self._spooled = counters["spooled"]
        self._acked = counters["acked"]
        self._rejected = counters["rejected"]
        self._dropped = {
            name.removeprefix(DROPPED_PREFIX): value
            for name, value in counters.items()
            if name.startswith(DROPPED_PREFIX)
        }
        #: Frames of recent batches, oldest first, up to cache_bytes.
        self._cache: dict[int, SpooledBatch] = {}
        self._cache_size = 0
        accounted = self._acked + self._rejected + self.dropped + self._readings
        if accounted != self._spooled:  # edited by hand, or written by something else
            log.warning("spool_ledger_mismatch", spooled=self._spooled, accounted=accounted)

    # --- Spool protocol -----------------------------------------------------------------

    @property
    def oldest_seq(self) -> int | None:
        return next(iter(self._index), None)

    @property
    def batches(self) -> int:
        return len(self._index)

    def add(self, readings: Sequence[bytes | Mapping[str, Any]]) -> SpooledBatch:
        self._check_open()
        given = len(readings)
        dropped = 0
        if given > self.max_readings:
            # One batch larger than the whole spool: keep its newest readings.
            dropped = given - self.max_readings
            readings = readings[-self.max_readings :]
        batch = SpooledBatch.of(self._next_seq, readings)
        frame = batch.frame
        evicted: list[int] = []
        total_readings, total_bytes = self._readings, self._bytes
        oldest = iter(self._index.items())
        while (
            self._index
            and len(evicted) < len(self._index)
            and (
                total_readings + len(batch) > self.max_readings
                or total_bytes + len(frame) > self.max_bytes
            )
        ):
            seq, (count, size) = next(oldest)
            evicted.append(seq)
            total_readings -= count
            total_bytes -= size
            dropped += count
        dropped_total = self._dropped.get(SPOOL_FULL, 0) + dropped
        counters: list[tuple[str, int]] = [
            ("next_seq", batch.seq + 1),
            ("spooled", self._spooled + given),
        ]
        if dropped:
            counters.append((DROPPED_PREFIX + SPOOL_FULL, dropped_total))
        counters = self._with_unsaved(counters)
        db = self._db
        with transaction(db):
            if evicted:
                db.executemany("DELETE FROM batches WHERE seq = ?", ((s,) for s in evicted))
            db.execute(INSERT_BATCH, (batch.seq, len(batch), len(frame), time.time(), frame))
            db.executemany(SET_COUNTER, counters)
        # Committed: now the memory view follows.
        for seq in evicted:
            del self._index[seq]
            self._uncache(seq)
        self._index[batch.seq] = (len(batch), len(frame))
        self._readings = total_readings + len(batch)
        self._bytes = total_bytes + len(frame)
        self._next_seq = batch.seq + 1
        self._spooled += given
        self._unsaved = False
        self._cache_put(batch)
        if dropped:
            self._dropped[SPOOL_FULL] = dropped_total
            self._log_spool_full(dropped, len(evicted))
        return batch

    def get(self, seq: int) -> SpooledBatch | None:
        if seq not in self._index:
            return None
        batch = self._cache.get(seq)
        if batch is None:
            self._check_open()
            try:
                row = self._db.execute("SELECT frame FROM batches WHERE seq = ?", (seq,)).fetchone()
            except sqlite3.Error as exc:
                log.error("spool_read_failed", seq=seq, error=str(exc))
                return None
            if row is None:  # pragma: no cover - the index mirrors the file
                return None
            frame = bytes(row[0])
            try:
                batch = check_frame(seq, self._index[seq][0], frame)
            except (ValueError, TypeError, KeyError, RecursionError) as exc:
                self._quarantine(seq, frame, str(exc) or type(exc).__name__)
                return None
            self._cache_put(batch)
        return batch

    def pending(self) -> list[SpooledBatch]:
        return [batch for seq in list(self._index) if (batch := self.get(seq)) is not None]

    def ack(self, seq: int, rejected: int = 0) -> SpooledBatch | None:
        batch = self.get(seq)
        if batch is None:
            return None
        rejected = min(max(rejected, 0), len(batch))
        acked = self._acked + len(batch) - rejected
        rejected_total = self._rejected + rejected
        self._remove(seq, [("acked", acked), ("rejected", rejected_total)])
        self._acked, self._rejected = acked, rejected_total
        return batch

    def drop(self, seq: int, reason: str) -> int:
        entry = self._index.get(seq)
        if entry is None:
            return 0
        count = entry[0]
        total = self._dropped.get(reason, 0) + count
        self._remove(seq, [(DROPPED_PREFIX + reason, total)])
        self._dropped[reason] = total
        log_dropped(reason, count, 1, seq=seq, dropped_total=self.dropped)
        return count

    def split(self, seq: int, max_frame_bytes: int) -> list[int]:
        batch = self.get(seq)
        if batch is None:
            return []
        chunks, too_large = split_items(batch.items, max_frame_bytes)
        parts: list[SpooledBatch] = []
        for chunk in chunks:
            parts.append(SpooledBatch.of(self._next_seq + len(parts), chunk))
        counters: list[tuple[str, int]] = [("next_seq", self._next_seq + len(parts))]
        dropped_total = self._dropped.get(BATCH_TOO_LARGE, 0) + len(too_large)
        if too_large:
            counters.append((DROPPED_PREFIX + BATCH_TOO_LARGE, dropped_total))
        counters = self._with_unsaved(counters)
        now = time.time()
        db = self._db
        with transaction(db):
            db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
            rows = ((p.seq, len(p), len(p.frame), now, p.frame) for p in parts)
            db.executemany(INSERT_BATCH, rows)
            db.executemany(SET_COUNTER, counters)
        self._unsaved = False
        count, size = self._index.pop(seq)
        self._readings -= count
        self._bytes -= size
        self._uncache(seq)
        for part in parts:
            self._index[part.seq] = (len(part), len(part.frame))
            self._readings += len(part)
            self._bytes += len(part.frame)
            self._cache_put(part)
        self._next_seq += len(parts)
        if too_large:
            self._dropped[BATCH_TOO_LARGE] = dropped_total
            log_dropped(BATCH_TOO_LARGE, len(too_large), 0, seq=seq, dropped_total=self.dropped)
        return [part.seq for part in parts]

    def lose(self, readings: int, reason: str) -> None:
        self._spooled += readings
        self._dropped[reason] = self._dropped.get(reason, 0) + readings
        self._unsaved = True
        # Try to write the counters now; when the disk is still full, the next commit will.
        with contextlib.suppress(sqlite3.Error, SpoolError):
            self._check_open()
            with transaction(self._db):
                self._db.executemany(SET_COUNTER, self._with_unsaved([]))
            self._unsaved = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._log_held_drops()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._lock.close()
        log.info("spool_closed", path=str(self.path), batches=len(self._index))

    # --- internals ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError(f"spool {self.path} is closed")

    def _with_unsaved(self, counters: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """``counters``, plus every counter of the ledger when some were not saved (a write
        failed): the first commit that succeeds puts the file's ledger right again."""
        if not self._unsaved:
            return counters
        names = {name for name, _ in counters}
        extra = [("spooled", self._spooled)] + [
            (DROPPED_PREFIX + reason, value) for reason, value in self._dropped.items()
        ]
        return counters + [(name, value) for name, value in extra if name not in names]

    def _quarantine(self, seq: int, frame: bytes, reason: str) -> None:
        """Move a batch that cannot be read back to the dead-letter file; count it dropped."""
        if not append_dead_letter(self.dead_letter_path, seq, frame, reason):
            return  # the batch stays in the file: it is skipped, not lost
        count = self._index[seq][0]
        total = self._dropped.get(SPOOL_CORRUPT, 0) + count
        try:
            self._remove(seq, [(DROPPED_PREFIX + SPOOL_CORRUPT, total)])
        except sqlite3.Error as exc:
            log.error("spool_quarantine_failed", seq=seq, reason=reason, error=str(exc))
            return
        self._dropped[SPOOL_CORRUPT] = total
        log.error(
            "spool_batch_quarantined",
            seq=seq,
            readings=count,
            reason=reason[:200],
            dead_letter=str(self.dead_letter_path),
        )
        log_dropped(SPOOL_CORRUPT, count, 1, seq=seq, dropped_total=self.dropped)

    def _remove(self, seq: int, counters: Iterable[tuple[str, int]]) -> None:
        self._check_open()
        counters = self._with_unsaved(list(counters))
        db = self._db
        with transaction(db):
            db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
            db.executemany(SET_COUNTER, counters)
        self._unsaved = False
        count, size = self._index.pop(seq)
        self._readings -= count
        self._bytes -= size
        self._uncache(seq)

    def _cache_put(self, batch: SpooledBatch) -> None:
        if batch.seq in self._cache:
            return
        self._cache[batch.seq] = batch
        self._cache_size += len(batch.frame)
        while self._cache_size > self.cache_bytes and len(self._cache) > 1:
            self._uncache(next(iter(self._cache)))

    def _uncache(self, seq: int) -> None:
        batch = self._cache.pop(seq, None)
        if batch is not None:
            self._cache_size -= len(batch.frame)
