"""WAL checkpoints for the ``sqlite`` sink, on a thread of their own.

Why: in WAL mode a commit appends pages to the ``-wal`` file; a checkpoint copies them into
the database file. With ``synchronous=NORMAL`` the commit is not synced, the checkpoint is:
it syncs the WAL, writes the pages, syncs the database. SQLite's automatic checkpoint runs
inside the commit that crosses 1,000 pages, on the writer's thread, so the writer waits for
two ``fsync`` calls every few batches. On this project's benchmark machine that waiting was
two thirds of the sqlite sink's time per row (73 µs per row in all against 34 µs of CPU;
~37 µs with the checkpoints moved here, docs/benchmarks.md).

How: the writer's connection has ``wal_autocheckpoint=0``. A :class:`Checkpointer` thread
with its own connection runs a ``PASSIVE`` checkpoint after each commit (:meth:`committed`
wakes it) and at least every ``IDLE_WAKE`` seconds. A passive checkpoint never blocks the
writer or a reader; the WAL starts over from its beginning at the first write after a
checkpoint that copied everything. Under a steady stream of commits that moment may not
come, so the WAL has a bound: when it holds more than ``max_pages`` pages after a commit,
the writer itself runs the next passive checkpoint, right after its commit and with the
thread's held off: nothing writes meanwhile, so it copies everything and the writer's next
write starts the WAL over, cutting the file back to the bound (``journal_size_limit``).
(Readers in other processes holding an old snapshot can still keep pages in the WAL, as with
SQLite's own checkpoints.)

A failed checkpoint (disk full, I/O error) loses nothing: the pages stay in the WAL, which
readers see, and the next checkpoint copies them. It is logged, at most once a minute.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from telemetry.log import get_logger

log = get_logger("telemetry.sinks.sqlite")

#: Pages the WAL may hold before the writer checkpoints it itself (32 MiB of 4 KiB pages).
MAX_WAL_PAGES = 8_000
#: Seconds the checkpointer sleeps when no commit wakes it (retention's deletes, say).
IDLE_WAKE = 1.0
#: Seconds between two log lines about failed checkpoints.
ERROR_LOG_INTERVAL = 60.0
PASSIVE = "PRAGMA wal_checkpoint(PASSIVE)"


class Checkpointer:
    """Checkpoints one SQLite file's WAL in the background (see the module docstring)."""

    def __init__(self, path: Path, sink: str, max_pages: int = MAX_WAL_PAGES) -> None:
        self.path = path
        self.sink = sink
        self.max_pages = max_pages
        #: Pages in the WAL at the last checkpoint, checkpoints run, and failed (both threads).
        self.wal_pages = 0
        self.checkpoints = 0
        self.failures = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        #: Held while a checkpoint runs: the writer's bounding checkpoint waits for the
        #: thread's, so that it is never turned away busy.
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._logged_at = -ERROR_LOG_INTERVAL
        self._wal = path.with_name(path.name + "-wal")
        self._limit_bytes = max_pages * 4096  # until configure() reads the page size

    def configure(self, db: sqlite3.Connection) -> None:
        """On the writer's connection: no automatic checkpoints; the WAL file cut back to
        ``max_pages`` pages whenever the WAL starts over."""
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        self._limit_bytes = self.max_pages * page_size
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute(f"PRAGMA journal_size_limit={self._limit_bytes}")

    def start(self) -> None:
        """Open the thread's connection and start it; sqlite3.Error when the file does not
        open."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=5000")
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, args=(db,), name=f"sink-{self.sink}-checkpoint", daemon=True
        )
        self._thread.start()

    def committed(self, db: sqlite3.Connection) -> None:
        """After each commit, on the writer's thread: wake the thread, or, when the WAL has
        outgrown ``max_pages``, checkpoint it here (see the module docstring).

        The WAL file's size tells: the first write after the WAL starts over truncates the
        file to the bound (``journal_size_limit``), so it is larger only when the WAL holds
        more than the bound. One ``stat`` per commit."""
        try:
            outgrown = self._wal.stat().st_size > self._limit_bytes
        except OSError:  # no WAL file (yet): nothing to bound
            outgrown = False
        if not outgrown or self._thread is None:
            self._wake.set()
            return
        with self._lock:
            self._checkpoint(db)  # nothing writes meanwhile: it copies the whole WAL

    def stop(self) -> None:
        """Stop the thread (its last checkpoint finishes first) and close its connection."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            self._wake.set()
            thread.join()

    def _run(self, db: sqlite3.Connection) -> None:
        try:
            while not self._stopping.is_set():
                self._wake.wait(IDLE_WAKE)
                self._wake.clear()
                with self._lock:
                    self._checkpoint(db)
        finally:
            db.close()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        """One passive checkpoint; a failure is counted and logged, never raised."""
        try:
            _busy, pages, _copied = db.execute(PASSIVE).fetchone()
        except sqlite3.Error as exc:
            self.failures += 1
            now = time.monotonic()
            if now - self._logged_at >= ERROR_LOG_INTERVAL:
                self._logged_at = now
                log.warning(
                    "sqlite_checkpoint_failed",
                    sink=self.sink,
                    error=str(exc),
                    failures=self.failures,
                    wal_pages=self.wal_pages,
                )
            return
        self.checkpoints += 1
        # The WAL's length, whatever was copied: a write that began before this checkpoint
        # ended did not start the WAL over. -1: busy (another process's checkpoint runs).
        self.wal_pages = max(pages, 0)
