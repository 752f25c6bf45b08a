"""The disk spool's file: its schema, connection, transactions, lock, and what to do with a
file or a batch that cannot be read (moved aside, quarantined).

Durability: WAL with ``synchronous=NORMAL``. A commit is an append to the WAL without fsync,
which survives a crash or SIGKILL of the process (the OS has the bytes) but not a power cut
or a kernel crash, where the last commits before it may be lost. The unit of commit is the
batch (``batch_size`` readings), not the reading: one commit per batch closed and per ack.

Only one agent may use a spool file: an advisory lock (``<path>.lock``, ``flock``) is taken
when it opens, named from the file's resolved path (a symlink to it is the same spool).

Host faults: a failed write (disk full, I/O error) rolls its transaction back whole, even when
it is the ``COMMIT`` that fails, so the file and the memory view stay as they were; the caller
decides (the agent counts the readings as ``spool_write_failed``, see :meth:`DiskSpool.lose`).
A spool file that is empty (0 bytes) or not a SQLite database is moved aside to
``<name>.corrupt-<timestamp>`` (with its ``-wal``/``-shm``), never overwritten, and a new one
started, with an error event (``spool_file_moved_aside``). A stored batch whose frame does
not read back as the batch it was (bad header, bad JSON, wrong seq or reading count) is
quarantined: appended to ``<name>.dead-letter`` (one JSON line: seq, reason, the frame in
base64), removed from the spool and counted as dropped with reason ``spool_corrupt``, so it
never blocks the batches behind it.

:func:`read_status` reads a spool without the lock, for ``telemetry spool status`` while the
agent runs.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from telemetry.agent.spool import SpooledBatch
from telemetry.log import get_logger
from telemetry.protocol.framing import HEADER_SIZE, parse_header

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

log = get_logger("telemetry.agent.spool")

FORMAT_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq        INTEGER PRIMARY KEY,
    readings   INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    created_at REAL NOT NULL,
    frame      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

SET_COUNTER = (
    "INSERT INTO counters (name, value) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)
DROPPED_PREFIX = "dropped:"


class SpoolError(Exception):
    """A spool file that cannot be opened or used; the message says why."""


class SpoolLocked(SpoolError):
    """Another process holds the spool file."""


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=5000")
    return db


INSERT_BATCH = (
    "INSERT INTO batches (seq, readings, bytes, created_at, frame) VALUES (?, ?, ?, ?, ?)"
)


def read_counters(db: sqlite3.Connection) -> dict[str, int]:
    return {name: int(value) for name, value in db.execute("SELECT name, value FROM counters")}


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One transaction; rolled back whole when anything in it fails, the COMMIT included
    (a disk full at COMMIT would otherwise leave it open, and every later BEGIN failing)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def unreadable(exc: sqlite3.Error) -> bool:
    """True when ``exc`` says the file is not a (sound) SQLite database, not that it is busy."""
    name = getattr(exc, "sqlite_errorname", "")
    return name in {"SQLITE_NOTADB", "SQLITE_CORRUPT"} or "not a database" in str(exc)


def move_aside(path: Path, reason: str) -> Path:
    """Rename ``path`` (and its ``-wal``/``-shm``) to ``<name>.corrupt-<timestamp>``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(target.with_name(target.name + suffix))
    log.error(
        "spool_file_moved_aside",
        path=str(path),
        moved_to=str(target),
        reason=reason,
        hint="pending readings it held (if any) are not sent; inspect the moved file",
    )
    return target


def check_frame(seq: int, readings: int, frame: bytes) -> SpooledBatch:
    """The batch stored as ``frame``; ValueError when the frame is not the batch it was."""
    if parse_header(frame[:HEADER_SIZE]) != len(frame) - HEADER_SIZE:
        raise ValueError("frame length does not match its header")
    payload = json.loads(frame[HEADER_SIZE:])
    if not isinstance(payload, dict) or payload.get("seq") != seq:
        raise ValueError("frame is not this seq's batch")
    items = payload.get("readings")
    if not isinstance(items, list) or len(items) != readings:
        raise ValueError("frame does not hold the stored reading count")
    if not all(isinstance(item, dict) for item in items):
        raise ValueError("a reading is not an object")
    return SpooledBatch.from_frame(seq, frame)


def acquire_lock(path: Path) -> BinaryIO:
    """Hold ``<path>.lock`` exclusively for as long as the returned file is open."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        lock = open(lock_path, "a+b")  # noqa: SIM115 - held open for the spool's life
    except OSError as exc:
        raise SpoolError(f"cannot open spool lock {lock_path}: {exc.strerror}") from None
    if fcntl is not None:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise SpoolLocked(
                f"spool {path} is in use by another agent (give each agent its own spool path)"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n".encode())
        lock.flush()
    return lock


# --- status --------------------------------------------------------------------------------


def init_file(db: sqlite3.Connection, first_seq: Callable[[], int]) -> dict[str, int]:
    """Create the tables if missing and return the counters; a new file's ``next_seq`` comes
    from ``first_seq()`` (the clock: a seq never repeats across spools)."""
    with transaction(db):
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        counters = read_counters(db)
        if "next_seq" not in counters:
            counters = {
                "format": FORMAT_VERSION,
                "next_seq": first_seq(),
                "spooled": 0,
                "acked": 0,
                "rejected": 0,
            }
            db.executemany(SET_COUNTER, counters.items())
    return counters


def append_dead_letter(path: Path, seq: int, frame: bytes, reason: str) -> bool:
    """Append a batch that cannot be read back to the dead-letter file (one JSON line: seq,
    reason, the frame in base64), synced; ``False`` (logged) when that fails."""
    record = {
        "seq": seq,
        "quarantined_at": time.time(),
        "reason": reason[:200],
        "frame_base64": base64.b64encode(frame).decode("ascii"),
    }
    try:
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
            file.flush()
            os.fsync(file.fileno())
    except OSError as exc:
        log.error("spool_quarantine_failed", seq=seq, reason=reason, error=str(exc))
        return False
    return True
