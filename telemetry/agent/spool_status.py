"""``telemetry spool status``: what a disk spool file holds, read without opening it as a
spool (no lock taken)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from telemetry.agent.spool_file import DROPPED_PREFIX, SpoolError, read_counters


@dataclass(frozen=True)
class SpoolStatus:
    """What a spool file holds, for ``telemetry spool status``."""

    path: str
    pending_batches: int
    pending_readings: int
    bytes: int
    file_bytes: int
    oldest_created_at: float | None
    next_seq: int
    spooled: int
    acked: int
    rejected: int
    dropped: int
    dropped_by_reason: dict[str, int] = field(default_factory=dict)

    def oldest_age(self, now: float | None = None) -> float | None:
        """Seconds since the oldest pending batch was spooled, or None when empty."""
        if self.oldest_created_at is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.oldest_created_at)

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """The status as a JSON-ready dict, with ``oldest_age_seconds`` computed now."""
        data = asdict(self)
        age = self.oldest_age(now)
        data["oldest_age_seconds"] = None if age is None else round(age, 3)
        return data


def read_status(path: Path | str) -> SpoolStatus:
    """Read a spool file without locking it (the agent may be running); SpoolError if absent."""
    path = Path(path)
    if not path.is_file():
        raise SpoolError(f"spool {path} does not exist (has the agent run with it?)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot open spool {path}: {exc}") from None
    try:
        db.execute("PRAGMA busy_timeout=5000")
        counters = read_counters(db)
        batches, readings, size, oldest = db.execute(
            "SELECT count(*), coalesce(sum(readings), 0), coalesce(sum(bytes), 0), "
            "min(created_at) FROM batches"
        ).fetchone()
    except sqlite3.Error as exc:
        raise SpoolError(f"{path} is not a readable spool: {exc}") from None
    finally:
        db.close()
    file_bytes = sum(
        p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists()
    )
    dropped = {
        name.removeprefix(DROPPED_PREFIX): value
        for name, value in counters.items()
        if name.startswith(DROPPED_PREFIX)
    }
    return SpoolStatus(
        path=str(path),
        pending_batches=int(batches),
        pending_readings=int(readings),
        bytes=int(size),
        file_bytes=file_bytes,
        oldest_created_at=oldest,
        next_seq=counters.get("next_seq", 0),
        spooled=counters.get("spooled", 0),
        acked=counters.get("acked", 0),
        rejected=counters.get("rejected", 0),
        dropped=sum(dropped.values()),
        dropped_by_reason=dropped,
    )
