"""Retention for the ``sqlite`` sink: ``max_age`` and ``max_rows``, pruned in the background.

How this works: a task of the sink's (:class:`Retention`) runs one pass at start and then one
every ``prune_interval`` seconds. A pass deletes in chunks of at most ``prune_chunk`` rows,
each chunk one ``DELETE`` (its own transaction) run on the sink's own worker thread and
connection. Writes go through that same thread, one at a time, so a write never waits on a
lock held by the pruner: at worst it waits for the one chunk in progress, and a pass of a
million rows is hundreds of short steps with writes in between, not one long transaction.

Both limits walk the table in ``rowid`` order, which is the order rows were stored in: the
oldest rows are the first of the table's own B-tree. So pruning needs no index and costs the
write path nothing.

- ``max_rows``: rows whose ``rowid`` is below ``max(rowid) - max_rows`` go (``max(rowid)``
  is one B-tree lookup). What stays is at most ``max_rows`` rows, the most recently stored.
- ``max_age``: rows whose ``received_at`` (the collector's clock when it took the reading)
  is more than ``max_age`` seconds ago go, oldest first: each chunk looks at the first
  ``prune_chunk`` rows of the table and deletes the old ones among them; the pass ends when
  a chunk finds none. By ``received_at`` rather than ``ts``: a reading an agent spooled for a
  week is kept ``max_age`` after it arrived, not deleted on arrival, and no ``ts`` index is
  needed. (If the collector's clock stepped back, rows stored before the step may outlive
  ``max_age`` by the size of the step.)

Deleted rows free pages inside the file, which later rows reuse: the file stops growing but
does not shrink (``VACUUM`` shrinks it, offline). Every pass that deletes logs
``sqlite_pruned`` with the counts; the totals are :attr:`Retention.pruned`, exported as
``telemetry_sink_pruned_readings_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from telemetry.config import SqliteSinkConfig
from telemetry.log import get_logger
from telemetry.protocol import format_timestamp

log = get_logger("telemetry.sinks.sqlite")

T = TypeVar("T")
#: What runs a callable on the sink's worker thread (``WorkerThread.run``).
Runner = Callable[[Callable[[], T]], Awaitable[T]]

TOP_ROWID = "SELECT max(rowid) FROM readings"
#: The first ``?`` rows at or below rowid ``?``: what ``max_rows`` no longer keeps.
DELETE_BELOW = (
    "DELETE FROM readings WHERE rowid IN "
    "(SELECT rowid FROM readings WHERE rowid <= ? ORDER BY rowid LIMIT ?)"
)
#: Among the first ``?`` rows of the table, those received before ``?``.
DELETE_OLDER = (
    "DELETE FROM readings WHERE rowid IN "
    "(SELECT rowid FROM readings ORDER BY rowid LIMIT ?) AND received_at < ?"
)


def prune_chunk(
    db: sqlite3.Connection, *, max_rows: int, cutoff: str | None, chunk: int
) -> tuple[int, int]:
    """Delete at most ``chunk`` rows: first those beyond ``max_rows`` (0: no limit), then
    those received before ``cutoff`` (RFC 3339 text as the sink writes it; None: no limit).
    Returns (rows deleted for ``max_rows``, rows deleted for ``max_age``)."""
    by_rows = by_age = 0
    if max_rows:
        top = db.execute(TOP_ROWID).fetchone()[0]
        if top is not None and top > max_rows:
            by_rows = db.execute(DELETE_BELOW, (top - max_rows, chunk)).rowcount
    if cutoff is not None and by_rows < chunk:
        by_age = db.execute(DELETE_OLDER, (chunk - by_rows, cutoff)).rowcount
    return by_rows, by_age


def age_cutoff(now: float, max_age: float) -> str | None:
    """The ``received_at`` text below which rows are older than ``max_age`` (0: None)."""
    if not max_age:
        return None
    return format_timestamp(datetime.fromtimestamp(now - max_age, UTC))


class Retention:
    """The background pruning of one sqlite sink (see the module docstring)."""

    def __init__(self, name: str, config: SqliteSinkConfig, run: Runner[tuple[int, int]]) -> None:
        self.name = name
        self.max_age = config.max_age
        self.max_rows = config.max_rows
        self.interval = config.prune_interval
        self.chunk = config.prune_chunk
        self._run = run
        #: Rows deleted since start: for ``max_rows`` and for ``max_age``.
        self.pruned = {"max_rows": 0, "max_age": 0}
        #: Passes completed (each logs ``sqlite_pruned`` when it deleted anything).
        self.passes = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()

    @property
    def enabled(self) -> bool:
        """False when neither ``max_age`` nor ``max_rows`` is set: :meth:`start` does nothing."""
        return bool(self.max_age or self.max_rows)

    def start(self, db: sqlite3.Connection) -> None:
        """Begin pruning ``db`` (a pass now, then every ``prune_interval``); idempotent."""
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._loop(db), name=f"sqlite-prune-{self.name}")

    async def stop(self) -> None:
        """Stop pruning; returns once the chunk in progress (if any) is done. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Run the next pass now (tests; a future admin endpoint)."""
        self._wake.set()

    async def until(self, done: Callable[[], bool]) -> None:
        """Return once ``done()`` holds, checked after every chunk and pass (for tests)."""
        while not done():
            self._progress.clear()
            await self._progress.wait()

    async def _loop(self, db: sqlite3.Connection) -> None:
        while True:
            try:
                await self.prune(db)
            except sqlite3.Error as exc:  # locked by another process, I/O: next time
                log.warning("sqlite_prune_failed", sink=self.name, error=str(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()

    async def prune(self, db: sqlite3.Connection) -> tuple[int, int]:
        """One pass: delete chunk after chunk until none is left to delete. Returns the rows
        deleted for (``max_rows``, ``max_age``)."""
        started = time.monotonic()
        cutoff = age_cutoff(time.time(), self.max_age)
        max_rows, chunk = self.max_rows, self.chunk
        by_rows = by_age = chunks = 0
        while True:
            rows, age = await self._run(
                lambda: prune_chunk(db, max_rows=max_rows, cutoff=cutoff, chunk=chunk)
            )
            chunks += 1
            by_rows += rows
            by_age += age
            if not rows and not age:
                break
            self.pruned["max_rows"] += rows
            self.pruned["max_age"] += age
            self._progress.set()
            await asyncio.sleep(0)  # writes queued meanwhile go to the thread first
        self.passes += 1
        self._progress.set()
        if by_rows or by_age:
            log.info(
                "sqlite_pruned",
                sink=self.name,
                rows=by_rows + by_age,
                max_rows=by_rows,
                max_age=by_age,
                chunks=chunks,
                seconds=round(time.monotonic() - started, 3),
            )
        return by_rows, by_age
