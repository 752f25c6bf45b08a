"""The ``sqlite`` sink, the embedded default: table ``readings`` in a WAL-mode SQLite file.

Idempotent on the reading id: ``id`` is UNIQUE and rows go in with ``INSERT OR IGNORE``, so a
batch resent after a lost ack is stored once. Fire-and-forget readings have a NULL id (SQLite
lets any number of NULLs share a UNIQUE column). A batch is one transaction: ``write()``
returns after COMMIT.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import ClassVar

from telemetry.config import SqliteSinkConfig
from telemetry.protocol import format_timestamp
from telemetry.sinks._common import COLUMNS, record_row, sink_name, started
from telemetry.sinks._thread import WorkerThread
from telemetry.sinks.base import PermanentSinkError, Record, TransientSinkError

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
    f"INSERT OR IGNORE INTO readings ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(COLUMNS))})"
)


class SqliteSink:
    """Writes batches in one transaction each, on a thread of its own."""

    config_model: ClassVar[type[SqliteSinkConfig]] = SqliteSinkConfig

    def __init__(self, config: SqliteSinkConfig) -> None:
        self.name = sink_name(config)
        self.path = config.path
        self.synchronous = config.synchronous
        self._db: sqlite3.Connection | None = None
        self._thread = WorkerThread(f"sink-{self.name}")

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

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.executescript(SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    async def write(self, batch: Sequence[Record]) -> None:
        db = started(self._db, "sqlite")
        rows = [record_row(record, format_timestamp) for record in batch]

        def insert() -> None:
            db.execute("BEGIN")
            try:
                db.executemany(INSERT, rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        try:
            await self._thread.run(insert)
        except sqlite3.OperationalError as exc:  # locked, busy, disk full, I/O
            raise TransientSinkError(f"sqlite write to {self.path} failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise PermanentSinkError(f"sqlite rejected the batch: {exc}") from exc

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await self._thread.run(db.close)
        self._thread.stop()
