"""The ``sqlite`` sink, the embedded default: table ``readings`` in a WAL-mode SQLite file.

Idempotent on the reading id: ``id`` is UNIQUE and rows go in with ``INSERT ... ON CONFLICT
(id) DO NOTHING``, so a batch resent after a lost ack is stored once. Fire-and-forget readings
have a NULL id (SQLite lets any number of NULLs share a UNIQUE column). A batch is one
transaction: ``write()`` returns after COMMIT.

Rows go in ``ROWS_PER_STATEMENT`` at a time, in one multi-row ``INSERT`` each (a batch of up
to 500 readings is a single statement, its own transaction), not with ``executemany``: Python's
``sqlite3`` releases the GIL around every statement it steps, and a thread that gives the GIL
up once per row waits for it again behind the busy event loop each time (up to the 5 ms switch
interval). Row by row, a 500-row batch took 20-120 ms while ingest was busy; in one statement
the same collector stores 9-16 % more readings/s end to end (docs/benchmarks.md).

A resend must not hide a conflict: when the transaction inserted fewer rows than the batch
holds (``total_changes`` tells, for free), one query reads back the stored rows of the batch's
ids and compares their content with the batch's; a record whose id is stored with other
content is refused (:class:`RefusedRecords`) after the rest is committed. A batch of new
readings pays nothing for this.

The table has one index besides ``id``'s: ``readings_sensor_ts`` on ``(sensor, ts)``, for the
queries by sensor and time (docs/queries.md). It is what limits the rate of a growing table:
an insert lands at as many places in it as there are sensors (docs/benchmarks.md has the
figures with and without it). Rows are built on the sink's thread
(:func:`~telemetry.sinks.encoding.table_rows`), not on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from itertools import chain
from typing import Any, ClassVar

from telemetry.config import SqliteSinkConfig
from telemetry.sinks._common import COLUMNS, sink_name, started
from telemetry.sinks._thread import WorkerThread
from telemetry.sinks.base import (
    PermanentSinkError,
    Record,
    RefusedRecords,
    TransientSinkError,
    canonical_content,
    conflict_reason,
    content_of,
)
from telemetry.sinks.encoding import table_rows
from telemetry.sinks.latest import SQLITE_LATEST, record_of
from telemetry.sinks.sqlite_checkpoint import Checkpointer
from telemetry.sinks.sqlite_retention import Retention

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id          TEXT UNIQUE,
    agent       TEXT NOT NULL,
    sensor      TEXT NOT NULL,
    metric      TEXT,
    value       REAL NOT NULL,
    unit        TEXT,
    ts          TEXT NOT NULL,
    tags        TEXT NOT NULL DEFAULT '{}',
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_sensor_ts ON readings (sensor, ts);
"""

INSERT = (
    f"INSERT INTO readings ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(COLUMNS))}) ON CONFLICT (id) DO NOTHING"
)
#: Rows per ``INSERT`` statement (``ROWS_PER_STATEMENT * len(COLUMNS)`` parameters, well
#: under SQLite's 32,766): a batch of at most this many rows is one statement.
ROWS_PER_STATEMENT = 500
#: The stored rows of a batch's ids (a JSON array: one parameter, whatever the batch size), in
#: the order of ``CONTENT`` below.
STORED = (
    "SELECT id, sensor, metric, value, unit, ts, tags, received_at FROM readings "
    "WHERE id IN (SELECT value FROM json_each(?))"
)
#: Where the columns of ``STORED`` sit in a row of :func:`table_rows`: sensor, metric, value,
#: unit, ts, tags, received_at.
CONTENT = (2, 3, 4, 5, 6, 7, 8)


class SqliteSink:
    """Writes batches in one transaction each, on a thread of its own."""

    config_model: ClassVar[type[SqliteSinkConfig]] = SqliteSinkConfig

    def __init__(self, config: SqliteSinkConfig) -> None:
        self.name = sink_name(config)
        self.path = config.path
        self.synchronous = config.synchronous
        self._db: sqlite3.Connection | None = None
        self._thread = WorkerThread(f"sink-{self.name}")
        #: ``max_age`` / ``max_rows``: pruned in the background (telemetry.sinks.sqlite_retention).
        self.retention = Retention(self.name, config, self._thread.run)
        #: WAL checkpoints on a thread of their own (telemetry.sinks.sqlite_checkpoint).
        self.checkpointer = Checkpointer(self.path, self.name)

    async def start(self) -> None:
        """Open the file (WAL mode) and create the table; a file another process holds locked
        while it does the same (collectors starting together) is a transient error."""
        self._thread.start()
        try:
            self._db = await self._thread.run(self._open)
        except sqlite3.OperationalError as exc:
            message = f"sqlite: cannot open {self.path}: {exc}"
            if "locked" in str(exc) or "busy" in str(exc):
                raise TransientSinkError(message) from exc
            raise PermanentSinkError(message) from exc
        self.retention.start(self._db)

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.executescript(SCHEMA)
            self.checkpointer.configure(db)
            self.checkpointer.start()
        except BaseException:
            db.close()
            raise
        return db

    async def write(self, batch: Sequence[Record]) -> None:
        db = started(self._db, "sqlite")

        def insert() -> dict[int, str]:
            rows = table_rows(batch)  # on the sink's thread, as the insert
            before = db.total_changes
            if len(rows) <= ROWS_PER_STATEMENT:  # one statement, its own transaction
                db.execute(_insert_sql(len(rows)), list(chain.from_iterable(rows)))
            else:
                db.execute("BEGIN")
                try:
                    for start in range(0, len(rows), ROWS_PER_STATEMENT):
                        chunk = rows[start : start + ROWS_PER_STATEMENT]
                        db.execute(_insert_sql(len(chunk)), list(chain.from_iterable(chunk)))
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            self.checkpointer.committed(db)
            if db.total_changes - before < len(rows):  # committed; a resend, or a conflict
                return _conflicts(db, batch, rows)
            return {}

        try:
            refused = await self._thread.run(insert)
        except sqlite3.OperationalError as exc:  # locked, busy, disk full, I/O
            raise TransientSinkError(f"sqlite write to {self.path} failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise PermanentSinkError(f"sqlite rejected the batch: {exc}") from exc
        if refused:
            raise RefusedRecords(refused)

    async def latest(self, limit: int) -> list[Record]:
        """The newest reading (by ``ts``) of at most ``limit`` sensors (telemetry.sinks.latest)."""
        db = started(self._db, "sqlite")
        rows = await self._thread.run(lambda: db.execute(SQLITE_LATEST, (limit,)).fetchall())
        return [record_of(row) for row in rows]

    async def close(self) -> None:
        await self.retention.stop()
        await asyncio.to_thread(self.checkpointer.stop)  # its last checkpoint may take a while
        db, self._db = self._db, None
        if db is not None:
            await self._thread.run(db.close)
        self._thread.stop()


@lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    """``INSERT`` of ``rows`` rows in one statement, idempotent on ``id``."""
    values = "(" + ", ".join("?" * len(COLUMNS)) + ")"
    return (
        f"INSERT INTO readings ({', '.join(COLUMNS)}) VALUES "
        + ", ".join([values] * rows)
        + " ON CONFLICT (id) DO NOTHING"
    )


def _conflicts(
    db: sqlite3.Connection, batch: Sequence[Record], rows: list[tuple[Any, ...]]
) -> dict[int, str]:
    """The records of ``batch`` whose id is stored with other content (index -> reason).

    Some rows were not inserted: their ids were stored already (or earlier in the batch). One
    query reads the stored rows of all the batch's ids; a row equal to the record's as written
    is the common case (a resend) and costs a tuple comparison; otherwise the contents are
    compared canonically (ts as an instant, tags as a dict, value as a float)."""
    ids = [row[0] for row in rows if row[0] is not None]
    stored = {row[0]: row[1:] for row in db.execute(STORED, (json.dumps(ids, ensure_ascii=False),))}
    refused: dict[int, str] = {}
    for index, row in enumerate(rows):
        rid = row[0]
        if rid is None:
            continue
        theirs = stored.get(rid)
        if theirs is None:  # deleted since the insert, by someone else: nothing to compare
            continue
        ours = tuple(row[i] for i in CONTENT)
        if ours == theirs:  # the very row (or a copy of it, inside the batch)
            continue
        sensor, metric, value, unit, ts, tags, received_at = theirs
        stored_content = canonical_content(sensor, value, ts, metric, unit, tags, received_at)
        if content_of(batch[index]) != stored_content:
            refused[index] = conflict_reason(rid)
    return refused
